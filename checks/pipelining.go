package checks

import (
	"context"
	"fmt"
	"time"

	"github.com/mxguard/mxguard/config"
)

// PipeliningName names postscreen's command pipelining test.
const PipeliningName Name = "pipelining"

// PipeliningSpec registers it (tests.pipelining, off by default): with
// PIPELINING not offered, a client that sends a command before the reply
// to the one before is a bot that does not wait for replies. Only the
// first transaction is watched: a legitimate client may send QUIT right
// behind the end of a message.
var PipeliningSpec = Spec{
	Name:     PipeliningName,
	Stages:   []Stage{AtCommand},
	Outcomes: []string{"pipelining"},
	Test:     true,
	Passes:   func(cfg *config.Config) time.Duration { return cfg.Tests.PassTTL.D() },
	New: func(env *Env) (Check, error) {
		if !env.Config.Tests.Pipelining {
			return nil, nil
		}
		return pipelining{}, nil
	},
}

type pipelining struct{}

func (pipelining) Run(_ context.Context, _ Stage, s *Session) []Result {
	if !s.Pipelined || s.Messages > 0 {
		return nil
	}
	return []Result{{
		Check:    PipeliningName,
		Outcome:  "pipelining",
		Reason:   fmt.Sprintf("command %d was sent before the reply to the one before, and PIPELINING was not offered", s.Lines),
		Evidence: Escape(s.Line, 100),
	}}
}
