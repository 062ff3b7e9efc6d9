package proxy

import (
	"context"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
)

// goroutines waits for the goroutine count to settle and returns it.
func goroutines() int {
	n := runtime.NumGoroutine()
	for i := 0; i < 50; i++ {
		time.Sleep(10 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return m
		}
		n = m
	}
	return n
}

// Connections in the greeting wait and after the banner hold no goroutine
// (park.go), and are served all the same when their clients speak.
func TestParkedConnectionsHoldNoGoroutine(t *testing.T) {
	if _, err := newPoller(); err == errNoPoller {
		t.Skip("no poller on this system")
	}
	const n = 40
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Listen.GreetDelay = config.Duration(time.Minute)
		c.Limits.MaxConnectionsPerIP = 2 * n
	}})
	h.srv.parkBannerOver = n / 2
	h.rep.Pass(netip.MustParseAddr("127.0.0.2"), checks.PregreetName, time.Hour)
	goodClient(t, h, "warm-up") // pools, the poller
	before := goroutines()
	var waiting []*client
	for range n {
		c := h.dial("127.0.0.3")
		if line, err := c.R.ReadString('\n'); err != nil || !strings.HasPrefix(line, "220-") {
			t.Fatalf("bait line %q, %v", line, err)
		}
		waiting = append(waiting, c)
	}
	waitOpen(t, h, n, 5*time.Second)
	if g := goroutines(); g > before+n/4 {
		t.Errorf("%d connections in the greeting wait: %d goroutines, %d before", n, g, before)
	}
	for _, c := range waiting {
		c.Conn.Close()
	}
	waitOpen(t, h, 0, 5*time.Second)

	// After the banner: clients that passed the greeting before.
	before = goroutines()
	var greeted []*client
	for range n {
		greeted = append(greeted, h.greeted("127.0.0.2"))
	}
	// Up to parkBannerOver open, go-smtp has them at once (a goroutine each).
	if g := goroutines(); g > before+n/2+n/4 {
		t.Errorf("%d connections idle after the banner: %d goroutines, %d before", n, g, before)
	}
	for _, c := range greeted {
		c.Cmd("EHLO mail.good.test", 250)
		c.Cmd("QUIT", 221)
	}
	h.logs.wait(t, "session", 2*n+1)
}

// The banner mxguard sends for go-smtp is go-smtp's, and go-smtp's own goes
// nowhere: one 220 line, and the next reply is the EHLO's.
func TestParkedBanner(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.srv.parkBannerOver = 0
	h.rep.Pass(netip.MustParseAddr("127.0.0.2"), checks.PregreetName, time.Hour)
	c := h.dial("127.0.0.2")
	line, err := c.R.ReadString('\n')
	if err != nil || line != "220 mx.mxguard.test ESMTP Service Ready\r\n" {
		t.Fatalf("banner %q, %v", line, err)
	}
	time.Sleep(50 * time.Millisecond)
	c.Cmd("EHLO mail.good.test", 250)
	c.Cmd("NOOP", 250)
	c.Cmd("QUIT", 221)
}

// A client silent after the banner gets go-smtp's idle timeout, logged as
// go-smtp's refusals are.
func TestParkedAfterBannerTimeout(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Limits.CommandTimeout = config.Duration(300 * time.Millisecond)
	}})
	h.srv.parkBannerOver = 0
	h.rep.Pass(netip.MustParseAddr("127.0.0.2"), checks.PregreetName, time.Hour)
	start := time.Now()
	c := h.greeted("127.0.0.2")
	if code, text := c.Reply(); code != 421 || text != "4.4.2 Idle timeout, bye bye" {
		t.Errorf("idle client got %d %q", code, text)
	}
	if took := time.Since(start); took < 250*time.Millisecond || took > 3*time.Second {
		t.Errorf("cut after %v, want about 300ms", took)
	}
	r := h.logs.wait(t, "refused", 1)[0]
	if r["rule"] != "limit" || !strings.Contains(r["reason"].(string), "limits.command_timeout") {
		t.Errorf("refused record %v", r)
	}
}

// Shutdown treats a client idle after the banner as the session it is:
// served if it speaks, waited for.
func TestParkedAfterBannerShutdown(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.srv.parkBannerOver = 0
	h.rep.Pass(netip.MustParseAddr("127.0.0.2"), checks.PregreetName, time.Hour)
	c := h.greeted("127.0.0.2")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- h.srv.Shutdown(ctx)
	}()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a session open", err)
	case <-time.After(200 * time.Millisecond):
	}
	c.Cmd("EHLO mail.good.test", 250)
	c.SendMail("", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: during shutdown\r\n\r\nhi\r\n"))
	c.Cmd("QUIT", 221)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the session ended")
	}
	if _, err := h.sink.WaitMessages(1, 5*time.Second); err != nil {
		t.Error(err)
	}
}

// session_timeout ends a connection while it waits, parked, as it would
// one on its goroutine: in the greeting wait and after the banner, it is
// hung up without a word, and the session record says why.
func TestParkedSessionTimeout(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Listen.GreetDelay = config.Duration(time.Minute)
		c.Limits.CommandTimeout = config.Duration(time.Minute)
		c.Limits.SessionTimeout = config.Duration(300 * time.Millisecond)
	}})
	h.srv.parkBannerOver = 0
	h.rep.Pass(netip.MustParseAddr("127.0.0.2"), checks.PregreetName, time.Hour)
	for _, tc := range []struct {
		name, from, first string
	}{
		{"greeting wait", "127.0.0.3", "220-"},
		{"after the banner", "127.0.0.2", "220 "},
	} {
		start := time.Now()
		c := h.dial(tc.from)
		line, err := c.R.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, tc.first) {
			t.Fatalf("%s: first line %q, %v", tc.name, line, err)
		}
		rest, err := c.R.ReadString('\n')
		if err == nil || rest != "" {
			t.Errorf("%s: after the first line %q (%v), want the connection closed", tc.name, rest, err)
		}
		if took := time.Since(start); took < 250*time.Millisecond || took > 5*time.Second {
			t.Errorf("%s: closed after %v, want about 300ms", tc.name, took)
		}
	}
	for _, r := range h.logs.wait(t, "session", 2) {
		if r["session_timeout"] != true {
			t.Errorf("session record %v", r)
		}
	}
}
