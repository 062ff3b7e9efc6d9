// Package mailsink is an in-process SMTP server that plays the backend MTA
// (Postfix, Exim) behind mxguard.
//
// It is used by the integration tests as the backend whose received bytes are
// asserted, by "mxguard demo" as the embedded backend that stores mail in a
// folder, by the fault-injection harness (refusals, stalls, crashes mid-DATA,
// hang-ups right after end-of-data, all scripted through a Policy) and as the
// in-process sink of the throughput benchmarks.
//
// The server is written directly on net and bufio so that it can accept
// XCLIENT and PROXY headers and be scripted command by command. It follows
// Postfix where behaviour is not dictated by the RFCs: reply texts, the 220
// reply to XCLIENT, 555 for unsupported MAIL/RCPT parameters, and replies
// buffered while pipelined input is pending and flushed as soon as the server
// needs to read more input.
//
// Message content is recorded byte-exact: data ends only at CRLF "." CRLF
// (a bare LF does not end a line), dot-stuffing is undone only at the start of
// CRLF-terminated lines, and every other byte (bare CR, bare LF, 8-bit bytes,
// NUL) is kept as sent.
package mailsink

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
)

// ProxyMode says whether a connection starts with a PROXY protocol header.
type ProxyMode int

const (
	// ProxyNone: no PROXY header is expected; one sent anyway is read as
	// (unknown) SMTP commands, as Postfix does.
	ProxyNone ProxyMode = iota
	// ProxyRequired: every connection must start with a PROXY v1 or v2
	// header, read before the greeting is sent; a connection without one is
	// closed without a greeting (Postfix's smtpd_upstream_proxy_protocol).
	ProxyRequired
)

// Defaults used when the corresponding Server field is zero.
const (
	DefaultHostname    = "sink.test"
	DefaultReadTimeout = time.Minute
)

// MaxLineLength is the longest command line accepted, excluding the line
// ending. A longer line gets "500 5.5.0 Error: line too long" and the
// connection is closed, so a client cannot make the server buffer without
// bound. Message content lines are not limited (only MaxSize is).
const MaxLineLength = 64 << 10

// MaxLogEntries caps each of SessionInfo.Commands and SessionInfo.Replies so
// that a long-lived connection (soak runs, benchmarks) uses bounded memory;
// entries past the cap are counted in SessionInfo.Dropped.
const MaxLogEntries = 1 << 16

// ErrClosed is returned by Start after Close and by WaitMessages when the
// server is closed before enough messages arrived.
var ErrClosed = errors.New("mailsink: server closed")

// Server is an SMTP server that records what it receives. Configure the
// exported fields, then call Start; the fields must not be changed after
// Start. A Server must not be copied after Start and cannot be restarted
// after Close.
type Server struct {
	// Hostname is used in the greeting and the EHLO reply (default "sink.test").
	Hostname string
	// Dir, if set, receives every accepted message as <id>.eml (the message
	// data) and <id>.json (the envelope). Both are written to a temporary
	// file and renamed into place; the .json is renamed first, so once an
	// .eml is visible its envelope is too. Dir is created if missing.
	Dir string
	// XCLIENT advertises and accepts the Postfix XCLIENT command. When false,
	// XCLIENT gets "550 5.7.0 Error: insufficient authorization".
	XCLIENT bool
	// Proxy selects whether a PROXY protocol header is required.
	Proxy ProxyMode
	// Extensions are the EHLO keywords advertised, besides XCLIENT (which is
	// controlled by the XCLIENT field). nil means the default: PIPELINING,
	// SIZE (with MaxSize when set), 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8,
	// DSN. A non-nil empty slice advertises nothing. MAIL and RCPT parameters
	// are accepted only when their extension is advertised (SIZE; BODY with
	// 8BITMIME; SMTPUTF8; RET, ENVID, NOTIFY, ORCPT with DSN; AUTH with AUTH),
	// others get "555 5.5.4 Unsupported option", like Postfix.
	Extensions []string
	// MaxSize is the message size limit in bytes (after un-dot-stuffing);
	// 0 means no limit. A message over the limit is read to its end and
	// refused with "552 5.3.4 Message size exceeds fixed limit", as is a MAIL
	// command whose SIZE parameter exceeds it.
	MaxSize int64
	// Policy scripts replies; nil accepts everything.
	Policy Policy
	// ReadTimeout is the idle timeout of every read (and write) on a
	// connection (default 1m). On a read timeout the server sends
	// "421 4.4.2 <host> Error: timeout exceeded" and hangs up.
	ReadTimeout time.Duration
	// Logf, if set, receives a trace of connections, commands and replies.
	Logf func(format string, args ...any)

	// Derived from the fields above by Start.
	host       string
	greeting   string
	ehloReply  string
	heloReply  string
	timeout    time.Duration
	extSize    bool
	ext8bit    bool
	extUTF8    bool
	extDSN     bool
	extAuth    bool
	extBinMIME bool

	mu        sync.Mutex
	started   bool
	closing   bool
	ln        net.Listener
	done      chan struct{} // closed by Close
	conns     map[net.Conn]struct{}
	messages  []*Message
	sessions  []*SessionInfo
	nsessions int
	notify    chan struct{} // closed (and cleared) when a message is stored
	wg        sync.WaitGroup
}

