package checks

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mxguard/mxguard/config"
)

// AuthenticationResults returns a complete Authentication-Results header
// field (RFC 8601), folded, ending in CRLF, e.g.
//
//	Authentication-Results: mx.example.com; spf=pass
//		smtp.mailfrom=alice@example.org; dkim=pass header.d=example.org header.s=sel;
//		dmarc=pass header.from=example.org
//
// spf and dmarc may be nil when not evaluated; no signatures give
// dkim=none. Values that came from the client or the message are made
// safe first: nothing they contain can end the field or add one.
func AuthenticationResults(authservID string, spf *SPFResult, dkim []DKIMSignature, dmarc *DMARCResult) string {
	// Written the way go-msgauth's authres.Format writes it, byte for
	// byte (TestAuthresFormatAsGoMsgauth holds the two together), without
	// its maps and concatenations: it runs for every message.
	var b strings.Builder
	b.Grow(160)
	b.WriteString(headerSafe(authservID))
	result := func(method, value string) {
		b.WriteString("; ")
		b.WriteString(method)
		b.WriteByte('=')
		b.WriteString(value)
		b.WriteByte(' ')
	}
	if spf != nil && spf.Result != "" {
		result("spf", spf.Result)
		if spf.Identity == "helo" {
			param(&b, "smtp.helo", headerSafe(spf.HELO), true)
		} else {
			param(&b, "smtp.mailfrom", headerSafe(spf.Sender), true)
		}
	}
	if len(dkim) == 0 {
		result("dkim", "none")
	}
	for _, s := range dkim {
		result("dkim", s.Result)
		d := headerSafe(s.Domain)
		param(&b, "header.d", d, true)
		param(&b, "header.s", headerSafe(s.Selector), d == "")
	}
	if dmarc != nil && dmarc.Result != "" {
		result("dmarc", dmarc.Result)
		param(&b, "header.from", headerSafe(dmarc.Domain), true)
	}
	return foldField("Authentication-Results", b.String())
}

// param writes a result's property as authres.Format does: none when
// empty, a space before all but the first, the value as a pvalue.
func param(b *strings.Builder, key, value string, first bool) {
	if value == "" {
		return
	}
	if !first {
		b.WriteByte(' ')
	}
	b.WriteString(key)
	b.WriteByte('=')
	if addressLike(value) || !needsQuotes(value) {
		b.WriteString(value)
		return
	}
	b.WriteByte('"')
	b.WriteString(strings.ReplaceAll(value, `"`, `\"`))
	b.WriteByte('"')
}

// addressLike: letters, digits and the punctuation go-msgauth leaves
// unquoted in a property value (not ( ) = ").
func addressLike(s string) bool {
	for _, c := range s {
		if !unicode.IsLetter(c) && !unicode.IsDigit(c) && !strings.ContainsRune("#$%&'*+,./-@[]\\^_`{|}~", c) {
			return false
		}
	}
	return true
}

// needsQuotes: white space, controls or MIME's tspecials (RFC 2045).
func needsQuotes(s string) bool {
	for _, c := range s {
		if c <= ' ' || strings.ContainsRune(`()<>@,;:\"/[]?=`, c) {
			return true
		}
	}
	return false
}

