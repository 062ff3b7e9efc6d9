package mailsink

import "bufio"

// readData reads dot-stuffed message content from r up to and including the
// terminating CRLF "." CRLF, appending the un-stuffed content to buf.
//
// Lines are CRLF-terminated: a bare LF (or bare CR) is ordinary content, so
// "\n.\n" neither ends the data nor starts a line whose dot would be removed.
// At the start of a line (the start of the content or just after a CRLF) a
// line consisting of exactly "." CRLF ends the data, and any other leading
// dot is removed (RFC 5321 section 4.5.2). Content lines have no length
// limit.
//
// If limit > 0 and the content would exceed limit bytes, the rest is read and
// discarded and tooBig is set; buf then holds at most limit bytes.
func readData(r *bufio.Reader, buf []byte, limit int64) (data []byte, tooBig bool, err error) {
	lineStart := true // just after the CRLF of the DATA command
	prevCR := false   // the last byte read was CR
	for {
		frag, err := r.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return buf, tooBig, err
		}
		complete := err == nil // frag ends with LF
		p := frag
		if lineStart && p[0] == '.' {
			if complete && len(p) == 3 && p[1] == '\r' {
				return buf, tooBig, nil
			}
			p = p[1:]
		}
		if !tooBig {
			if limit > 0 && int64(len(buf)+len(p)) > limit {
				tooBig = true
			} else {
				buf = append(buf, p...)
			}
		}
		n := len(frag)
		lineStart = complete && (n >= 2 && frag[n-2] == '\r' || n == 1 && prevCR)
		prevCR = frag[n-1] == '\r'
	}
}
