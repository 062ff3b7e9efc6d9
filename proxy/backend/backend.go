// Package backend is mxguard's SMTP client toward the backend MTA (Postfix or
// Exim) that mxguard relays each client transaction to, in lockstep.
//
// It is a small, exact client of our own rather than go-smtp's: it tells the
// backend who the real client is (XCLIENT, or a PROXY v1/v2 header), passes
// each MAIL/RCPT parameter only when the backend advertised its extension,
// keeps the backend's replies as they were sent (every line, the enhanced
// code), and streams DATA with dot-stuffing and CRLF line endings: a bare LF
// or bare CR in the message is sent as CRLF, so no byte sequence inside a
// message can end the data early at the backend (SMTP smuggling).
//
// # Errors
//
// Three kinds, so that the caller knows what to tell its own client:
//
//   - *ReplyError: a refusal to pass on. Either the backend answered 4xx/5xx
//     where success was expected (its reply verbatim), or mxguard refused
//     locally before sending anything (Reply.Local is set: an argument that
//     would inject a command, SMTPUTF8 toward a backend without it). The Conn
//     stays usable, except after a 421, which ends the backend's session.
//   - Local programming or configuration errors (bad Options, missing
//     Identity fields): plain errors, nothing was sent.
//   - I/O and protocol errors (refused, reset, EOF, timeout, malformed reply):
//     plain errors wrapping the cause; errors.Is(err, os.ErrDeadlineExceeded)
//     holds for timeouts. The Conn is then unusable: every later call returns
//     an error wrapping ErrUnusable at once.
//
// Methods that return a *Reply return it whenever the backend answered, also
// together with a *ReplyError, so the caller can relay it either way.
//
// A Conn is not safe for concurrent use, except Close, which may be called from
// another goroutine to abort a call in progress.
package backend

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
)

// Default timeouts, from RFC 5321 §4.5.3.2 (connect: ours).
const (
	DefaultDialTimeout    = 10 * time.Second
	DefaultCommandTimeout = 5 * time.Minute
	DefaultDataTimeout    = 10 * time.Minute
)

const (
	quitTimeout   = 5 * time.Second // for QUIT's reply (capped by CommandTimeout)
	maxReplyLines = 100
	maxReplyBytes = 64 << 10
	maxCmdLen     = 512 - 2 // RFC 5321 §4.5.3.1.4, without CRLF; used to split XCLIENT
)

var (
	// ErrUnusable is wrapped by every call on a Conn after an I/O or protocol
	// error, a 421 reply, or Close/Quit.
	ErrUnusable = errors.New("backend: connection unusable")
	// ErrProtocol is wrapped when the backend's reply is malformed, too long,
	// or positive but not the one the protocol step calls for.
	ErrProtocol = errors.New("backend: SMTP protocol violation")
	// ErrNoXCLIENT is returned by Dial with MethodXCLIENT when the backend
	// does not advertise XCLIENT (or not its ADDR attribute) to us.
	ErrNoXCLIENT = errors.New("backend: XCLIENT not offered by the backend (Postfix: smtpd_authorized_xclient_hosts)")
)

// Method is how the backend learns the real client's identity.
type Method int

const (
	MethodNone    Method = iota // the backend sees mxguard as the client
	MethodXCLIENT               // Postfix XCLIENT after our EHLO
	MethodProxyV1               // HAProxy PROXY protocol v1 header (text)
	MethodProxyV2               // HAProxy PROXY protocol v2 header (binary)
)

var methodNames = [...]string{"none", "xclient", "proxy-v1", "proxy-v2"}

// ParseMethod parses a config value: "none", "xclient", "proxy-v1" or
// "proxy-v2" (case-insensitive).
func ParseMethod(s string) (Method, error) {
	for i, n := range methodNames {
		if strings.EqualFold(s, n) {
			return Method(i), nil
		}
	}
	return 0, fmt.Errorf("backend: unknown identity method %q (want none, xclient, proxy-v1 or proxy-v2)", s)
}

