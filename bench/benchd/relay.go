package main

// The bare relay: the yardstick mxguard is measured against in
// bench/run.sh. It is what anyone would write in an afternoon with go-smtp
// on both sides and no checks at all: a go-smtp server whose sessions relay
// in lockstep through go-smtp's client — the backend connection opened and
// greeted when the client says EHLO, MAIL, each RCPT and DATA passed on one
// at a time and each client reply taken from the backend's, the message
// streamed through as it arrives. No XCLIENT or PROXY (go-smtp's client has
// neither), no limits beyond go-smtp's defaults, no log.

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/emersion/go-smtp"
)

// relayBackend is the go-smtp Backend of the bare relay.
type relayBackend struct {
	to      string // the backend's host:port
	timeout time.Duration
}

// startRelay serves the bare relay on addr toward backend; it returns the
// listener (closing it stops the relay) and the server.
func startRelay(addr, backend string) (net.Listener, *smtp.Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	srv := smtp.NewServer(&relayBackend{to: backend, timeout: time.Minute})
	srv.Domain = "relay.bench.example"
	srv.ReadTimeout = 5 * time.Minute
	srv.WriteTimeout = time.Minute
	srv.MaxMessageBytes = 25 << 20
	srv.MaxRecipients = 100
	go srv.Serve(l)
	return l, srv, nil
}

var errRelayBackend = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Backend unavailable"}

// NewSession runs at the client's EHLO: the backend connection is opened and
// greeted with the client's name.
func (b *relayBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	nc, err := net.DialTimeout("tcp", b.to, b.timeout)
	if err != nil {
		return nil, errRelayBackend
	}
	cl := smtp.NewClient(nc)
	cl.CommandTimeout, cl.SubmissionTimeout = b.timeout, b.timeout
	if err := cl.Hello(c.Hostname()); err != nil {
		cl.Close()
		return nil, passOn(err)
	}
	return &relaySession{cl: cl}, nil
}

// relaySession is one client session, relayed.
type relaySession struct {
	cl *smtp.Client
}

func (s *relaySession) Mail(from string, opts *smtp.MailOptions) error {
	return passOn(s.cl.Mail(from, opts))
}

func (s *relaySession) Rcpt(to string, opts *smtp.RcptOptions) error {
	return passOn(s.cl.Rcpt(to, opts))
}

func (s *relaySession) Data(r io.Reader) error {
	w, err := s.cl.Data()
	if err != nil {
		return passOn(err)
	}
	if _, err := io.Copy(w, r); err != nil {
		s.cl.Close()
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Relaying failed"}
	}
	return passOn(w.Close())
}

func (s *relaySession) Reset() { s.cl.Reset() }

func (s *relaySession) Logout() error { return s.cl.Quit() }

// passOn gives the backend's refusal to the client as it came, and any
// other failure as a 451.
func passOn(err error) error {
	if err == nil {
		return nil
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Backend connection lost"}
}
