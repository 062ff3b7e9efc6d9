// Package ratecheck is the rate-limit check: package ratelimit counts, this
// decides what is counted at which stage of a session.
package ratecheck

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/ratelimit"
)

// Name names the rate-limit check.
const Name checks.Name = "ratelimit"

// Spec registers rate limits ([ratelimit], each off when empty):
// connections per client address and network at connect, messages per
// address, network and sender domain at MAIL, recipients per address and
// network at each RCPT. Counted by the runtime's Limiter: in process for
// one instance, in Redis for a fleet (one limit for all). Over a limit:
// outcome ratelimit.<what>; the rules drop the connection (421) or tempfail
// the command (451). A limiter that cannot count (Redis down) lets through.
var Spec = checks.Spec{
	Name:   Name,
	Stages: []checks.Stage{checks.AtConnect, checks.AtMail, checks.AtRcpt},
	Outcomes: []string{"ratelimit.connections", "ratelimit.messages", "ratelimit.recipients",
		"ratelimit.sender_domain"},
	New: func(env *checks.Env) (checks.Check, error) {
		c := env.Config.RateLimit
		k := &check{lim: env.Limiter, env: env}
		var errs []error
		for _, l := range []struct {
			key  string
			spec string
			into *limit
		}{
			{"connections_per_ip", c.ConnectionsPerIP, &k.connIP},
			{"connections_per_net", c.ConnectionsPerNet, &k.connNet},
			{"messages_per_ip", c.MessagesPerIP, &k.msgIP},
			{"messages_per_net", c.MessagesPerNet, &k.msgNet},
			{"recipients_per_ip", c.RecipientsPerIP, &k.rcptIP},
			{"recipients_per_net", c.RecipientsPerNet, &k.rcptNet},
			{"messages_per_sender_domain", c.MessagesPerSenderDomain, &k.msgFrom},
		} {
			if l.spec == "" {
				continue
			}
			lim, err := ratelimit.ParseLimit(l.spec)
			if err != nil {
				errs = append(errs, env.Config.Errorf([]string{"ratelimit", l.key}, "ratelimit.%s: %v", l.key, err))
				continue
			}
			*l.into = limit{name: l.key, lim: lim}
			k.any = true
		}
		if len(errs) > 0 {
			return nil, errs[0]
		}
		if !k.any || env.Limiter == nil {
			return nil, nil
		}
		return k, nil
	},
}

type limit struct {
	name string
	lim  ratelimit.Limit
}

type check struct {
	lim                            ratelimit.Limiter
	env                            *checks.Env
	any                            bool
	connIP, connNet, msgIP, msgNet limit
	rcptIP, rcptNet, msgFrom       limit
}

func (k *check) Run(ctx context.Context, at checks.Stage, s *checks.Session) []checks.Result {
	ip := s.Client.Addr()
	var outcome string
	// A stage has up to three buckets: ls[i] is the limit of reqs[i].
	var ls [3]limit
	var reqs [3]ratelimit.Request
	n := 0
	add := func(l limit, key string) {
		if l.name != "" && (ip.IsValid() || key[0] == 'f') {
			ls[n], reqs[n] = l, ratelimit.Request{Key: "rl:" + key, Lim: l.lim, N: 1}
			n++
		}
	}
	net := netOf(ip)
	switch at {
	case checks.AtConnect:
		outcome = "ratelimit.connections"
		add(k.connIP, "c:"+ip.String())
		add(k.connNet, "c:"+net)
	case checks.AtMail:
		outcome = "ratelimit.messages"
		add(k.msgIP, "m:"+ip.String())
		add(k.msgNet, "m:"+net)
		if d := checks.Domain(*s.From); d != "" {
			add(k.msgFrom, "f:"+d)
		}
	case checks.AtRcpt:
		outcome = "ratelimit.recipients"
		add(k.rcptIP, "r:"+ip.String())
		add(k.rcptNet, "r:"+net)
	}
	if n == 0 {
		return nil
	}
	// One call for the stage's buckets (one round trip on Redis); it
	// stops at the first over its limit. A limiter that cannot count
	// lets through.
	i, res, _ := ratelimit.AllowAll(ctx, k.lim, reqs[:n])
	passed := n // the buckets before the one over its limit
	if i >= 0 {
		passed = i
	}
	for _, l := range ls[:passed] {
		k.env.Metrics.RateLimit(l.name, "ok")
	}
	if i < 0 {
		return nil
	}
	x, key := ls[i], strings.TrimPrefix(reqs[i].Key, "rl:")
	k.env.Metrics.RateLimit(x.name, "exceeded")
	o := outcome
	if key[0] == 'f' {
		o = "ratelimit.sender_domain"
	}
	return []checks.Result{{Check: Name, Outcome: o,
		Reason:   fmt.Sprintf("%s over ratelimit.%s (%s)", key[2:], x.name, x.lim),
		Evidence: fmt.Sprintf("%.0f", res.RetryAfter.Seconds())}}
}

// netOf is a client's network as a key: its /24 or /64.
func netOf(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	bits := 24
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p.String()
}
