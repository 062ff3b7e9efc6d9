package greylist

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
	"github.com/mxguard/mxguard/store"
)

// BenchmarkCheck greylists 10,000 triplets from 16 goroutines per CPU:
// after the first round each triplet is retried after the delay, so most
// calls are a Get of the auto-allow counter and an Update of the triplet.
func BenchmarkCheck(b *testing.B) {
	for _, tc := range []struct {
		name string
		open func(b *testing.B) store.Store
	}{
		{"memory", func(b *testing.B) store.Store { return store.NewMemory(nil) }},
		{"bolt", func(b *testing.B) store.Store {
			s, err := store.OpenBolt(filepath.Join(b.TempDir(), "state.db"), store.BoltOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
		{"redis", func(b *testing.B) store.Store {
			srv := redistest.Start(b)
			s, err := store.OpenRedis(store.RedisOptions{Addr: srv.Addr, ReadTimeout: time.Second, WriteTimeout: time.Second,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			g, err := New(tc.open(b), DefaultConfig())
			if err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			b.SetParallelism(16)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					j := i % 10_000
					client := netip.AddrFrom4([4]byte{198, 51, byte(j / 250), byte(j % 250)})
					now := t0.Add(time.Duration(i/10_000) * 10 * time.Minute)
					if _, err := g.Check(context.Background(), client, "sender"+strconv.FormatInt(j%97, 10)+"@example.org", "rcpt@example.net", now); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
