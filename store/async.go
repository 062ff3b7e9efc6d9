package store

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Async writes to a Store in the background, so that a session never waits
// for a write. Writes queue up (at most the queue's size; beyond that they
// are dropped and counted) and one goroutine applies them in order, in
// batches: consecutive Set, Delete and Incr go to the store's Apply (one
// pipeline on Redis, one transaction on Bolt), an Update on its own.
//
// A write that fails (the store is down) is counted and forgotten: what
// Async carries is state worth keeping, not state worth blocking for.
type Async struct {
	s       Store
	q       chan asyncOp
	timeout time.Duration
	log     *slog.Logger

	quit   chan struct{}
	done   chan struct{}
	closed atomic.Bool
	once   sync.Once

	applied, dropped, failed atomic.Uint64
}

type asyncOp struct {
	op     Op
	update UpdateFunc    // an Update when non-nil
	flush  chan struct{} // a Flush marker when non-nil
}

// AsyncStats counts an Async's writes since it started.
type AsyncStats struct {
	Queued  int    // waiting now
	Applied uint64 // written to the store
	Dropped uint64 // not queued: the queue was full
	Failed  uint64 // queued, but the store refused them
}

const (
	asyncMaxBatch = 256
	// asyncLinger is how long a batch for a batchWriter waits to fill.
	asyncLinger = 25 * time.Millisecond
	// asyncTimeout bounds one batch's write; the stores have shorter
	// timeouts of their own, this is a backstop.
	asyncTimeout = 5 * time.Second
)

// NewAsync starts a writer for s with room for queue writes (default 4096
// if queue <= 0). Close it before closing s.
func NewAsync(s Store, queue int) *Async {
	if queue <= 0 {
		queue = 4096
	}
	a := &Async{
		s:       s,
		q:       make(chan asyncOp, queue),
		timeout: asyncTimeout,
		log:     slog.Default(),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go a.run()
	return a
}

// enqueue queues op, or counts it dropped. It reports whether op was
// queued.
func (a *Async) enqueue(op asyncOp) bool {
	if a.closed.Load() {
		a.dropped.Add(1)
		return false
	}
	select {
	case a.q <- op:
		return true
	default:
		a.dropped.Add(1)
		return false
	}
}

// Set queues a Store.Set. value is copied.
func (a *Async) Set(key string, value []byte, ttl time.Duration) bool {
	return a.enqueue(asyncOp{op: Op{Kind: OpSet, Key: key, Value: append([]byte{}, value...), TTL: ttl}})
}

// Delete queues a Store.Delete of each key.
func (a *Async) Delete(keys ...string) bool {
	ok := true
	for _, k := range keys {
		ok = a.enqueue(asyncOp{op: Op{Kind: OpDelete, Key: k}}) && ok
	}
	return ok
}

// Incr queues a Store.Incr; its result is discarded.
func (a *Async) Incr(key string, by int64, ttl time.Duration) bool {
	return a.enqueue(asyncOp{op: Op{Kind: OpIncr, Key: key, By: by, TTL: ttl}})
}

// Update queues a Store.Update; its result is discarded. fn runs on the
// writer's goroutine, later.
func (a *Async) Update(key string, fn UpdateFunc) bool {
	return a.enqueue(asyncOp{op: Op{Key: key}, update: fn})
}

// Stats returns the writer's counts.
func (a *Async) Stats() AsyncStats {
	return AsyncStats{
		Queued:  len(a.q),
		Applied: a.applied.Load(),
		Dropped: a.dropped.Load(),
		Failed:  a.failed.Load(),
	}
}

// Flush waits until every write queued before it has been tried.
func (a *Async) Flush(ctx context.Context) error {
	if a.closed.Load() {
		return ErrClosed
	}
	ch := make(chan struct{})
	select {
	case a.q <- asyncOp{flush: ch}:
	case <-ctx.Done():
		return ctx.Err()
	case <-a.done:
		return ErrClosed
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-a.done:
		return ErrClosed
	}
}

// Close stops taking writes, tries those queued until ctx ends, and stops
// the writer. It does not close the store.
func (a *Async) Close(ctx context.Context) error {
	a.once.Do(func() {
		a.closed.Store(true)
		close(a.quit)
	})
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *Async) run() {
	defer close(a.done)
	batch := make([]asyncOp, 0, asyncMaxBatch)
	// On a store that pays for each transaction (Bolt: an fsync), a batch
	// waits up to asyncLinger for company: under load a few commits a
	// second instead of one per connection. A Flush or Close cuts it short.
	var linger *time.Timer
	if _, ok := a.s.(batchWriter); ok {
		linger = time.NewTimer(time.Hour)
		linger.Stop() // armed for each batch, stopped after it
	}
	for {
		select {
		case op := <-a.q:
			batch = append(batch[:0], op)
		case <-a.quit:
			// Serve what is queued; Close's caller decides how long
			// to wait for it.
			for {
				select {
				case op := <-a.q:
					a.apply([]asyncOp{op})
				default:
					return
				}
			}
		}
		var wait <-chan time.Time
		if linger != nil {
			linger.Reset(asyncLinger)
			wait = linger.C
		}
	more:
		for len(batch) < asyncMaxBatch && batch[len(batch)-1].flush == nil {
			if wait == nil { // no linger: what is queued already
				select {
				case op := <-a.q:
					batch = append(batch, op)
					continue
				default:
					break more
				}
			}
			select {
			case op := <-a.q:
				batch = append(batch, op)
			case <-wait:
				break more
			case <-a.quit:
				break more
			}
		}
		if linger != nil {
			linger.Stop()
		}
		a.apply(batch)
		clear(batch)
	}
}

// batchWriter is a store that can take a whole batch of Async's writes,
// updates included, in one go (Bolt: one transaction, one fsync). It
// reports how many of them failed.
type batchWriter interface {
	writeBatch(ctx context.Context, batch []asyncOp) (failed int, err error)
}

// apply writes a batch: on a batchWriter each run between flush markers at
// once; elsewhere runs of plain ops through Apply and updates one by one.
// Flush markers are answered in their turn.
func (a *Async) apply(batch []asyncOp) {
	if bw, ok := a.s.(batchWriter); ok {
		a.applyBatches(bw, batch)
		return
	}
	var ops []Op
	flushOps := func() {
		if len(ops) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		err := a.s.Apply(ctx, ops)
		cancel()
		a.count(len(ops), err)
		ops = ops[:0]
	}
	for _, o := range batch {
		switch {
		case o.flush != nil:
			flushOps()
			close(o.flush)
		case o.update != nil:
			flushOps()
			ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
			_, err := a.s.Update(ctx, o.op.Key, o.update)
			cancel()
			a.count(1, err)
		default:
			ops = append(ops, o.op)
		}
	}
	flushOps()
}

func (a *Async) applyBatches(bw batchWriter, batch []asyncOp) {
	write := func(run []asyncOp) {
		if len(run) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		failed, err := bw.writeBatch(ctx, run)
		cancel()
		a.applied.Add(uint64(len(run) - failed))
		a.failed.Add(uint64(failed))
		if failed > 0 {
			a.log.Debug("state store write failed", "writes", failed, "of", len(run), "err", err)
		}
	}
	start := 0
	for i, o := range batch {
		if o.flush != nil {
			write(batch[start:i])
			close(o.flush)
			start = i + 1
		}
	}
	write(batch[start:])
}

func (a *Async) count(n int, err error) {
	if err == nil {
		a.applied.Add(uint64(n))
		return
	}
	a.failed.Add(uint64(n))
	a.log.Debug("state store write failed", "writes", n, "err", err)
}
