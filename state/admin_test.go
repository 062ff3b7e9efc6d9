package state

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/greylist"
	"github.com/mxguard/mxguard/reputation"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.7", "ip 192.0.2.7"}, {"::ffff:192.0.2.7", "ip 192.0.2.7"}, {"2001:db8::1", "ip 2001:db8::1"},
		{"192.0.2.9/24", "net 192.0.2.0/24"}, {"Example.ORG.", "domain example.org"}, {"@example.org", "domain example.org"},
		{"a b", "error"}, {"", "error"}, {"x@y", "error"},
	} {
		got := "error"
		if tg, err := ParseTarget(tc.in); err == nil {
			switch {
			case tg.IP.IsValid():
				got = "ip " + tg.IP.String()
			case tg.Net.IsValid():
				got = "net " + tg.Net.String()
			default:
				got = "domain " + tg.Domain
			}
		}
		if got != tc.want {
			t.Errorf("%q: %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestWithin(t *testing.T) {
	p := netip.MustParsePrefix("192.0.2.0/24")
	for key, want := range map[string]bool{
		"ip:192.0.2.7": true, "ip:192.0.3.7": false, "net:192.0.2.0/24": true, "net:192.0.0.0/16": false,
		"grey:t:192.0.2.0/24/a@b.example/c@d.example": true, "grey:a:192.0.2.0/24": true, "grey:t:198.51.100.0/24/a/b": false,
		"ip:2001:db8::1": false, "grey:t:2001:db8::/64/a/b": false,
	} {
		if got := within(key, p); got != want {
			t.Errorf("%s in %s: %v", key, p, got)
		}
	}
	if !within("grey:t:2001:db8::/64/a/b", netip.MustParsePrefix("2001:db8::/32")) {
		t.Error("IPv6 greylist key")
	}
}

// show, forget and top on a memory store.
func TestAdmin(t *testing.T) {
	cfg := config.Default()
	cfg.State.Store = config.StoreMemory
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := Open(cfg, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := reputation.New(s.Store, s.Async, reputation.Config{Now: s.Now})
	bad, good := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("198.51.100.9")
	m.Record(bad, 0, []checks.Name{checks.HELOName, checks.HELOName})
	m.Record(good, 7, nil)
	m.Pass(good, checks.PregreetName, time.Hour)
	g, _ := greylist.New(s.Store, greylist.DefaultConfig())
	g.Check(context.Background(), bad, "spam@spam.example", "bob@example.com", now)
	ctx := context.Background()
	var out bytes.Buffer
	run := func(op, target string) string {
		out.Reset()
		if err := s.Run(ctx, op, target, 5, &out); err != nil {
			t.Fatalf("%s %s: %v", op, target, err)
		}
		return out.String()
	}
	if o := run("show", "198.51.100.9"); !strings.Contains(o, "ip:198.51.100.9") || !strings.Contains(o, "accepted 7") || !strings.Contains(o, "pregreet") {
		t.Errorf("show good:\n%s", o)
	}
	if o := run("show", "192.0.2.0/24"); !strings.Contains(o, "ip:192.0.2.7") || !strings.Contains(o, "refused helo:2") || !strings.Contains(o, "net:192.0.2.0/24") {
		t.Errorf("show net:\n%s", o)
	}
	if o := run("show", "spam.example"); !strings.Contains(o, "grey:t:192.0.2.0/24/spam@spam.example/bob@example.com") {
		t.Errorf("show domain:\n%s", o)
	}
	if o := run("top", ""); strings.Index(o, "192.0.2.7") > strings.Index(o, "best") || !strings.Contains(o[strings.Index(o, "best"):], "198.51.100.9") {
		t.Errorf("top:\n%s", o)
	}
	if o := run("forget", "192.0.2.0/24"); !strings.Contains(o, "forgot 3 records") {
		t.Errorf("forget: %s", o)
	}
	if o := run("show", "192.0.2.7"); !strings.Contains(o, "nothing remembered") {
		t.Errorf("after forget:\n%s", o)
	}
}
