package resolver

import "context"

// call is one upstream question in flight, shared by every caller
// that asks the same thing meanwhile.
type call struct {
	done    chan struct{} // closed when e and err are set
	e       *entry
	err     error
	waiters int                // callers still waiting; guarded by Resolver.mu
	cancel  context.CancelFunc // stops the query when no one waits any more
}

// shared resolves k once for all concurrent callers. The query runs in
// its own goroutine with a context detached from any one caller, so a
// caller that gives up returns at once without failing the others;
// only when every caller has gone is the query cancelled.
func (r *Resolver) shared(ctx context.Context, k key) (*entry, error) {
	r.mu.Lock()
	c, ok := r.flight[k]
	if !ok {
		// A query that just finished cached its answer before leaving
		// r.flight, so look again rather than ask a second time.
		if e, ok := r.cached(k); ok {
			r.mu.Unlock()
			return e, nil
		}
		qctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &call{done: make(chan struct{}), cancel: cancel}
		r.flight[k] = c
		go r.run(qctx, k, c)
	}
	c.waiters++
	r.mu.Unlock()

	select {
	case <-c.done:
		return c.e, c.err
	case <-ctx.Done():
		r.mu.Lock()
		c.waiters--
		if c.waiters == 0 {
			c.cancel()
			// Later callers must start afresh, not join a cancelled query.
			if r.flight[k] == c {
				delete(r.flight, k)
			}
		}
		r.mu.Unlock()
		return nil, ctxError("", ctx.Err())
	}
}

func (r *Resolver) run(ctx context.Context, k key, c *call) {
	c.e, c.err = r.resolve(ctx, k) // caches before we leave r.flight
	c.cancel()
	r.mu.Lock()
	if r.flight[k] == c {
		delete(r.flight, k)
	}
	r.mu.Unlock()
	close(c.done)
}