func (m Method) String() string {
	if m < 0 || int(m) >= len(methodNames) {
		return fmt.Sprintf("Method(%d)", int(m))
	}
	return methodNames[m]
}

// MarshalText implements encoding.TextMarshaler.
func (m Method) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (for the config file).
func (m *Method) UnmarshalText(b []byte) error {
	v, err := ParseMethod(string(b))
	if err == nil {
		*m = v
	}
	return err
}

// Identity is the real client, as the backend must learn it.
type Identity struct {
	Addr net.IP // client address; nil → XCLIENT ADDR=[UNAVAILABLE] (required for PROXY)
	Port int    // client port; 0 → XCLIENT PORT=[UNAVAILABLE]
	// Name is the verified reverse-DNS name: "" = unknown (XCLIENT
	// NAME=[UNAVAILABLE]); "[TEMPUNAVAIL]" is passed on as is.
	Name string
	// Helo is the client's HELO/EHLO argument (required). It is sent raw as our
	// own HELO/EHLO argument after XCLIENT or PROXY, and xtext-encoded in
	// XCLIENT.
	Helo string
	// Proto is "SMTP" (client said HELO) or "ESMTP" (EHLO); "" counts as
	// ESMTP. With "SMTP" we greet the backend with HELO too, so that its
	// Received: header and protocol-dependent rules see what the client did.
	Proto string
	Login string // SASL login name; "" = none (XCLIENT LOGIN omitted)
	// DestAddr and DestPort are where the client connected (our listener):
	// required for PROXY headers, XCLIENT DESTADDR/DESTPORT when known.
	DestAddr net.IP
	DestPort int
}

// Options configure Dial. Zero timeouts take the defaults.
type Options struct {
	Addr           string // backend "host:port"
	Method         Method
	LocalName      string // our EHLO name before XCLIENT; "" = os.Hostname()
	DialTimeout    time.Duration
	CommandTimeout time.Duration // per command: write + reply
	// DataTimeout bounds the wait for the reply to the final dot. While the
	// message streams, each write to the backend gets CommandTimeout instead:
	// the message is read from the live client, whose pace is not the
	// backend's fault; bound the whole transfer with Data's ctx.
	DataTimeout time.Duration
}

// capability bits looked up on the hot path (Extensions has them all).
type caps uint8

const (
	capSize caps = 1 << iota
	cap8BitMIME
	capSMTPUTF8
	capDSN
	capAuth
	capPipelining
	capXCLIENT
)

var capNames = map[string]caps{
	"SIZE": capSize, "8BITMIME": cap8BitMIME, "SMTPUTF8": capSMTPUTF8, "DSN": capDSN,
	"AUTH": capAuth, "PIPELINING": capPipelining, "XCLIENT": capXCLIENT,
}

// Conn is one SMTP session with the backend, ready for transactions once
// Dial returns.
type Conn struct {
	nc   net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	o    Options
	ext  map[string]string // from the last EHLO, keywords upper-cased
	caps caps

	// writeIdle, when non-zero, is the write deadline set before every
	// socket write (during DATA streaming).
	writeIdle time.Duration
	err       error       // sticky I/O or protocol error; owned by the calling goroutine
	closed    atomic.Bool // set by Close, which may run on another goroutine

	cmd  []byte // command scratch
	rbuf []byte // reply scratch: lines without CRLF, joined by '\n'
	// Replies are made from rbuf as new strings (makeReply), so nothing
	// returned aliases these buffers.

	bufs    *bufs // br, bw and cmd's storage, pooled; nil once given back
	unbound bool  // from Prepare: Bind comes next
}

