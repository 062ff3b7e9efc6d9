package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxguard/mxguard/pipeline"
	"github.com/mxguard/mxguard/rules"
)

// clientConn is a client's connection as go-smtp sees it. It carries the
// connection's state (so a verdict survives HELO again, RSET and STARTTLS,
// which go-smtp answers with a fresh Session), and replays the bytes an early
// talker sent during the greeting wait.
type clientConn struct {
	net.Conn
	early []byte // what an early talker sent during the greeting, replayed to go-smtp
	state *connState

	// readTimedOut: a read hit its deadline. Every later read fails at once:
	// go-smtp would otherwise go back to reading commands, and the rest of
	// a message cut off by data_timeout would run as SMTP commands (a
	// smuggling path), or a half-sent command line would be taken whole.
	readTimedOut atomic.Pointer[error]

	// out holds the replies go-smtp wrote and that are not sent yet. They
	// go out together when go-smtp next needs input (Postfix's rule: flush
	// before reading), so the replies to pipelined commands, or the lines of
	// an EHLO reply, take one write instead of one each.
	wmu sync.Mutex
	out []byte

	closeOnce sync.Once
	onClose   func(*clientConn)
}

// maxPending bounds what Write holds back.
const maxPending = 16 << 10

func (c *clientConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.out = append(c.out, p...)
	if len(c.out) >= maxPending {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// flush sends what Write held back.
func (c *clientConn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

func (c *clientConn) flushLocked() error {
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.out)
	if cap(c.out) > maxPending {
		c.out = nil
	} else {
		c.out = c.out[:0]
	}
	return err
}

func (c *clientConn) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	if len(c.early) > 0 {
		n := copy(p, c.early)
		c.early = c.early[n:]
		return n, nil
	}
	if err := c.readTimedOut.Load(); err != nil {
		return 0, *err // the same net.Error: go-smtp answers "421 4.4.2 Idle timeout"
	}
	n, err := c.Conn.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.readTimedOut.Store(&err)
	}
	return n, err
}

func (c *clientConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		c.flush() // a last reply (221, 421) before hanging up
		err = c.Conn.Close()
		if c.onClose != nil {
			c.onClose(c)
		}
	})
	return err
}

// writeAndClose sends a last reply and hangs up, for refusals that drop the
// connection. The reply goes through w: the TLS layer after STARTTLS, or
// nil for the connection itself.
func (c *clientConn) writeAndClose(w net.Conn, reply string, timeout time.Duration) {
	if w == nil {
		w = c // after what is held back
	}
	w.SetWriteDeadline(time.Now().Add(timeout))
	w.Write([]byte(reply + "\r\n"))
	c.Close() // flushes
}

// clientOf finds our connection under what go-smtp holds (a *tls.Conn after
// STARTTLS).
func clientOf(c net.Conn) *clientConn {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	cc, _ := c.(*clientConn)
	return cc
}

// connState is what we know about one client connection, whatever go-smtp
// does with its sessions.
type connState struct {
	id     string
	rt     *Runtime          // the configuration this connection started under
	pipe   *pipeline.Session // the checks' view of it
	client netip.AddrPort
	local  netip.AddrPort
	start  time.Time

	timer    *time.Timer // session_timeout
	timedOut atomic.Bool
	hangup   string // the stage in which the client hung up, if it did (under mu)

	mu  sync.Mutex
	tls bool
	// for the summary line
	accepted, refused int
	rcpts             int
	lastReply         string
	would             map[string]bool // "would refuse" lines already logged
}

func (st *connState) setHangup(stage string) {
	st.mu.Lock()
	st.hangup = stage
	st.mu.Unlock()
}

// smtpError converts a decision's reply into what go-smtp writes back. It
// must be a bare *smtp.SMTPError: go-smtp does not unwrap errors. The
// enhanced code goes into the text, as for the backend's replies
// (replyError): go-smtp would otherwise invent "X.0.0" for a reply without
// one.
func smtpError(r rules.Reply) *smtp.SMTPError {
	text := r.Text
	if r.Enhanced != "" {
		text = r.Enhanced + " " + text
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.NoEnhancedCode, Message: text}
}
