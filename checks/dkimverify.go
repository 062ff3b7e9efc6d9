package checks

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/mxguard/mxguard/message"
)

// DKIM verification (RFC 6376, RFC 8301, RFC 8463), done here rather than
// by go-msgauth's Verify, whose rules and messages it follows step by step
// (dkim_test.go compares the two on many messages): go-msgauth reads the
// header a second time, copies the message into a pipe per signature,
// parses the public key of every message anew and hashes the header with
// many small allocations, which cost several times the RSA verification
// itself. Here the header is the one the pipeline parsed, the body is
// hashed once per canonicalization for all signatures, and parsed keys are
// kept by their TXT record.

// dkimErr is a failed verification: its class decides the result
// (pass is no error), its text is go-msgauth's without "dkim: ".
type dkimErr struct {
	class string // "fail", "permerror", "temperror"
	msg   string
}

func (e *dkimErr) Error() string { return e.msg }

func permFail(msg string) *dkimErr { return &dkimErr{"permerror", msg} }
func tempFail(msg string) *dkimErr { return &dkimErr{"temperror", msg} }
func sigFail(msg string) *dkimErr  { return &dkimErr{"fail", msg} }

// dkimVerification is what is known of one signature (go-msgauth's
// Verification, as far as the check uses it).
type dkimVerification struct {
	Domain, Identifier string
	Err                *dkimErr
}

// tagList is a tag=value list (RFC 6376 §3.2), in order, values trimmed.
type tagList []struct{ k, v string }

func (t tagList) get(k string) (string, bool) {
	for _, kv := range t {
		if kv.k == k {
			return kv.v, true
		}
	}
	return "", false
}

// parseTags is go-msgauth's parseHeaderParams.
func parseTags(s string) (tagList, error) {
	var out tagList
	for len(s) > 0 {
		var pair string
		pair, s, _ = strings.Cut(s, ";")
		key, value, ok := strings.Cut(pair, "=")
		if !ok {
			if strings.TrimSpace(pair) == "" {
				continue
			}
			return out, errors.New("dkim: malformed header params")
		}
		key = strings.TrimSpace(key)
		if _, dup := out.get(key); dup {
			return out, errors.New("dkim: duplicate tag name")
		}
		out = append(out, struct{ k, v string }{key, strings.TrimSpace(value)})
	}
	return out, nil
}

// stripWhitespace removes every Unicode space, as go-msgauth does (with
// strings.Map, which also turns invalid UTF-8 into U+FFFD).
func stripWhitespace(s string) string {
	spaces := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			return strings.Map(func(r rune) rune {
				if unicode.IsSpace(r) {
					return -1
				}
				return r
			}, s)
		}
		spaces = spaces || asciiSpace[c]
	}
	if !spaces {
		return s // the common case: nothing to strip, nothing allocated
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if !asciiSpace[s[i]] {
			b = append(b, s[i])
		}
	}
	return string(b)
}

var asciiSpace = [128]bool{'\t': true, '\n': true, '\v': true, '\f': true, '\r': true, ' ': true}

func parseTagNames(s string) []string {
	tags := strings.Split(s, ":")
	for i, t := range tags {
		tags[i] = stripWhitespace(t)
	}
	return tags
}

// dkimKey is a parsed key record (go-msgauth's queryResult), or why it is
// unusable.
type dkimKey struct {
	rsa       *rsa.PublicKey
	ed        ed25519.PublicKey
	keyAlgo   string
	hashAlgos []string
	services  []string
	err       *dkimErr
}

// dkimKeyCache keeps parsed keys by their record: the record comes from the
// DNS cache, which honours its TTL, so a key is parsed once per record.
var dkimKeyCache = func() *lru.Cache[string, *dkimKey] {
	c, _ := lru.New[string, *dkimKey](1024)
	return c
}()

func parseKeyRecord(s string) *dkimKey {
	if k, ok := dkimKeyCache.Get(s); ok {
		return k
	}
	k := parseKey(s)
	dkimKeyCache.Add(s, k)
	return k
}

