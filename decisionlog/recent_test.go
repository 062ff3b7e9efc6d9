package decisionlog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/checks"
)

// rtLogger logs as mxguard serve does (a JSON handler) through r's tee.
func rtLogger(r *Recent, w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(r.Handler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})))
}

var rtChecks = []checks.Result{
	{Check: "helo", Outcome: "helo.localhost", Reason: "HELO localhost is a name for the local machine"},
	{Check: "dnsbl", Outcome: "dnsbl.bl.test", Score: 3, Reason: "listed", Evidence: "127.0.0.4"},
}

// rtLogSession logs one session's lines the way proxy/log.go and
// proxy/session.go write them.
func rtLogSession(l *slog.Logger, id, client string) {
	ctx := context.Background()
	l.LogAttrs(ctx, slog.LevelInfo, "refused",
		slog.String("session", id), slog.String("client", client), slog.String("stage", "rcpt"),
		slog.String("action", "reject"), slog.String("rule", "helo.localhost"),
		slog.String("reason", "HELO localhost is a name for the local machine"), slog.Float64("score", 0),
		slog.String("reply", "550 5.5.2 Helo command rejected (helo.localhost)"),
		slog.String("where", "(built-in rules/default.toml):12"), slog.String("helo", "localhost"),
		slog.String("from", "alice@example.org"), slog.String("rcpt", "bob@example.com"),
		slog.Any("checks", rtChecks), slog.Float64("elapsed", 2.006))
	l.LogAttrs(ctx, slog.LevelInfo, "would refuse",
		slog.String("session", id), slog.String("client", client), slog.String("stage", "helo"),
		slog.String("action", "tempfail"), slog.String("rule", "spf.softfail"), slog.String("reason", "r"),
		slog.Float64("score", 2), slog.String("reply", "451 4.7.1 later"), slog.String("helo", "localhost"),
		slog.Any("checks", rtChecks), slog.Float64("elapsed", 2.1), slog.String("mode", "log"))
	l.Info("relayed", "session", id, "client", client, "helo", "localhost", "from", "carol@example.org",
		"rcpt", []string{"dave@example.com", "erin@example.com"}, "size", 1234, "action", "tag", "score", 5.5,
		"reply", "250 2.0.0 Ok: queued as ABC")
	l.Warn("backend failed", "session", id, "client", client, "stage", "data", "backend", "127.0.0.1:10025",
		"err", "connection reset")
	l.LogAttrs(ctx, slog.LevelInfo, "session",
		slog.String("session", id), slog.String("client", client), slog.Any("helo", []string{"localhost", "mail.example.org"}),
		slog.Bool("trusted", false), slog.Bool("tls", true), slog.Int("accepted", 1), slog.Int("refused", 1),
		slog.Int("rcpts", 3), slog.Float64("score", 5.5), slog.Any("checks", rtChecks), slog.Float64("elapsed", 3.5),
		slog.String("last_reply", "221 2.0.0 Bye"), slog.String("hangup", "quit"))
}

