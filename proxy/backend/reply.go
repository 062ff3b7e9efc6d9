package backend

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Stages named in a ReplyError: where in the session the refusal came.
const (
	StageGreeting = "greeting"
	StageEHLO     = "ehlo" // EHLO, or HELO (fallback or client's choice)
	StageXCLIENT  = "xclient"
	StageMail     = "mail"
	StageRcpt     = "rcpt"
	StageData     = "data"     // reply to DATA itself
	StageDataEnd  = "data-end" // reply after the final dot
	StageRset     = "rset"
	StageNoop     = "noop"
	StageQuit     = "quit"
)

// Reply is an SMTP reply, as the backend sent it.
type Reply struct {
	Code int
	// Enhanced is the RFC 3463 enhanced status code of the first line
	// ("5.1.1"), "" if it has none.
	Enhanced string
	// Lines is the text of each line, without the code and, on every line
	// that carries it, without Enhanced. At least one (maybe empty) line.
	Lines []string
	// Local is set when mxguard made this reply itself and the backend never
	// saw the command (see Mail, Rcpt, Dial).
	Local bool

	raw string    // every line as received, without CRLF, joined by "\n"
	one [1]string // backing for Lines of one-line replies (saves an allocation)
}

// AppendLines appends the reply as the backend sent it, each line ending
// in CRLF.
func (r *Reply) AppendLines(b []byte) []byte {
	s := r.String()
	for {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			return append(append(b, s...), "\r\n"...)
		}
		b = append(append(b, s[:i]...), "\r\n"...)
		s = s[i+1:]
	}
}

// String returns the reply as the backend sent it (codes included), lines
// joined by "\n": for logs.
func (r *Reply) String() string {
	if r.raw != "" {
		return r.raw
	}
	var b strings.Builder
	for i, l := range r.Lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(strconv.Itoa(r.Code))
		if i < len(r.Lines)-1 {
			b.WriteByte('-')
		} else {
			b.WriteByte(' ')
		}
		if r.Enhanced != "" {
			b.WriteString(r.Enhanced)
			b.WriteByte(' ')
		}
		b.WriteString(l)
	}
	return b.String()
}

// Positive reports a 2xx or 3xx reply.
func (r *Reply) Positive() bool { return r.Code >= 200 && r.Code < 400 }

