package rules

import (
	"net/netip"
	"strings"

	"github.com/mxguard/mxguard/checks"
)

// Input is what a decision is made on, at one stage of a session.
type Input struct {
	At      checks.Stage
	Client  netip.Addr // for {client} in replies
	Lists   []*List    // the lists that matched, in policy order
	Results [][]checks.Result
	// RcptsExempt: every recipient accepted so far is on an allow list
	// that skips every check (postmaster@ on a list): at DATA, no refusal
	// stands, and the log says what the message escaped.
	RcptsExempt bool
}

// Decision is what a verdict does at one stage of a session. This is the
// one place that works it out: the proxy acts on it and `mxguard test`
// reports it, so the two cannot disagree.
type Decision struct {
	Verdict
	At checks.Stage // where it was decided
	// Refuse: give Reply now (and hang up at once for a Drop).
	Refuse bool
	// Hold (at MAIL or RCPT): accept without telling the backend; the
	// refusal already decided is given at a later stage.
	Hold bool
	// Reply is the verdict's reply with {client} and {evidence} filled in.
	Reply Reply
}

// Judge decides at one stage and says what the decision does there.
func (p *Policy) Judge(in Input) Decision {
	v := p.Decide(in.Lists, in.Results...)
	if in.RcptsExempt && in.At == checks.AtData && v.Action.Refuses() {
		w := v
		v = Verdict{Action: Accept, Score: v.Score, Rule: "allow.recipients",
			Reason: "every recipient is on an allow list", Would: &w}
	}
	if v.Would != nil {
		w := *v.Would
		w.Reply = expand(w.Reply, in.Client, w.Evidence)
		v.Would = &w
	}
	return effect(v, in.At, expand(v.Reply, in.Client, v.Evidence))
}

// Trusted is the decision for a client in trusted_networks: every check is
// skipped.
func Trusted(at checks.Stage) Decision {
	return Decision{Verdict: Verdict{Action: Accept, Rule: "trusted", SkipAll: true}, At: at}
}

// Refusal is the decision for a refusal that no rule makes: a limit, or a
// protocol error. Its reply's class gives the action (4xx tempfail, 5xx
// reject); drop hangs up after it.
func Refusal(at checks.Stage, check checks.Name, rule, reason string, reply Reply, drop bool) Decision {
	a := Reject
	switch {
	case drop:
		a = Drop
	case reply.Temporary():
		a = Tempfail
	}
	return Decision{Verdict: Verdict{Action: a, Rule: rule, Check: check, Reason: reason, Reply: reply, Stage: StageNow},
		At: at, Refuse: true, Reply: reply}
}

// effect says what verdict v does at stage at. Before the banner only a
// drop acts; a refusal for "rcpt" is held at MAIL and given at RCPT (the
// log then has the envelope); one for "data" is given after the message;
// at the command stage only a drop or "now" acts, the rest waits for its
// own stage.
func effect(v Verdict, at checks.Stage, reply Reply) Decision {
	d := Decision{Verdict: v, At: at}
	if !v.Action.Refuses() {
		return d
	}
	d.Reply = reply
	switch {
	case v.Action == Drop:
		d.Refuse = true
	case at == checks.AtConnect:
	case v.Stage == StageNow:
		d.Refuse = true
	case v.Stage == StageData:
		d.Refuse = at == checks.AtData
	default: // rcpt
		d.Refuse = at >= checks.AtRcpt
	}
	d.Hold = !d.Refuse && (at == checks.AtMail || at == checks.AtRcpt)
	return d
}

// expand fills {client} and {evidence} in a reply.
func expand(r Reply, client netip.Addr, evidence string) Reply {
	if strings.Contains(r.Text, "{") {
		r.Text = strings.NewReplacer("{client}", client.String(), "{evidence}", printable(evidence, 200)).Replace(r.Text)
	}
	return r
}

// printable keeps a reply's text to printable ASCII.
func printable(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c >= 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}
