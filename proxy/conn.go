package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/pipeline"
	"github.com/mxguard/mxguard/proxy/backend"
)

// conn is one client connection, and everything mxguard knows about it. It
// is three things at once: the socket go-smtp reads and writes (a net.Conn
// whose wire layer judges command lines before go-smtp parses them and
// watches the replies go-smtp writes), the go-smtp Session of the
// connection, and its record for the logs.
//
// One goroutine owns it: the accepting one during the greeting, then
// go-smtp's for the dialogue. Other goroutines only touch the socket's
// deadlines (the greeting's early end, session_timeout, shutdown) and the
// atomics below.
type conn struct {
	net.Conn // the client's TCP socket (behind any PROXY header)
	srv      *Server
	rt       *Runtime // the configuration this connection started under
	pipe     *pipeline.Session
	id       string
	client   netip.AddrPort
	local    netip.AddrPort
	start    time.Time
	// ctx bounds the checks' work and the backend's for the whole
	// connection: it ends when the connection does (closed, interrupted).
	// Each check bounds its own look-ups besides (dns.timeout,
	// spf.timeout, …). Made at first use (context), under ctxMu.
	ctxMu  sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc

	// The wire, made when the connection first needs it (ensureWire):
	// one waiting in the greeting, the memory of a flood, does without.
	*wire
	smtp *smtp.Conn // go-smtp's side of it, from its first HELO on

	// The transaction toward the backend.
	be       *backend.Conn // opened at the first relayed transaction, kept for the next
	usedPool bool          // it took a prepared backend connection (to be replaced when it ends)
	from     string
	mail     *smtp.MailOptions
	// held: MAIL was accepted without telling the backend (a refusal is
	// pending); open: the backend has a transaction open.
	held, open   bool
	ended        bool // under ctxMu: the context ended before it was made
	bannerParked bool // parked after the banner: counted in the Server's bannerWG

	// For the session record.
	accepted, rcpts int
	refusals        []checks.Name // the check (or limit) behind each refusal
	lastReply       string
	hangup          string          // the stage in which the client hung up, if it did
	would           map[string]bool // "would refuse" records already written

	timer    *time.Timer // session_timeout
	timedOut atomic.Bool
	cut      atomic.Bool // interrupted: the owner hangs up without a word
	waiting  atomic.Bool // in the greeting wait: endGreeting may cut it short
	// For shedding under load: when the client last sent a command (unix
	// nanoseconds), whether it began a transaction, and whether it is
	// being shed.
	active      atomic.Int64
	mailStarted atomic.Bool
	shedding    atomic.Bool

	// The junk and error limits' counts.
	junk, errors, unknown int

	park       parking   // waiting for the client without a goroutine (park.go)
	bannerOnce sync.Once // bannerTaken

	closeOnce sync.Once
}

// newConn wraps an accepted connection.
func (s *Server) newConn(nc net.Conn, rt *Runtime) *conn {
	c := &conn{
		Conn:   nc,
		srv:    s,
		rt:     rt,
		id:     newID(),
		client: addrPort(nc.RemoteAddr()),
		local:  addrPort(nc.LocalAddr()),
		start:  time.Now(),
	}
	c.park.index = -1
	c.active.Store(c.start.UnixNano())
	return c
}

// context returns the connection's context, made at first use: one that
// waits (a flood) does without.
func (c *conn) context() context.Context {
	c.ctxMu.Lock()
	defer c.ctxMu.Unlock()
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithCancel(context.Background())
		if c.ended {
			c.cancel()
		}
	}
	return c.ctx
}

// endContext cancels the connection's context, or the one it will get.
// Safe from any goroutine.
func (c *conn) endContext() {
	c.ctxMu.Lock()
	defer c.ctxMu.Unlock()
	c.ended = true
	if c.cancel != nil {
		c.cancel()
	}
}

// armSessionTimer starts session_timeout's timer, on the owning goroutine,
// when the connection goes to a goroutine of its own for good (go-smtp's,
// or a wait without the poller): while it is parked, the poller keeps
// that deadline too (sessionDeadline), and one that parks costs no timer.
func (c *conn) armSessionTimer() {
	if c.timer != nil {
		return
	}
	d := time.Until(c.sessionDeadline())
	if d <= 0 {
		c.timedOut.Store(true)
		c.interrupt()
		d = 0
	}
	c.timer = time.AfterFunc(d, func() {
		c.timedOut.Store(true)
		c.interrupt()
	})
}

// sessionDeadline is when session_timeout ends the connection.
func (c *conn) sessionDeadline() time.Time {
	return c.start.Add(c.rt.Cfg.Limits.SessionTimeout.D())
}

// ensureWire makes the wire, on the owning goroutine, before anything uses
// it: the end of the greeting wait, the banner, a last reply.
func (c *conn) ensureWire() {
	if c.wire == nil {
		c.wire = &wire{}
		c.wire.init(c)
	}
}

// Read is go-smtp's input: command lines judged, the message passed on.
func (c *conn) Read(p []byte) (int, error) { return c.wire.read(p) }

// Write is go-smtp's output: held back and sent when go-smtp next needs
// input (Postfix's rule: flush before reading), so the replies to
// pipelined commands, or the lines of an EHLO reply, take one write.
func (c *conn) Write(p []byte) (int, error) { return c.wire.write(p) }

// Close ends the connection once, whoever ends it, and writes its record.
// It runs on the owning goroutine: go-smtp's when it gives up the
// connection, or the greeting's.
func (c *conn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		if c.wire != nil {
			c.flush() // a last reply (221, 421) before hanging up
			c.closed = true
		}
		err = c.Conn.Close()
		if c.wire != nil && c.tlsConn != nil {
			c.tlsConn.NetConn().Close()
		}
		c.endContext()
		c.srv.closed(c)
	})
	return err
}

// SetReadDeadline is go-smtp's deadline for the next command: under stress
// the stress command timeout shortens it.
func (c *conn) SetReadDeadline(t time.Time) error {
	if c.srv.Stressed() && !t.IsZero() {
		if short := time.Now().Add(c.srv.limitsNow(c.rt.Cfg).commandTimeout); short.Before(t) {
			t = short
		}
	}
	return c.Conn.SetReadDeadline(t)
}

// interrupt makes the owner give up the connection: its blocked read or
// write fails at once, and it closes. Safe from any goroutine.
func (c *conn) interrupt() {
	c.cut.Store(true)
	c.Conn.SetDeadline(time.Now())
	c.endContext()  // a check waiting on something gives up too
	c.wake(wokeCut) // a parked connection resumes, and finds the deadline passed
}

// dropWith sends a last reply and hangs up.
func (c *conn) dropWith(reply string) {
	c.ensureWire()
	c.Conn.SetWriteDeadline(time.Now().Add(c.rt.Cfg.Limits.WriteTimeout.D()))
	c.sendOwn(reply)
	c.Close()
}

// connOf finds our connection under what go-smtp holds.
func connOf(nc net.Conn) *conn {
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	c, _ := nc.(*conn)
	return c
}

// isTimeout reports a read that hit its deadline.
func deadlineExceeded(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
