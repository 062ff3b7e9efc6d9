package admin

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthz(t *testing.T) {
	tests := []struct {
		name   string
		ready  func(context.Context) error
		status int
		body   string
	}{
		{"no ready func", nil, 200, "ok\n"},
		{"ready", func(context.Context) error { return nil }, 200, "ok\n"},
		{"config not loaded", func(context.Context) error { return errors.New("config not loaded") }, 503, "not ready: config not loaded\n"},
		{"backend down", func(context.Context) error { return errors.New("backend 127.0.0.1:10025: connection refused") }, 503,
			"not ready: backend 127.0.0.1:10025: connection refused\n"},
		{"probe bounded", func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("no deadline")
			}
			return nil
		}, 200, "ok\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serve(t, Options{Ready: tt.ready})
			resp, body := get(t, srv.URL+"/healthz")
			if resp.StatusCode != tt.status || body != tt.body {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.status, tt.body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("content type %q", ct)
			}
		})
	}
}

// TestHealthzCache: a result is reused for the TTL, then probed again;
// requests arriving during a probe wait for it instead of probing too.
func TestHealthzCache(t *testing.T) {
	var calls atomic.Int32
	var fail atomic.Bool
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	h := &health{
		ttl: 2 * time.Second,
		now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		ready: func(context.Context) error {
			calls.Add(1)
			time.Sleep(20 * time.Millisecond)
			if fail.Load() {
				return errors.New("backend down")
			}
			return nil
		},
	}
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	status := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		return rec.Code
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if s := status(); s != 200 {
				t.Errorf("status %d", s)
			}
		})
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("10 polls at once probed %d times", n)
	}
	fail.Store(true)
	advance(time.Second)
	if s := status(); s != 200 || calls.Load() != 1 {
		t.Errorf("within the TTL: status %d, %d probes", s, calls.Load())
	}
	advance(1500 * time.Millisecond)
	if s := status(); s != 503 || calls.Load() != 2 {
		t.Errorf("after the TTL: status %d, %d probes", s, calls.Load())
	}
	fail.Store(false)
	if s := status(); s != 503 {
		t.Errorf("a failure is cached too: status %d", s)
	}
	advance(3 * time.Second)
	if s := status(); s != 200 || calls.Load() != 3 {
		t.Errorf("healed: status %d, %d probes", s, calls.Load())
	}
}