// parseKey is go-msgauth's parsePublicKey.
func parseKey(s string) *dkimKey {
	params, err := parseTags(s)
	if err != nil {
		return &dkimKey{err: permFail("key record error: " + err.Error())}
	}
	if v, ok := params.get("v"); ok && v != "DKIM1" {
		return &dkimKey{err: permFail("incompatible public key version")}
	}
	p, ok := params.get("p")
	if !ok {
		return &dkimKey{err: permFail("key syntax error: missing public key data")}
	}
	if p == "" {
		return &dkimKey{err: permFail("key revoked")}
	}
	p = strings.ReplaceAll(p, " ", "")
	b, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return &dkimKey{err: permFail("key syntax error: " + err.Error())}
	}
	k := &dkimKey{}
	switch kt, _ := params.get("k"); kt {
	case "rsa", "":
		pub, err := x509.ParsePKIXPublicKey(b)
		if err != nil {
			pub, err = x509.ParsePKCS1PublicKey(b)
			if err != nil {
				return &dkimKey{err: permFail("key syntax error: " + err.Error())}
			}
		}
		rsaPub, ok := pub.(*rsa.PublicKey)
		if !ok {
			return &dkimKey{err: permFail("key syntax error: not an RSA public key")}
		}
		if rsaPub.Size()*8 < 1024 {
			return &dkimKey{err: permFail(fmt.Sprintf("key is too short: want 1024 bits, has %v bits", rsaPub.Size()*8))}
		}
		k.rsa, k.keyAlgo = rsaPub, "rsa"
	case "ed25519":
		if len(b) != ed25519.PublicKeySize {
			return &dkimKey{err: permFail(fmt.Sprintf("invalid Ed25519 public key size: %v bytes", len(b)))}
		}
		k.ed, k.keyAlgo = ed25519.PublicKey(b), "ed25519"
	default:
		return &dkimKey{err: permFail("unsupported key algorithm")}
	}
	if h, ok := params.get("h"); ok {
		k.hashAlgos = parseTagNames(h)
	}
	if s, ok := params.get("s"); ok {
		services := parseTagNames(s)
		wild := false
		for _, s := range services {
			wild = wild || s == "*"
		}
		if !wild {
			k.services = services
		}
	}
	return k
}

// queryKey is go-msgauth's queryDNSTXT, through the resolver and the cache.
func queryKey(ctx context.Context, res TXTResolver, domain, selector string) *dkimKey {
	txts, err := res.LookupTXT(ctx, selector+"._domainkey."+domain)
	//lint:ignore SA1019 go-msgauth's own test, kept so that the two agree on temperror
	if netErr, ok := err.(net.Error); ok && netErr.Temporary() {
		return &dkimKey{err: tempFail("key unavailable: " + err.Error())}
	} else if err != nil {
		return &dkimKey{err: permFail("no key for signature: " + err.Error())}
	}
	switch len(txts) {
	case 0:
		return &dkimKey{err: permFail("no valid key found")}
	case 1:
		return parseKeyRecord(txts[0])
	default:
		return &dkimKey{err: permFail("multiple TXT records found for key")}
	}
}

// dkimSig is one signature on its way through verification.
type dkimSig struct {
	field string // the DKIM-Signature field as go-msgauth reads it: each line ended by CRLF
	v     dkimVerification
	tags  tagList
	key   *dkimKey
	hkeys []string
	hcan  string // header canonicalization: "simple" or "relaxed"
	bcan  string // body canonicalization
	bh    []byte // the body hash it claims
	b     []byte // the signature
}

// dkimVerifier verifies the signatures of one message.
type dkimVerifier struct {
	h      *message.Header
	fields []string // each field as go-msgauth reads it, made when first needed
	names  []string // each field's name as go-msgauth reads it, trimmed
	now    func() time.Time
}

// field returns field i as go-msgauth reads it.
func (vf *dkimVerifier) field(i int) string {
	if vf.fields[i] == "" {
		vf.fields[i] = fieldString(vf.h.Fields[i].Raw)
	}
	return vf.fields[i]
}

// fieldString is a field as go-msgauth's textproto reader gives it: every
// line's end (LF, CRLF, or a CR before it too) becomes CRLF.
func fieldString(raw []byte) string {
	var b strings.Builder
	b.Grow(len(raw) + 2)
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		b.Write(line)
		b.WriteString("\r\n")
	}
	return b.String()
}

