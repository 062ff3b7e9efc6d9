package checks

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	cases := []struct {
		helo, want string
	}{
		// valid names
		{"mail.example.com", ""},
		{"MAIL.Example.COM", ""},
		{"mail.example.com.", ""},
		{"a.b", ""},
		{"mx-1.example.org", ""},
		{"123.example.com", ""},
		{"mail.123example.com", ""},
		{"xn--bcher-kva.example", ""},       // IDN in A-label form
		{"mail.xn--p1ai", ""},               // IDN TLD in A-label form
		{long63 + ".example.com", ""},       // 63 is the limit
		{" mail.example.com ", ""},          // surrounding spaces are the parser's business
		{"1-2-3-4.dynamic.example.net", ""}, // generic, but valid

		// valid address literals
		{"[192.0.2.1]", ""},
		{"[IPv6:2001:db8::1]", ""},
		{"[ipv6:2001:db8::1]", ""},
		{"[IPv6:::ffff:192.0.2.1]", ""},
		{"[IPv6:::1]", ""},

		// empty
		{"", "helo.empty"},
		{"   ", "helo.empty"},

		// not an FQDN
		{"mail", "helo.no_dot"},
		{"WIN-ABC123", "helo.no_dot"},
		{"example", "helo.no_dot"},

		// localhost
		{"localhost", "helo.localhost"},
		{"LOCALHOST", "helo.localhost"},
		{"localhost.localdomain", "helo.localhost"},
		{"localhost.", "helo.localhost"},

		// bare IPs
		{"192.0.2.1", "helo.bare_ip"},
		{"192.0.2.1.", "helo.bare_ip"},
		{"2001:db8::1", "helo.bare_ip"},
		{"::1", "helo.bare_ip"},
		{"IPv6:2001:db8::1", "helo.bare_ip"},
		{"127.0.0.1", "helo.bare_ip"},

		// bad label syntax
		{"mail_server.example.com", "helo.bad_syntax"},
		{"-mail.example.com", "helo.bad_syntax"},
		{"mail-.example.com", "helo.bad_syntax"},
		{"mail..example.com", "helo.bad_syntax"},
		{".example.com", "helo.bad_syntax"},
		{long63 + "a.example.com", "helo.bad_syntax"},
		{strings.Repeat("abcdefghi.", 26) + "com", "helo.bad_syntax"}, // 263 > 253
		{"mail.example.com/x", "helo.bad_syntax"},
		{"mail example.com", "helo.bad_syntax"},
		{"bücher.example", "helo.bad_syntax"}, // U-label
		{"1.2.3.4.5", "helo.bad_syntax"},      // numeric TLD
		{"mail.example.123", "helo.bad_syntax"},
		{"mail.ex\x00ample.com", "helo.bad_syntax"},
		{"mail_server", "helo.bad_syntax"},
		{"user@example.com", "helo.bad_syntax"},

		// malformed literals
		{"[192.0.2.1", "helo.bad_literal"},
		{"[]", "helo.bad_literal"},
		{"[192.0.2]", "helo.bad_literal"},
		{"[192.0.2.256]", "helo.bad_literal"},
		{"[01.2.3.4]", "helo.bad_literal"},
		{"[2001:db8::1]", "helo.bad_literal"}, // IPv6 needs its tag
		{"[IPv6:192.0.2.1]", "helo.bad_literal"},
		{"[IPv6:2001:db8::zz]", "helo.bad_literal"},
		{"[mail.example.com]", "helo.bad_literal"},
		{"[foo:bar]", "helo.bad_literal"},
		{"[IPv6:fe80::1%eth0]", "helo.bad_literal"},
	}
	for _, c := range cases {
		got, reason, _ := Classify(c.helo)
		if got != c.want {
			t.Errorf("Classify(%q) = %q (%s), want %q", c.helo, got, reason, c.want)
		}
		if got != "" && reason == "" {
			t.Errorf("Classify(%q): outcome %s without a reason", c.helo, got)
		}
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
}

func TestHELOFraud(t *testing.T) {
	h := &HELO{
		Hostname:     "mx.example.com",
		LocalDomains: map[string]bool{"example.com": true, "example.net": true},
		OwnIPs: map[netip.Addr]bool{
			netip.MustParseAddr("198.51.100.25"):   true,
			netip.MustParseAddr("2001:db8:25::25"): true,
		},
	}
	v4 := netip.MustParseAddr("192.0.2.10")
	v6 := netip.MustParseAddr("2001:db8:1::10")
	cases := []struct {
		helo   string
		client netip.Addr
		want   string
	}{
		{"mx.example.com", v4, "helo.claims_us"},
		{"MX.EXAMPLE.COM.", v4, "helo.claims_us"},
		{"example.com", v4, "helo.claims_us"},
		{"example.net", v6, "helo.claims_us"},
		{"mail.example.com", v4, "helo.pass"}, // a subdomain is not a claim on us (no resolver here)
		{"[198.51.100.25]", v4, "helo.claims_us"},
		{"[IPv6:2001:db8:25::25]", v6, "helo.claims_us"},
		{"[192.0.2.10]", v4, "helo.pass"},
		{"[192.0.2.11]", v4, "helo.literal_mismatch"},
		{"[IPv6:2001:db8:1::10]", v6, "helo.pass"},
		{"[IPv6:2001:db8:1::11]", v6, "helo.literal_mismatch"},
		{"[192.0.2.10]", netip.MustParseAddr("::ffff:192.0.2.10"), "helo.pass"}, // mapped client
		{"[IPv6:::ffff:192.0.2.10]", v4, "helo.pass"},
		{"[192.0.2.10]", v6, "helo.literal_mismatch"},
		{"192.0.2.10", v4, "helo.bare_ip"}, // syntax comes first, even when true
		{"localhost", v4, "helo.localhost"},
	}
	for _, c := range cases {
		r := h.Check(context.Background(), c.helo, c.client)
		if r.Outcome != c.want {
			t.Errorf("Check(%q from %s) = %s (%s), want %s", c.helo, c.client, r.Outcome, r.Reason, c.want)
		}
		if r.Check != "helo" || r.Reason == "" {
			t.Errorf("Check(%q): incomplete result %+v", c.helo, r)
		}
	}
}

func TestSpoof(t *testing.T) {
	s := &Spoof{LocalDomains: map[string]bool{"example.com": true}}
	cases := []struct {
		from string
		want bool
	}{
		{"alice@example.com", true},
		{"Alice@EXAMPLE.com", true},
		{"alice@example.com.", true},
		{"", false}, // null sender
		{"alice@example.org", false},
		{"alice@sub.example.com", false},
		{"alice@notexample.com", false},
		{"postmaster", false},
		{"\"a@b\"@example.com", true},
	}
	for _, c := range cases {
		r, got := s.Check(c.from)
		if got != c.want {
			t.Errorf("Spoof(%q) = %v, want %v", c.from, got, c.want)
		}
		if got && (r.Outcome != "sender.spoofs_local" || r.Reason == "") {
			t.Errorf("Spoof(%q) = %+v", c.from, r)
		}
	}
}
