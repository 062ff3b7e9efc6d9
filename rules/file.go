package rules

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
)

// The TOML schema of a rule file. Pointers tell "not set" from zero, so a
// file overrides only what it names.
type ruleFile struct {
	Scores   scoresSpec             `toml:"scores"`
	Defaults defaultsSpec           `toml:"defaults"`
	Outcome  map[string]outcomeSpec `toml:"outcome"`
	List     []listSpec             `toml:"list"`
}

type scoresSpec struct {
	Tag      *float64 `toml:"tag"`
	Tempfail *float64 `toml:"tempfail"`
	Reject   *float64 `toml:"reject"`
}

type defaultsSpec struct {
	Stage string `toml:"stage"`
	Mode  string `toml:"mode"`
}

type outcomeSpec struct {
	Action string   `toml:"action"`
	Weight *float64 `toml:"weight"`
	Reply  string   `toml:"reply"`
	Stage  string   `toml:"stage"`
	Mode   string   `toml:"mode"`
}

type listSpec struct {
	Name    string   `toml:"name"`
	Type    string   `toml:"type"`
	Action  string   `toml:"action"`
	Entries []string `toml:"entries"`
	Files   []string `toml:"files"`
	Skip    []string `toml:"skip"`
	Reply   string   `toml:"reply"`
	Stage   string   `toml:"stage"`
	Mode    string   `toml:"mode"`
}

// Files expands the `rules` globs of the main configuration into files, in
// name order (rules.d/10-x.toml before rules.d/50-y.toml).
func Files(patterns []string) ([]string, error) {
	var files []string
	for _, p := range patterns {
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("rules: bad pattern %q: %v", p, err)
		}
		if len(m) == 0 && !strings.ContainsAny(p, "*?[") {
			return nil, fmt.Errorf("rules: %s: no such file", p)
		}
		sort.Strings(m)
		files = append(files, m...)
	}
	return files, nil
}

// Known is what the registered checks can report: rule files may name only
// these outcomes, and allow lists skip only these checks.
type Known struct {
	Checks   []checks.Name
	Outcomes []string // "helo.bare_ip", or a family "dnsbl.*"
}

func (k Known) outcome(name string) bool {
	for _, o := range k.Outcomes {
		if o == name || (strings.HasSuffix(o, ".*") && strings.HasPrefix(name, o[:len(o)-1])) {
			return true
		}
	}
	return false
}

// Load builds the policy from the built-in rules and then the files named by
// cfg.Rules, in order. Every problem is reported with its file and line.
func Load(cfg *config.Config, known Known) (*Policy, error) {
	patterns := make([]string, len(cfg.Rules))
	for i, p := range cfg.Rules {
		if !filepath.IsAbs(p) && cfg.Path != "" {
			p = filepath.Join(filepath.Dir(cfg.Path), p)
		}
		patterns[i] = p
	}
	files, err := Files(patterns)
	if err != nil {
		return nil, cfg.Errorf([]string{"rules"}, "%v", err)
	}
	b := newBuilder(known)
	if err := b.add("(built-in rules/default.toml)", defaultRules, true); err != nil {
		return nil, err // a bug, caught by the tests
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, cfg.Errorf([]string{"rules"}, "rules: %v", err)
		}
		if err := b.add(f, data, false); err != nil {
			return nil, err
		}
	}
	return b.policy(), nil
}

func (b *builder) policy() *Policy {
	p := b.p
	for _, r := range p.outcomes {
		p.hasLogRules = p.hasLogRules || r.Log
	}
	for _, l := range p.lists {
		p.hasLogRules = p.hasLogRules || l.Log
	}
	return p
}

// Parse builds a policy from the built-in rules and one rule file's data (for
// tests and fuzzing).
func Parse(path string, data []byte, known Known) (*Policy, error) {
	b := newBuilder(known)
	if err := b.add("(built-in rules/default.toml)", defaultRules, true); err != nil {
		return nil, err
	}
	if err := b.add(path, data, false); err != nil {
		return nil, err
	}
	return b.policy(), nil
}

// builder merges rule files into a Policy.
type builder struct {
	p     *Policy
	known Known
	// where each outcome was last set by an admin's file, to find conflicts
	setBy map[string]string
	lists map[string]string
}

func newBuilder(known Known) *builder {
	return &builder{
		known: known,
		p:     &Policy{outcomes: map[string]Rule{}, stage: StageRcpt},
		setBy: map[string]string{},
		lists: map[string]string{},
	}
}