// Dial connects to the backend and prepares the session for the client id:
// PROXY header (if Options.Method says so), greeting, EHLO, XCLIENT (if so)
// and the EHLO/HELO with the client's HELO argument. The dial is bounded by
// DialTimeout and ctx; ctx also aborts the rest of the handshake.
//
// A refusal by the backend (greeting, EHLO/HELO, XCLIENT) is a *ReplyError
// with the backend's reply. On any failure the connection is closed, after a
// QUIT if the session is still in step.
// With MethodXCLIENT, a backend that does not offer XCLIENT gives an error
// wrapping ErrNoXCLIENT.
//
// Dial is Prepare and Bind in one: the same commands, in the same order.
func Dial(ctx context.Context, o Options, id Identity) (*Conn, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkIdentity(o.Method, id); err != nil {
		return nil, err
	}
	c, err := connect(ctx, o)
	if err != nil {
		return nil, err
	}
	err = c.step(ctx, func() error {
		if err := c.prepare(); err != nil {
			return err
		}
		return c.bind(id)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Prepare connects to the backend and gets as far into the handshake as it
// can before the client is known, so that Bind, when a client arrives,
// has less to do: with MethodNone the backend's greeting is read; with
// MethodXCLIENT, also our EHLO is answered (and XCLIENT found offered);
// with the PROXY methods nothing can be sent before the header, so only
// the TCP connection is made. The Conn can do nothing but Bind (or Quit,
// Close) until Bound. Errors as for Dial.
//
// A prepared Conn left waiting may be closed by the backend meanwhile (an
// idle timeout: Postfix's smtpd_timeout, 10s under stress): Bind then
// fails, and the caller dials afresh.
func Prepare(ctx context.Context, o Options) (*Conn, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	c, err := connect(ctx, o)
	if err != nil {
		return nil, err
	}
	if err := c.step(ctx, c.prepare); err != nil {
		return nil, err
	}
	c.unbound = true
	return c, nil
}

// Bind finishes the handshake of a Conn from Prepare for the client id:
// the PROXY header, XCLIENT, and the EHLO/HELO with the client's HELO
// argument, as Dial would have sent them. On failure the Conn is closed
// (after a QUIT if the session is still in step) and the error is as for
// Dial; a Conn that sat prepared for long fails with an I/O error or a
// 421 if the backend has given up on it meanwhile.
func (c *Conn) Bind(ctx context.Context, id Identity) error {
	if !c.unbound {
		return errors.New("backend: Bind on a Conn that is not from Prepare, or bound already")
	}
	if err := c.usable(); err != nil {
		return err
	}
	if err := checkIdentity(c.o.Method, id); err != nil {
		c.Quit()
		return err
	}
	c.unbound = false
	return c.step(ctx, func() error { return c.bind(id) })
}

// connect makes the TCP connection.
func connect(ctx context.Context, o Options) (*Conn, error) {
	// No TCP keepalive: a session's every step has its deadline, and the
	// probes' setup would cost four system calls a connection.
	d := net.Dialer{Timeout: o.DialTimeout, KeepAlive: -1}
	nc, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("backend: dial %s: %w", o.Addr, err)
	}
	c := &Conn{nc: nc, o: o}
	c.bufs = bufsPool.Get().(*bufs)
	c.cmd, c.rbuf = c.bufs.cmd[:0], c.bufs.rbuf[:0]
	c.br = c.bufs.br
	c.br.Reset(nc)
	c.bw = c.bufs.bw
	c.bw.Reset(connWriter{c})
	return c, nil
}

// step runs part of the handshake, aborted when ctx ends. On failure the
// connection is closed, after a QUIT if the session is still in step.
func (c *Conn) step(ctx context.Context, f func() error) error {
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	err := f()
	if !stop() {
		err = fmt.Errorf("backend: handshake with %s: %w", c.o.Addr, context.Cause(ctx))
	}
	if err != nil {
		if c.err == nil { // the session is still in step: end it politely
			c.quitNow()
		}
		c.closed.Store(true)
		c.nc.Close()
		c.release()
		return err
	}
	return nil
}

// bufs are a Conn's buffers, reused by the next Conn once it has ended
// with Quit (a client connection's backend session is short: 8 KB of
// garbage each otherwise).
type bufs struct {
	br        *bufio.Reader
	bw        *bufio.Writer
	cmd, rbuf []byte
}

var bufsPool = sync.Pool{New: func() any {
	return &bufs{br: bufio.NewReaderSize(nil, 4096), bw: newBufWriter(nil), cmd: make([]byte, 0, 256)}
}}

// release gives the buffers back, on the owning goroutine, once nothing
// can use them: every call checks usable first.
func (c *Conn) release() {
	b := c.bufs
	if b == nil {
		return
	}
	c.bufs = nil
	b.br.Reset(nil)
	b.bw.Reset(nil)
	if cap(c.cmd) <= 4096 {
		b.cmd = c.cmd[:0]
	}
	if cap(c.rbuf) <= 4096 {
		b.rbuf = c.rbuf[:0]
	}
	bufsPool.Put(b)
}

func (o Options) withDefaults() (Options, error) {
	if o.Addr == "" {
		return o, errors.New("backend: Options.Addr is empty")
	}
	if o.Method < MethodNone || o.Method > MethodProxyV2 {
		return o, fmt.Errorf("backend: unknown %v", o.Method)
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = DefaultCommandTimeout
	}
	if o.DataTimeout <= 0 {
		o.DataTimeout = DefaultDataTimeout
	}
	if o.LocalName == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			o.LocalName = h
		} else {
			o.LocalName = "localhost"
		}
	}
	if badArg(o.LocalName) {
		return o, fmt.Errorf("backend: Options.LocalName %q contains CR, LF, NUL or space", o.LocalName)
	}
	return o, nil
}

