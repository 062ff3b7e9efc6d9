package ratecheck

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/metrics"
	"github.com/mxguard/mxguard/ratelimit"
)

func build(t *testing.T, toml string, lim ratelimit.Limiter) (checks.Check, error) {
	t.Helper()
	cfg, err := config.Parse("r.toml", []byte("hostname = \"mx.example.com\"\n"+toml))
	if err != nil {
		t.Fatal(err)
	}
	return Spec.New(&checks.Env{Config: cfg, Limiter: lim})
}

// A bad bucket is a config error with the file and line; no limit set, or
// no limiter to count with (check-config), is no check.
func TestConfig(t *testing.T) {
	if _, err := build(t, "[ratelimit]\nmessages_per_ip = \"ten a minute\"\n", nil); err == nil ||
		!strings.Contains(err.Error(), "r.toml:3: ratelimit.messages_per_ip") {
		t.Errorf("bad bucket: %v", err)
	}
	if c, err := build(t, "", ratelimit.NewLocal(ratelimit.LocalOptions{})); c != nil || err != nil {
		t.Errorf("no limits: %v %v", c, err)
	}
	if c, err := build(t, "[ratelimit]\nmessages_per_ip = \"10 / 1m\"\n", nil); c != nil || err != nil {
		t.Errorf("no limiter: %v %v", c, err)
	}
}

// Each stage counts its own kind, per address and per network, and the
// sender's domain whatever the address.
func TestStages(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lim := ratelimit.NewLocal(ratelimit.LocalOptions{Now: func() time.Time { return now }})
	c, err := build(t, `[ratelimit]
connections_per_ip = "2 / 1m"
recipients_per_net = "3 / 1h"
messages_per_sender_domain = "1 / 1h"
`, lim)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	session := func(ip string) *checks.Session {
		from := "a@example.org"
		return &checks.Session{Client: netip.AddrPortFrom(netip.MustParseAddr(ip), 1), From: &from}
	}
	outcome := func(rs []checks.Result) string {
		if len(rs) == 0 {
			return ""
		}
		return rs[0].Outcome
	}
	for i, want := range []string{"", "", "ratelimit.connections"} {
		if got := outcome(c.Run(ctx, checks.AtConnect, session("192.0.2.1"))); got != want {
			t.Errorf("connection %d: %q, want %q", i+1, got, want)
		}
	}
	if got := outcome(c.Run(ctx, checks.AtConnect, session("192.0.2.2"))); got != "" {
		t.Errorf("another address: %q", got)
	}
	for i, ip := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"} {
		want := ""
		if i == 3 {
			want = "ratelimit.recipients"
		}
		if got := outcome(c.Run(ctx, checks.AtRcpt, session(ip))); got != want {
			t.Errorf("recipient %d from the /24: %q, want %q", i+1, got, want)
		}
	}
	if got := outcome(c.Run(ctx, checks.AtMail, session("203.0.113.1"))); got != "" {
		t.Errorf("first message of the domain: %q", got)
	}
	if got := outcome(c.Run(ctx, checks.AtMail, session("203.0.114.1"))); got != "ratelimit.sender_domain" {
		t.Errorf("second message of the domain, from elsewhere: %q", got)
	}
	now = now.Add(time.Hour)
	if got := outcome(c.Run(ctx, checks.AtMail, session("203.0.114.1"))); got != "" {
		t.Errorf("an hour later: %q", got)
	}
}

// The result names the bucket over its limit, and the metrics count each
// bucket asked: those before it "ok", it "exceeded", none after it.
func TestOverLimitReasonAndMetrics(t *testing.T) {
	cfg, err := config.Parse("r.toml", []byte(`hostname = "mx.example.com"
[ratelimit]
messages_per_ip = "5 / 1h"
messages_per_net = "1 / 1h"
messages_per_sender_domain = "5 / 1h"
`))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New("test")
	c, err := Spec.New(&checks.Env{Config: cfg, Limiter: ratelimit.NewLocal(ratelimit.LocalOptions{}), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	from := "a@example.org"
	for _, ip := range []string{"192.0.2.1", "192.0.2.2"} {
		rs := c.Run(context.Background(), checks.AtMail, &checks.Session{Client: netip.AddrPortFrom(netip.MustParseAddr(ip), 1), From: &from})
		if ip == "192.0.2.1" && len(rs) != 0 {
			t.Fatalf("first message: %+v", rs)
		}
		if ip == "192.0.2.2" && (len(rs) != 1 || rs[0].Outcome != "ratelimit.messages" ||
			rs[0].Reason != "192.0.2.0/24 over ratelimit.messages_per_net (1 / 1h)" || rs[0].Evidence == "") {
			t.Fatalf("second message, same /24: %+v", rs)
		}
	}
	got := map[string]float64{}
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "mxguard_ratelimit_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			var key []string
			for _, l := range s.GetLabel() {
				key = append(key, l.GetValue())
			}
			got[strings.Join(key, " ")] = s.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"messages_per_ip ok": 2, "messages_per_net ok": 1, "messages_per_net exceeded": 1,
		"messages_per_sender_domain ok": 1, // asked once: the refused message stopped before it
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all %v)", k, got[k], v, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("metrics %v, want %v", got, want)
	}
}
