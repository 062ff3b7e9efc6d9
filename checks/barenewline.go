package checks

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/mxguard/mxguard/config"
)

// BareNewlineName names postscreen's bare newline test.
const BareNewlineName Name = "bare_newline"

// BareNewlineSpec registers it (tests.bare_newline, off by default): a
// command line that ends in LF alone, without CR, comes from a client that
// does not speak SMTP by the book (RFC 5321 §2.3.8) — most often a bot.
var BareNewlineSpec = Spec{
	Name:     BareNewlineName,
	Stages:   []Stage{AtCommand},
	Outcomes: []string{"bare_newline"},
	Test:     true,
	Passes:   func(cfg *config.Config) time.Duration { return cfg.Tests.PassTTL.D() },
	New: func(env *Env) (Check, error) {
		if !env.Config.Tests.BareNewline {
			return nil, nil
		}
		return bareNewline{}, nil
	},
}

type bareNewline struct{}

func (bareNewline) Run(_ context.Context, _ Stage, s *Session) []Result {
	if !bytes.HasSuffix(s.Line, []byte("\n")) || bytes.HasSuffix(s.Line, []byte("\r\n")) {
		return nil
	}
	return []Result{{
		Check:    BareNewlineName,
		Outcome:  "bare_newline",
		Reason:   fmt.Sprintf("command %d ends in a bare newline (LF without CR)", s.Lines),
		Evidence: Escape(s.Line, 100),
	}}
}
