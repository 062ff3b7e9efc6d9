package dnsbl

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/resolver"
	"github.com/mxguard/mxguard/zonedns"
)

// healthZone has one good list and one broken in each way the self-test
// must catch. Every list lists 192.0.2.1.
func healthZone(t testing.TB) string {
	z := &zoneBuilder{t: t}
	z.testPoints("good.test", "wild.test", "err.test", "down.test")
	z.ip("127.0.0.1", "wild.test", "127.0.0.2") // answers for everything
	z.ip("127.0.0.2", "err.test", "127.255.255.254")
	for _, zone := range []string{"good.test", "wild.test", "empty.test", "err.test", "down.test"} {
		z.ip("192.0.2.1", zone, "127.0.0.2")
	}
	z.raw("test.dbl.test. 300 IN A 127.0.1.2")
	z.raw("test.wdbl.test. 300 IN A 127.0.1.2")
	z.raw("invalid.wdbl.test. 300 IN A 127.0.1.2")
	z.raw("spam.example.dbl.test. 300 IN A 127.0.1.2")
	z.raw("spam.example.wdbl.test. 300 IN A 127.0.1.2")
	return z.String()
}

var healthConfig = Config{
	Sites:       []string{"good.test", "wild.test", "empty.test", "err.test", "down.test"},
	DomainSites: []string{"dbl.test", "wdbl.test"},
	Timeout:     time.Second,
}

func TestSelfTest(t *testing.T) {
	// No cache, so that fixture changes show at once.
	e := setup(t, healthZone(t), healthConfig, resolver.Config{CacheSize: -1})
	e.fx.SetFault("2.0.0.127.down.test", zonedns.Fault{Rcode: dns.RcodeServerFailure})
	e.c.Start()

	broken := []struct{ zone, why string }{
		{"wild.test", `why="test point 1.0.0.127.wild.test. is listed as 127.0.0.2"`},
		{"empty.test", `why="test point 2.0.0.127.empty.test. is not listed"`},
		{"err.test", `why="test point 2.0.0.127.err.test.: error code 127.255.255.254: query through a public or open resolver (Spamhaus)"`},
		{"down.test", `why="test point 2.0.0.127.down.test.: server misbehaving: SERVFAIL"`},
		{"wdbl.test", `why="test point invalid.wdbl.test. is listed as 127.0.1.2"`},
	}
	for _, b := range broken {
		if n := e.log.count(`msg="dnsbl zone broken"`, "zone="+b.zone+" ", b.why); n != 1 {
			t.Errorf("%d broken lines for %s:\n%s", n, b.zone, e.log)
		}
	}
	for _, zone := range []string{"good.test", "dbl.test"} {
		if n := e.log.count("zone=" + zone + " "); n != 0 {
			t.Errorf("%s logged:\n%s", zone, e.log)
		}
	}

	check := func(wantScore float64, skipped ...string) {
		t.Helper()
		e.fx.ResetCounters()
		v := e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.1"))
		if v.Score != wantScore || len(v.Errors) != 0 {
			t.Errorf("score %g, errors %q; want %g", v.Score, zoneErrors(v), wantScore)
		}
		for _, zone := range skipped {
			if n := e.fx.Queries(rev(t, "192.0.2.1")+zone, dns.TypeA); n != 0 {
				t.Errorf("broken %s asked", zone)
			}
		}
	}
	check(1, "wild.test", "empty.test", "err.test", "down.test")
	if v := e.c.CheckDomain(t.Context(), "spam.example", "sender"); v.Score != 1 || e.fx.Queries("spam.example.wdbl.test", dns.TypeA) != 0 {
		t.Errorf("domain score %g: wdbl.test not skipped", v.Score)
	}

	// Still broken: no more lines.
	e.c.selfTest(t.Context())
	if n := e.log.count(`msg="dnsbl zone broken"`); n != len(broken) {
		t.Errorf("%d broken lines after a second test:\n%s", n, e.log)
	}

	// Three lists mend their ways.
	e.fx.RemoveRR(rev(t, "127.0.0.1")+"wild.test", dns.TypeA)
	if err := e.fx.AddRR(rev(t, "127.0.0.2") + "empty.test. 300 IN A 127.0.0.2"); err != nil {
		t.Fatal(err)
	}
	e.fx.ClearFault("2.0.0.127.down.test")
	e.c.selfTest(t.Context())
	for _, zone := range []string{"wild.test", "empty.test", "down.test"} {
		if n := e.log.count(`msg="dnsbl zone healed"`, "zone="+zone+" "); n != 1 {
			t.Errorf("%d healed lines for %s:\n%s", n, zone, e.log)
		}
	}
	if n := e.log.count(`msg="dnsbl zone healed"`); n != 3 {
		t.Errorf("%d healed lines:\n%s", n, e.log)
	}
	check(4, "err.test")
}

// A filter narrower than the test point's answer does not break the list:
// the test point only shows that the list answers sanely.
func TestSelfTestIgnoresFilter(t *testing.T) {
	e := setup(t, healthZone(t), Config{Sites: []string{"good.test=127.0.0.[3..11]"}}, resolver.Config{})
	e.c.Start()
	if e.c.ipZones[0].broken[famIPv4].Load() {
		t.Errorf("broken:\n%s", e.log)
	}
}

// The goroutine Start leaves behind tests again every interval and Close
// stops it.
func TestSelfTestLoop(t *testing.T) {
	cfg := Config{Sites: []string{"good.test"}, SelfTestInterval: 20 * time.Millisecond, Timeout: time.Second}
	before := runtime.NumGoroutine()
	e := setup(t, healthZone(t), cfg, resolver.Config{CacheSize: -1})
	e.c.Start()
	z := e.c.ipZones[0]
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s:\n%s", what, e.log)
			}
		}
	}
	e.fx.SetFault("2.0.0.127.good.test", zonedns.Fault{Rcode: dns.RcodeRefused})
	waitFor("broken zone", z.broken[famIPv4].Load)
	if v := e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.1")); v.Score != 0 {
		t.Errorf("broken zone used: %+v", v)
	}
	e.fx.ClearFault("2.0.0.127.good.test")
	waitFor("healed zone", func() bool { return !z.broken[famIPv4].Load() })
	if v := e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.1")); v.Score != 1 {
		t.Errorf("healed zone not used: %+v", v)
	}

	e.c.Close()
	n := e.fx.TotalQueries()
	time.Sleep(60 * time.Millisecond)
	if m := e.fx.TotalQueries(); m != n {
		t.Errorf("%d queries after Close", m-n)
	}
	e.fx.Close()
	settles(t, before)
}

// Close cuts short a self-test waiting on a list that never answers.
func TestCloseDuringStart(t *testing.T) {
	cfg := Config{Sites: []string{"good.test"}, SelfTestInterval: time.Hour, Timeout: 10 * time.Second}
	e := setup(t, healthZone(t), cfg, resolver.Config{})
	e.fx.SetFault("2.0.0.127.good.test", zonedns.Fault{Drop: true})
	done := make(chan struct{})
	go func() {
		e.c.Start()
		close(done)
	}()
	for e.fx.Queries("2.0.0.127.good.test", dns.TypeA) == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	e.c.Close()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Start still running after Close")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
	// Cut short by Close, not by the list: nothing to hold against it.
	if e.log.count("dnsbl zone broken") != 0 || e.c.ipZones[0].broken[famIPv4].Load() {
		t.Errorf("zone marked broken by Close:\n%s", e.log)
	}
}
