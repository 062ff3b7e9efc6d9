package checks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/mxguard/mxguard/message"
)

// TXTResolver is the part of the resolver DKIM and DMARC need.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// txtLookups bounds ctx by timeout (default 10s) and picks the resolver
// (default net.DefaultResolver), for the checks that fetch TXT records.
func txtLookups(ctx context.Context, timeout time.Duration, r TXTResolver) (context.Context, context.CancelFunc, TXTResolver) {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if r == nil {
		r = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	return ctx, cancel, r
}

// DKIM verifies a message's DKIM signatures (RFC 6376; dkimverify.go,
// following github.com/emersion/go-msgauth/dkim). It only reports: RFC 6376 §6.3
// asks verifiers not to treat a broken signature worse than none, so what
// a failure means is left to DMARC and the rules.
type DKIM struct {
	// Resolver fetches the keys: mxguard's caching resolver, so that a
	// busy sender's key is asked for once per TTL. It must report
	// timeouts and SERVFAIL as temporary *net.DNSError values. Nil means
	// net.DefaultResolver.
	Resolver TXTResolver
	// MaxSignatures caps the signatures verified per message (default 5):
	// each costs a DNS query and a pass over the body, and the rest may
	// be ignored (RFC 6376 §6.1).
	MaxSignatures int
	// Timeout bounds the key look-ups of one message (default 10s).
	Timeout time.Duration
}

// verifyReaders are Verify's 32 KB readers: one per message would be most
// of the garbage a busy server makes.
var verifyReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}

// DKIMSignature is the verdict on one signature.
type DKIMSignature struct {
	Domain     string // d=
	Selector   string // s=
	Identifier string // i=, or "@" + d= when absent
	Algorithm  string // a=
	// Result is pass, fail, temperror or permerror (RFC 8601 §2.7.1).
	Result string
	// Err says what went wrong; "" for pass.
	Err string
}

// DKIMResult is the verdict on a message.
type DKIMResult struct {
	// Signatures, in header order, as many as were verified.
	Signatures []DKIMSignature
	// Ignored counts the signatures beyond MaxSignatures.
	Ignored int
	// Results has one dkim.<result> per signature, or one dkim.none for
	// an unsigned message (dkim.permerror or dkim.temperror when the
	// message could not be read).
	Results []Result
}

// maxTagLen caps the d=, s= and i= values kept: they are the sender's
// text, and they go into reasons and header fields. A domain name has at
// most 253 characters.
const maxTagLen = 255

// Verify checks the signatures of msg, the whole message with CRLF line
// ends, reading it exactly once, to the end.
func (d *DKIM) Verify(ctx context.Context, msg io.Reader) DKIMResult {
	// Drain whatever verification leaves (it stops early when no
	// signature needs the body), so that msg may be one end of a pipe.
	defer io.Copy(io.Discard, msg)

	br := verifyReaders.Get().(*bufio.Reader)
	br.Reset(msg)
	defer func() {
		br.Reset(nil)
		verifyReaders.Put(br)
	}()
	h, _, err := message.ParseHeader(br)
	if err != nil {
		outcome, why := "dkim.temperror", "could not be read"
		if errors.Is(err, message.ErrHeaderTooLarge) {
			outcome, why = "dkim.permerror", "has an unusable header"
		}
		return DKIMResult{Results: []Result{{
			Check: DKIMName, Outcome: outcome,
			Reason: "DKIM not checked: the message " + why, Evidence: err.Error(),
		}}}
	}
	return d.verify(ctx, h, br)
}

// verify checks the signatures of the message with header h and body
// (what follows the header) from body (dkimverify.go).
func (d *DKIM) verify(ctx context.Context, h *message.Header, body io.Reader) DKIMResult {
	var sigs []DKIMSignature
	for i := range h.Fields {
		if strings.EqualFold(h.Fields[i].Name, "DKIM-Signature") {
			sigs = append(sigs, parseSignature(h.Fields[i].Value()))
		}
	}
	if len(sigs) == 0 {
		return DKIMResult{Results: unsignedResult()}
	}
	ctx, cancel, res := txtLookups(ctx, d.Timeout, d.Resolver)
	defer cancel()
	limit := d.MaxSignatures
	if limit <= 0 {
		limit = 5
	}
	verifs, ignored, err := verifyDKIM(ctx, res, h, body, limit)
	r := DKIMResult{Ignored: ignored}
	sigs = sigs[:len(sigs)-ignored]
	for i := range sigs {
		s := &sigs[i]
		if err != nil {
			// The message could not be read to the end: nothing is known.
			s.Result, s.Err = "temperror", fmt.Errorf("reading the message: %w", err).Error()
		} else {
			v := verifs[i]
			if v.Domain != "" {
				s.Domain = clip(v.Domain)
			}
			if v.Identifier != "" {
				s.Identifier = clip(v.Identifier)
			}
			s.Result = "pass"
			if v.Err != nil {
				s.Result, s.Err = v.Err.class, v.Err.msg
			}
		}
		r.Results = append(r.Results, s.result())
	}
	r.Signatures = sigs
	return r
}