// Message is one accepted message.
type Message struct {
	// ID is the queue ID, also used in the "queued as" reply and the file
	// names under Dir. It is unique within the process and increases with
	// time, so IDs from successive runs sharing a Dir do not collide.
	ID string
	// Helo is the HELO/EHLO name in effect when the message was sent (or the
	// XCLIENT HELO attribute if no HELO/EHLO followed the XCLIENT).
	Helo string
	// From is the MAIL FROM address without angle brackets ("" for <>).
	From string
	// MailParams is the raw parameter string after the MAIL FROM address.
	MailParams string
	// To are the accepted RCPT TO addresses without angle brackets.
	To []string
	// RcptParams are the raw parameter strings of the accepted RCPT
	// commands, parallel to To.
	RcptParams []string
	// Data is the message content exactly as received after undoing
	// dot-stuffing, CRLF line endings preserved, excluding the final
	// "." CRLF.
	Data []byte
	// XCLIENT are the XCLIENT attributes in effect (names upper-cased,
	// values xtext-decoded), nil if none were sent.
	XCLIENT map[string]string
	// ProxySource is the source address of the PROXY header, nil if none.
	ProxySource net.Addr
	// Received is when the end of data was read.
	Received time.Time
	// Session is the SessionInfo.ID of the connection that sent the message.
	Session int
}

// SessionInfo describes one connection. The server updates it while the
// connection is open; Sessions returns snapshots. A Policy receives the live
// value and may read it during the call only.
type SessionInfo struct {
	// ID numbers connections from 1 in the order they were accepted.
	ID         int
	RemoteAddr net.Addr
	LocalAddr  net.Addr
	Started    time.Time
	// Ended is when the connection was closed (zero while open).
	Ended time.Time

	// Proxy is the PROXY header read at the start of the connection, nil if
	// none. ProxySource is its source address (nil for LOCAL/UNKNOWN).
	Proxy       *proxyproto.Header
	ProxySource net.Addr
	// XCLIENT holds the attributes of all XCLIENT commands received, later
	// ones overriding earlier ones (names upper-cased, values decoded).
	XCLIENT map[string]string
	// Helo lists the arguments of every HELO and EHLO command, in order.
	Helo []string
	// Commands lists every command line received, without its line ending
	// (message content excluded). Replies lists every reply sent, lines
	// joined by "\n" without the final line ending. Both are capped at
	// MaxLogEntries; Dropped counts the entries left out.
	Commands []string
	Replies  []string
	Dropped  int
	// Messages counts the messages accepted on this connection.
	Messages int

	// The mail transaction in progress: InTransaction is set once MAIL is
	// accepted and cleared by RSET, HELO/EHLO and the end of data.
	InTransaction bool
	From          string
	MailParams    string
	To            []string
	RcptParams    []string
}

// Policy scripts the server's behaviour. Each method is called for a
// syntactically valid command in a valid state and returns nil for the
// default behaviour. The methods run on the connection's goroutine and must
// not block for long: use Action.Delay to stall, it is interrupted by Close.
type Policy interface {
	// Mail is called for MAIL; from is the address without angle brackets.
	Mail(si *SessionInfo, from string) *Action
	// Rcpt is called for RCPT; to is the address without angle brackets.
	Rcpt(si *SessionInfo, to string) *Action
	// DataStart decides the reply to the DATA command itself.
	DataStart(si *SessionInfo) *Action
	// DataEnd is called after the final dot with the message (its ID is
	// already assigned); it is not called for a message over MaxSize.
	DataEnd(si *SessionInfo, m *Message) *Action
}

