package proxy

import (
	"context"
	"log/slog"
	"time"

	"github.com/mxguard/mxguard/pipeline"
	"github.com/mxguard/mxguard/rules"
)

// The decision log. One "refused" line per refusal holds everything needed
// to answer "why was this refused?"; one "session" line per connection sums
// it up; "would refuse" lines show what rules in log mode would have done.
// Field names are stable: see README.md, "Log format".

// refuse writes the "refused" line.
func (s *Server) refuse(st *connState, d pipeline.Decision, from, rcpt string) {
	st.mu.Lock()
	st.refused++
	st.lastReply = d.Reply.String()
	st.mu.Unlock()
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "refused",
		s.decisionAttrs(st, d.Stage, d.Verdict, d.Reply, from, rcpt)...)
}

// logWould writes a "would refuse" line for a verdict that rules in log
// mode would have made harsher, once per rule and connection.
func (s *Server) logWould(st *connState, v rules.Verdict, stage string) {
	w := v.Would
	if w == nil {
		return
	}
	st.mu.Lock()
	if st.would == nil {
		st.would = map[string]bool{}
	}
	seen := st.would[w.Rule]
	st.would[w.Rule] = true
	st.mu.Unlock()
	if seen {
		return
	}
	attrs := s.decisionAttrs(st, stage, *w, w.Reply, "", "")
	attrs = append(attrs, slog.String("mode", "log"))
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "would refuse", attrs...)
}

func (s *Server) decisionAttrs(st *connState, stage string, v rules.Verdict, reply rules.Reply, from, rcpt string) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("session", st.id),
		slog.String("client", st.client.String()),
		slog.String("stage", stage),
		slog.String("action", v.Action.String()),
		slog.String("rule", v.Rule),
		slog.String("reason", v.Reason),
		slog.Float64("score", v.Score),
		slog.String("reply", reply.String()),
	}
	if v.Where != "" {
		attrs = append(attrs, slog.String("where", v.Where))
	}
	if helos := st.pipe.HELOs(); len(helos) > 0 {
		attrs = append(attrs, slog.String("helo", helos[len(helos)-1]))
	}
	if stage == "mail" || stage == "rcpt" || stage == "data" {
		attrs = append(attrs, slog.String("from", from))
	}
	if rcpt != "" {
		attrs = append(attrs, slog.String("rcpt", rcpt))
	}
	return append(attrs, slog.Any("checks", st.pipe.Results()), slog.Float64("elapsed", secs(time.Since(st.start))))
}

// logSession writes the "session" summary line when a connection ends.
func (s *Server) logSession(st *connState) {
	results := st.pipe.Results()
	helos := st.pipe.HELOs()
	last := st.pipe.Last()
	st.mu.Lock()
	defer st.mu.Unlock()
	if helos == nil {
		helos = []string{}
	}
	attrs := []slog.Attr{
		slog.String("session", st.id),
		slog.String("client", st.client.String()),
		slog.Any("helo", helos),
		slog.Bool("trusted", st.pipe.Trusted()),
		slog.Bool("tls", st.tls),
		slog.Int("accepted", st.accepted),
		slog.Int("refused", st.refused),
		slog.Int("rcpts", st.rcpts),
		slog.Float64("score", last.Score),
		slog.Any("checks", results),
		slog.Float64("elapsed", secs(time.Since(st.start))),
	}
	if st.lastReply != "" {
		attrs = append(attrs, slog.String("last_reply", st.lastReply))
	}
	if st.hangup != "" {
		attrs = append(attrs, slog.String("hangup", st.hangup))
	}
	if st.timedOut.Load() {
		attrs = append(attrs, slog.Bool("session_timeout", true))
	}
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "session", attrs...)
}

func secs(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}