// TestRecentSameAsLog: every record the ring holds is the record `mxguard
// log` parses back from the JSON line, and its Extra holds exactly the
// line's other fields.
func TestRecentSameAsLog(t *testing.T) {
	r := NewRecent(10)
	var buf bytes.Buffer
	l := rtLogger(r, &buf, slog.LevelInfo)
	rtLogSession(l, "4VD1X9VKJ7ST", "192.0.2.7:40280")
	l.Info("pregreet", "session", "PG1", "client", "192.0.2.8:1", "bytes", 11, "after", 0.21, "text", "EHLO x\\r\\n")
	l.Warn("refused", "client", "192.0.2.9:2", "stage", "connect", "action", "tempfail", "rule", "limit",
		"reason", "too many connections", "open", 20, "reply", "421 4.7.0 try again later")
	l.Info("started", "version", "test") // not a decision, no session: not kept

	known := map[string]bool{"time": true, "level": true, "msg": true, "session": true, "client": true, "stage": true,
		"action": true, "rule": true, "reason": true, "reply": true, "where": true, "mode": true, "helo": true,
		"from": true, "rcpt": true, "score": true, "checks": true, "elapsed": true}
	var got []RecentRecord
	for _, id := range []string{"4VD1X9VKJ7ST", "PG1", "anon-1"} {
		s, ok := r.Session(id)
		if !ok {
			t.Fatalf("session %s not kept", id)
		}
		got = append(got, s.Records...)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 8 || len(got) != 7 {
		t.Fatalf("%d lines, %d records kept; want 8 and 7", len(lines), len(got))
	}
	for i, e := range got {
		line := []byte(lines[i])
		want, err := Parse(line)
		if err != nil {
			t.Fatal(err)
		}
		if !e.Time.Equal(want.Time) || e.HELO() != want.HELO() || e.Recipients() != want.Recipients() {
			t.Errorf("line %d: time/helo/rcpt %v %q %q, log has %v %q %q", i, e.Time, e.HELO(), e.Recipients(),
				want.Time, want.HELO(), want.Recipients())
		}
		a, b := e.Record, want
		a.Time, b.Time, a.Helo, b.Helo, a.Rcpt, b.Rcpt = time.Time{}, time.Time{}, nil, nil, nil, nil
		aj, _ := json.Marshal(a)
		bj, _ := json.Marshal(b)
		if !bytes.Equal(aj, bj) {
			t.Errorf("line %d:\nring %s\nlog  %s", i, aj, bj)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(line, &fields); err != nil {
			t.Fatal(err)
		}
		var extra []string
		for k, v := range fields {
			if known[k] {
				continue
			}
			extra = append(extra, k)
			var s string
			if json.Unmarshal(v, &s) != nil {
				s = string(v)
			}
			if got := e.extra(k); got != s {
				t.Errorf("line %d: extra %s = %q, log has %q", i, k, got, s)
			}
		}
		if len(extra) != len(e.Extra) {
			t.Errorf("line %d: extra fields %v, ring has %v", i, extra, e.Extra)
		}
	}
}

func TestRecentSummary(t *testing.T) {
	r := NewRecent(10)
	rtLogSession(rtLogger(r, io.Discard, slog.LevelInfo), "S1", "[2001:db8::1]:25")
	s, _ := r.Session("S1")
	tests := []struct{ field, got, want string }{
		{"client", s.Client, "[2001:db8::1]:25"},
		{"addr", s.Addr.String(), "2001:db8::1"},
		{"helo", s.HELO, "localhost, mail.example.org"},
		{"from", s.From, "carol@example.org"},
		{"rcpts", strings.Join(s.Rcpts, " "), "bob@example.com dave@example.com erin@example.com"},
		{"action", s.Action, "reject"},
		{"rule", s.Rule, "helo.localhost"},
		{"stage", s.Stage, "rcpt"},
		{"reply", s.Reply, "550 5.5.2 Helo command rejected (helo.localhost)"},
		{"counts", fmt.Sprint(s.Refused, s.Relayed, s.Would, len(s.Records), s.Ended), "1 1 1 5 true"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.field, tt.got, tt.want)
		}
	}
}

// TestRecentDecisive: which record a session's row shows.
func TestRecentDecisive(t *testing.T) {
	rec := func(msg, action, rule, reply string) Record {
		return Record{Msg: msg, Session: "S", Action: action, Rule: rule, Reply: reply}
	}
	tests := []struct {
		name                string
		recs                []Record
		action, rule, reply string
	}{
		{"nothing decided", []Record{rec("session", "", "", "")}, "", "", ""},
		{"relayed", []Record{rec("relayed", "accept", "", "250 ok"), rec("session", "", "", "")}, "accept", "", "250 ok"},
		{"would", []Record{rec("would refuse", "reject", "spf.fail", "550 x")}, "would reject", "spf.fail", "550 x"},
		{"relayed beats would", []Record{rec("would refuse", "reject", "spf.fail", "550 x"), rec("relayed", "tag", "", "250 ok")}, "tag", "", "250 ok"},
		{"refusal beats relayed", []Record{rec("relayed", "accept", "", "250 ok"), rec("refused", "tempfail", "helo.dns_temp", "451 y")}, "tempfail", "helo.dns_temp", "451 y"},
		{"first refusal", []Record{rec("refused", "reject", "a", "550 a"), rec("refused", "drop", "b", "554 b")}, "reject", "a", "550 a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRecent(1)
			for _, x := range tt.recs {
				r.Add(x)
			}
			s, _ := r.Session("S")
			if s.Action != tt.action || s.Rule != tt.rule || s.Reply != tt.reply {
				t.Errorf("got %q %q %q, want %q %q %q", s.Action, s.Rule, s.Reply, tt.action, tt.rule, tt.reply)
			}
		})
	}
}