func checkIdentity(m Method, id Identity) error {
	if id.Helo == "" {
		return errors.New("backend: Identity.Helo is empty (dial after the client's HELO/EHLO)")
	}
	if hasCtl(id.Helo) {
		return localRefusal(StageEHLO, "HELO/EHLO argument contains CR, LF or NUL")
	}
	switch strings.ToUpper(id.Proto) {
	case "", "SMTP", "ESMTP":
	default:
		return fmt.Errorf("backend: Identity.Proto %q is neither SMTP nor ESMTP", id.Proto)
	}
	if (m == MethodProxyV1 || m == MethodProxyV2) && id.Addr != nil && id.DestAddr == nil {
		return fmt.Errorf("backend: %v needs Identity.DestAddr with Identity.Addr", m)
	}
	return nil
}

// prepare is the handshake up to where the client must be known.
func (c *Conn) prepare() error {
	if c.o.Method == MethodProxyV1 || c.o.Method == MethodProxyV2 {
		return nil // the header must come first
	}
	c.setDeadline(c.o.CommandTimeout)
	if _, err := c.reply(StageGreeting, 220); err != nil {
		return err
	}
	if c.o.Method != MethodXCLIENT {
		return nil
	}
	if err := c.hello("EHLO", c.o.LocalName); err != nil {
		return err
	}
	if c.caps&capXCLIENT == 0 {
		return fmt.Errorf("%w: %s", ErrNoXCLIENT, c.o.Addr)
	}
	return nil
}