// Temporary reports a 4xx reply.
func (r *Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// Permanent reports a 5xx reply.
func (r *Reply) Permanent() bool { return r.Code >= 500 && r.Code < 600 }

// ReplyError is a refusal: the backend's (or, with Reply.Local, mxguard's)
// negative reply where success was expected, for the caller to pass on.
type ReplyError struct {
	Reply *Reply
	Stage string // one of the Stage constants
}

func (e *ReplyError) Error() string {
	how := "refused"
	if e.Reply.Local {
		how = "refused locally"
	}
	return "backend: " + e.Stage + " " + how + ": " + strings.ReplaceAll(e.Reply.String(), "\n", " | ")
}

// localRefusal makes a *ReplyError for an argument refused before sending.
func localRefusal(stage, text string) *ReplyError {
	return localReply(stage, 501, "5.5.4", text)
}

func localReply(stage string, code int, enhanced, text string) *ReplyError {
	r := &Reply{Code: code, Enhanced: enhanced, Local: true}
	r.one[0] = text
	r.Lines = r.one[:]
	return &ReplyError{Reply: r, Stage: stage}
}

// reply reads a reply and judges it (see judge).
func (c *Conn) reply(stage string, want int) (*Reply, error) {
	code, n, err := c.readReply(stage)
	if err != nil {
		return nil, err
	}
	return c.judge(stage, want, code, n)
}

// judge makes the Reply just read into c.rbuf and checks it against want: a
// class (2 = any 2xx) or an exact code. A 4xx/5xx is a *ReplyError (and a 421
// makes the Conn unusable); any other mismatch is a protocol error.
func (c *Conn) judge(stage string, want, code, nlines int) (*Reply, error) {
	r := c.makeReply(code, nlines)
	if code >= 400 {
		re := &ReplyError{Reply: r, Stage: stage}
		if code == 421 { // the backend closes the session
			c.fail(re)
		}
		return r, re
	}
	if want < 10 && code/100 != want || want >= 10 && code != want {
		return nil, c.fail(fmt.Errorf("%w: %s: unexpected reply %q", ErrProtocol, stage, r.raw))
	}
	return r, nil
}

// readReply reads one reply into c.rbuf and returns its code and number of
// lines. It does not allocate once c.rbuf has grown.
func (c *Conn) readReply(stage string) (code, nlines int, err error) {
	c.rbuf = c.rbuf[:0]
	for {
		if nlines > 0 {
			c.rbuf = append(c.rbuf, '\n')
		}
		start := len(c.rbuf)
		for {
			chunk, err := c.br.ReadSlice('\n')
			if len(c.rbuf)+len(chunk) > maxReplyBytes {
				return 0, 0, c.fail(fmt.Errorf("%w: %s: reply longer than %d bytes", ErrProtocol, stage, maxReplyBytes))
			}
			c.rbuf = append(c.rbuf, chunk...)
			if err == nil {
				break
			}
			if err != bufio.ErrBufferFull {
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("connection closed by the backend: %w", err)
				}
				return 0, 0, c.fail(fmt.Errorf("backend: read %s reply: %w", stage, err))
			}
		}
		c.rbuf = c.rbuf[:len(c.rbuf)-1] // '\n'
		if len(c.rbuf) > start && c.rbuf[len(c.rbuf)-1] == '\r' {
			c.rbuf = c.rbuf[:len(c.rbuf)-1]
		}
		line := c.rbuf[start:]
		nlines++
		lc, ok := parseCode(line)
		if !ok || len(line) > 3 && line[3] != ' ' && line[3] != '-' {
			return 0, 0, c.fail(fmt.Errorf("%w: %s: malformed reply line %q", ErrProtocol, stage, line))
		}
		if nlines == 1 {
			code = lc
		} else if lc != code {
			return 0, 0, c.fail(fmt.Errorf("%w: %s: reply code changes from %d to %d within a reply", ErrProtocol, stage, code, lc))
		}
		if len(line) == 3 || line[3] == ' ' {
			return code, nlines, nil
		}
		if nlines == maxReplyLines {
			return 0, 0, c.fail(fmt.Errorf("%w: %s: reply longer than %d lines", ErrProtocol, stage, maxReplyLines))
		}
	}
}

// parseCode parses the reply code of a line: RFC 5321 §4.2 reply-code,
// %x32-35 %x30-35 %x30-39.
func parseCode(l []byte) (int, bool) {
	if len(l) < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '5' || l[2] < '0' || l[2] > '9' {
		return 0, false
	}
	return int(l[0]-'0')*100 + int(l[1]-'0')*10 + int(l[2]-'0'), true
}

// makeReply builds a Reply from c.rbuf (two allocations: the Reply and its
// text; Lines and Enhanced are substrings of it).
func (c *Conn) makeReply(code, nlines int) *Reply {
	r := &Reply{Code: code, raw: string(c.rbuf)}
	if nlines == 1 {
		r.Lines = r.one[:0]
	} else {
		r.Lines = make([]string, 0, nlines)
	}
	rest := r.raw
	for i := 0; i < nlines; i++ {
		line, next, _ := strings.Cut(rest, "\n")
		rest = next
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		if i == 0 {
			r.Enhanced = enhancedCode(text, line[0])
		}
		if r.Enhanced != "" && strings.HasPrefix(text, r.Enhanced) &&
			(len(text) == len(r.Enhanced) || text[len(r.Enhanced)] == ' ') {
			text = strings.TrimPrefix(text[len(r.Enhanced):], " ")
		}
		r.Lines = append(r.Lines, text)
	}
	return r
}

// enhancedCode returns the RFC 3463 status code at the start of text
// (class "." subject "." detail, 1-3 digits each, followed by a space or the
// end), if its class matches the reply's first digit.
func enhancedCode(text string, class byte) string {
	if len(text) < 5 || text[0] != class || text[1] != '.' {
		return ""
	}
	i := 2
	for part := 0; part < 2; part++ {
		j := i
		for j < len(text) && j-i < 4 && text[j] >= '0' && text[j] <= '9' {
			j++
		}
		if j == i || j-i > 3 {
			return ""
		}
		if part == 0 {
			if j >= len(text) || text[j] != '.' {
				return ""
			}
			i = j + 1
			continue
		}
		if j < len(text) && text[j] != ' ' {
			return ""
		}
		return text[:j]
	}
	return ""
}
