package proxy

import (
	"context"
	"log/slog"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/rules"
)

// The decision log. One "refused" record per refusal — whatever made it: a
// check, a rule, a limit or a protocol error — holds everything needed to
// answer "why was this refused?"; one "relayed" record per message the
// backend took; one "session" record per connection sums it up with every
// outcome of the session; "would refuse" records show what rules in log
// mode would have done. Field names are stable: see README.md, "Log format".

// refuse writes the "refused" record, and counts the refusal.
func (c *conn) refuse(d rules.Decision, from, rcpt string) {
	c.refusals = append(c.refusals, d.Check)
	c.rt.Shared.Metrics.Refusal(string(d.Check), d.Rule, d.At.String(), d.Action.String())
	c.lastReply = d.Reply.String()
	c.srv.log.LogAttrs(context.Background(), slog.LevelInfo, "refused", c.decisionAttrs(d.At, d.Verdict, d.Reply, from, rcpt)...)
}

// logWould writes a "would refuse" record for a decision that rules in log
// mode would have made harsher, once per rule and connection.
func (c *conn) logWould(d rules.Decision) {
	w := d.Would
	if w == nil || c.would[w.Rule] {
		return
	}
	if c.would == nil {
		c.would = map[string]bool{}
	}
	c.would[w.Rule] = true
	attrs := c.decisionAttrs(d.At, *w, w.Reply, "", "")
	attrs = append(attrs, slog.String("mode", "log"))
	c.srv.log.LogAttrs(context.Background(), slog.LevelInfo, "would refuse", attrs...)
}

func (c *conn) decisionAttrs(at checks.Stage, v rules.Verdict, reply rules.Reply, from, rcpt string) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("session", c.id),
		slog.String("client", clientString(c.client)),
		slog.String("stage", at.String()),
		slog.String("action", v.Action.String()),
		slog.String("rule", v.Rule),
		slog.String("reason", v.Reason),
		slog.Float64("score", v.Score),
		slog.String("reply", reply.String()),
	}
	if v.Check != "" {
		attrs = append(attrs, slog.String("check", string(v.Check)))
	}
	if v.Where != "" {
		attrs = append(attrs, slog.String("where", v.Where))
	}
	if helos := c.pipe.HELOs(); len(helos) > 0 {
		attrs = append(attrs, slog.String("helo", helos[len(helos)-1]))
	}
	switch {
	case at == checks.AtData:
		// A refusal of the message names everyone it was for.
		attrs = append(attrs, slog.String("from", from), slog.Any("rcpt", nonNil(c.pipe.Recipients())))
	case at >= checks.AtMail:
		attrs = append(attrs, slog.String("from", from))
	}
	if rcpt != "" {
		attrs = append(attrs, slog.String("rcpt", rcpt))
	}
	return append(attrs, slog.Any("checks", c.pipe.Results()), slog.Float64("elapsed", secs(time.Since(c.start))))
}

// relayed writes the "relayed" record of a message the backend accepted,
// with the outcomes that judged it.
func (c *conn) relayed(d rules.Decision, size int64, reply string) {
	c.srv.log.LogAttrs(context.Background(), slog.LevelInfo, "relayed",
		slog.String("session", c.id), slog.String("client", clientString(c.client)), slog.String("helo", c.helo()),
		slog.String("from", c.from), slog.Any("rcpt", nonNil(c.pipe.Rcpts())), slog.Int64("size", size),
		slog.String("action", d.Action.String()), slog.Float64("score", d.Score), slog.String("reply", reply),
		slog.Any("checks", c.pipe.Results()))
}

// logSession writes the "session" record when a connection ends: every
// outcome of the session, of every transaction, and how it went.
func (c *conn) logSession() {
	attrs := []slog.Attr{
		slog.String("session", c.id),
		slog.String("client", clientString(c.client)),
		slog.Any("helo", nonNil(c.pipe.HELOs())),
		slog.Bool("trusted", c.pipe.Trusted()),
		slog.Bool("tls", c.wire != nil && c.tls),
		slog.Int("accepted", c.accepted),
		slog.Int("refused", len(c.refusals)),
		slog.Int("rcpts", c.rcpts),
		slog.Float64("score", c.pipe.Score()),
		slog.Any("checks", nonNil(c.pipe.All())),
		slog.Float64("elapsed", secs(time.Since(c.start))),
	}
	if c.lastReply != "" {
		attrs = append(attrs, slog.String("last_reply", c.lastReply))
	}
	if c.hangup != "" {
		attrs = append(attrs, slog.String("hangup", c.hangup))
	}
	if c.timedOut.Load() {
		attrs = append(attrs, slog.Bool("session_timeout", true))
	}
	c.srv.log.LogAttrs(context.Background(), slog.LevelInfo, "session", attrs...)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func secs(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}
