package dnsbl

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// mapped2 is ::ffff:127.0.0.2, the IPv6 test point, reversed.
const mapped2 = "2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."

// rev is the reference: dns.ReverseAddr without its arpa suffix.
func rev(t testing.TB, ip string) string {
	t.Helper()
	r, err := dns.ReverseAddr(ip)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(strings.TrimSuffix(r, "in-addr.arpa."), "ip6.arpa.")
}

func TestAppendReversed(t *testing.T) {
	for _, ip := range []string{
		"192.0.2.1", "1.2.3.4", "0.0.0.0", "255.255.255.255", "10.100.9.200",
		"2001:db8::1", "::1", "2001:db8:85a3::8a2e:370:7334", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	} {
		got := string(appendReversed(nil, netip.MustParseAddr(ip)))
		if want := rev(t, ip); got != want {
			t.Errorf("appendReversed(%s) = %q, want %q", ip, got, want)
		}
	}
	if got := string(appendReversed(nil, netip.MustParseAddr("192.0.2.1"))); got != "1.2.0.192." {
		t.Errorf("IPv4: %q", got)
	}
	// The IPv6 test point keeps its IPv6 form (dns.ReverseAddr would
	// give the IPv4 one).
	if got := string(appendReversed(nil, netip.MustParseAddr("::ffff:127.0.0.2"))); got != mapped2 {
		t.Errorf("::ffff:127.0.0.2: %q", got)
	}
	// RFC 5782 §2.4's example.
	got := string(appendReversed(nil, netip.MustParseAddr("2001:db8:1:2:3:4:567:89ab")))
	if want := "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2."; got != want {
		t.Errorf("IPv6: %q, want %q", got, want)
	}
}

func TestNormalDomain(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"spam.example", "spam.example"},
		{"Spam.Example.", "spam.example"},
		{" mail.spam.example ", "mail.spam.example"},
		{"", ""},
		{"localhost", ""},
		{"[192.0.2.1]", ""},
		{"[IPv6:2001:db8::1]", ""},
		{"192.0.2.1", ""},
		{"2001:db8::1", ""},
		{"bad..example", ""},
		{"bücher.example", ""},
		{"a b.example", ""},
		{strings.Repeat("a", 64) + ".example", ""},
	} {
		if got := normalDomain(c.in); got != c.want {
			t.Errorf("normalDomain(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// A name too long once the zone is added is not asked.
	long := strings.Repeat(strings.Repeat("a", 60)+".", 4) + "example" // 251
	if normalDomain(long) == "" {
		t.Fatal("a 251-byte name is a valid domain")
	}
	if n := queryName(nil, []byte(long+"."), "dbl.example"); n != "" {
		t.Errorf("queryName made %d bytes: %q", len(n), n)
	}
	if n := queryName(nil, []byte("spam.example."), "dbl.example"); n != "spam.example.dbl.example." {
		t.Errorf("queryName = %q", n)
	}
}
