package proxy

import (
	"strings"

	"github.com/mxguard/mxguard/checks"
	"time"
)

// received builds our Received: header (RFC 5321 §4.4) for the hop:
//
//	Received: from helo (rdns [ip]) by hostname (mxguard) with ESMTPS id ID for <rcpt>; date
//
// Everything that came from the client is cleaned first, so no HELO or
// address can inject a header line.
func (c *conn) received() []byte {
	var b strings.Builder
	b.Grow(256)
	b.WriteString("Received: from ")
	b.WriteString(clean(c.helo(), 255))
	b.WriteString(" (")
	if name := c.pipe.RDNS(); name != "" && name != checks.TempUnavail {
		b.WriteString(clean(name, 255))
		b.WriteByte(' ')
	}
	if c.client.IsValid() {
		b.WriteByte('[')
		b.WriteString(c.client.Addr().String())
		b.WriteString("])\r\n\tby ")
	} else {
		b.WriteString("address unknown)\r\n\tby ") // a PROXY header named no client
	}
	b.WriteString(c.rt.Cfg.Hostname)
	b.WriteString(" (mxguard) with ESMTP")
	if c.tls {
		b.WriteByte('S')
	}
	b.WriteString(" id ")
	b.WriteString(c.id)
	if rcpts := c.pipe.Rcpts(); len(rcpts) == 1 { // more would tell each recipient about the others
		b.WriteString("\r\n\tfor <")
		b.WriteString(clean(rcpts[0], 255))
		b.WriteByte('>')
	}
	b.WriteString(";\r\n\t")
	b.WriteString(time.Now().Format(time.RFC1123Z))
	b.WriteString("\r\n")
	return []byte(b.String())
}

// clean keeps printable ASCII that cannot break a header or a comment in
// it; anything else (CR, LF, NUL, controls, 8-bit, parentheses) becomes '?'.
func clean(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	ok := true
	for i := 0; i < len(s); i++ {
		if !safeHeaderByte(s[i]) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if !safeHeaderByte(c) {
			b[i] = '?'
		}
	}
	return string(b)
}

func safeHeaderByte(c byte) bool {
	return c > ' ' && c < 0x7f && c != '(' && c != ')' && c != '\\' && c != ';'
}