// Action is a scripted reaction to one command.
type Action struct {
	// Reply is the full reply text, possibly multi-line with "\n" between
	// lines, e.g. "550-5.1.1 <x>: Recipient address rejected:\n550 5.1.1 User
	// unknown". It is sent as given (each line terminated by CRLF), so
	// malformed replies can be scripted too. "" means the default reply.
	// The first digit decides the outcome: MAIL and RCPT take effect on 2xx,
	// DATA enters the data phase on 3xx, and a message is stored on 2xx.
	Reply string
	// Delay is waited before replying (or hanging up). Close interrupts it.
	Delay time.Duration
	// Close hangs up instead of replying. At DataEnd the message is not
	// stored (a crash before commit) unless Store says otherwise.
	Close bool
	// CloseAfter sends the reply and then hangs up; at DataEnd the message
	// is stored first (the backend that closes right after end of data).
	CloseAfter bool
	// Store, at DataEnd, overrides whether the message is stored (in memory
	// and in Dir). Store=true with Close simulates a backend that commits
	// the message but dies before replying.
	Store *bool
	// CutMidData, at DataStart: send the 354 (or Reply), read a few bytes of
	// the message, then hang up (the backend killed mid-DATA).
	CutMidData bool
}

// PolicyFuncs adapts functions to Policy; nil functions mean the default.
type PolicyFuncs struct {
	MailFunc      func(si *SessionInfo, from string) *Action
	RcptFunc      func(si *SessionInfo, to string) *Action
	DataStartFunc func(si *SessionInfo) *Action
	DataEndFunc   func(si *SessionInfo, m *Message) *Action
}

// Mail implements Policy.
func (p PolicyFuncs) Mail(si *SessionInfo, from string) *Action {
	if p.MailFunc == nil {
		return nil
	}
	return p.MailFunc(si, from)
}

// Rcpt implements Policy.
func (p PolicyFuncs) Rcpt(si *SessionInfo, to string) *Action {
	if p.RcptFunc == nil {
		return nil
	}
	return p.RcptFunc(si, to)
}

// DataStart implements Policy.
func (p PolicyFuncs) DataStart(si *SessionInfo) *Action {
	if p.DataStartFunc == nil {
		return nil
	}
	return p.DataStartFunc(si)
}

// DataEnd implements Policy.
func (p PolicyFuncs) DataEnd(si *SessionInfo, m *Message) *Action {
	if p.DataEndFunc == nil {
		return nil
	}
	return p.DataEndFunc(si, m)
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves connections in the
// background until Close.
func (s *Server) Start(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return ErrClosed
	}
	if s.started {
		return errors.New("mailsink: server already started")
	}
	if err := s.configure(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("mailsink: %w", err)
	}
	s.started = true
	s.ln = ln
	s.done = make(chan struct{})
	s.conns = make(map[net.Conn]struct{})
	s.wg.Add(1)
	go s.acceptLoop(ln)
	s.logf("mailsink: listening on %s", ln.Addr())
	return nil
}

func (s *Server) configure() error {
	s.host = s.Hostname
	if s.host == "" {
		s.host = DefaultHostname
	}
	s.timeout = s.ReadTimeout
	if s.timeout <= 0 {
		s.timeout = DefaultReadTimeout
	}
	if s.Dir != "" {
		if err := os.MkdirAll(s.Dir, 0o755); err != nil {
			return fmt.Errorf("mailsink: %w", err)
		}
	}
	exts := s.Extensions
	if exts == nil {
		size := "SIZE"
		if s.MaxSize > 0 {
			size += " " + strconv.FormatInt(s.MaxSize, 10)
		}
		exts = []string{"PIPELINING", size, "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN"}
	}
	if s.XCLIENT {
		exts = append(slices.Clip(exts), "XCLIENT "+strings.Join(xclientAttrs, " "))
	}
	for _, e := range exts {
		kw, _, _ := strings.Cut(e, " ")
		switch strings.ToUpper(kw) {
		case "SIZE":
			s.extSize = true
		case "8BITMIME":
			s.ext8bit = true
		case "SMTPUTF8":
			s.extUTF8 = true
		case "DSN":
			s.extDSN = true
		case "AUTH":
			s.extAuth = true
		case "BINARYMIME":
			s.extBinMIME = true
		}
	}
	s.greeting = "220 " + s.host + " ESMTP mailsink"
	s.heloReply = "250 " + s.host
	var b strings.Builder
	b.WriteString("250")
	if len(exts) > 0 {
		b.WriteByte('-')
	} else {
		b.WriteByte(' ')
	}
	b.WriteString(s.host)
	for i, e := range exts {
		b.WriteString("\n250")
		if i == len(exts)-1 {
			b.WriteByte(' ')
		} else {
			b.WriteByte('-')
		}
		b.WriteString(e)
	}
	s.ehloReply = b.String()
	return nil
}

