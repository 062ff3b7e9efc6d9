package reputation

import (
	"context"

	"github.com/mxguard/mxguard/checks"
)

// Name names the reputation check.
const Name checks.Name = "reputation"

// Spec registers it: at connect, what the memory of clients says about
// this one.
var Spec = checks.Spec{
	Name:     Name,
	Stages:   []checks.Stage{checks.AtConnect},
	Outcomes: []string{"reputation.good", "reputation.bad"},
	New: func(env *checks.Env) (checks.Check, error) {
		s, ok := env.Memory.(*Store)
		if !ok {
			return nil, nil // no memory, no reputation
		}
		return check{s}, nil
	},
}

type check struct{ s *Store }

func (c check) Run(_ context.Context, _ checks.Stage, s *checks.Session) []checks.Result {
	if r, ok := c.s.Check(s.Client.Addr()); ok {
		return []checks.Result{r}
	}
	return nil
}

var _ checks.Memory = (*Store)(nil)