func newDKIMVerifier(h *message.Header) *dkimVerifier {
	v := &dkimVerifier{h: h, fields: make([]string, len(h.Fields)), names: make([]string, len(h.Fields)), now: time.Now}
	for i := range h.Fields {
		raw := h.Fields[i].Raw
		if nl := bytes.IndexByte(raw, '\n'); nl < 0 || bytes.IndexByte(raw[:nl], ':') >= 0 {
			// The name ends on the first line: it is message's.
			v.names[i] = h.Fields[i].Name
			continue
		}
		k, _, _ := strings.Cut(v.field(i), ":")
		v.names[i] = strings.TrimSpace(k)
	}
	return v
}

// prepare runs every step of go-msgauth's verify up to the body hash: tags,
// key, algorithms. It returns false when the signature is done (failed).
func (vf *dkimVerifier) prepare(ctx context.Context, res TXTResolver, s *dkimSig) bool {
	_, value, _ := strings.Cut(s.field, ":")
	value = strings.TrimSpace(value)
	var err error
	if s.tags, err = parseTags(value); err != nil {
		s.v.Err = permFail("malformed signature tags: " + err.Error())
		return false
	}
	if v, _ := s.tags.get("v"); v != "1" {
		s.v.Err = permFail("incompatible signature version")
		return false
	}
	d, _ := s.tags.get("d")
	s.v.Domain = stripWhitespace(d)
	for _, tag := range []string{"v", "a", "b", "bh", "d", "h", "s"} {
		if _, ok := s.tags.get(tag); !ok {
			s.v.Err = permFail("signature missing required tag")
			return false
		}
	}
	if i, ok := s.tags.get("i"); ok {
		s.v.Identifier = stripWhitespace(i)
		if !strings.HasSuffix(s.v.Identifier, "@"+s.v.Domain) && !strings.HasSuffix(s.v.Identifier, "."+s.v.Domain) {
			s.v.Err = permFail("domain mismatch")
			return false
		}
	} else {
		s.v.Identifier = "@" + s.v.Domain
	}
	h, _ := s.tags.get("h")
	s.hkeys = parseTagNames(h)
	from := false
	for _, k := range s.hkeys {
		from = from || strings.EqualFold(k, "from")
	}
	if !from {
		s.v.Err = permFail("From field not signed")
		return false
	}
	if t, ok := s.tags.get("t"); ok {
		if _, err := strconv.ParseInt(stripWhitespace(t), 10, 64); err != nil {
			s.v.Err = permFail("malformed time: " + err.Error())
			return false
		}
	}
	if x, ok := s.tags.get("x"); ok {
		sec, err := strconv.ParseInt(stripWhitespace(x), 10, 64)
		if err != nil {
			s.v.Err = permFail("malformed expiration time: " + err.Error())
			return false
		}
		if vf.now().After(time.Unix(sec, 0)) {
			s.v.Err = permFail("signature has expired")
			return false
		}
	}

	methods := []string{"dns/txt"}
	if q, ok := s.tags.get("q"); ok {
		methods = parseTagNames(q)
	}
	for _, m := range methods {
		if m == "dns/txt" {
			sel, _ := s.tags.get("s")
			s.key = queryKey(ctx, res, s.v.Domain, stripWhitespace(sel))
			break
		}
	}
	switch {
	case s.key == nil:
		s.v.Err = permFail("unsupported public key query method")
		return false
	case s.key.err != nil:
		s.v.Err = s.key.err
		return false
	}

	a, _ := s.tags.get("a")
	keyAlgo, hashAlgo, ok := strings.Cut(stripWhitespace(a), "-")
	if !ok {
		s.v.Err = permFail("malformed algorithm name")
		return false
	}
	if s.key.hashAlgos != nil {
		ok := false
		for _, h := range s.key.hashAlgos {
			ok = ok || h == hashAlgo
		}
		if !ok {
			s.v.Err = permFail("inappropriate hash algorithm")
			return false
		}
	}
	switch hashAlgo {
	case "sha1":
		s.v.Err = permFail("hash algorithm too weak: sha1")
		return false
	case "sha256":
	default:
		s.v.Err = permFail("unsupported hash algorithm")
		return false
	}
	if s.key.keyAlgo != keyAlgo {
		s.v.Err = permFail("inappropriate key algorithm")
		return false
	}
	if s.key.services != nil {
		ok := false
		for _, sv := range s.key.services {
			ok = ok || sv == "email"
		}
		if !ok {
			s.v.Err = permFail("inappropriate service")
			return false
		}
	}
	c, _ := s.tags.get("c")
	s.hcan, s.bcan = "simple", "simple"
	cans := strings.SplitN(stripWhitespace(c), "/", 2)
	if cans[0] != "" {
		s.hcan = cans[0]
	}
	if len(cans) > 1 {
		s.bcan = cans[1]
	}
	if s.hcan != "simple" && s.hcan != "relaxed" {
		s.v.Err = permFail("unsupported header canonicalization algorithm")
		return false
	}
	if s.bcan != "simple" && s.bcan != "relaxed" {
		s.v.Err = permFail("unsupported body canonicalization algorithm")
		return false
	}
	if _, ok := s.tags.get("l"); ok {
		s.v.Err = sigFail("message contains an insecure body length tag")
		return false
	}
	bh, _ := s.tags.get("bh")
	if s.bh, err = decodeBase64(stripWhitespace(bh)); err != nil {
		s.v.Err = permFail("malformed body hash: " + err.Error())
		return false
	}
	b, _ := s.tags.get("b")
	if s.b, err = decodeBase64(stripWhitespace(b)); err != nil {
		s.v.Err = permFail("malformed signature: " + err.Error())
		return false
	}
	return true
}

