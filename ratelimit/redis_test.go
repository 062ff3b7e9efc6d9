package ratelimit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
	"github.com/mxguard/mxguard/store"
)

// host opens a store on srv as one mxguard instance would.
func host(t *testing.T, addr, prefix string) *store.Redis {
	t.Helper()
	return openHost(t, addr, prefix)
}

func hostB(b *testing.B, addr string) *store.Redis { return openHost(b, addr, "mxguard:bench:") }

func openHost(t testing.TB, addr, prefix string) *store.Redis {
	s, err := store.OpenRedis(store.RedisOptions{
		Addr:          addr,
		Prefix:        prefix,
		ReadTimeout:   time.Second, // the race detector is slow
		RetryInterval: 100 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestRedisShared: two instances sharing one Redis enforce one limit
// together, even when they race.
func TestRedisShared(t *testing.T) {
	srv := redistest.Start(t)
	a := NewRedis(host(t, srv.Addr, "mxguard:site:"))
	b := NewRedis(host(t, srv.Addr, "mxguard:site:"))
	lim := mustParse(t, "40 / 1h")
	ctx := context.Background()

	var allowed, refused atomic.Int64
	var wg sync.WaitGroup
	for _, l := range []*Redis{a, b} {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					r, err := l.Allow(ctx, "conn:192.0.2.1", lim, 1)
					if err != nil {
						t.Error(err)
						return
					}
					if r.Allowed {
						allowed.Add(1)
					} else {
						refused.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	if allowed.Load() != 40 || refused.Load() != 120 {
		t.Fatalf("allowed %d, refused %d; want 40 and 120", allowed.Load(), refused.Load())
	}
	r, err := b.Allow(ctx, "conn:192.0.2.1", lim, 1)
	if err != nil || r.Allowed || r.RetryAfter <= 0 || r.RetryAfter > 90*time.Second {
		t.Errorf("after the burst: %+v, %v; want refused, retry within 90s", r, err)
	}
	// Another site on the same server has its own buckets.
	c := NewRedis(host(t, srv.Addr, "mxguard:other:"))
	if r, _ := c.Allow(ctx, "conn:192.0.2.1", lim, 1); !r.Allowed {
		t.Error("another prefix shares the bucket")
	}
}

// TestRedisBucket: the same arithmetic as Local, in real time.
func TestRedisBucket(t *testing.T) {
	srv := redistest.Start(t)
	s := host(t, srv.Addr, "mxguard:site:")
	l := NewRedis(s)
	ctx := context.Background()
	lim := mustParse(t, "20 / 1s") // a token every 50ms
	if r, err := l.Allow(ctx, "k", lim, 0); err != nil || r != (Result{true, 20, 0}) {
		t.Fatalf("peek at a new bucket: %+v, %v", r, err)
	}
	if n, _ := s.Client().Exists(ctx, "mxguard:site:rl:k").Result(); n != 0 {
		t.Error("a peek stored a bucket")
	}
	if r, _ := l.Allow(ctx, "k", lim, 20); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("taking the burst: %+v", r)
	}
	r, _ := l.Allow(ctx, "k", lim, 5)
	if r.Allowed || r.RetryAfter < 150*time.Millisecond || r.RetryAfter > 250*time.Millisecond {
		t.Fatalf("right after the burst, 5 more: %+v; want refused, retry in ~250ms", r)
	}
	ttl := s.Client().PTTL(ctx, "mxguard:site:rl:k").Val()
	if ttl <= time.Second || ttl > 2*time.Second {
		t.Errorf("bucket's TTL %v, want about the time to refill (1s) plus 1s", ttl)
	}
	time.Sleep(r.RetryAfter + 20*time.Millisecond)
	if r, _ := l.Allow(ctx, "k", lim, 5); !r.Allowed {
		t.Fatalf("after RetryAfter: %+v", r)
	}
	if r, _ := l.Allow(ctx, "k", lim, 21); r.Allowed || r.RetryAfter != 0 {
		t.Errorf("more than the burst: %+v", r)
	}
}

// TestRedisDown: with Redis gone, Allow fails open at once.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	l := NewRedis(host(t, srv.Addr, "mxguard:site:"))
	ctx := context.Background()
	lim := mustParse(t, "1 / 1h")
	l.Allow(ctx, "k", lim, 1)
	srv.Stop()
	for i := range 20 {
		start := time.Now()
		r, err := l.Allow(ctx, "k", lim, 1)
		if !errors.Is(err, store.ErrUnavailable) || !r.Allowed {
			t.Fatalf("call %d with Redis down: %+v, %v; want allowed, ErrUnavailable", i, r, err)
		}
		if took := time.Since(start); took > 1500*time.Millisecond || (i > 0 && took > 50*time.Millisecond) {
			t.Errorf("call %d took %v", i, took)
		}
	}
	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := l.Allow(ctx, "k", lim, 1)
		if err == nil {
			if !r.Allowed { // Redis came back empty
				t.Errorf("after restart: %+v", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not back 5s after Redis: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFallback: with Redis down, the local limiter takes over.
func TestFallback(t *testing.T) {
	srv := redistest.Start(t)
	f := Fallback{Primary: NewRedis(host(t, srv.Addr, "mxguard:site:")), Secondary: NewLocal(LocalOptions{})}
	ctx := context.Background()
	lim := mustParse(t, "3 / 1h")
	for i := range 5 {
		r, err := f.Allow(ctx, "k", lim, 1)
		if err != nil || r.Allowed != (i < 3) {
			t.Fatalf("Redis up, call %d: %+v, %v", i, r, err)
		}
	}
	srv.Stop()
	for i := range 5 {
		r, err := f.Allow(ctx, "k", lim, 1)
		if err != nil || r.Allowed != (i < 3) {
			t.Fatalf("Redis down, call %d: %+v, %v", i, r, err)
		}
	}
}
