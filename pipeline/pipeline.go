// Package pipeline runs mxguard's registered checks at each stage of an
// SMTP session and asks the rules what to do. It knows what a session has
// said (client, HELO, envelope, message) but not how it was said: the proxy
// does the SMTP, and `mxguard test` drives the same pipeline with a
// described session. It knows no check by name: it runs what the registry
// lists, in order, at the stages each check registered for.
//
//	connect → greeting → (command lines) → HELO → MAIL → RCPT… → DATA
//	  each stage: lists, then the checks of the stage → results → rules.Judge → Decision
package pipeline

import (
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/metrics"
	"github.com/mxguard/mxguard/registry"
	"github.com/mxguard/mxguard/rules"
)

// Pipeline is the checks and rules built from one configuration, shared by
// every session started under it.
type Pipeline struct {
	Hostname string
	Policy   *rules.Policy
	Resolver checks.Resolver // nil: no DNS at all (check-config)

	cfg     *config.Config
	memory  checks.Memory
	metrics *metrics.Metrics
	checks  []*check             // built and switched on, in registry order
	byStage [][]*check           // indexed by checks.Stage
	waits   []*check             // greeting tests: they need the banner held
	passes  map[checks.Name]bool // connection tests whose passes are remembered
}

// check is a registered check, built.
type check struct {
	spec    *checks.Spec
	run     checks.Check
	passTTL time.Duration // >0: a pass is remembered this long
	last    checks.Stage  // its last stage: a pass is recorded after it
}

// Known returns what the registered checks can report, for the rules.
func Known() rules.Known {
	return rules.Known{Checks: registry.Names(), Outcomes: registry.Outcomes()}
}

// New builds the pipeline of cfg: the rules, and every registered check
// from its block of cfg, with what env provides (any of it may be nil: no
// DNS, no memory, no log, no metrics).
func New(cfg *config.Config, env checks.Env) (*Pipeline, error) {
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	env.Config = cfg
	if env.Now == nil {
		env.Now = time.Now
	}
	res, mem := env.Resolver, env.Memory
	policy, err := rules.Load(cfg, Known())
	if err != nil {
		return nil, err
	}
	p := &Pipeline{
		Hostname: cfg.Hostname,
		Policy:   policy,
		Resolver: res,
		cfg:      cfg,
		memory:   mem,
		metrics:  env.Metrics,
		byStage:  make([][]*check, checks.AtData+1),
		passes:   map[checks.Name]bool{},
	}
	for _, spec := range registry.All {
		run, err := spec.New(&env)
		if err != nil {
			return nil, err
		}
		if run == nil {
			continue // switched off by its configuration
		}
		c := &check{spec: spec, run: run, last: slices.Max(spec.Stages)}
		if spec.Passes != nil && mem != nil {
			c.passTTL = spec.Passes(cfg)
			p.passes[spec.Name] = c.passTTL > 0
		}
		p.checks = append(p.checks, c)
		for _, at := range spec.Stages {
			p.byStage[at] = append(p.byStage[at], c)
		}
		if spec.Greeting {
			p.waits = append(p.waits, c)
		}
	}
	return p, nil
}

// Start begins the checks' background work (the DNS lists' self-test),
// and points the list-health metric at this pipeline's lists.
func (p *Pipeline) Start() {
	var lists []checks.Lists
	for _, c := range p.checks {
		if o, ok := c.run.(checks.Closer); ok {
			o.Open()
		}
		if l, ok := c.run.(checks.Lists); ok {
			lists = append(lists, l)
		}
	}
	p.metrics.SetDNSBLZones(func(yield func(string, bool) bool) {
		for _, l := range lists {
			for zone, up := range l.ListHealth() {
				if !yield(zone, up) {
					return
				}
			}
		}
	})
}

// Close stops it. Sessions still running under p may go on using it.
func (p *Pipeline) Close() {
	for _, c := range p.checks {
		if o, ok := c.run.(checks.Closer); ok {
			o.Close()
		}
	}
}

// Checks names the checks that are on, in the order they run.
func (p *Pipeline) Checks() []checks.Name {
	out := make([]checks.Name, len(p.checks))
	for i, c := range p.checks {
		out[i] = c.spec.Name
	}
	return out
}

// String describes the pipeline for a log line.
func (p *Pipeline) String() string { return fmt.Sprint(p.Checks()) }
