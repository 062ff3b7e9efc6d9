package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func mustParse(t testing.TB, s string) Limit {
	t.Helper()
	l, err := ParseLimit(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestLocalBucket walks one bucket through time.
func TestLocalBucket(t *testing.T) {
	type step struct {
		advance time.Duration
		n       int
		want    Result
	}
	for _, tc := range []struct {
		name  string
		limit string
		steps []step
	}{
		{"burst then refill", "6 / 1m", []step{
			{0, 1, Result{true, 5, 0}},
			{0, 5, Result{true, 0, 0}},
			{0, 1, Result{false, 0, 10 * time.Second}}, // one token per 10s
			{4 * time.Second, 1, Result{false, 0, 6 * time.Second}},
			{6 * time.Second, 1, Result{true, 0, 0}},
			{time.Hour, 0, Result{true, 6, 0}}, // full again, and no more than full
			{0, 6, Result{true, 0, 0}},
		}},
		{"bigger burst", "10 / 1m, burst 30", []step{
			{0, 30, Result{true, 0, 0}},
			{0, 1, Result{false, 0, 6 * time.Second}},
			{time.Minute, 11, Result{false, 10, 6 * time.Second}},
			{0, 10, Result{true, 0, 0}},
		}},
		{"more than the burst never passes", "5 / 1s", []step{
			{0, 6, Result{false, 5, 0}},
			{time.Hour, 6, Result{false, 5, 0}},
			{0, 5, Result{true, 0, 0}},
		}},
		{"peek takes nothing", "2 / 1h", []step{
			{0, 0, Result{true, 2, 0}},
			{0, 2, Result{true, 0, 0}},
			{0, 0, Result{false, 0, 0}},
			{30 * time.Minute, 0, Result{true, 1, 0}},
			{0, 1, Result{true, 0, 0}},
		}},
		{"slow rate", "1 / 1d", []step{
			{0, 1, Result{true, 0, 0}},
			{12 * time.Hour, 1, Result{false, 0, 12 * time.Hour}},
			{12 * time.Hour, 1, Result{true, 0, 0}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeClock()
			l := NewLocal(LocalOptions{Now: c.Now})
			lim := mustParse(t, tc.limit)
			for i, s := range tc.steps {
				c.Advance(s.advance)
				got, err := l.Allow(context.Background(), "k", lim, s.n)
				if err != nil {
					t.Fatal(err)
				}
				if got != s.want {
					t.Fatalf("step %d (+%v, n=%d): %+v, want %+v", i, s.advance, s.n, got, s.want)
				}
			}
		})
	}
}

func TestLocalKeysApart(t *testing.T) {
	c := newFakeClock()
	l := NewLocal(LocalOptions{Now: c.Now})
	lim := mustParse(t, "1 / 1h")
	for _, k := range []string{"conn:192.0.2.1", "conn:192.0.2.2", "msg:192.0.2.1"} {
		if r, _ := l.Allow(context.Background(), k, lim, 1); !r.Allowed {
			t.Errorf("%s: first event refused", k)
		}
	}
	if r, _ := l.Allow(context.Background(), "conn:192.0.2.1", lim, 1); r.Allowed {
		t.Error("second event allowed")
	}
}

// TestLocalReload: a lower limit applies at once to existing buckets.
func TestLocalReload(t *testing.T) {
	c := newFakeClock()
	l := NewLocal(LocalOptions{Now: c.Now})
	l.Allow(context.Background(), "k", mustParse(t, "100 / 1m"), 10) // 90 left
	r, _ := l.Allow(context.Background(), "k", mustParse(t, "5 / 1m"), 0)
	if r.Remaining != 5 {
		t.Errorf("after lowering the burst to 5: %+v", r)
	}
}

func TestLocalConcurrent(t *testing.T) {
	c := newFakeClock() // frozen: no refill during the test
	l := NewLocal(LocalOptions{Now: c.Now})
	lim := mustParse(t, "50 / 1h")
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if r, _ := l.Allow(context.Background(), "k", lim, 1); r.Allowed {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := allowed.Load(); n != 50 {
		t.Fatalf("%d allowed, want 50", n)
	}
}

// TestLocalBounded: the limiter holds at most MaxKeys buckets; full ones
// are forgotten first, so a client in the middle of its burst keeps its
// count.
func TestLocalBounded(t *testing.T) {
	c := newFakeClock()
	const max = 64 * 20
	l := NewLocal(LocalOptions{Now: c.Now, MaxKeys: max})
	lim := mustParse(t, "10 / 1m")
	slow := mustParse(t, "10 / 1d")
	ctx := context.Background()
	l.Allow(ctx, "busy", slow, 10) // empty, and refilling for a day
	for i := range 10 * max {
		l.Allow(ctx, fmt.Sprintf("client:%d", i), lim, 1)
		c.Advance(20 * time.Millisecond) // each of these is full again after 6s
	}
	if n := l.Len(); n > max {
		t.Errorf("%d buckets held, bound %d", n, max)
	}
	if r, _ := l.Allow(ctx, "busy", slow, 0); r.Remaining != 0 {
		t.Errorf("busy's bucket was forgotten: %+v", r)
	}

	// A bucket that was never drained is not even stored.
	l2 := NewLocal(LocalOptions{Now: c.Now})
	l2.Allow(ctx, "k", lim, 0)
	if l2.Len() != 0 {
		t.Errorf("a peek stored a bucket")
	}
}

func TestLocalBadLimit(t *testing.T) {
	l := NewLocal(LocalOptions{})
	r, err := l.Allow(context.Background(), "k", Limit{}, 1)
	if err == nil || !r.Allowed {
		t.Errorf("zero Limit: %+v, %v; want allowed with an error", r, err)
	}
}