func TestRecentLastReply(t *testing.T) {
	r := NewRecent(1)
	l := rtLogger(r, io.Discard, slog.LevelInfo)
	l.Info("session", "session", "S", "client", "192.0.2.1:1", "helo", []string{}, "last_reply", "221 Bye")
	s, _ := r.Session("S")
	if s.Reply != "221 Bye" || s.Action != "" || !s.Ended {
		t.Errorf("got reply %q action %q ended %v", s.Reply, s.Action, s.Ended)
	}
}

// TestRecentEviction: the least recently active session goes first.
func TestRecentEviction(t *testing.T) {
	r := NewRecent(3)
	add := func(id string) { r.Add(Record{Msg: "refused", Session: id}) }
	for _, id := range []string{"A", "B", "C"} {
		add(id)
	}
	add("A") // A is active again: B is now the oldest
	add("D")
	got, total := r.Sessions(RecentFilter{}, 0)
	var ids []string
	for _, s := range got {
		ids = append(ids, s.ID)
	}
	if strings.Join(ids, " ") != "D A C" || total != 3 || r.Len() != 3 {
		t.Errorf("kept %v (total %d, len %d), want D A C", ids, total, r.Len())
	}
	if _, ok := r.Session("B"); ok {
		t.Error("B still kept")
	}
	if got, _ := r.Sessions(RecentFilter{}, 2); len(got) != 2 || got[0].ID != "D" {
		t.Errorf("limit 2: %d sessions", len(got))
	}
}

func TestRecentBounds(t *testing.T) {
	r := NewRecent(1000)
	for i := range MaxSessionRecords + 50 {
		r.Add(Record{Msg: "refused", Session: "S", Rcpt: json.RawMessage(fmt.Sprintf("%q", fmt.Sprint("r", i, "@x")))})
	}
	r.Add(Record{Msg: "session", Session: "S"})
	s, _ := r.Session("S")
	if len(s.Records) != MaxSessionRecords+1 || s.Dropped != 50 || s.Records[len(s.Records)-1].Msg != "session" {
		t.Errorf("records %d dropped %d, want %d and 50, ending with the session line", len(s.Records), s.Dropped, MaxSessionRecords+1)
	}
	if s.Refused != MaxSessionRecords+50 || len(s.Rcpts) != MaxSessionRecords {
		t.Errorf("refused %d rcpts %d", s.Refused, len(s.Rcpts))
	}

	// The byte budget: big records push the oldest sessions out.
	r = NewRecent(1000)
	r.maxBytes = 100 << 10
	big := strings.Repeat("x", 10<<10)
	for i := range 50 {
		r.Add(Record{Msg: "refused", Session: fmt.Sprint("S", i), Reason: big})
	}
	if n := r.Len(); n < 5 || n > 10 {
		t.Errorf("kept %d sessions of 10 KiB in 100 KiB", n)
	}
	if _, ok := r.Session("S49"); !ok {
		t.Error("the newest session was evicted")
	}
	if r.bytes > r.maxBytes {
		t.Errorf("bytes %d over %d", r.bytes, r.maxBytes)
	}
}