// Addr returns the listening address as "ip:port", or "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops the listener, closes every open connection (interrupting
// stalled Actions) and waits for all the server's goroutines to finish. It
// may be called more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closing = true
	ln := s.ln
	if s.done != nil {
		close(s.done)
	}
	if s.notify != nil {
		close(s.notify)
		s.notify = nil
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	var err error
	if ln != nil {
		err = ln.Close()
	}
	s.wg.Wait()
	s.logf("mailsink: closed")
	return err
}

// Messages returns the accepted messages in the order they were stored.
func (s *Server) Messages() []*Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.messages)
}

// WaitMessages waits until at least n messages have been stored and returns
// them all. On timeout (or if the server is closed first) it returns the
// messages stored so far and an error.
func (s *Server) WaitMessages(n int, timeout time.Duration) ([]*Message, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		msgs := s.messages
		if len(msgs) >= n {
			s.mu.Unlock()
			return slices.Clone(msgs), nil
		}
		if s.closing {
			s.mu.Unlock()
			return slices.Clone(msgs), fmt.Errorf("mailsink: got %d of %d messages: %w", len(msgs), n, ErrClosed)
		}
		if s.notify == nil {
			s.notify = make(chan struct{})
		}
		ch := s.notify
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			msgs := s.Messages()
			if len(msgs) >= n {
				return msgs, nil
			}
			return msgs, fmt.Errorf("mailsink: got %d of %d messages within %v", len(msgs), n, timeout)
		}
	}
}

// Sessions returns snapshots of the recorded connections, in the order they
// were accepted, including the ones still open.
func (s *Server) Sessions() []*SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*SessionInfo, len(s.sessions))
	for i, si := range s.sessions {
		c := *si
		c.XCLIENT = maps.Clone(si.XCLIENT)
		c.Helo = slices.Clone(si.Helo)
		c.Commands = slices.Clone(si.Commands)
		c.Replies = slices.Clone(si.Replies)
		c.To = slices.Clone(si.To)
		c.RcptParams = slices.Clone(si.RcptParams)
		out[i] = &c
	}
	return out
}

// Reset forgets the recorded messages and sessions. Connections still open
// keep working but are no longer listed by Sessions.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = nil
	s.sessions = nil
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: retry, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logf("mailsink: accept: %v; retrying in %v", err, backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.nsessions++
		si := &SessionInfo{
			ID:         s.nsessions,
			RemoteAddr: nc.RemoteAddr(),
			LocalAddr:  nc.LocalAddr(),
			Started:    time.Now(),
		}
		s.sessions = append(s.sessions, si)
		s.conns[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(nc, si)
	}
}

// store commits an accepted message: files in Dir first, then memory.
func (s *Server) store(si *SessionInfo, m *Message) error {
	if s.Dir != "" {
		if err := s.writeFiles(si, m); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.messages = append(s.messages, m)
	si.Messages++
	if s.notify != nil {
		close(s.notify)
		s.notify = nil
	}
	s.mu.Unlock()
	return nil
}

// lastID is the time-derived value of the last queue ID handed out.
var lastID atomic.Uint64

const idDigits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

// newID returns a short (12 characters), process-unique, increasing queue ID:
// the current time in nanoseconds, bumped past the previous ID, in base 36.
func newID() string {
	return string(appendID(nil))
}

// appendID appends a new queue ID (see newID) to b.
func appendID(b []byte) []byte {
	var v uint64
	for {
		last := lastID.Load()
		v = max(uint64(time.Now().UnixNano()), last+1)
		if lastID.CompareAndSwap(last, v) {
			break
		}
	}
	var buf [13]byte
	i := len(buf)
	for v > 0 || i == len(buf) {
		i--
		buf[i] = idDigits[v%36]
		v /= 36
	}
	return append(b, buf[i:]...)
}
