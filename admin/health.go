package admin

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// probeTimeout bounds one Ready call.
const probeTimeout = 5 * time.Second

// health serves /healthz: 200 "ok" when ready, 503 and the reason when
// not. A Ready result is reused for ttl, and concurrent requests wait for
// the one probe in progress rather than start their own.
type health struct {
	ready func(context.Context) error
	ttl   time.Duration
	now   func() time.Time

	mu  sync.Mutex
	at  time.Time // when err was found; zero: never
	err error
}

func (h *health) check() error {
	if h.ready == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.at.IsZero() && h.now().Sub(h.at) < h.ttl {
		return h.err
	}
	// Not the request's context: a client that hangs up must not leave
	// a cancelled probe cached as the answer.
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	h.err = h.ready(ctx)
	h.at = h.now()
	return h.err
}

func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := h.check(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("not ready: " + err.Error() + "\n"))
		return
	}
	w.Write([]byte("ok\n"))
}
