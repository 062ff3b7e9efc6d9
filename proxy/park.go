package proxy

import (
	"container/heap"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Parking: a connection waiting for its client to speak — in the greeting
// wait, or after the banner until its first command — holds no goroutine.
// A parked goroutine keeps its stack (8 KB once the connection's setup has
// grown it), and a connection handed to go-smtp its buffers (8 KB) and
// goroutine: most of the memory of an idle connection, and idle
// connections are what a flood is made of. Instead the socket is watched
// by the poller (one epoll instance and goroutine per Server, on Linux:
// park_linux.go), which also keeps the wait's deadline; the connection is
// resumed on a new goroutine when the client sends something or hangs up,
// when the deadline passes, or when it is interrupted (shutdown,
// session_timeout, shedding, the greeting cut short). Where the poller is
// not available (other systems, a connection behind a PROXY header, whose
// reader may hold bytes already read), it resumes at once and waits on its
// goroutine, as connections did before.

// parking is a conn's parked state.
type parking struct {
	state   atomic.Int32 // parkNone, parkParked, parkWoken
	pending atomic.Bool  // woken before it was parked: it resumes at once
	after   parkStage    // what it waits in: what resumes it
	// Under the poller's lock:
	deadline int64 // monoNow's clock
	index    int32 // in the poller's deadlines, -1 when not there
	fd       int32 // the socket, while registered with the poller
	gen      int32 // tells this park's events from an earlier one's
}

const (
	parkNone int32 = iota
	parkParked
	parkWoken
)

// parkStage is where a connection waits.
type parkStage uint8

const (
	inGreeting       parkStage = iota // greetWait resumes it
	afterBannerStage                  // bannerWait resumes it
)

// wakeReason says why a parked connection resumes.
type wakeReason int

const (
	wokeInput    wakeReason = iota // the client sent something, or hung up
	wokeDeadline                   // the wait's deadline passed
	wokeCut                        // interrupted, or the greeting cut short
	wokeShutdown                   // shutdown: go-smtp takes it as a session
)

// park waits, without a goroutine, until c's client speaks (or hangs up),
// deadline passes, or c is woken; then it resumes on a goroutine of its
// own (counted in s.wg). Only c's owner parks it, and only when it is not
// using the socket.
func (s *Server) park(c *conn, stage parkStage, deadline time.Time) {
	s.wg.Add(1)
	p := &c.park
	p.after = stage
	fd, ok := parkable(c.Conn)
	pl := s.poller()
	if !ok || pl == nil {
		p.state.Store(parkWoken)
		c.armSessionTimer()
		go s.resume(c, wokeInput) // it waits on its own goroutine
		return
	}
	if sd := c.sessionDeadline(); sd.Before(deadline) {
		deadline = sd // session_timeout, kept here while it waits
	}
	pl.mu.Lock()
	p.gen++
	p.fd = int32(fd)
	p.deadline = mono(deadline)
	p.state.Store(parkParked)
	err := pl.addLocked(c)
	if err == nil {
		heap.Push(&pl.deadlines, c)
		pl.kickLocked(p.deadline)
	}
	pl.mu.Unlock()
	if err != nil {
		// The poller would not take it: it waits on a goroutine of its
		// own, not on one of the few that resume woken connections.
		if p.state.CompareAndSwap(parkParked, parkWoken) {
			c.armSessionTimer()
			go s.resume(c, wokeInput)
		}
		return
	}
	if p.pending.Load() || c.cut.Load() {
		c.wake(wokeCut) // woken before it was parked: it finds why at once
	}
}

// resume runs a woken connection's wait to its end.
func (s *Server) resume(c *conn, why wakeReason) {
	defer s.wg.Done()
	if !c.timedOut.Load() && !time.Now().Before(c.sessionDeadline()) {
		c.timedOut.Store(true) // session_timeout came while it waited
		c.interrupt()
	}
	switch c.park.after {
	case inGreeting:
		s.greetWait(c)
	case afterBannerStage:
		s.bannerWait(c, why)
	}
}

// wake resumes c if it is parked, or has it resume at once if it is about
// to be; safe from any goroutine, any number of times.
func (c *conn) wake(why wakeReason) {
	p := &c.park
	p.pending.Store(true)
	if !p.state.CompareAndSwap(parkParked, parkWoken) {
		return
	}
	pl := c.srv.poll
	pl.mu.Lock()
	if p.index >= 0 {
		heap.Remove(&pl.deadlines, int(p.index))
	}
	pl.removeLocked(c)
	pl.mu.Unlock()
	c.srv.resumeSoon(c, why)
}

// maxResuming bounds the goroutines resuming woken connections at once.
// Connections opened together wake together (their greeting deadlines
// pass together): a goroutine each would grow a stack each, all at once,
// and the memory stays taken after the storm. Resuming is short (up to
// the next park, or go-smtp), so a few hundred keep both CPUs busy.
const maxResuming = 256

type resumption struct {
	c   *conn
	why wakeReason
}

// resumeSoon resumes c on a goroutine, or queues it for one that is
// about to be free when maxResuming are busy.
func (s *Server) resumeSoon(c *conn, why wakeReason) {
	s.resumeMu.Lock()
	if s.resuming < maxResuming {
		s.resuming++
		s.resumeMu.Unlock()
		go s.resumeLoop(resumption{c, why})
		return
	}
	s.resumeQ = append(s.resumeQ, resumption{c, why})
	s.resumeMu.Unlock()
}

// resumeLoop resumes r, then what waits in the queue.
func (s *Server) resumeLoop(r resumption) {
	for {
		s.resume(r.c, r.why)
		s.resumeMu.Lock()
		if len(s.resumeQ) == 0 {
			s.resuming--
			if cap(s.resumeQ) > 4*maxResuming {
				s.resumeQ = nil // after a storm
			}
			s.resumeMu.Unlock()
			return
		}
		r = s.resumeQ[0]
		s.resumeQ[0] = resumption{}
		s.resumeQ = s.resumeQ[1:]
		s.resumeMu.Unlock()
	}
}

// rearm moves the deadline of a parked connection to t if that is sooner
// (stress mode shortens the wait of connections already waiting).
func (c *conn) rearm(t time.Time) {
	p := &c.park
	pl := c.srv.poll
	if p.state.Load() != parkParked || pl == nil {
		return
	}
	pl.mu.Lock()
	if d := mono(t); p.index >= 0 && d < p.deadline {
		p.deadline = d
		heap.Fix(&pl.deadlines, int(p.index))
		pl.kickLocked(d)
	}
	pl.mu.Unlock()
}

// parkable returns the socket of a plain TCP connection.
func parkable(nc net.Conn) (int, bool) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd := -1
	if rc.Control(func(f uintptr) { fd = int(f) }) != nil || fd < 0 {
		return 0, false
	}
	return fd, true
}

