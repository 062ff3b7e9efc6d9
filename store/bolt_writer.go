package store

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// boltReq is one write waiting for the writer goroutine.
type boltReq struct {
	fn   func(b *bolt.Bucket) error
	err  error
	done chan struct{}
}

// write runs fn in a write transaction, together with whatever other
// writes are queued, and waits for the commit. An error from fn fails this
// request only (fn must not have written before failing); a failed commit
// fails every request of the transaction. If ctx ends first, or
// WriteTimeout passes, write returns, but the request may still be
// committed.
func (s *Bolt) write(ctx context.Context, fn func(b *bolt.Bucket) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.WriteTimeout)
	defer cancel()
	r := &boltReq{fn: fn, done: make(chan struct{})}
	select {
	case s.reqs <- r:
	case <-s.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		// The writer has stopped; it may have served r just before.
		select {
		case <-r.done:
			return r.err
		default:
			return ErrClosed
		}
	}
}

// writer commits queued requests in batches until Close, then serves what
// is still queued.
func (s *Bolt) writer() {
	batch := make([]*boltReq, 0, boltMaxBatch)
	for {
		select {
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		case <-s.quit:
			for {
				select {
				case r := <-s.reqs:
					s.commit([]*boltReq{r})
				default:
					return
				}
			}
		}
	more:
		for len(batch) < boltMaxBatch {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		s.commit(batch)
		clear(batch)
	}
}

// commit runs the requests' functions in one transaction and reports to
// each.
func (s *Bolt) commit(batch []*boltReq) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV)
		for _, r := range batch {
			r.err = runReq(r, b)
		}
		return nil
	})
	s.commits.Add(1)
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
	for _, r := range batch {
		if err != nil {
			r.err = fmt.Errorf("state file %s: commit: %w", s.path, err)
		}
		close(r.done)
	}
}

// runReq runs one request's function, turning a panic (in a caller's
// UpdateFunc) into its error rather than the writer's death.
func runReq(r *boltReq, b *bolt.Bucket) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: panic in update: %v", p)
		}
	}()
	return r.fn(b)
}
