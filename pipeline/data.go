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

// errHeader refuses a message whose header cannot be read at all.
var errHeader = rules.Reply{Code: 552, Enhanced: "5.3.4", Text: "Message header too large or malformed"}

// Data checks the whole message — DKIM signatures, the From domain's DMARC
// policy — and decides, before the backend sees any of it. It also says
// which header fields to add and which forged ones to drop.
func (s *Session) Data(ctx context.Context, spool *message.Spool) (Decision, *Prepared) {
	prep := &Prepared{}
	if s.trusted {
		return s.decide(atData, ""), prep
	}
	hdr, body, err := message.ParseHeader(spool.Reader())
	if err != nil {
		d := Decision{Stage: "data", Refuse: true, Reply: errHeader}
		d.Action, d.Rule, d.Reason, d.Reply = rules.Reject, "message.header", err.Error(), errHeader
		return d, prep
	}
	prep.Header, prep.Body = hdr, body

	var sigs []checks.DKIMSignature
	var rs []checks.Result
	if s.p.DKIM != nil && !s.skips("dkim") {
		v := s.p.DKIM.Verify(ctx, spool.Reader())
		sigs = v.Signatures
		rs = append(rs, v.Results...)
	}
	s.mu.Lock()
	spf := s.txn.spf
	s.mu.Unlock()
	var dm *checks.DMARCResult
	if s.p.DMARC != nil && spf != nil && !s.skips("dmarc") {
		froms, _ := message.FromDomains(hdr)
		r := s.p.DMARC.Check(ctx, froms, *spf, sigs)
		dm = &r
		rs = append(rs, r.Check)
	}
	s.mu.Lock()
	s.txn.results = append(s.txn.results, rs...)
	s.mu.Unlock()

	d := s.decide(atData, "")

	// Our header fields. Fields of the same names that came with the
	// message claim our verdict: they go (RFC 8601 §5 for ours).
	h := s.p.headers
	ours := map[string]bool{}
	var pre bytes.Buffer
	if h.AuthenticationResults {
		pre.WriteString(checks.AuthenticationResults(s.p.Hostname, spf, sigs, dm))
	}
	if h.ReceivedSPF && spf != nil {
		pre.WriteString(checks.ReceivedSPF(s.p.Hostname, spf))
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
	hdr.Remove(func(name, value string) bool {
		n := strings.ToLower(name)
		if n == "authentication-results" {
			return h.AuthenticationResults && strings.EqualFold(message.AuthservID(value), s.p.Hostname)
		}
		return ours[n]
	})
	prep.Prepend = pre.Bytes()
	return d, prep
}
