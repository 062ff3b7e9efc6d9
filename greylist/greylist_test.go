package greylist

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
	"github.com/mxguard/mxguard/store"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// stores opens each store greylisting runs on: Memory and a real Redis.
// Greylisting keeps its own time (the now of each Check), so tests move
// time by hours and days without waiting, on Redis too.
func stores() []struct {
	name string
	open func(t *testing.T) store.Store
} {
	return []struct {
		name string
		open func(t *testing.T) store.Store
	}{
		{"memory", func(t *testing.T) store.Store { return store.NewMemory(nil) }},
		{"redis", func(t *testing.T) store.Store {
			srv := redistest.Start(t)
			s, err := store.OpenRedis(store.RedisOptions{
				Addr:         srv.Addr,
				Prefix:       "mxguard:test:",
				ReadTimeout:  time.Second,
				WriteTimeout: 2 * time.Second,
				Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
	}
}

// attempt is one delivery attempt at t0+at, and what greylisting must say.
type attempt struct {
	at       time.Duration
	client   string
	from, to string
	want     Verdict
	wait     time.Duration // for First and Early
	delayed  time.Duration // for Passed
}

const (
	alice = "alice@example.org"
	bob   = "bob@example.net"
	carol = "carol@example.net"
	day   = 24 * time.Hour
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      func(*Config)
		attempts []attempt
	}{
		{"first attempt is deferred", nil, []attempt{
			{0, "192.0.2.1", alice, bob, First, 5 * time.Minute, 0},
		}},
		{"retry too early, then in the window", nil, []attempt{
			{0, "192.0.2.1", alice, bob, First, 5 * time.Minute, 0},
			{time.Minute, "192.0.2.1", alice, bob, Early, 4 * time.Minute, 0},
			{299 * time.Second, "192.0.2.1", alice, bob, Early, time.Second, 0},
			{5 * time.Minute, "192.0.2.1", alice, bob, Passed, 0, 5 * time.Minute},
			{time.Hour, "192.0.2.1", alice, bob, Known, 0, 0},
			{30 * day, "192.0.2.1", alice, bob, Known, 0, 0},
		}},
		{"a late retry passes with its delay", nil, []attempt{
			{0, "192.0.2.1", alice, bob, First, 5 * time.Minute, 0},
			{47 * time.Hour, "192.0.2.1", alice, bob, Passed, 0, 47 * time.Hour},
		}},
		{"retry after the window starts over", nil, []attempt{
			{0, "192.0.2.1", alice, bob, First, 5 * time.Minute, 0},
			{time.Minute, "192.0.2.1", alice, bob, Early, 4 * time.Minute, 0},
			{49 * time.Hour, "192.0.2.1", alice, bob, First, 5 * time.Minute, 0},
			{49*time.Hour + 10*time.Minute, "192.0.2.1", alice, bob, Passed, 0, 10 * time.Minute},
		}},
		{"a passed triplet unseen for the max age starts over", nil, []attempt{
			{0, "192.0.2.1", alice, bob, First, 5 * time.Minute, 0},
			{10 * time.Minute, "192.0.2.1", alice, bob, Passed, 0, 10 * time.Minute},
			{20 * day, "192.0.2.1", alice, bob, Known, 0, 0},
			{54 * day, "192.0.2.1", alice, bob, Known, 0, 0}, // 34 days since last seen
			{90 * day, "192.0.2.1", alice, bob, First, 5 * time.Minute, 0},
		}},
		{"triplets are apart", nil, []attempt{
			{0, "192.0.2.1", alice, bob, First, 5 * time.Minute, 0},
			{10 * time.Minute, "192.0.2.1", alice, bob, Passed, 0, 10 * time.Minute},
			{10 * time.Minute, "192.0.2.1", alice, carol, First, 5 * time.Minute, 0},
			{10 * time.Minute, "192.0.2.1", "dave@example.org", bob, First, 5 * time.Minute, 0},
			{10 * time.Minute, "198.51.100.1", alice, bob, First, 5 * time.Minute, 0},
		}},
		{"IPv4 clients are grouped by /24", nil, []attempt{
			{0, "192.0.2.1", alice, bob, First, 5 * time.Minute, 0},
			{10 * time.Minute, "192.0.2.200", alice, bob, Passed, 0, 10 * time.Minute},
			{10 * time.Minute, "192.0.3.1", alice, bob, First, 5 * time.Minute, 0},
			{20 * time.Minute, "::ffff:192.0.2.7", alice, bob, Known, 0, 0}, // IPv4-mapped
		}},
		{"IPv6 clients are grouped by /64", nil, []attempt{
			{0, "2001:db8:1:2::1", alice, bob, First, 5 * time.Minute, 0},
			{10 * time.Minute, "2001:db8:1:2:ffff:ffff:ffff:fffe", alice, bob, Passed, 0, 10 * time.Minute},
			{10 * time.Minute, "2001:db8:1:3::1", alice, bob, First, 5 * time.Minute, 0},
		}},
		{"configured masks", func(c *Config) { c.IPv4Mask, c.IPv6Mask = 32, 48 }, []attempt{
			{0, "192.0.2.1", alice, bob, First, 5 * time.Minute, 0},
			{10 * time.Minute, "192.0.2.2", alice, bob, First, 5 * time.Minute, 0},
			{0, "2001:db8:1:2::1", alice, bob, First, 5 * time.Minute, 0},
			{10 * time.Minute, "2001:db8:1:ffff::1", alice, bob, Passed, 0, 10 * time.Minute},
		}},
		{"sender normalised", nil, []attempt{
			{0, "192.0.2.1", "Bounce+12345@Lists.Example.org", bob, First, 5 * time.Minute, 0},
			{10 * time.Minute, "192.0.2.1", "bounce+999@lists.example.org", "BOB@example.net", Passed, 0, 10 * time.Minute},
			{0, "192.0.2.1", "prvs=4123abcdef=alice@example.org", carol, First, 5 * time.Minute, 0},
			{10 * time.Minute, "192.0.2.1", "prvs=5456fedcba=alice@example.org", carol, Passed, 0, 10 * time.Minute},
			{20 * time.Minute, "192.0.2.1", "alice@example.org", carol, Known, 0, 0},
			{0, "192.0.2.1", "list-1234-5678@lists.example.org", alice, First, 5 * time.Minute, 0},
			{10 * time.Minute, "192.0.2.1", "list-99-1@lists.example.org", alice, Passed, 0, 10 * time.Minute},
		}},
		{"null sender", nil, []attempt{
			{0, "192.0.2.1", "", bob, First, 5 * time.Minute, 0},
			{10 * time.Minute, "192.0.2.1", "<>", bob, Passed, 0, 10 * time.Minute},
		}},
		{"configured delay", func(c *Config) { c.Delay, c.RetryWindow = time.Minute, time.Hour }, []attempt{
			{0, "192.0.2.1", alice, bob, First, time.Minute, 0},
			{time.Minute, "192.0.2.1", alice, bob, Passed, 0, time.Minute},
			{0, "192.0.2.1", alice, carol, First, time.Minute, 0},
			{2 * time.Hour, "192.0.2.1", alice, carol, First, time.Minute, 0},
		}},
		{"auto-allow after 5 passes, one an hour", nil, autoAllow()},
		{"auto-allow off", func(c *Config) { c.AutoAllow = 0 }, autoAllowOff()},
	} {
		for _, st := range stores() {
			t.Run(tc.name+"/"+st.name, func(t *testing.T) {
				cfg := DefaultConfig()
				if tc.cfg != nil {
					tc.cfg(&cfg)
				}
				g, err := New(st.open(t), cfg)
				if err != nil {
					t.Fatal(err)
				}
				for i, a := range tc.attempts {
					d, err := g.Check(context.Background(), netip.MustParseAddr(a.client), a.from, a.to, t0.Add(a.at))
					if err != nil {
						t.Fatalf("attempt %d: %v", i, err)
					}
					if d.Verdict != a.want || d.Wait != a.wait || d.Delayed != a.delayed {
						t.Fatalf("attempt %d (%v %s %s→%s): %v wait %v delayed %v; want %v wait %v delayed %v",
							i, a.at, a.client, a.from, a.to, d.Verdict, d.Wait, d.Delayed, a.want, a.wait, a.delayed)
					}
					if d.Defer() != (a.want == First || a.want == Early) {
						t.Fatalf("attempt %d: Defer() = %v for %v", i, d.Defer(), d.Verdict)
					}
				}
			})
		}
	}
}

// autoAllow: a network whose triplets passed 5 times, counted at most once
// an hour, is allowed for any triplet.
func autoAllow() []attempt {
	var as []attempt
	at := time.Duration(0)
	pass := func(rcpt string) {
		as = append(as,
			attempt{at, "192.0.2.1", alice, rcpt, First, 5 * time.Minute, 0},
			attempt{at + 5*time.Minute, "192.0.2.1", alice, rcpt, Passed, 0, 5 * time.Minute},
		)
	}
	// Three passes within one hour count once.
	pass("r1@example.net")
	pass("r2@example.net")
	pass("r3@example.net")
	at += time.Hour
	for i := 4; i <= 7; i++ { // four more, an hour apart: five counted
		pass(fmt.Sprintf("r%d@example.net", i))
		at += time.Hour
	}
	as = append(as,
		attempt{at, "192.0.2.99", "new@example.com", "r8@example.net", Allowed, 0, 0},
		attempt{at, "192.0.3.1", "new@example.com", "r8@example.net", First, 5 * time.Minute, 0},
		attempt{at + 20*day, "192.0.2.1", "other@example.com", "r9@example.net", Allowed, 0, 0},
		attempt{at + 20*day + 34*day, "192.0.2.1", "other@example.com", "r9@example.net", Allowed, 0, 0},
		attempt{at + 100*day, "192.0.2.1", "other@example.com", "r9@example.net", First, 5 * time.Minute, 0},
	)
	return as
}

func autoAllowOff() []attempt {
	var as []attempt
	for i := range 10 {
		at := time.Duration(i) * 2 * time.Hour
		rcpt := fmt.Sprintf("r%d@example.net", i)
		as = append(as,
			attempt{at, "192.0.2.1", alice, rcpt, First, 5 * time.Minute, 0},
			attempt{at + 5*time.Minute, "192.0.2.1", alice, rcpt, Passed, 0, 5 * time.Minute},
		)
	}
	return as
}

// TestRecords: what is stored, under which key, for how long.
func TestRecords(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory(func() time.Time { return t0 })
	g, err := New(st, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddr("192.0.2.1")
	d, _ := g.Check(ctx, client, "Bounce-123@Example.ORG", "Bob@Example.NET", t0)
	const key = "grey:t:192.0.2.0/24/bounce-#@example.org/bob@example.net"
	if d.Key != key {
		t.Errorf("key %q, want %q", d.Key, key)
	}
	if d.Net != netip.MustParsePrefix("192.0.2.0/24") {
		t.Errorf("net %v", d.Net)
	}
	v, err := st.Get(ctx, key)
	if want := fmt.Sprintf("%d,%d", t0.Unix(), t0.Unix()); err != nil || string(v) != want {
		t.Errorf("record %q, %v; want %q", v, err, want)
	}
	g.Check(ctx, client, "bounce-4@example.org", "bob@example.net", t0.Add(6*time.Minute))
	v, _ = st.Get(ctx, "grey:a:192.0.2.0/24")
	if want := fmt.Sprintf("1,%d", t0.Add(6*time.Minute).Unix()); string(v) != want {
		t.Errorf("auto-allow record %q, want %q", v, want)
	}
}

// TestTTL: a new triplet lives for the retry window, a passed one for the
// max age (Redis expires them by its own clock, so this uses Memory).
func TestTTL(t *testing.T) {
	ctx := context.Background()
	now := t0
	st := store.NewMemory(func() time.Time { return now })
	g, _ := New(st, DefaultConfig())
	client := netip.MustParseAddr("192.0.2.1")
	d, _ := g.Check(ctx, client, alice, bob, now)
	g.Check(ctx, client, alice, carol, now)
	now = now.Add(47 * time.Hour)
	g.Check(ctx, client, alice, carol, now) // passes
	now = now.Add(2 * time.Hour)
	if _, err := st.Get(ctx, d.Key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unanswered triplet outlived its retry window: %v", err)
	}
	now = now.Add(30 * day)
	if d, _ := g.Check(ctx, client, alice, carol, now); d.Verdict != Known {
		t.Errorf("a passed triplet after 30 days: %v", d.Verdict)
	}
	now = now.Add(36 * day)
	if st.Scan(ctx, "grey:t:", func(k string, _ []byte) error { t.Errorf("%s outlived the max age", k); return nil }) != nil {
		t.Fatal("scan")
	}
}

// TestStoreDown: greylisting returns the store's error, to fail open.
func TestStoreDown(t *testing.T) {
	srv := redistest.Start(t)
	s, err := store.OpenRedis(store.RedisOptions{Addr: srv.Addr, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g, _ := New(s, DefaultConfig())
	srv.Stop()
	for range 3 {
		start := time.Now()
		d, err := g.Check(context.Background(), netip.MustParseAddr("192.0.2.1"), alice, bob, t0)
		if !errors.Is(err, store.ErrUnavailable) || d.Verdict != 0 || d.Defer() {
			t.Fatalf("with Redis down: %+v, %v; want no decision and ErrUnavailable", d, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("took %v", took)
		}
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Delay: time.Hour, RetryWindow: time.Minute}, "greylist: the retry window (1m0s) must be longer than the delay (1h0m0s)"},
		{Config{MaxAge: time.Hour}, "greylist: the max age (1h0m0s) must not be shorter than the retry window (48h0m0s)"},
		{Config{AutoAllow: -1}, "greylist: auto-allow count -1: must be 0 (off) or more"},
		{Config{IPv4Mask: 33}, "greylist: IPv4 mask /33: want 1 to 32"},
		{Config{IPv6Mask: 129}, "greylist: IPv6 mask /129: want 1 to 128"},
		{Config{Delay: -time.Second}, "greylist: delay, retry window and max age must not be negative"},
	} {
		_, err := New(store.NewMemory(nil), tc.cfg)
		if err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	g, err := New(store.NewMemory(nil), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if c := g.Config(); c.Delay != 5*time.Minute || c.AutoAllow != 0 || c.Prefix != "grey:" {
		t.Errorf("zero Config filled in as %+v", c)
	}
	if _, err := g.Check(context.Background(), netip.Addr{}, alice, bob, t0); err == nil {
		t.Error("Check without a client address: no error")
	}
}

func TestVerdictString(t *testing.T) {
	var names []string
	for v := First; v <= Allowed; v++ {
		names = append(names, v.String())
	}
	if got := strings.Join(names, " "); got != "first early passed known allowed" {
		t.Errorf("names %q", got)
	}
	if Verdict(0).String() != "verdict(0)" {
		t.Errorf("zero verdict %q", Verdict(0))
	}
}

// TestShared: two instances on one Redis share their triplets: a client
// deferred by one passes at the other.
func TestShared(t *testing.T) {
	srv := redistest.Start(t)
	open := func() *Greylist {
		s, err := store.OpenRedis(store.RedisOptions{Addr: srv.Addr, Prefix: "mxguard:site:", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		g, err := New(s, DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	a, b := open(), open()
	client := netip.MustParseAddr("192.0.2.1")
	ctx := context.Background()
	if d, err := a.Check(ctx, client, alice, bob, t0); err != nil || d.Verdict != First {
		t.Fatalf("first at A: %+v, %v", d, err)
	}
	if d, err := b.Check(ctx, netip.MustParseAddr("192.0.2.2"), alice, bob, t0.Add(6*time.Minute)); err != nil || d.Verdict != Passed {
		t.Fatalf("retry at B: %+v, %v", d, err)
	}
}
