package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/mxguard/mxguard/proxy/backend"
)

// bePool keeps a few backend connections prepared ahead of need
// (backend.Prepare: connected and greeted, and for XCLIENT our own EHLO
// answered), so that a client's first transaction does not wait for the
// TCP connection and the backend's greeting. A connection is bound to one
// client (backend.Conn.Bind: XCLIENT or the PROXY header, and the client's
// EHLO) and serves that client only: Postfix refuses a second XCLIENT on a
// connection, and a PROXY header comes once.
//
// The pool refills while clients keep coming (two within maxIdle), and
// lets a connection wait at most maxIdle: backends drop idle connections
// (Postfix's smtpd_timeout is 10s under stress), and a server that sees a
// client a minute must not open two backend connections for each. When
// preparing fails (the backend is down), it waits failPause before trying
// again, and clients dial for themselves meanwhile, as without a pool.
type bePool struct {
	opts backend.Options
	size int

	mu       sync.Mutex
	ready    []prepared // oldest first
	lastGet  time.Time  // when a client last asked
	prevGet  time.Time  // the time before that
	failedAt time.Time  // when preparing last failed
	closed   bool

	kick chan struct{} // wakes the refiller (capacity 1)
	done chan struct{} // closed by close
	wg   sync.WaitGroup
}

// prepared is a connection waiting for its client.
type prepared struct {
	c  *backend.Conn
	at time.Time
}

const (
	maxIdle   = 10 * time.Second // a prepared connection waits at most this long
	failPause = time.Second      // after a failure to prepare one
)

func newBEPool(opts backend.Options, size int) *bePool {
	p := &bePool{opts: opts, size: size, kick: make(chan struct{}, 1), done: make(chan struct{})}
	p.wg.Add(1)
	go p.refill()
	return p
}

// get returns a prepared connection for the caller to Bind, or nil when
// none is ready (the caller dials). The pool makes another when the client
// leaves (refill): waking the refiller here would have it compete with the
// client's transaction for the CPU, on the transaction's critical path.
func (p *bePool) get() *backend.Conn {
	if p == nil {
		return nil
	}
	now := time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.prevGet, p.lastGet = p.lastGet, now
	var c *backend.Conn
	// The newest first: the oldest are the likeliest to have been dropped
	// by the backend, and expire.
	for n := len(p.ready); n > 0 && c == nil; n = len(p.ready) {
		r := p.ready[n-1]
		p.ready[n-1] = prepared{}
		p.ready = p.ready[:n-1]
		if now.Sub(r.at) < maxIdle {
			c = r.c
		} else {
			p.quit(r.c)
		}
	}
	empty := c == nil
	p.mu.Unlock()
	if empty {
		p.refillSoon() // clients dial for themselves until it has some
	}
	return c
}

// refillSoon wakes the refiller.
func (p *bePool) refillSoon() {
	if p == nil {
		return
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// wanted says whether clients keep coming: the pool is worth filling.
func (p *bePool) wanted(now time.Time) bool {
	return !p.closed && now.Sub(p.prevGet) < maxIdle && now.Sub(p.failedAt) >= failPause
}

// refill runs until close: it makes prepared connections while they are
// wanted, and lets go of those that waited too long.
func (p *bePool) refill() {
	defer p.wg.Done()
	tick := time.NewTicker(maxIdle / 4)
	defer tick.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-p.done
		cancel()
	}()
	for {
		select {
		case <-p.done:
			return
		case <-p.kick:
		case <-tick.C:
		}
		p.expire()
		for {
			p.mu.Lock()
			need := len(p.ready) < p.size && p.wanted(time.Now())
			p.mu.Unlock()
			if !need {
				break
			}
			dctx, dcancel := context.WithTimeout(ctx, p.opts.DialTimeout+p.opts.CommandTimeout)
			c, err := backend.Prepare(dctx, p.opts)
			dcancel()
			p.mu.Lock()
			if err != nil {
				p.failedAt = time.Now()
				p.mu.Unlock()
				break // clients dial for themselves, and see the error
			}
			if p.closed {
				p.mu.Unlock()
				c.Quit()
				return
			}
			p.ready = append(p.ready, prepared{c, time.Now()})
			p.mu.Unlock()
		}
	}
}

// expire lets go of the connections that waited too long.
func (p *bePool) expire() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for n < len(p.ready) && now.Sub(p.ready[n].at) >= maxIdle {
		p.quit(p.ready[n].c)
		n++
	}
	if n > 0 {
		p.ready = append(p.ready[:0], p.ready[n:]...)
	}
}

// quit ends a prepared connection politely, in the background. Under mu.
func (p *bePool) quit(c *backend.Conn) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		c.Quit()
	}()
}

// close lets go of every prepared connection and stops the refiller; it
// returns when they are gone. Clients still running dial for themselves.
func (p *bePool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	for _, r := range p.ready {
		p.quit(r.c)
	}
	p.ready = nil
	p.mu.Unlock()
	p.wg.Wait()
}
