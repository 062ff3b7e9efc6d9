// Package rules is the decision step: it turns the outcomes that checks
// report into one action and the reply that goes with it. It knows nothing
// of sockets or SMTP sessions.
package rules

import (
	"fmt"
	"sort"
	"strings"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
)

// Action is what happens to a session, from mildest to harshest; a decision
// takes the harshest one that any outcome or threshold asks for.
type Action int

const (
	Accept   Action = iota // let it through
	Tag                    // let it through with a spam header
	Tempfail               // 4xx
	Reject                 // 5xx
	Drop                   // 5xx and hang up at once

	// Score and Ignore are configuration words, never a decision: Score adds
	// the weight and lets thresholds decide; Ignore only logs the outcome.
	Score  Action = -1
	Ignore Action = -2
)

var actionNames = map[Action]string{
	Accept: "accept", Tag: "tag", Tempfail: "tempfail", Reject: "reject", Drop: "drop",
	Score: "score", Ignore: "ignore",
}

func (a Action) String() string { return actionNames[a] }

// Refuses reports an action that refuses the mail.
func (a Action) Refuses() bool { return a >= Tempfail }

func parseAction(s config.Action) Action {
	for a, n := range actionNames {
		if n == string(s) {
			return a
		}
	}
	return Score
}

// Rule is how one outcome is treated.
type Rule struct {
	Outcome string
	Action  Action
	Weight  float64
	Reply   Reply
}

// Policy is a compiled decision configuration. It is read-only once built,
// so sessions share it; a reload builds a new one.
type Policy struct {
	rules       map[string]Rule // by outcome name, or family prefix "dnsbl."
	tagScore    float64
	rejectScore float64
	// RejectAtRcpt delays refusals decided at HELO or MAIL until RCPT TO.
	RejectAtRcpt bool
}

// New builds a Policy from the built-in rules and the config's overrides.
// Unknown outcome names and bad replies are config errors with their line.
func New(cfg *config.Config) (*Policy, error) {
	p := &Policy{
		rules:        make(map[string]Rule, len(builtin)),
		tagScore:     cfg.Decision.TagScore,
		rejectScore:  cfg.Decision.RejectScore,
		RejectAtRcpt: cfg.Decision.RejectAt != config.StageImmediate,
	}
	for _, r := range builtin {
		p.rules[strings.TrimSuffix(r.Outcome, "*")] = r
	}
	for _, name := range sortedNames(cfg.Decision.Outcomes) {
		o := cfg.Decision.Outcomes[name]
		key := []string{"decision", "outcomes", name}
		r, ok := p.lookup(name)
		if !ok {
			return nil, cfg.Errorf(key, "unknown outcome %q (see the outcome table in README.md)", name)
		}
		r.Outcome = name
		if o.Action != "" {
			r.Action = parseAction(o.Action)
		}
		if o.Weight != nil {
			r.Weight = *o.Weight
		}
		if o.Reply != "" {
			rep, err := ParseReply(o.Reply)
			if err != nil {
				return nil, cfg.Errorf(append(key, "reply"), "%v", err)
			}
			r.Reply = rep
		}
		if r.Action.Refuses() {
			if r.Reply.Code == 0 {
				r.Reply = defaultReply(r.Action)
			}
			if r.Action != Drop && (r.Action == Tempfail) != r.Reply.Temporary() {
				if o.Reply != "" {
					return nil, cfg.Errorf(key, "outcome %q: action %s does not fit reply %q", name, r.Action, r.Reply)
				}
				r.Reply = r.Reply.withClass(r.Action == Tempfail)
			}
		}
		p.rules[name] = r
	}
	return p, nil
}

func defaultReply(a Action) Reply {
	if a == Tempfail {
		return mustReply("451 4.7.1 Try again later")
	}
	return mustReply("550 5.7.1 Refused by local policy")
}

// lookup finds the rule for an outcome: by exact name, then by family
// ("dnsbl.zen.example" → "dnsbl.").
func (p *Policy) lookup(outcome string) (Rule, bool) {
	if r, ok := p.rules[outcome]; ok {
		return r, true
	}
	if i := strings.IndexByte(outcome, '.'); i > 0 {
		if r, ok := p.rules[outcome[:i+1]]; ok {
			r.Outcome = outcome
			return r, true
		}
	}
	return Rule{}, false
}

// Known reports whether an outcome name is in the catalog.
func (p *Policy) Known(outcome string) bool {
	_, ok := p.lookup(outcome)
	return ok
}

// Verdict is the decision on a session so far.
type Verdict struct {
	Action Action
	Score  float64
	Reply  Reply  // for refusals
	Rule   string // the outcome that decided, or "score"
	Reason string // that outcome's reason, for the log
}

// Decide weighs every result of the session so far. An outcome the catalog
// does not know (a check newer than the config) counts by its own score.
func (p *Policy) Decide(results ...[]checks.Result) Verdict {
	v := Verdict{Action: Accept}
	for _, rs := range results {
		for _, res := range rs {
			r, ok := p.lookup(res.Outcome)
			if !ok {
				r = Rule{Outcome: res.Outcome, Action: Score, Weight: res.Score}
			}
			if r.Action == Ignore {
				continue
			}
			w := r.Weight
			if w == 0 {
				w = res.Score
			}
			v.Score += w
			if r.Action > v.Action {
				v.Action, v.Reply, v.Rule, v.Reason = r.Action, r.Reply, res.Outcome, res.Reason
			}
		}
	}
	switch {
	case p.rejectScore > 0 && v.Score >= p.rejectScore && v.Action < Reject:
		v.Action, v.Reply, v.Rule = Reject, scoreReply, "score"
		v.Reason = fmt.Sprintf("score %g reached reject_score %g", v.Score, p.rejectScore)
	case p.tagScore > 0 && v.Score >= p.tagScore && v.Action < Tag:
		v.Action, v.Rule = Tag, "score"
		v.Reason = fmt.Sprintf("score %g reached tag_score %g", v.Score, p.tagScore)
	}
	return v
}

func sortedNames[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
