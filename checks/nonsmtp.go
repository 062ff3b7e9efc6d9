package checks

import (
	"bytes"
	"context"
	"fmt"
)

// NonSMTPName names the non-SMTP command test.
const NonSMTPName Name = "non_smtp"

// NonSMTPSpec registers postscreen's non-SMTP command test: a client that
// sends an HTTP request (GET, POST, CONNECT: an open-proxy probe, or a
// browser sent to port 25), a POP3 USER, a header line such as "Host:", or
// a line that does not begin with a letter, is no mail client. Like an
// early talker, it loses any pass it had (tests.non_smtp, on by default:
// a proxy can refuse at once, without postscreen's reconnect dance).
var NonSMTPSpec = Spec{
	Name:     NonSMTPName,
	Stages:   []Stage{AtCommand},
	Outcomes: []string{"non_smtp"},
	Test:     true,
	// No pass is remembered: the test costs a comparison per command line,
	// and a client that passed once must not be waved through the next time.
	New: func(env *Env) (Check, error) {
		if !env.Config.Tests.NonSMTP {
			return nil, nil
		}
		return nonSMTP{}, nil
	},
}

type nonSMTP struct{}

// nonSMTPVerbs are commands of other protocols, as the first word of a
// line (postscreen_forbidden_commands: CONNECT GET POST; the rest by the
// same reasoning).
var nonSMTPVerbs = [][]byte{[]byte("GET"), []byte("POST"), []byte("HEAD"), []byte("PUT"), []byte("CONNECT"),
	[]byte("OPTIONS"), []byte("USER"), []byte("PASS")}

func (nonSMTP) Run(_ context.Context, _ Stage, s *Session) []Result {
	why := nonSMTPCommand(s.Line)
	if why == "" {
		return nil
	}
	return []Result{{
		Check:    NonSMTPName,
		Outcome:  "non_smtp",
		Reason:   fmt.Sprintf("command %d is not SMTP: %s", s.Lines, why),
		Evidence: Escape(s.Line, 100),
	}}
}

// nonSMTPCommand says what is wrong with a command line, or "".
func nonSMTPCommand(line []byte) string {
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 {
		return "" // a stray empty line is the SMTP parser's to answer
	}
	if c := line[0] | 0x20; c < 'a' || c > 'z' {
		return "it does not begin with a letter"
	}
	word, _, _ := bytes.Cut(line, []byte(" "))
	for _, v := range nonSMTPVerbs {
		if bytes.EqualFold(word, v) {
			return fmt.Sprintf("%s is a command of another protocol", v)
		}
	}
	if len(word) > 1 && word[len(word)-1] == ':' && fieldName(word[:len(word)-1]) {
		return "it is a header line"
	}
	return ""
}

// fieldName reports a header field name as HTTP and mail write them
// (letters, digits and hyphens).
func fieldName(b []byte) bool {
	for _, c := range b {
		if !(c == '-' || c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z') {
			return false
		}
	}
	return true
}
