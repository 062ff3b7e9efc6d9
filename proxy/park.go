package proxy

import (
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
// park_linux.go) together with a timer for the wait's deadline; the
// connection is resumed on a new goroutine when the client sends something
// or hangs up, when the deadline passes, or when it is interrupted
// (shutdown, session_timeout, shedding, the greeting cut short). Where the
// poller is not available (other systems, a connection behind a PROXY
// header whose reader may hold bytes already read), resume runs at once
// and waits on its goroutine, as connections did before.

// parking is a conn's parked state.
type parking struct {
	state   atomic.Int32 // parkNone, parkParked, parkWoken
	pending atomic.Bool  // woken before it was parked: it resumes at once
	timer   *time.Timer  // the wait's deadline (under the poller's lock)
	resume  func(why wakeReason)
	fd      int32 // the socket, while registered with the poller (under its lock)
	gen     int32 // tells this park's events from an earlier one's (under its lock)
}

const (
	parkNone int32 = iota
	parkParked
	parkWoken
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
// deadline passes, or c is woken; then resume runs on a goroutine of its
// own (counted in s.wg). Only c's owner parks it, and only when it is not
// using the socket.
func (s *Server) park(c *conn, deadline time.Time, resume func(wakeReason)) {
	s.wg.Add(1)
	p := &c.park
	p.resume = func(why wakeReason) {
		defer s.wg.Done()
		resume(why)
	}
	fd, ok := parkable(c.Conn)
	pl := s.poller()
	if !ok || pl == nil {
		p.state.Store(parkWoken)
		go p.resume(wokeInput) // it waits on its own goroutine
		return
	}
	pl.mu.Lock()
	p.gen++
	p.fd = int32(fd)
	p.state.Store(parkParked)
	p.timer = time.AfterFunc(time.Until(deadline), func() { c.wake(wokeDeadline) })
	err := pl.addLocked(c)
	pl.mu.Unlock()
	if err != nil || p.pending.Load() || c.cut.Load() {
		c.wake(wokeCut) // resume waits on its goroutine, or finds why it was cut
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
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	pl.removeLocked(c)
	pl.mu.Unlock()
	go p.resume(why)
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
	if p.timer != nil && p.state.Load() == parkParked {
		p.timer.Reset(time.Until(t))
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
// connections by socket.
type pollerBase struct {
	mu     sync.Mutex
	parked map[int32]*conn
}