// Built once: a Replacer is costly to build and these run for every message.
var (
	noParens     = strings.NewReplacer("(", "?", ")", "?")
	quoteEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`)
)

// ReceivedSPF returns a Received-SPF header field (RFC 7208 §9.1) for r,
// as seen by receiver (our host name), folded and ending in CRLF, e.g.
//
//	Received-SPF: pass (mx.example.com: domain of alice@example.org
//		designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1;
//		envelope-from=alice@example.org; helo=mail.example.org;
//		receiver=mx.example.com; identity=mailfrom;
func ReceivedSPF(receiver string, r *SPFResult) string {
	receiver = headerSafe(receiver)
	who := headerSafe(r.Sender)
	if r.Identity == "helo" {
		who = "postmaster@" + headerSafe(r.HELO)
	}
	// The comment holds client text: no parentheses or backslashes, so
	// that it cannot end early or swallow what follows.
	who = noParens.Replace(who)
	ip := r.Client.String()
	var comment string
	switch r.Result {
	case "pass":
		comment = "domain of " + who + " designates " + ip + " as permitted sender"
	case "fail":
		comment = "domain of " + who + " does not designate " + ip + " as permitted sender"
	case "softfail":
		comment = "domain of transitioning " + who + " does not designate " + ip + " as permitted sender"
	case "neutral":
		comment = ip + " is neither permitted nor denied by domain of " + who
	case "none":
		comment = "domain of " + who + " does not designate permitted sender hosts"
	case "temperror":
		comment = "error in processing during lookup of " + who
	default:
		comment = "domain of " + who + " has an unusable SPF record"
	}
	var b strings.Builder
	b.Grow(200 + len(comment))
	b.WriteString(headerSafe(r.Result))
	b.WriteString(" (")
	b.WriteString(noParens.Replace(receiver))
	b.WriteString(": ")
	b.WriteString(comment)
	b.WriteByte(')')
	kv := func(k, v string) {
		b.WriteByte(' ')
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(kvValue(v))
		b.WriteByte(';')
	}
	kv("client-ip", ip)
	if r.Sender != "" {
		kv("envelope-from", headerSafe(r.Sender))
	}
	if r.HELO != "" {
		kv("helo", headerSafe(r.HELO))
	}
	if r.Result == "permerror" && r.Explanation != "" {
		// Not for temperror: its DNS errors name our resolvers.
		kv("problem", headerSafe(r.Explanation))
	}
	kv("receiver", receiver)
	kv("identity", r.Identity)
	return foldField("Received-SPF", b.String())
}

// kvValue writes a Received-SPF value as a dot-atom when it is one, else
// as a quoted string (RFC 7208 §9.1, RFC 5322 §3.2.3-4).
func kvValue(v string) string {
	atom := v != "" && !strings.HasPrefix(v, ".") && !strings.HasSuffix(v, ".") && !strings.Contains(v, "..")
	for _, c := range v {
		if !isAtext(c) && c != '.' {
			atom = false
		}
	}
	if atom {
		return v
	}
	return `"` + quoteEscaper.Replace(v) + `"`
}

func isAtext(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", c) || c >= 0x80
}

// headerSafe makes client text fit for a header field: anything that is
// not a printable character (CR, LF, NUL, other controls, invalid UTF-8,
// bidi overrides) becomes "?"; so do backslashes, which go-msgauth's
// formatter does not escape inside quoted strings, and semicolons, on
// which naive parsers (go-msgauth's among them) split a field even
// inside quotes: "x;dkim=pass"@example.org must not read as a result of
// ours. It is cut at 255 bytes so that lines stay far below 998.
func headerSafe(s string) string {
	if len(s) <= maxTagLen && plainASCII(s) {
		return s // the common case, without a copy
	}
	var b strings.Builder
	for _, c := range s {
		if c == '\\' || c == ';' || c == unicode.ReplacementChar || !unicode.IsPrint(c) {
			c = '?'
		}
		if b.Len()+utf8.RuneLen(c) > maxTagLen {
			break
		}
		b.WriteRune(c)
	}
	return b.String()
}

// plainASCII reports whether s is printable ASCII without the two
// characters headerSafe replaces: such text passes through unchanged.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '\\' || c == ';' {
			return false
		}
	}
	return true
}

// foldWidth is the line length RFC 5322 §2.1.1 recommends.
const foldWidth = 78

// foldField writes "name: value" folded at white space outside quoted
// strings to lines of about foldWidth, continuation lines starting with a
// tab, and a final CRLF. A word longer than a line stays whole.
func foldField(name, value string) string {
	var b strings.Builder
	b.Grow(len(name) + len(value) + len(value)/foldWidth*3 + 4)
	b.WriteString(name)
	b.WriteByte(':')
	n, start := len(name)+1, len(name)+1
	for _, w := range words(value) {
		if n+1+len(w) > foldWidth && n > start {
			b.WriteString("\r\n\t")
			n = 1
		} else {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	b.WriteString("\r\n")
	return b.String()
}

// words splits at runs of white space that are not inside a quoted
// string, where folding would change the value. (In a comment it only
// turns a space into a tab.)
func words(s string) []string {
	ws := make([]string, 0, 16)
	quoted, depth, escaped, start := false, 0, false, -1
	for i, c := range s {
		switch {
		case escaped:
			escaped = false
		case c == '\\' && (quoted || depth > 0):
			escaped = true
		case c == '"' && depth == 0:
			quoted = !quoted
		case c == '(' && !quoted:
			depth++
		case c == ')' && !quoted && depth > 0:
			depth--
		case (c == ' ' || c == '\t') && !quoted:
			if start >= 0 {
				ws = append(ws, s[start:i])
				start = -1
			}
			continue
		case c == ';' && start < 0 && len(ws) > 0 && !quoted && depth == 0:
			// go-msgauth writes "dkim=none ; ..." for a result
			// without properties: keep the ";" on its word.
			ws[len(ws)-1] += ";"
			continue
		}
		if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		ws = append(ws, s[start:])
	}
	return ws
}

// AuthHeaders returns the header fields that report a transaction's
// authentication results, as configured: Authentication-Results (SPF,
// DKIM and DMARC as far as they ran) and Received-SPF.
func AuthHeaders(s *Session, authservID string, h config.Headers) []byte {
	spf, _ := Get(s, SPFKey)
	var out []byte
	if h.AuthenticationResults {
		sigs, _ := Get(s, DKIMKey)
		dmarc, _ := Get(s, DMARCKey)
		out = append(out, AuthenticationResults(authservID, spf, sigs, dmarc)...)
	}
	if h.ReceivedSPF && spf != nil {
		out = append(out, ReceivedSPF(authservID, spf)...)
	}
	return out
}