func (b *builder) add(path string, data []byte, builtin bool) error {
	var f ruleFile
	src, fatal, errs := config.DecodeFile(path, data, &f)
	if fatal != nil {
		return fatal
	}
	p := b.p
	if v := f.Scores.Tag; v != nil {
		p.tagScore = *v
	}
	if v := f.Scores.Tempfail; v != nil {
		p.tempfailScore = *v
	}
	if v := f.Scores.Reject; v != nil {
		p.rejectScore = *v
	}
	for _, s := range []struct {
		name string
		v    *float64
	}{{"tag", f.Scores.Tag}, {"tempfail", f.Scores.Tempfail}, {"reject", f.Scores.Reject}} {
		if s.v != nil && *s.v < 0 {
			errs = append(errs, src.Errorf([]string{"scores", s.name}, "scores.%s must not be negative (0 turns it off)", s.name))
		}
	}
	if f.Defaults.Stage != "" {
		st, err := parseStage(f.Defaults.Stage)
		if err != nil || st == StageData {
			errs = append(errs, src.Errorf([]string{"defaults", "stage"}, "defaults.stage: want \"rcpt\" or \"now\", not %q", f.Defaults.Stage))
		}
		p.stage = st
	}
	if f.Defaults.Mode != "" {
		log, err := parseMode(f.Defaults.Mode)
		if err != nil {
			errs = append(errs, src.Errorf([]string{"defaults", "mode"}, "defaults.%v", err))
		}
		p.logOnly = log
	}

	for _, name := range sortedNames(f.Outcome) {
		o := f.Outcome[name]
		key := []string{"outcome", name}
		where := fmt.Sprintf("%s:%d", path, src.Line(key...))
		r, _ := p.lookup(name)
		if !b.known.outcome(name) {
			errs = append(errs, src.Errorf(key, "unknown outcome %q (the outcome table in README.md lists them)", name))
			continue
		}
		if prev, ok := b.setBy[name]; ok && !builtin {
			errs = append(errs, src.Errorf(key, "outcome %q is already set at %s", name, prev))
			continue
		}
		if !builtin {
			b.setBy[name] = where
		}
		r.Outcome, r.Where = name, where
		if o.Action != "" {
			a, err := parseAction(o.Action)
			if err != nil {
				errs = append(errs, src.Errorf(append(key, "action"), "%v", err))
				continue
			}
			r.Action = a
		}
		if o.Weight != nil {
			r.Weight = *o.Weight
		}
		if o.Stage != "" {
			st, err := parseStage(o.Stage)
			if err != nil {
				errs = append(errs, src.Errorf(append(key, "stage"), "%v", err))
			}
			r.Stage = st
		}
		if o.Mode != "" {
			log, err := parseMode(o.Mode)
			if err != nil {
				errs = append(errs, src.Errorf(append(key, "mode"), "%v", err))
			}
			r.Log = log
		}
		reply, err := replyFor(r.Action, r.Reply, o.Reply)
		if err != nil {
			errs = append(errs, src.Errorf(append(key, "reply"), "outcome %q: %v", name, err))
			continue
		}
		r.Reply = reply
		p.outcomes[strings.TrimSuffix(name, "*")] = r
	}

	for i, ls := range f.List {
		l, lerrs := b.list(path, src, i, ls)
		errs = append(errs, lerrs...)
		if l != nil {
			p.lists = append(p.lists, l)
		}
	}
	return errors.Join(errs...)
}

// replyFor checks an outcome's reply against its action. A built-in reply
// follows a changed action (reject → tempfail keeps its text, 4xx); a reply
// the admin wrote must fit the action.
func replyFor(a Action, cur Reply, given string) (Reply, error) {
	if given != "" {
		r, err := ParseReply(given)
		if err != nil {
			return Reply{}, err
		}
		if a.Refuses() && a != Drop && (a == Tempfail) != r.Temporary() {
			return Reply{}, fmt.Errorf("action %s does not fit reply %q", a, given)
		}
		return r, nil
	}
	if !a.Refuses() {
		return cur, nil
	}
	if cur.Code == 0 {
		return defaultReply(a), nil
	}
	if a != Drop && (a == Tempfail) != cur.Temporary() {
		return cur.withClass(a == Tempfail), nil
	}
	return cur, nil
}

func defaultReply(a Action) Reply {
	if a == Tempfail {
		return mustReply("451 4.7.1 Try again later")
	}
	return mustReply("550 5.7.1 Refused by local policy")
}