func decodeBase64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

// finish compares the body hash and verifies the signature over the
// header (go-msgauth's verify from "Check body hash" on).
func (vf *dkimVerifier) finish(s *dkimSig, bodyHash []byte, buf *[]byte) {
	if subtle.ConstantTimeCompare(bodyHash, s.bh) != 1 {
		s.v.Err = sigFail("body hash did not verify")
		return
	}
	h := sha256.New()
	var picked map[string]int
	for _, key := range s.hkeys {
		lk := strings.ToLower(key)
		at := 0
		if picked != nil {
			at = picked[lk]
		}
		kv := ""
		for i := len(vf.names) - 1; i >= 0; i-- {
			if !strings.EqualFold(vf.names[i], lk) {
				continue
			}
			if at == 0 {
				if picked == nil {
					picked = map[string]int{}
				}
				picked[lk]++
				kv = vf.field(i)
				break
			}
			at--
		}
		if kv == "" {
			continue // a field that does not exist contributes nothing
		}
		*buf = canonHeader((*buf)[:0], kv, s.hcan == "relaxed")
		h.Write(*buf)
	}
	*buf = canonHeader((*buf)[:0], removeSignature(s.field), s.hcan == "relaxed")
	*buf = bytes.TrimRight(*buf, "\r\n")
	h.Write(*buf)
	var sum [sha256.Size]byte
	hashed := h.Sum(sum[:0])
	switch s.key.keyAlgo {
	case "rsa":
		if err := rsa.VerifyPKCS1v15(s.key.rsa, crypto.SHA256, hashed, s.b); err != nil {
			s.v.Err = sigFail("signature did not verify: " + err.Error())
		}
	case "ed25519":
		if !ed25519.Verify(s.key.ed, hashed, s.b) {
			s.v.Err = sigFail("signature did not verify: dkim: invalid Ed25519 signature")
		}
	}
}

// canonHeader appends a field in the header canonicalization (go-msgauth's
// CanonicalizeHeader: simple keeps it; relaxed lower-cases the name and
// reduces every run of space, tab, CR and LF in the value to one space,
// with none at either end).
func canonHeader(dst []byte, kv string, relaxed bool) []byte {
	if !relaxed {
		return append(dst, kv...)
	}
	k, v, ok := strings.Cut(kv, ":")
	if !ok {
		return append(appendLowerTrim(dst, kv), ":\r\n"...)
	}
	dst = append(appendLowerTrim(dst, k), ':')
	space, started := false, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case ' ', '\t', '\r', '\n':
			space = true
		default:
			if space && started {
				dst = append(dst, ' ')
			}
			space, started = false, true
			dst = append(dst, c)
		}
	}
	return append(dst, "\r\n"...)
}

