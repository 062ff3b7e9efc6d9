package dnsbl

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseSite(t *testing.T) {
	good := []struct {
		in, domain string
		weight     int
		filter     bool
		out        string // String(); "" means in
	}{
		{"bl.example", "bl.example", 1, false, ""},
		{"b.barracudacentral.org*2", "b.barracudacentral.org", 2, false, ""},
		{"zen.spamhaus.org=127.0.0.[2..11]*3", "zen.spamhaus.org", 3, true, ""},
		{"list.dnswl.org=127.0.[0..255].[1..3]*-5", "list.dnswl.org", -5, true, ""},
		{"bl.mailspike.net=127.0.0.[2;10..14]*2", "bl.mailspike.net", 2, true, ""},
		{"bl.mailspike.net=127.0.0.[2;14;13;12;11;10]*2", "bl.mailspike.net", 2, true, ""},
		{"example.com=127.0.0.4", "example.com", 1, true, ""},
		{"dbl.example*0", "dbl.example", 0, false, ""},
		{"ZEN.Spamhaus.ORG.*1", "zen.spamhaus.org", 1, false, "zen.spamhaus.org"},
		{"  bl.example*+2 ", "bl.example", 2, false, "bl.example*2"},
		{"bl.example=127.0.0.[2]", "bl.example", 1, true, "bl.example=127.0.0.2"},
		{"bl.example=127.0.0.[007..9]", "bl.example", 1, true, "bl.example=127.0.0.[7..9]"},
		{"bl.example=[127].[0..0].0.[2;2]", "bl.example", 1, true, "bl.example=127.0.0.[2;2]"},
		{"key_123.zen.dq.spamhaus.net=127.0.0.[2..11]", "key_123.zen.dq.spamhaus.net", 1, true, ""},
	}
	for _, c := range good {
		s, err := ParseSite(c.in)
		if err != nil {
			t.Errorf("ParseSite(%q): %v", c.in, err)
			continue
		}
		if s.Domain != c.domain || s.Weight != c.weight || s.HasFilter() != c.filter {
			t.Errorf("ParseSite(%q) = %q *%d filter %v, want %q *%d filter %v",
				c.in, s.Domain, s.Weight, s.HasFilter(), c.domain, c.weight, c.filter)
		}
		want := c.out
		if want == "" {
			want = c.in
		}
		if got := s.String(); got != want {
			t.Errorf("ParseSite(%q).String() = %q, want %q", c.in, got, want)
		}
		// What String prints parses back to the same thing.
		again, err := ParseSite(s.String())
		if err != nil || again.String() != s.String() {
			t.Errorf("round trip of %q: %q, %v", s, again, err)
		}
	}

	bad := []struct{ in, err string }{
		{"zen.spamhaus.org=127.0.0.[2..300]*3", `bad filter octet "300" in zen.spamhaus.org=127.0.0.[2..300]*3`},
		{"", `no list domain in ""`},
		{"=127.0.0.2", `no list domain in "=127.0.0.2"`},
		{"*2", `no list domain`},
		{"bl.example*", `bad weight "" in bl.example*`},
		{"bl.example*1.5", `bad weight "1.5"`},
		{"bl.example*x", `bad weight "x"`},
		{"bl.example*2*3", `bad weight "2*3"`},
		{"bl..example", `bad list domain "bl..example"`},
		{"bl example", `bad list domain "bl example"`},
		{"bl.example/24", `bad character '/'`},
		{strings.Repeat("a", 64) + ".example", "label longer than 63"},
		{"bl.example=", `empty filter in bl.example=`},
		{"bl.example=127.0.0", "want 4 octets, not 3"},
		{"bl.example=127.0.0.2.1", "want 4 octets, not 5"},
		{"bl.example=127.0.0.256", `bad filter octet "256"`},
		{"bl.example=127.0.0.-1", `bad filter octet "-1"`},
		{"bl.example=127.0.0.+1", `bad filter octet "+1"`},
		{"bl.example=127.0.0.x", `bad filter octet "x"`},
		{"bl.example=127.0.0.", `bad filter octet ""`},
		{"bl.example=127.0..2", `bad filter octet ""`},
		{"bl.example=127.0.0.[2..11", "unclosed ["},
		{"bl.example=127.0.0.[]", "empty []"},
		{"bl.example=127.0.0.[2;]", `bad filter octet ""`},
		{"bl.example=127.0.0.[11..2]", `bad filter range "11..2": 11 is above 2`},
		{"bl.example=127.0.0.[2..]", `bad filter octet ""`},
		{"bl.example=127.0.0.[2]x", `want "." after octet 4`},
		{"bl.example=127.0.0.1000", `bad filter octet "1000"`},
	}
	for _, c := range bad {
		s, err := ParseSite(c.in)
		if err == nil {
			t.Errorf("ParseSite(%q) = %q, want error %q", c.in, s, c.err)
			continue
		}
		if !strings.Contains(err.Error(), c.err) {
			t.Errorf("ParseSite(%q) error %q, want it to contain %q", c.in, err, c.err)
		}
	}
}

func TestSiteMatch(t *testing.T) {
	cases := []struct {
		site string
		yes  []string
		no   []string
	}{
		{"bl.example", []string{"127.0.0.2", "127.1.2.3", "10.0.0.1"}, nil}, // error codes are set aside before matching
		{"zen.example=127.0.0.[2..11]", []string{"127.0.0.2", "127.0.0.4", "127.0.0.11"},
			[]string{"127.0.0.1", "127.0.0.12", "127.0.1.4", "127.255.255.254", "::1"}},
		{"wl.example=127.0.[0..255].[1..3]", []string{"127.0.10.1", "127.0.0.3", "127.0.255.2"},
			[]string{"127.0.10.0", "127.0.10.4", "127.1.10.1"}},
		{"ms.example=127.0.0.[2;10..14]", []string{"127.0.0.2", "127.0.0.10", "127.0.0.14"},
			[]string{"127.0.0.3", "127.0.0.9", "127.0.0.15"}},
		{"x.example=127.0.0.4", []string{"127.0.0.4"}, []string{"127.0.0.5", "127.0.0.40"}},
	}
	for _, c := range cases {
		s, err := ParseSite(c.site)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range c.yes {
			if !s.Match(netip.MustParseAddr(a)) {
				t.Errorf("%s does not match %s", c.site, a)
			}
		}
		for _, a := range c.no {
			if s.Match(netip.MustParseAddr(a)) {
				t.Errorf("%s matches %s", c.site, a)
			}
		}
	}
}
