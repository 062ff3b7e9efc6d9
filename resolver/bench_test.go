package resolver

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkQueryUncached measures a lookup that goes upstream every time:
// the cache is off, the fixture DNS server answers on loopback.
// lookups/s = 1e9 / ns/op.
func BenchmarkQueryUncached(b *testing.B) {
	r, _, _ := setup(b, testZone, Config{CacheSize: -1})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Query(ctx, "www.example.test.", dns.TypeA); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQueryUncachedParallel: the same with concurrent callers, as a
// busy server asks (distinct names, so singleflight does not merge them).
func BenchmarkQueryUncachedParallel(b *testing.B) {
	r, _, _ := setup(b, testZone, Config{CacheSize: -1})
	ctx := context.Background()
	names := []string{"www.example.test.", "mail.example.test.", "example.test.", "nx.example.test."}
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.Query(ctx, names[i%len(names)], dns.TypeA)
			i++
		}
	})
}

// wireAnswer builds the answer an upstream would send for name, through
// the wire format so its records are allocated as real ones are.
func wireAnswer(b *testing.B, name string, listed bool) *dns.Msg {
	q := new(dns.Msg).SetQuestion(name, dns.TypeA)
	m := new(dns.Msg).SetReply(q)
	if listed {
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(127, 0, 0, 2)}}
	} else {
		m.Rcode = dns.RcodeNameError
		soa, _ := dns.NewRR("zen.example.test. 300 IN SOA ns.example.test. h.example.test. 1 3600 600 86400 60")
		m.Ns = []dns.RR{soa}
	}
	wire, err := m.Pack()
	if err != nil {
		b.Fatal(err)
	}
	out := new(dns.Msg)
	if err := out.Unpack(wire); err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkCacheMemory reports the heap used per cached answer with the
// cache holding 100,000 DNSBL-style answers: listed (an A record) and not
// listed (NXDOMAIN, cached from the SOA).
func BenchmarkCacheMemory(b *testing.B) {
	const n = 100000
	for _, listed := range []bool{true, false} {
		b.Run(fmt.Sprintf("listed=%v", listed), func(b *testing.B) {
			for b.Loop() {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				r, err := New(Config{Servers: []string{"127.0.0.1:53"}, CacheSize: n})
				if err != nil {
					b.Fatal(err)
				}
				for i := 0; i < n; i++ {
					name := fmt.Sprintf("%d.%d.%d.10.zen.example.test.", i&255, (i>>8)&255, i>>16)
					k := makeKey(name, dns.TypeA)
					r.cache.Add(k, r.newEntry(k.name, dns.TypeA, wireAnswer(b, name, listed), "127.0.0.1:53"))
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				if r.cache.Len() != n {
					b.Fatalf("cache holds %d", r.cache.Len())
				}
				b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "B/entry")
				runtime.KeepAlive(r)
			}
		})
	}
}
