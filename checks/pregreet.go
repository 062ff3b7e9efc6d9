package checks

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/config"
)

// PregreetName names the early-talker test.
const PregreetName Name = "pregreet"

// PregreetSpec registers the early-talker test (postscreen's pregreet): a
// client that talks before the banner is complete is a bot that does not
// wait for replies. The proxy holds the banner and notes what was sent;
// this check reports it. A client that waited is remembered for
// reputation.greet_pass_ttl and skips the wait meanwhile.
var PregreetSpec = Spec{
	Name:     PregreetName,
	Stages:   []Stage{AtConnect},
	Outcomes: []string{"pregreet"},
	Greeting: true,
	Test:     true,
	Passes:   func(cfg *config.Config) time.Duration { return cfg.Reputation.GreetPassTTL.D() },
	New: func(env *Env) (Check, error) {
		if env.Config.Listen.GreetDelay <= 0 {
			return nil, nil // no wait, no test
		}
		return pregreet{}, nil
	},
}

type pregreet struct{}

func (pregreet) Run(_ context.Context, _ Stage, s *Session) []Result {
	if len(s.Early) == 0 {
		return nil
	}
	return []Result{{
		Check:    PregreetName,
		Outcome:  "pregreet",
		Reason:   fmt.Sprintf("client sent %d bytes %.2fs after connecting, before the greeting", len(s.Early), s.EarlyAfter.Seconds()),
		Evidence: Escape(s.Early, 100),
	}}
}

// Escape renders client bytes for a log line the way postscreen does: at
// most max bytes, non-printables as C escapes (\r\n, \x00).
func Escape(b []byte, max int) string {
	var sb strings.Builder
	for i, c := range b {
		if i >= max {
			sb.WriteString("...")
			break
		}
		switch {
		case c == '\r':
			sb.WriteString(`\r`)
		case c == '\n':
			sb.WriteString(`\n`)
		case c == '\t':
			sb.WriteString(`\t`)
		case c == '\\':
			sb.WriteString(`\\`)
		case c < ' ' || c >= 0x7f:
			sb.WriteString(`\x`)
			sb.WriteString(strconv.FormatUint(uint64(c)>>4, 16))
			sb.WriteString(strconv.FormatUint(uint64(c)&15, 16))
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}
