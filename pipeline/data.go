package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/message"
	"github.com/mxguard/mxguard/rules"
)

// Prepared is a message made ready for the backend.
type Prepared struct {
	// Prepend are header fields to add on top, complete with CRLFs.
	Prepend []byte
	// Header is the message's own header, minus fields we removed; nil
	// when the message goes on untouched (a trusted client).
	Header *message.Header
	// Body is where the body starts in the spool.
	Body int64
}

// Reader returns the message as the backend gets it, after what the
// caller puts in front (its Received field).
//
// A message whose first line begins with a space or tab would continue the
// last header field we put on top (and could write into our
// Authentication-Results); like Postfix, we put an empty line between, so
// that such a message is all body.
func (m *Prepared) Reader(spool *message.Spool, first []byte) io.Reader {
	var b [1]byte
	var sep []byte
	if n, _ := spool.Reader().ReadAt(b[:], 0); n == 1 && (b[0] == ' ' || b[0] == '\t') {
		sep = []byte("\r\n")
	}
	if m.Header == nil {
		return io.MultiReader(bytes.NewReader(first), bytes.NewReader(sep), spool.Reader())
	}
	var h bytes.Buffer
	h.Grow(int(m.Header.Len()))
	m.Header.WriteTo(&h)
	return io.MultiReader(bytes.NewReader(first), bytes.NewReader(m.Prepend), bytes.NewReader(sep), &h,
		io.NewSectionReader(spool.Reader(), m.Body, spool.Size()-m.Body))
}

// Data checks the whole message — its header, DKIM signatures, the From
// domain's DMARC policy — and decides, before the backend sees any of it.
// It also says which header fields to add and which forged ones to drop.
func (s *Session) Data(ctx context.Context, spool *message.Spool) (Decision, *Prepared) {
	prep := &Prepared{}
	if s.trusted {
		return s.decide(checks.AtData, nil), prep
	}
	s.rcpt = nil // results about one recipient do not judge the message
	f := &s.facts
	f.Messages++
	f.Message = spool
	f.Header, f.Body, f.HeaderErr = message.ParseHeader(spool.Reader())
	d := s.stage(ctx, checks.AtData)
	if f.Header == nil {
		return d, prep // refused by the message check; nothing to prepare
	}
	prep.Header, prep.Body = f.Header, f.Body

	// Our header fields. Fields of the same names that came with the
	// message claim our verdict: they go (RFC 8601 §5 for ours).
	h := s.p.cfg.Headers
	ours := map[string]bool{}
	var pre bytes.Buffer
	pre.Write(checks.AuthHeaders(f, s.p.Hostname, h))
	for _, field := range checks.Headers(f) {
		pre.WriteString(field + "\r\n")
	}
	if h.ScoreHeader != "" {
		fmt.Fprintf(&pre, "%s: %s\r\n", h.ScoreHeader, strconv.FormatFloat(d.Score, 'f', -1, 64))
		ours[strings.ToLower(h.ScoreHeader)] = true
	}
	for _, t := range h.Tag {
		name, _, _ := strings.Cut(t, ":")
		ours[strings.ToLower(name)] = true
		if d.Action == rules.Tag {
			pre.WriteString(t + "\r\n")
		}
	}
	f.Header.Remove(func(name, value string) bool {
		n := strings.ToLower(name)
		if n == "authentication-results" {
			return h.AuthenticationResults && strings.EqualFold(message.AuthservID(value), s.p.Hostname)
		}
		return ours[n]
	})
	prep.Prepend = pre.Bytes()
	return d, prep
}
