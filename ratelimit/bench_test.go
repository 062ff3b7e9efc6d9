package ratelimit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/mxguard/mxguard/internal/redistest"
)

// benchAllow calls Allow from 16 goroutines per CPU over 10,000 client
// keys, as concurrent sessions would.
func benchAllow(b *testing.B, l Limiter) {
	lim := mustParse(b, "100 / 1m")
	var n atomic.Int64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Allow(context.Background(), "conn:"+strconv.FormatInt(n.Add(1)%10_000, 10), lim, 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkAllow(b *testing.B) {
	b.Run("local", func(b *testing.B) { benchAllow(b, NewLocal(LocalOptions{})) })
	b.Run("redis", func(b *testing.B) {
		srv := redistest.Start(b)
		benchAllow(b, NewRedis(hostB(b, srv.Addr)))
	})
}