func (s *DKIMSignature) result() Result {
	sig := "DKIM signature d=" + s.Domain + " s=" + s.Selector
	r := Result{Check: DKIMName, Outcome: "dkim." + s.Result, Evidence: "i=" + s.Identifier + " a=" + s.Algorithm}
	switch s.Result {
	case "pass":
		r.Reason = sig + " verified"
	case "fail":
		r.Reason = sig + " did not verify: " + s.Err
	case "temperror":
		r.Reason = sig + " could not be checked now: " + s.Err
	default:
		r.Reason = sig + " is unusable: " + s.Err
	}
	return r
}

// parseSignature reads the tags that name a signature. Malformed
// signatures are the library's to judge; this only has to label them.
func parseSignature(v string) DKIMSignature {
	var s DKIMSignature
	var seen [4]bool // d, s, i, a: the first of each counts
	for len(v) > 0 {
		var tag string
		tag, v, _ = strings.Cut(v, ";")
		k, val, ok := strings.Cut(tag, "=")
		if !ok {
			continue
		}
		var dst *string
		switch k = strings.TrimSpace(k); k {
		case "d":
			dst = &s.Domain
		case "s":
			dst = &s.Selector
		case "i":
			dst = &s.Identifier
		case "a":
			dst = &s.Algorithm
		default:
			continue
		}
		if i := strings.IndexByte("dsia", k[0]); !seen[i] {
			seen[i] = true
			*dst = clip(removeSpaces(val))
		}
	}
	if s.Identifier == "" && s.Domain != "" {
		s.Identifier = "@" + s.Domain
	}
	return s
}

// removeSpaces is strings.Join(strings.Fields(s), ""), without allocating
// when there is nothing to remove.
func removeSpaces(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 || asciiSpace[c] {
			return strings.Join(strings.Fields(s), "")
		}
	}
	return s
}

func clip(s string) string {
	if len(s) > maxTagLen {
		return s[:maxTagLen]
	}
	return s
}

// DKIMName names the DKIM check.
const DKIMName Name = "dkim"

// DKIMKey holds a message's verified signatures, for DMARC and the header.
var DKIMKey = NewKey[[]DKIMSignature]("dkim", TxnScope)

// DKIMSpec registers DKIM verification, on the whole message.
var DKIMSpec = Spec{
	Name:     DKIMName,
	Stages:   []Stage{AtData},
	Outcomes: []string{"dkim.pass", "dkim.fail", "dkim.none", "dkim.temperror", "dkim.permerror"},
	New: func(env *Env) (Check, error) {
		c := env.Config.DKIM
		if !c.Enabled || env.Resolver == nil {
			return nil, nil
		}
		return &DKIM{Resolver: env.Resolver, MaxSignatures: c.MaxSignatures, Timeout: c.Timeout.D()}, nil
	},
}

// Run verifies the message's signatures.
func (d *DKIM) Run(ctx context.Context, _ Stage, s *Session) []Result {
	if s.Header == nil {
		return nil // the message check refuses it
	}
	if !signed(s.Header) {
		// The pipeline has read the header already: an unsigned message
		// (most mail) is not read again.
		Put(s, DKIMKey, nil)
		return unsignedResult()
	}
	body := io.NewSectionReader(s.Message.Reader(), s.Body, s.Message.Size()-s.Body)
	v := d.verify(ctx, s.Header, body)
	Put(s, DKIMKey, v.Signatures)
	return v.Results
}

// signed reports whether h has a DKIM-Signature field.
func signed(h *message.Header) bool {
	for i := range h.Fields {
		if strings.EqualFold(h.Fields[i].Name, "DKIM-Signature") {
			return true
		}
	}
	return false
}

func unsignedResult() []Result {
	return []Result{{Check: DKIMName, Outcome: "dkim.none", Reason: "message is not DKIM-signed"}}
}
