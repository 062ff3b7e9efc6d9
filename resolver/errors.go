package resolver

import (
	"context"
	"errors"
	"net"

	"github.com/miekg/dns"
)

// errNoSuchHost is the text net.Resolver uses; some callers compare it.
const errNoSuchHost = "no such host"

func notFound(name, server string) error {
	return &net.DNSError{Err: errNoSuchHost, Name: name, Server: server, IsNotFound: true}
}

// ctxError reports a caller's cancelled or expired context the way
// net.Resolver does: a temporary *net.DNSError that still unwraps to
// ctx.Err(), so errors.Is(err, context.Canceled) works and SPF/DKIM
// see a temporary failure rather than a permanent one.
func ctxError(name string, err error) *net.DNSError {
	return &net.DNSError{
		UnwrapErr:   err,
		Err:         err.Error(),
		Name:        name,
		IsTimeout:   errors.Is(err, context.DeadlineExceeded),
		IsTemporary: true,
	}
}

// netError maps a failed exchange with server.
func netError(name, server string, err error) *net.DNSError {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &net.DNSError{UnwrapErr: err, Err: "i/o timeout", Name: name, Server: server, IsTimeout: true, IsTemporary: true}
	}
	return &net.DNSError{UnwrapErr: err, Err: err.Error(), Name: name, Server: server, IsTemporary: true}
}

func rcodeError(name, server string, rcode int) *net.DNSError {
	return &net.DNSError{Err: "server misbehaving: " + dns.RcodeToString[rcode], Name: name, Server: server, IsTemporary: true}
}

// withName returns a copy of a shared error naming the name the
// caller asked for, so callers never share (and so can't race on) an
// error value.
func withName(err error, name string) error {
	de, ok := err.(*net.DNSError)
	if !ok {
		return err
	}
	c := *de
	c.Name = name
	return &c
}
