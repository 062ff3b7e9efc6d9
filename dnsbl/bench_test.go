package dnsbl

import (
	"net/netip"
	"testing"

	"github.com/mxguard/mxguard/resolver"
)

// BenchmarkCheckIPCached is the hot path: a client the resolver has seen,
// three lists, one of them listing it (so its TXT is fetched too).
func BenchmarkCheckIPCached(b *testing.B) {
	cfg := Config{Sites: []string{"zen.test=127.0.0.[2..11]*3", "bl.test*2", "wl.test=127.0.[0..255].[1..3]*-5"}}
	e := setup(b, listZone(b), cfg, resolver.Config{})
	for _, c := range []struct{ name, ip string }{{"listed", "192.0.2.1"}, {"clean", "192.0.2.3"}} {
		ip := netip.MustParseAddr(c.ip)
		e.c.CheckIP(b.Context(), ip) // warm the cache
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.c.CheckIP(b.Context(), ip)
			}
		})
	}
}
