package rules

import (
	"fmt"
	"strconv"
	"strings"
)

// Reply is an SMTP reply: "550 5.7.1 text".
type Reply struct {
	Code     int
	Enhanced string // "5.7.1", or "" for none
	Text     string
}

func (r Reply) String() string {
	if r.Enhanced == "" {
		return fmt.Sprintf("%d %s", r.Code, r.Text)
	}
	return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
}

// Temporary reports a 4xx reply.
func (r Reply) Temporary() bool { return r.Code/100 == 4 }

// ParseReply reads "550 5.7.1 text" (the enhanced code is optional, and must
// agree with the code's class when present).
func ParseReply(s string) (Reply, error) {
	s = strings.TrimSpace(s)
	code, rest, _ := strings.Cut(s, " ")
	n, err := strconv.Atoi(code)
	if err != nil || len(code) != 3 || n < 400 || n > 599 {
		return Reply{}, fmt.Errorf("reply %q must start with a 4xx or 5xx code", s)
	}
	r := Reply{Code: n, Text: strings.TrimSpace(rest)}
	if enh, text, _ := strings.Cut(r.Text, " "); validEnhanced(enh) {
		if enh[0] != code[0] {
			return Reply{}, fmt.Errorf("reply %q: enhanced code %s does not match the class of %d", s, enh, n)
		}
		r.Enhanced, r.Text = enh, strings.TrimSpace(text)
	}
	if r.Text == "" {
		return Reply{}, fmt.Errorf("reply %q has no text", s)
	}
	for _, c := range r.Text {
		if c < ' ' || c == 0x7f {
			return Reply{}, fmt.Errorf("reply %q has a control character", s)
		}
	}
	return r, nil
}

// validEnhanced reports an RFC 3463 code: class.subject.detail.
func validEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 999 || len(p) > 3 {
			return false
		}
	}
	return true
}

func mustReply(s string) Reply {
	r, err := ParseReply(s)
	if err != nil {
		panic(err)
	}
	return r
}

// withClass turns a built-in 5xx reply into its 4xx twin or back, for an
// admin who changed an outcome's action but not its text.
func (r Reply) withClass(temporary bool) Reply {
	class := "5"
	r.Code = 550
	if temporary {
		class = "4"
		r.Code = 451
	}
	if r.Enhanced != "" {
		r.Enhanced = class + r.Enhanced[1:]
	}
	return r
}
