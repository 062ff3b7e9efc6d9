// Package rules is the decision step: it turns the outcomes that checks
// report, and the allow and deny lists that match, into one action and the
// reply that goes with it. Its behaviour comes from rule files (TOML); the
// built-in set is default.toml. It knows nothing of sockets or SMTP sessions.
package rules

import (
	_ "embed"
	"fmt"
	"sort"
	"strings"

	"github.com/mxguard/mxguard/checks"
)

//go:embed default.toml
var defaultRules []byte

// Action is what happens to a session, from mildest to harshest; a decision
// takes the harshest one that any outcome, list or threshold asks for.
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

func parseAction(s string) (Action, error) {
	switch s {
	case "score", "tag", "tempfail", "reject", "drop", "ignore":
	case "enforce": // postscreen's word
		return Reject, nil
	default:
		return 0, fmt.Errorf("bad action %q: want score, tag, tempfail, reject (enforce), drop or ignore", s)
	}
	for a, n := range actionNames {
		if n == s {
			return a, nil
		}
	}
	return 0, nil
}

// Stage is when a refusal is given.
type Stage int

const (
	StageDefault Stage = iota // the [defaults] stage
	StageNow                  // at the SMTP stage where it is decided
	StageRcpt                 // at RCPT TO, when decided earlier (the log gets the envelope)
	StageData                 // after the message (e.g. to log it whole)
)

func (s Stage) String() string {
	return [...]string{"default", "now", "rcpt", "data"}[s]
}

func parseStage(s string) (Stage, error) {
	switch s {
	case "now", "immediate":
		return StageNow, nil
	case "rcpt":
		return StageRcpt, nil
	case "data":
		return StageData, nil
	}
	return StageRcpt, fmt.Errorf("bad stage %q: want now, rcpt or data", s)
}

func parseMode(s string) (log bool, err error) {
	switch s {
	case "enforce":
		return false, nil
	case "log":
		return true, nil
	}
	return false, fmt.Errorf("mode %q: want enforce or log", s)
}

// Rule is how one outcome is treated.
type Rule struct {
	Outcome string
	Action  Action
	Weight  float64
	Reply   Reply
	Stage   Stage
	Log     bool   // log mode: decide, log "would refuse", do not act
	Where   string // file:line it was set at
}

// Policy is a compiled set of rule files. It is read-only once built, so
// sessions share it; a reload builds a new one.
type Policy struct {
	outcomes      map[string]Rule // by outcome name, or family prefix "dnsbl."
	lists         []*List
	tagScore      float64
	tempfailScore float64
	rejectScore   float64
	stage         Stage // default stage for refusals decided before RCPT
	logOnly       bool  // global dry run
	hasLogRules   bool  // some rule or list is in log mode
}

// HasLists reports whether any allow or deny list is configured.
func (p *Policy) HasLists() bool { return len(p.lists) > 0 }

// lookup finds the rule for an outcome: by exact name, then by family
// ("dnsbl.zen.example" → "dnsbl.").
func (p *Policy) lookup(outcome string) (Rule, bool) {
	if r, ok := p.outcomes[outcome]; ok {
		return r, true
	}
	if i := strings.IndexByte(outcome, '.'); i > 0 {
		if r, ok := p.outcomes[outcome[:i+1]]; ok {
			r.Outcome = outcome
			return r, true
		}
	}
	return Rule{}, false
}

// Rule returns the rule for an outcome, and whether the outcome is known.
func (p *Policy) Rule(outcome string) (Rule, bool) { return p.lookup(outcome) }