// poller returns the Server's poller, started at first use; nil where
// there is none.
func (s *Server) poller() *poller {
	s.pollOnce.Do(func() {
		p, err := newPoller()
		if err != nil {
			if err != errNoPoller {
				s.log.Warn("no poller for idle connections: each waits on a goroutine", "err", err.Error())
			}
			return
		}
		s.poll = p
	})
	return s.poll
}

// pollerBase is the part of the poller every system shares: the parked
// connections by socket, and by deadline.
type pollerBase struct {
	mu        sync.Mutex
	parked    map[int32]*conn
	deadlines deadlineHeap
	waitUntil int64 // the deadline the poller sleeps until (mono); 0: none
}

// due takes the connections whose deadline has passed, and says how long
// the poller may sleep (-1: until something happens).
func (p *pollerBase) due(out []*conn) ([]*conn, time.Duration) {
	now := monoNow()
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.deadlines) > 0 && p.deadlines[0].park.deadline <= now {
		out = append(out, p.deadlines[0])
		heap.Pop(&p.deadlines)
	}
	if len(p.deadlines) == 0 {
		p.waitUntil = 0
		return out, -1
	}
	p.waitUntil = p.deadlines[0].park.deadline
	return out, time.Duration(p.waitUntil - now)
}

// The poller's clock: nanoseconds on the monotonic clock since the
// process began (8 bytes a parked connection, where a time.Time takes 24).
var monoStart = time.Now()

func monoNow() int64         { return int64(time.Since(monoStart)) }
func mono(t time.Time) int64 { return int64(t.Sub(monoStart)) }

// deadlineHeap orders parked connections by deadline.
type deadlineHeap []*conn

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].park.deadline < h[j].park.deadline }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].park.index, h[j].park.index = int32(i), int32(j)
}
func (h *deadlineHeap) Push(x any) {
	c := x.(*conn)
	c.park.index = int32(len(*h))
	*h = append(*h, c)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.park.index = -1
	return c
}
