package rules

import (
	"net/netip"
	"testing"

	"github.com/mxguard/mxguard/checks"
)

// BenchmarkDecide: the decision on a typical accepted session (HELO, SPF,
// DKIM, DMARC passes and a few weights), with and without lists.
func BenchmarkDecide(b *testing.B) {
	results := []checks.Result{res("helo.pass", 0), res("spf.pass", 0), res("dkim.pass", 0), res("dmarc.pass", 0), res("dnsbl.zen.example", 0)}
	for _, tc := range []struct{ name, toml string }{
		{"no lists", ""},
		{"lists", "[[list]]\nname = \"a\"\ntype = \"client\"\naction = \"allow\"\nskip = [\"pregreet\"]\nentries = [\"198.51.100.0/24\"]\n[[list]]\nname = \"b\"\ntype = \"sender\"\naction = \"deny\"\nentries = [\"spam.example\"]\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p, err := Parse("bench.toml", []byte(tc.toml), known)
			if err != nil {
				b.Fatal(err)
			}
			from := "alice@example.org"
			f := Facts{Client: netip.MustParseAddr("192.0.2.1"), HELO: []string{"mail.example.org"}, From: &from, Rcpt: "bob@example.com"}
			b.ReportAllocs()
			for b.Loop() {
				p.Decide(p.MatchLists(f), results)
			}
		})
	}
}