// bind is the rest of the handshake, for the client id.
func (c *Conn) bind(id Identity) error {
	if c.o.Method == MethodProxyV1 || c.o.Method == MethodProxyV2 {
		version := byte(c.o.Method - MethodProxyV1 + 1)
		h := &proxyproto.Header{Version: version, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
		if id.Addr != nil {
			h = proxyproto.HeaderProxyFromAddrs(version,
				&net.TCPAddr{IP: id.Addr, Port: id.Port}, &net.TCPAddr{IP: id.DestAddr, Port: id.DestPort})
		} // else the client is unknown too: PROXY UNKNOWN (v1), LOCAL (v2)
		b, err := h.Format()
		if err != nil {
			return fmt.Errorf("backend: PROXY header: %w", err)
		}
		c.setDeadline(c.o.CommandTimeout)
		c.bw.Write(b)
		if err := c.flush("PROXY header"); err != nil {
			return err
		}
		c.setDeadline(c.o.CommandTimeout)
		if _, err := c.reply(StageGreeting, 220); err != nil {
			return err
		}
	}
	verb := "EHLO"
	if strings.EqualFold(id.Proto, "SMTP") {
		verb = "HELO"
	}
	if c.o.Method != MethodXCLIENT {
		return c.hello(verb, id.Helo)
	}
	cmds, err := xclientCommands(c.ext["XCLIENT"], id)
	if err != nil {
		return err
	}
	for _, cmd := range cmds {
		if _, err := c.do(StageXCLIENT, append(c.cmd[:0], cmd...), 220); err != nil {
			return err
		}
	}
	// The backend is back at its greeting stage: Postfix (and Exim) need a
	// new EHLO/HELO before MAIL.
	return c.hello(verb, id.Helo)
}

// hello sends EHLO (falling back to HELO on 500/502) or HELO, and records the
// extensions.
func (c *Conn) hello(verb, name string) error {
	r, err := c.do(StageEHLO, append(append(append(c.cmd[:0], verb...), ' '), name...), 250)
	if verb == "EHLO" && err != nil && r != nil && (r.Code == 500 || r.Code == 502) {
		verb = "HELO"
		r, err = c.do(StageEHLO, append(append(append(c.cmd[:0], verb...), ' '), name...), 250)
	}
	if err != nil {
		return err
	}
	c.ext, c.caps = map[string]string{}, 0
	if verb == "EHLO" {
		for _, l := range r.Lines[1:] {
			kw, params, _ := strings.Cut(l, " ")
			kw = strings.ToUpper(kw)
			c.ext[kw] = strings.TrimSpace(params)
			c.caps |= capNames[kw]
		}
	}
	return nil
}

// Extensions returns the extensions the backend advertised in reply to our
// last EHLO, keywords upper-cased, each with its parameters ("SIZE":
// "10240000"). Empty after a HELO. The map is a copy.
func (c *Conn) Extensions() map[string]string { return maps.Clone(c.ext) }

// Close closes the connection without QUIT. It may be called concurrently
// with another call, which then fails.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.nc.Close()
}

// usable returns the error every call makes on a broken or closed Conn.
func (c *Conn) usable() error {
	if c.err != nil {
		return fmt.Errorf("%w: %w", ErrUnusable, c.err)
	}
	if c.closed.Load() {
		return fmt.Errorf("%w: closed", ErrUnusable)
	}
	return nil
}

// ready is usable, for a transaction: a prepared Conn must be bound first.
func (c *Conn) ready() error {
	if c.unbound {
		return errors.New("backend: Conn from Prepare used before Bind")
	}
	return c.usable()
}

// fail records err as the reason the Conn is unusable and returns it.
func (c *Conn) fail(err error) error {
	if c.err == nil {
		c.err = err
	}
	return err
}

func (c *Conn) setDeadline(d time.Duration) {
	// An error here means the conn is closed; the I/O that follows says so.
	c.nc.SetDeadline(time.Now().Add(d))
}

// writeBufSize is the size of the write buffer, which is also the size of
// the writes to the backend while DATA streams.
const writeBufSize = 4096

func newBufWriter(w io.Writer) *bufio.Writer { return bufio.NewWriterSize(w, writeBufSize) }

// connWriter sets the per-write deadline while DATA streams.
type connWriter struct{ c *Conn }

func (w connWriter) Write(p []byte) (int, error) {
	if w.c.writeIdle > 0 {
		w.c.nc.SetWriteDeadline(time.Now().Add(w.c.writeIdle))
	}
	return w.c.nc.Write(p)
}

func (c *Conn) flush(what string) error {
	if err := c.bw.Flush(); err != nil {
		return c.fail(fmt.Errorf("backend: write %s: %w", what, err))
	}
	return nil
}

// quitNow sends QUIT without waiting for the reply (before closing after a
// refusal).
func (c *Conn) quitNow() {
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	c.bw.WriteString("QUIT\r\n")
	c.bw.Flush()
}

// hasCtl reports whether s contains CR, LF or NUL: such an argument would end
// the command line early and let its rest be read as another command.
func hasCtl(s string) bool {
	return strings.ContainsAny(s, "\r\n\x00")
}

// badArg is hasCtl plus space, for single-token arguments (our EHLO name).
func badArg(s string) bool { return strings.ContainsAny(s, "\r\n\x00 ") }