// Outcomes lists the known outcome names (families end in ".*").
func (p *Policy) Outcomes() []string {
	var out []string
	for k := range p.outcomes {
		if strings.HasSuffix(k, ".") {
			k += "*"
		}
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Verdict is the decision on a session so far.
type Verdict struct {
	Action   Action
	Score    float64
	Reply    Reply       // for refusals; its text ends by naming the rule
	Rule     string      // the outcome or list that decided, or "score"
	Check    checks.Name // the check whose outcome decided; "list", "score", or what a Refusal names
	Reason   string      // that outcome's reason, for the log
	Evidence string      // that outcome's evidence, for reply templates
	Where    string      // file:line of the deciding rule
	Stage    Stage       // when to give the refusal
	// Skip names the checks an allow list switched off (nil: none); SkipAll
	// is an allow list that switched them all off.
	Skip    map[checks.Name]bool
	SkipAll bool
	// Would is what rules in log mode would have done, when harsher than
	// what is done.
	Would *Verdict
}

// Skips reports whether a check is switched off by an allow list.
func (v *Verdict) Skips(check checks.Name) bool { return v.SkipAll || v.Skip[check] }

// Skips reports whether the matched lists switch a check off: what Decide
// would say, without building a verdict. It is asked on every connection
// before the greeting wait, so it stays small (no fmt, no allocation).
func (p *Policy) Skips(matched []*List, check checks.Name) bool {
	for _, l := range matched {
		if l.Log || p.logOnly {
			continue
		}
		if !l.Allow {
			return false // a deny decides: nothing is skipped
		}
		if l.Skip == nil || l.Skip[check] {
			return true
		}
	}
	return false
}

// Decide weighs the session so far: the lists that matched (in policy
// order) and every result. An outcome the rules do not know (a check newer
// than the rules) counts by its own score.
//
// Lists first, in order: the first list that decides — a deny, or an allow
// of every check — wins; allows of some checks add up. Then the outcomes:
// the harshest forced action wins; then the score thresholds.
func (p *Policy) Decide(matched []*List, results ...[]checks.Result) Verdict {
	real := p.decide(matched, results, false)
	if p.logOnly || p.hasLogRules {
		// A rule in log mode shows what it would do whenever it would
		// refuse: harsher than what is done, or by a rule of its own (an
		// admin measuring a new rule wants every hit).
		would := p.decide(matched, results, true)
		if would.Action > real.Action || (would.Action.Refuses() && would.Rule != real.Rule) {
			real.Would = &would
		}
	}
	return real
}

func (p *Policy) decide(matched []*List, results [][]checks.Result, withLog bool) Verdict {
	v := Verdict{Action: Accept, Stage: p.stage}
	for _, l := range matched {
		if (l.Log || p.logOnly) && !withLog {
			continue
		}
		if l.Allow {
			if l.Skip == nil {
				v.SkipAll, v.Rule, v.Where = true, "allow."+l.Name, l.Where
				v.Reason = fmt.Sprintf("%s is on allow list %s", l.Type, l.Name)
				return v
			}
			if v.Skip == nil {
				v.Skip = map[checks.Name]bool{}
			}
			for c := range l.Skip {
				v.Skip[c] = true
			}
			continue
		}
		v.Action, v.Rule, v.Where, v.Check = l.Action, "deny."+l.Name, l.Where, "list"
		v.Reason = fmt.Sprintf("%s is on deny list %s", l.Type, l.Name)
		v.Reply = named(l.Reply, v.Rule)
		v.Stage = stageOr(l.Stage, p.stage)
		return v
	}
	for _, rs := range results {
		for _, res := range rs {
			if v.Skip[res.Check] {
				continue
			}
			r, ok := p.lookup(res.Outcome)
			if !ok {
				r = Rule{Outcome: res.Outcome, Action: Score, Weight: res.Score}
			}
			if r.Action == Ignore || ((r.Log || p.logOnly) && !withLog) {
				continue
			}
			w := r.Weight
			if w == 0 {
				w = res.Score
			}
			v.Score += w
			if r.Action > v.Action {
				v.Action, v.Rule, v.Where, v.Check = r.Action, res.Outcome, r.Where, res.Check
				v.Reason, v.Evidence = res.Reason, res.Evidence
				v.Reply = named(r.Reply, res.Outcome)
				v.Stage = stageOr(r.Stage, p.stage)
			}
		}
	}
	threshold := func(a Action, limit float64, reply Reply) {
		if limit > 0 && v.Score >= limit && v.Action < a {
			v.Action, v.Rule, v.Where, v.Evidence, v.Check = a, "score", "scores", "", "score"
			v.Reason = fmt.Sprintf("score %g reached %s %g", v.Score, a, limit)
			v.Reply = named(reply, fmt.Sprintf("score %g", v.Score))
			v.Stage = p.stage
		}
	}
	threshold(Reject, p.rejectScore, scoreReject)
	threshold(Tempfail, p.tempfailScore, scoreTempfail)
	threshold(Tag, p.tagScore, Reply{})
	return v
}

// The score thresholds' replies, parsed once: decide runs at every stage.
var (
	scoreReject   = mustReply("550 5.7.1 Message refused: spam score too high")
	scoreTempfail = mustReply("451 4.7.1 Message deferred: spam score too high, try again later")
)

// named ends a refusal's text with the rule that caused it.
func named(r Reply, rule string) Reply {
	if r.Code != 0 {
		r.Text += " (" + rule + ")"
	}
	return r
}

func stageOr(s, def Stage) Stage {
	if s == StageDefault {
		return def
	}
	return s
}

func sortedNames[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
