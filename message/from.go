package message

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
)

// addressParser reads address lists without decoding display names: only
// the domains matter here, and net/mail refuses the whole list when an
// encoded word uses a charset it does not know (windows-1252, say).
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, input io.Reader) (io.Reader, error) { return input, nil },
}}

// FromDomains returns the domain of every mailbox in the RFC 5322 From
// field (lower case, without a trailing dot), in order; display names,
// comments and groups are allowed. A message should have exactly one From
// field with one mailbox (RFC 7489 §6.6.1 is why that matters); the result
// has one domain per mailbox found, across all From fields. When there is
// no From field, or one does not parse, it returns no domains and an
// error saying why.
func FromDomains(h *Header) ([]string, error) {
	values := h.Values("From")
	if len(values) == 0 {
		return nil, errors.New("no From field")
	}
	var domains []string
	for _, v := range values {
		addrs, err := addressParser.ParseList(v)
		if err != nil {
			return nil, fmt.Errorf("From %q: %v", v, err)
		}
		for _, a := range addrs {
			at := strings.LastIndexByte(a.Address, '@')
			d := strings.ToLower(strings.TrimSuffix(a.Address[at+1:], "."))
			if at < 0 || d == "" {
				return nil, fmt.Errorf("From %q: address %q has no domain", v, a.Address)
			}
			domains = append(domains, d)
		}
	}
	if len(domains) == 0 {
		return nil, fmt.Errorf("From %q: no address", strings.Join(values, ", "))
	}
	return domains, nil
}

// AuthservID returns the authserv-id of an Authentication-Results field
// value (RFC 8601 §2.2): the first token or quoted string after any
// comments, e.g. "mx.example.com" in "mx.example.com 1; spf=pass". It is
// tolerant of sloppy syntax because its job is to spot forgeries, which
// need not be well formed; it returns "" when there is nothing.
func AuthservID(value string) string {
	s := skipCFWS(value)
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			switch c := s[i]; c {
			case '\\':
				if i+1 < len(s) {
					i++
					b.WriteByte(s[i])
				}
			case '"':
				return b.String()
			default:
				b.WriteByte(c)
			}
		}
		return b.String()
	}
	end := strings.IndexAny(s, " \t\r\n;(")
	if end < 0 {
		end = len(s)
	}
	return s[:end]
}

// skipCFWS skips white space and (possibly nested) comments.
func skipCFWS(s string) string {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case c == '\\' && depth > 0:
			i++
		case depth > 0, c == ' ', c == '\t', c == '\r', c == '\n':
		default:
			return s[i:]
		}
	}
	return ""
}
