package proxy

import (
	"log/slog"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/rules"
)

// The decision log. One "refused" line per refusal holds everything needed
// to answer "why was this refused?"; one "session" line per connection sums
// it up. Field names are stable: see README.md, "Log format".

// refuse writes the "refused" line.
func (s *Server) refuse(st *connState, stage string, v rules.Verdict, from, rcpt string) {
	st.mu.Lock()
	st.refused++
	st.lastReply = v.Reply.String()
	helo := ""
	if len(st.helos) > 0 {
		helo = st.helos[len(st.helos)-1]
	}
	results := append([]checks.Result(nil), st.results...)
	st.mu.Unlock()
	attrs := []slog.Attr{
		slog.String("session", st.id),
		slog.String("client", st.client.String()),
		slog.String("stage", stage),
		slog.String("action", v.Action.String()),
		slog.String("rule", v.Rule),
		slog.String("reason", v.Reason),
		slog.Float64("score", v.Score),
		slog.String("reply", v.Reply.String()),
	}
	if helo != "" {
		attrs = append(attrs, slog.String("helo", helo))
	}
	if stage == "mail" || stage == "rcpt" || stage == "data" {
		attrs = append(attrs, slog.String("from", from))
	}
	if rcpt != "" {
		attrs = append(attrs, slog.String("rcpt", rcpt))
	}
	attrs = append(attrs, slog.Any("checks", results), slog.Float64("elapsed", secs(time.Since(st.start))))
	s.log.LogAttrs(nil, slog.LevelInfo, "refused", attrs...)
}

// logSession writes the "session" summary line when a connection ends.
func (s *Server) logSession(st *connState) {
	st.mu.Lock()
	defer st.mu.Unlock()
	attrs := []slog.Attr{
		slog.String("session", st.id),
		slog.String("client", st.client.String()),
		slog.Any("helo", st.helos),
		slog.Bool("trusted", st.trusted),
		slog.Bool("tls", st.tls),
		slog.Int("accepted", st.accepted),
		slog.Int("refused", st.refused),
		slog.Int("rcpts", st.rcpts),
		slog.Float64("score", st.lastVerdict.Score),
		slog.Any("checks", st.results),
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
	s.log.LogAttrs(nil, slog.LevelInfo, "session", attrs...)
}

func secs(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}
