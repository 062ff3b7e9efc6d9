package reputation

import (
	"context"

	"github.com/mxguard/mxguard/checks"
)

// Name names the reputation check.
const Name checks.Name = "reputation"

// Spec registers it: at connect, what the memory of clients recalled of
// this one and of its network (read once per connection, with the passes).
var Spec = checks.Spec{
	Name:   Name,
	Stages: []checks.Stage{checks.AtConnect},
	Outcomes: []string{"reputation.good", "reputation.bad", "reputation.net_good",
		"reputation.net_bad"},
	New: func(env *checks.Env) (checks.Check, error) {
		if env.Memory == nil {
			return nil, nil // no memory, no reputation
		}
		return check{}, nil
	},
}

type check struct{}

func (check) Run(_ context.Context, _ checks.Stage, s *checks.Session) []checks.Result {
	return s.Known
}
