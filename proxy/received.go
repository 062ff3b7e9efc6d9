package proxy

import (
	"strings"

	"github.com/mxguard/mxguard/pipeline"
	"time"
)

// received builds our Received: header (RFC 5321 §4.4) for the hop:
//
//	Received: from helo (rdns [ip]) by hostname (mxguard) with ESMTPS id ID for <rcpt>; date
//
// Everything that came from the client is cleaned first, so no HELO or
// address can inject a header line.
func (se *session) received() []byte {
	st := se.st
	var b strings.Builder
	b.Grow(256)
	b.WriteString("Received: from ")
	b.WriteString(clean(se.c.Hostname(), 255))
	b.WriteString(" (")
	if name := st.pipe.RDNS(); name != "" && name != pipeline.TempUnavail {
		b.WriteString(clean(name, 255))
		b.WriteByte(' ')
	}
	b.WriteByte('[')
	b.WriteString(st.client.Addr().String())
	b.WriteString("])\r\n\tby ")
	b.WriteString(st.rt.Cfg.Hostname)
	b.WriteString(" (mxguard) with ESMTP")
	if st.tls {
		b.WriteByte('S')
	}
	b.WriteString(" id ")
	b.WriteString(st.id)
	if rcpts := st.pipe.Rcpts(); len(rcpts) == 1 { // more would tell each recipient about the others
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