// appendLowerTrim appends strings.TrimSpace(strings.ToLower(s)).
func appendLowerTrim(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return append(dst, strings.TrimSpace(strings.ToLower(s))...)
		}
	}
	s = strings.TrimSpace(s)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// removeSignature empties the b= tag: go-msgauth's regexp `(b\s*=)[^;]+`
// replaced by "$1", everywhere it matches.
func removeSignature(s string) string {
	var out []byte
	last := 0
	for i := 0; i < len(s); i++ {
		if s[i] != 'b' {
			continue
		}
		j := i + 1
		for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\f' || s[j] == '\r') {
			j++
		}
		if j >= len(s) || s[j] != '=' {
			continue
		}
		j++
		k := j
		for k < len(s) && s[k] != ';' {
			k++
		}
		if k == j {
			continue // [^;]+ needs one
		}
		out = append(out, s[last:j]...)
		last, i = k, k-1
	}
	if out == nil {
		return s
	}
	return string(append(out, s[last:]...))
}

// bodyHasher hashes a body in one canonicalization (go-msgauth's simple
// and relaxed body canonicalizers, and its crlfFixer: a LF without CR
// before it counts as CRLF).
type bodyHasher struct {
	h       hash.Hash
	relaxed bool
	prevCR  bool   // the last byte seen was CR (crlfFixer)
	crlf    []byte // line ends held back (trailing empty lines are dropped)
	wsp     bool   // relaxed: white space held back
	written bool   // relaxed: something was written
	out     []byte // scratch
}

var bodyHashers = sync.Pool{New: func() any { return &bodyHasher{h: sha256.New(), out: make([]byte, 0, 4096)} }}

func newBodyHasher(relaxed bool) *bodyHasher {
	b := bodyHashers.Get().(*bodyHasher)
	b.h.Reset()
	b.relaxed, b.prevCR, b.wsp, b.written = relaxed, false, false, false
	b.crlf = b.crlf[:0]
	return b
}

// free gives b back, once its sum is taken.
func (b *bodyHasher) free() {
	if cap(b.crlf) > 4096 {
		b.crlf = nil
	}
	if cap(b.out) > 8192 {
		b.out = make([]byte, 0, 4096)
	}
	bodyHashers.Put(b)
}

func (b *bodyHasher) Write(p []byte) (int, error) {
	for len(p) > 0 {
		n := min(len(p), 2048)
		b.write(p[:n])
		p = p[n:]
	}
	return 0, nil
}

// write canonicalizes p (at most half of out's capacity, doubled by the
// fixer at worst) into the hash.
func (b *bodyHasher) write(p []byte) {
	out := b.out[:0]
	if b.relaxed {
		for i := 0; i < len(p); {
			switch ch := p[i]; ch {
			case ' ', '\t':
				b.wsp, b.prevCR = true, false
				i++
			case '\r':
				b.wsp, b.prevCR = false, true
				b.crlf = append(b.crlf, ch)
				i++
			case '\n':
				if !b.prevCR {
					b.crlf = append(b.crlf, '\r')
				}
				b.wsp, b.prevCR = false, false
				b.crlf = append(b.crlf, ch)
				i++
			default:
				if len(b.crlf) > 0 {
					out = append(out, b.crlf...)
					b.crlf = b.crlf[:0]
				}
				if b.wsp {
					out = append(out, ' ')
					b.wsp = false
				}
				j := i + 1 // a run of text goes as it is
				for j < len(p) && !bodySpecial[p[j]] {
					j++
				}
				out = append(out, p[i:j]...)
				b.prevCR = false
				i = j
			}
		}
		if len(out) > 0 {
			b.written = true
		}
	} else {
		for i := 0; i < len(p); {
			ch := p[i]
			if ch != '\r' && ch != '\n' {
				j := i + 1 // a run without line ends goes as it is
				for j < len(p) && p[j] != '\r' && p[j] != '\n' {
					j++
				}
				out = append(append(out, b.crlf...), p[i:j]...)
				b.crlf = b.crlf[:0]
				b.prevCR = false
				i = j
				continue
			}
			prevCR := b.prevCR
			b.prevCR = ch == '\r'
			if ch == '\n' && !prevCR {
				out = b.simple(out, '\r')
			}
			out = b.simple(out, ch)
			i++
		}
	}
	b.h.Write(out)
	b.out = out[:0]
}

