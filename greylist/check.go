package greylist

import (
	"context"
	"fmt"
	"time"

	"github.com/mxguard/mxguard/checks"
)

// Name names the greylisting check.
const Name checks.Name = "greylist"

// Spec registers greylisting ([greylist], off by default), at each RCPT:
// the first attempt of a client network, sender and recipient is deferred
// by the rule greylist.first (tempfail), a retry before the delay by
// greylist.early; one after it passes (greylist.passed, with an X-Greylist
// header on the message), and so do triplets that passed before and
// auto-allowed networks. Senders that passed SPF (big senders retry from
// pools of addresses), clients of good reputation, and clients and
// recipients on allow lists are not greylisted. When the store cannot
// answer, greylisting is skipped: it fails open.
var Spec = checks.Spec{
	Name:     Name,
	Stages:   []checks.Stage{checks.AtRcpt},
	Outcomes: []string{"greylist.first", "greylist.early", "greylist.passed", "greylist.known", "greylist.allowed"},
	New: func(env *checks.Env) (checks.Check, error) {
		c := env.Config.Greylist
		if !c.Enabled || env.Store == nil {
			return nil, nil
		}
		g, err := New(env.Store, Config{Delay: c.Delay.D(), RetryWindow: c.RetryWindow.D(), MaxAge: c.MaxAge.D(),
			AutoAllow: c.AutoAllow, IPv4Mask: c.IPv4Mask, IPv6Mask: c.IPv6Mask})
		if err != nil {
			return nil, env.Config.Errorf([]string{"greylist"}, "%v", err)
		}
		return &check{g: g, env: env, host: env.Config.Hostname}, nil
	},
}

type check struct {
	g    *Greylist
	env  *checks.Env
	host string
}

func (c *check) Run(ctx context.Context, _ checks.Stage, s *checks.Session) []checks.Result {
	if spf, ok := checks.Get(s, checks.SPFKey); ok && spf.Result == "pass" {
		return nil // big senders retry from other addresses: SPF vouches for them
	}
	for _, r := range s.Known {
		if r.Outcome == "reputation.good" {
			return nil
		}
	}
	if !s.Client.Addr().IsValid() {
		return nil
	}
	d, err := c.g.Check(ctx, s.Client.Addr(), *s.From, s.Rcpt, c.env.Now())
	if err != nil {
		return nil // the store logs its outage once; greylisting fails open
	}
	c.env.Metrics.Greylist(d.Verdict.String())
	r := checks.Result{Check: Name, Outcome: "greylist." + d.Verdict.String(), Evidence: fmt.Sprint(int(d.Wait.Seconds()))}
	triplet := fmt.Sprintf("%s, <%s>, <%s>", d.Net, *s.From, s.Rcpt)
	switch d.Verdict {
	case First:
		r.Reason = fmt.Sprintf("first attempt from %s: retry after %s", triplet, d.Wait)
	case Early:
		r.Reason = fmt.Sprintf("retry from %s too early: %s to go", triplet, d.Wait)
	case Passed:
		r.Reason = fmt.Sprintf("retry from %s after %s: passed", triplet, d.Delayed)
		r.Evidence = ""
		checks.AddHeader(s, fmt.Sprintf("X-Greylist: delayed %d seconds by mxguard at %s; %s",
			int(d.Delayed.Seconds()), c.host, c.env.Now().Format(time.RFC1123Z)))
	case Known:
		r.Reason, r.Evidence = fmt.Sprintf("%s passed greylisting before", triplet), ""
	case Allowed:
		r.Reason, r.Evidence = fmt.Sprintf("client network %s retries well: allowed", d.Net), ""
	}
	return []checks.Result{r}
}