func TestRecentAnonymous(t *testing.T) {
	r := NewRecent(10)
	l := rtLogger(r, io.Discard, slog.LevelInfo)
	for range 2 {
		l.Warn("refused", "client", "192.0.2.9:2", "stage", "connect", "action", "drop", "rule", "proxy_protocol")
	}
	l.Warn("backend refused the proxy", "err", "x") // operational: not kept
	got, _ := r.Sessions(RecentFilter{}, 0)
	if len(got) != 2 || got[0].ID != "anon-2" || got[1].ID != "anon-1" || !got[0].Ended || got[0].Rule != "proxy_protocol" {
		t.Errorf("got %+v", got)
	}
}

func TestRecentFilter(t *testing.T) {
	r := NewRecent(10)
	l := rtLogger(r, io.Discard, slog.LevelInfo)
	rtLogSession(l, "V4", "192.0.2.7:40280")
	rtLogSession(l, "V6", "[2001:db8::7]:1")
	l.Info("relayed", "session", "OK", "client", "198.51.100.1:5", "action", "accept", "reply", "250 ok")
	tests := []struct {
		name string
		f    RecentFilter
		want string
	}{
		{"all", RecentFilter{}, "OK V6 V4"},
		{"client v4 addr", RecentFilter{Client: netip.MustParsePrefix("192.0.2.7/32")}, "V4"},
		{"client v4 net", RecentFilter{Client: netip.MustParsePrefix("192.0.2.0/24")}, "V4"},
		{"client v6 net", RecentFilter{Client: netip.MustParsePrefix("2001:db8::/32")}, "V6"},
		{"client none", RecentFilter{Client: netip.MustParsePrefix("10.0.0.0/8")}, ""},
		{"action reject", RecentFilter{Action: "reject"}, "V6 V4"},
		{"action tag (a relayed message)", RecentFilter{Action: "tag"}, "V6 V4"},
		{"action accept", RecentFilter{Action: "accept"}, "OK"},
		{"action would", RecentFilter{Action: "would tempfail"}, "V6 V4"},
		{"action not the would's", RecentFilter{Action: "tempfail"}, ""},
		{"rule exact", RecentFilter{Rule: "helo.localhost"}, "V6 V4"},
		{"rule pattern", RecentFilter{Rule: "spf.*"}, "V6 V4"},
		{"rule and action on one record", RecentFilter{Rule: "spf.*", Action: "reject"}, ""},
		{"rule none", RecentFilter{Rule: "dnsbl*"}, ""},
		{"all three", RecentFilter{Client: netip.MustParsePrefix("2001:db8::/32"), Rule: "helo.*", Action: "reject"}, "V6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, total := r.Sessions(tt.f, 0)
			var ids []string
			for _, s := range got {
				ids = append(ids, s.ID)
			}
			if strings.Join(ids, " ") != tt.want || total != len(got) {
				t.Errorf("got %v (total %d), want %q", ids, total, tt.want)
			}
		})
	}
}

// TestRecentLevels: the page gets decisions even when the log file does
// not (log.level = "warn"); debug lines go to neither.
func TestRecentLevels(t *testing.T) {
	r := NewRecent(10)
	var buf bytes.Buffer
	l := rtLogger(r, &buf, slog.LevelWarn)
	l.Info("refused", "session", "A")
	l.Debug("refused", "session", "B")
	l.Warn("backend failed", "session", "C")
	if _, ok := r.Session("A"); !ok {
		t.Error("an info decision was not kept")
	}
	if _, ok := r.Session("B"); ok {
		t.Error("a debug line was kept")
	}
	if _, ok := r.Session("C"); !ok {
		t.Error("a warning was not kept")
	}
	if s := buf.String(); strings.Contains(s, `"A"`) || !strings.Contains(s, `"C"`) {
		t.Errorf("the log got %s", s)
	}
}