// bodySpecial are the bytes the relaxed body canonicalization looks at.
var bodySpecial = [256]bool{' ': true, '\t': true, '\r': true, '\n': true}

// simple takes one byte of the simple canonicalization: line ends are held
// back while nothing but line ends comes (CRLFs, and a CR that may be the
// start of one), as trailing empty lines are dropped.
func (b *bodyHasher) simple(out []byte, ch byte) []byte {
	n := len(b.crlf)
	switch {
	case ch == '\r':
		if n > 0 && b.crlf[n-1] == '\r' {
			// The CR held is not followed by LF: it and what came before
			// it are not trailing line ends.
			out = append(out, b.crlf...)
			b.crlf = b.crlf[:0]
		}
		b.crlf = append(b.crlf, '\r')
	case ch == '\n' && n > 0 && b.crlf[n-1] == '\r':
		b.crlf = append(b.crlf, '\n')
	default:
		out = append(append(out, b.crlf...), ch)
		b.crlf = b.crlf[:0]
	}
	return out
}

func (b *bodyHasher) sum() []byte {
	if b.relaxed {
		if b.written {
			b.h.Write([]byte("\r\n"))
		}
	} else {
		if n := len(b.crlf); n > 0 && b.crlf[n-1] == '\r' {
			b.h.Write(b.crlf) // a CR that no LF followed
		}
		b.h.Write([]byte("\r\n"))
	}
	return b.h.Sum(nil)
}

var dkimBufs = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// verifyDKIM verifies the first limit signatures of the message with
// header h and body (what follows the header), reading body once, to the
// end when any signature needs its hash. It returns the verifications in
// header order, how many signatures were ignored, and an error when the
// body could not be read (then nothing is known).
func verifyDKIM(ctx context.Context, res TXTResolver, h *message.Header, body io.Reader, limit int) ([]dkimVerification, int, error) {
	vf := newDKIMVerifier(h)
	var sigs []*dkimSig
	ignored := 0
	for i := range h.Fields {
		// The field's name as message reads it (from its first line), as
		// DKIM.verify labels the signatures: the two line up.
		if strings.EqualFold(h.Fields[i].Name, "DKIM-Signature") {
			if len(sigs) == limit {
				ignored++
				continue
			}
			sigs = append(sigs, &dkimSig{field: vf.field(i)})
		}
	}
	var simple, relaxed *bodyHasher
	for _, s := range sigs {
		if !vf.prepare(ctx, res, s) {
			continue
		}
		if s.bcan == "relaxed" && relaxed == nil {
			relaxed = newBodyHasher(true)
		} else if s.bcan == "simple" && simple == nil {
			simple = newBodyHasher(false)
		}
	}
	if simple != nil || relaxed != nil {
		bp := dkimBufs.Get().(*[]byte)
		defer dkimBufs.Put(bp)
		buf := (*bp)[:cap(*bp)]
		for {
			n, err := body.Read(buf)
			if n > 0 {
				if simple != nil {
					simple.Write(buf[:n])
				}
				if relaxed != nil {
					relaxed.Write(buf[:n])
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				if simple != nil {
					simple.free()
				}
				if relaxed != nil {
					relaxed.free()
				}
				return nil, ignored, err
			}
		}
		var simpleSum, relaxedSum []byte
		if simple != nil {
			simpleSum = simple.sum()
			simple.free()
		}
		if relaxed != nil {
			relaxedSum = relaxed.sum()
			relaxed.free()
		}
		scratch := buf[:0]
		for _, s := range sigs {
			if s.v.Err != nil || s.key == nil {
				continue
			}
			sum := simpleSum
			if s.bcan == "relaxed" {
				sum = relaxedSum
			}
			vf.finish(s, sum, &scratch)
		}
	}
	out := make([]dkimVerification, len(sigs))
	for i, s := range sigs {
		out[i] = s.v
	}
	return out, ignored, nil
}
