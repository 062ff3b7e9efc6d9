package dnsbl

import (
	"context"
	"iter"
	"strings"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/metrics"
	"github.com/mxguard/mxguard/resolver"
)

// The two checks of this package: the client's address on DNS block and
// allow lists, and its HELO and sender domains on domain lists.
const (
	Name       checks.Name = "dnsbl"
	DomainName checks.Name = "rhsbl"
)

// Spec registers the address lists. The look-ups start when the client
// connects and run during the greeting wait; an allowlisting ends the wait.
// A client no list named is not looked up again for dnsbl.pass_ttl.
var Spec = checks.Spec{
	Name:     Name,
	Stages:   []checks.Stage{checks.AtConnect},
	Outcomes: []string{"dnsbl", "dnsbl.*", "dnswl", "dnswl.*"},
	Passes:   func(cfg *config.Config) time.Duration { return cfg.DNSBL.PassTTL.D() },
	New: func(env *checks.Env) (checks.Check, error) {
		c, err := newChecker(env, env.Config.DNSBL.Sites, nil, "sites")
		if c == nil || err != nil {
			return nil, err
		}
		return &ipCheck{c: c, m: env.Metrics, wait: 2*dnsTimeout(env.Config) + time.Second}, nil
	},
}

// DomainSpec registers the domain lists (RHSBL), asked about every new HELO
// name and every sender domain.
var DomainSpec = checks.Spec{
	Name:     DomainName,
	Stages:   []checks.Stage{checks.AtHELO, checks.AtMail},
	Outcomes: []string{"rhsbl", "rhsbl.*", "rhswl", "rhswl.*"},
	New: func(env *checks.Env) (checks.Check, error) {
		c, err := newChecker(env, nil, env.Config.DNSBL.DomainSites, "domain_sites")
		if c == nil || err != nil {
			return nil, err
		}
		return domainCheck{c, env.Metrics}, nil
	},
}

func dnsTimeout(cfg *config.Config) time.Duration {
	return cfg.DNS.Timeout.D() * time.Duration(max(cfg.DNS.Attempts, 1))
}

// newChecker builds a Checker for one kind of list from the [dnsbl]
// block; nil without lists. The block is validated here even without a
// resolver (check-config).
func newChecker(env *checks.Env, sites, domainSites []string, key string) (*Checker, error) {
	if len(sites) == 0 && len(domainSites) == 0 {
		return nil, nil
	}
	b := env.Config.DNSBL
	cfg := Config{
		Sites:              sites,
		DomainSites:        domainSites,
		Threshold:          b.Threshold,
		AllowlistThreshold: b.AllowlistThreshold,
		Timeout:            b.Timeout.D(),
		SelfTestInterval:   b.SelfTestInterval.D(),
		ReplyMap:           b.ReplyMap,
		IPv6:               b.IPv6,
	}
	var r Resolver = env.Resolver
	if env.Resolver == nil {
		r = noResolver{}
	}
	c, err := New(cfg, r, env.Log)
	if err != nil {
		return nil, env.Config.Errorf([]string{"dnsbl", key}, "%v", err)
	}
	if env.Resolver == nil {
		return nil, nil // validated; nothing to look up with
	}
	return c, nil
}

// ipCheck is the address lists as a check.
type ipCheck struct {
	c    *Checker
	m    *metrics.Metrics
	wait time.Duration // bounds the look-up started at connect
}

// pending is the look-up started at connect.
var pending = checks.NewKey[chan *Verdict]("dnsbl", checks.ConnScope)

func (k *ipCheck) Open()  { k.c.Start() }
func (k *ipCheck) Close() { k.c.Close() }

// Start looks the client up while it waits for the banner.
func (k *ipCheck) Start(s *checks.Session) {
	ch := make(chan *Verdict, 1)
	checks.Put(s, pending, ch)
	ip, endWait := s.Client.Addr(), s.EndWait
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), k.wait)
		v := k.c.CheckIP(ctx, ip)
		cancel()
		ch <- v
		if v.Allowlisted && endWait != nil {
			endWait()
		}
	}()
}

// Run collects the look-up, waiting for it if need be (bounded by the
// checker's timeout).
func (k *ipCheck) Run(ctx context.Context, _ checks.Stage, s *checks.Session) []checks.Result {
	var v *Verdict
	if ch, ok := checks.Get(s, pending); ok {
		v = <-ch
	} else {
		v = k.c.CheckIP(ctx, s.Client.Addr())
	}
	return v.results(k.m)
}

func (k *ipCheck) ListHealth() iter.Seq2[string, bool] { return k.c.health() }

// results reports v, counting its hits per list.
func (v *Verdict) results(m *metrics.Metrics) []checks.Result {
	for _, h := range v.Hits {
		m.DNSBLHit(h.Name)
	}
	return v.Results()
}

// health yields each list's name and whether its self-test passes.
func (c *Checker) health() iter.Seq2[string, bool] {
	return func(yield func(string, bool) bool) {
		for _, zs := range [][]*zone{c.ipZones, c.domainZones} {
			for _, z := range zs {
				up := !z.broken[famIPv4].Load() && (!c.ipv6 || z.domain || !z.broken[famIPv6].Load())
				if !yield(z.display, up) {
					return
				}
			}
		}
	}
}

// domainCheck is the domain lists as a check.
type domainCheck struct {
	c *Checker
	m *metrics.Metrics
}

func (k domainCheck) ListHealth() iter.Seq2[string, bool] { return k.c.health() }

func (k domainCheck) Open()  { k.c.Start() }
func (k domainCheck) Close() { k.c.Close() }

func (k domainCheck) Run(ctx context.Context, at checks.Stage, s *checks.Session) []checks.Result {
	if at == checks.AtHELO {
		// Only a name can be listed: not a literal, not a bad name.
		if outcome, _, lit := checks.Classify(s.HELO); outcome != "" || lit.IsValid() {
			return nil
		}
		return k.c.CheckDomain(ctx, strings.TrimSuffix(s.HELO, "."), "helo").results(k.m)
	}
	if d := checks.Domain(*s.From); d != "" {
		return k.c.CheckDomain(ctx, d, "sender").results(k.m)
	}
	return nil
}

// noResolver stands in when the configuration is only being checked.
type noResolver struct{}

func (noResolver) Query(context.Context, string, uint16) (*resolver.Answer, error) {
	return nil, context.Canceled
}