func TestRecentWithAttrs(t *testing.T) {
	r := NewRecent(10)
	var buf bytes.Buffer
	l := rtLogger(r, &buf, slog.LevelInfo).With("session", "W", "client", "192.0.2.1:1")
	l.Info("refused", "rule", "helo.no_dot")
	l.WithGroup("g").Info("refused", "rule", "grouped", "session", "X")
	s, ok := r.Session("W")
	if !ok || len(s.Records) != 2 || s.Rule != "helo.no_dot" || s.Client != "192.0.2.1:1" {
		t.Fatalf("got %+v", s)
	}
	if s.Records[1].Rule != "" {
		t.Errorf("an attribute in a group was read as a field: %+v", s.Records[1])
	}
	if !strings.Contains(buf.String(), `"g":{"rule":"grouped"`) {
		t.Errorf("the log lost the group: %s", buf.String())
	}
}

// TestRecentCopies: a caller reusing its slices after logging does not
// change what the ring holds.
func TestRecentCopies(t *testing.T) {
	r := NewRecent(10)
	l := rtLogger(r, io.Discard, slog.LevelInfo)
	helos := []string{"a.example"}
	rcpts := []string{"x@example.com"}
	res := slices.Clone(rtChecks)
	l.Info("session", "session", "S", "helo", helos, "rcpt", rcpts, "checks", res, "list", rcpts)
	helos[0], rcpts[0], res[0].Reason = "evil", "evil", "evil"
	e := func() RecentRecord { s, _ := r.Session("S"); return s.Records[0] }()
	if e.HELO() != "a.example" || e.Recipients() != "x@example.com" || e.Checks[0].Reason == "evil" ||
		e.extra("list") != `["x@example.com"]` {
		t.Errorf("the ring changed with the caller's slices: %+v", e)
	}
}

func TestRecentConcurrent(t *testing.T) {
	r := NewRecent(50)
	l := rtLogger(r, io.Discard, slog.LevelInfo)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				rtLogSession(l, fmt.Sprint("G", g, "-", i%80), "192.0.2.1:1")
			}
		})
	}
	wg.Go(func() {
		for range 200 {
			for _, s := range func() []RecentSession { s, _ := r.Sessions(RecentFilter{Rule: "helo.*"}, 0); return s }() {
				for _, rec := range s.Records {
					_ = rec.HELO() + rec.Reply
				}
			}
			r.Session("G1-3")
		}
	})
	wg.Wait()
	if r.Len() != 50 {
		t.Errorf("len %d, want 50", r.Len())
	}
}

// The cost of the tee on the hot path: the JSON handler alone, then with
// the ring behind it, for mxguard's commonest decision line.
// "json" is the JSON handler alone, "json+ring" with the ring, "ring" the
// ring alone (in front of a handler that discards everything).
func BenchmarkRecentHandler(b *testing.B) {
	for _, name := range []string{"json", "json+ring", "ring"} {
		b.Run(name, func(b *testing.B) {
			var h slog.Handler = slog.NewJSONHandler(io.Discard, nil)
			switch name {
			case "json+ring":
				h = NewRecent(1000).Handler(h)
			case "ring":
				h = NewRecent(1000).Handler(slog.DiscardHandler)
			}
			l := slog.New(h)
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				l.LogAttrs(ctx, slog.LevelInfo, "refused",
					slog.String("session", strconvSession(i)), slog.String("client", "192.0.2.7:40280"), slog.String("stage", "rcpt"),
					slog.String("action", "reject"), slog.String("rule", "helo.localhost"),
					slog.String("reason", "HELO localhost is a name for the local machine"), slog.Float64("score", 0),
					slog.String("reply", "550 5.5.2 Helo command rejected (helo.localhost)"),
					slog.String("where", "(built-in rules/default.toml):12"), slog.String("helo", "localhost"),
					slog.String("from", "alice@example.org"), slog.String("rcpt", "bob@example.com"),
					slog.Any("checks", rtChecks), slog.Float64("elapsed", 2.006))
			}
		})
	}
}

var rtIDs = func() []string {
	ids := make([]string, 4096)
	for i := range ids {
		ids[i] = fmt.Sprintf("S%011d", i)
	}
	return ids
}()

// strconvSession returns one of 4096 session ids: a steady state of new
// sessions evicting old ones, without formatting in the loop.
func strconvSession(i int) string { return rtIDs[i%len(rtIDs)] }
