package proxy

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/internal/redistest"
	"github.com/mxguard/mxguard/state"
)

// testClock is a clock the test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// rcpt runs MAIL and RCPT and returns the RCPT reply.
func rcpt(h *harness, from, sender, to string) (*client, int, string) {
	c := h.greeted(from)
	c.Cmd("EHLO ["+from+"]", 250)
	c.Cmd("MAIL FROM:<"+sender+">", 250)
	c.Send("RCPT TO:<" + to + ">")
	code, text := c.Reply()
	return c, code, text
}

// Greylisting over SMTP, with the clock moved by the test: the first
// attempt gets 451 4.7.1, a retry too early 451 again, a retry in the
// window is accepted and the message says how long it was delayed; after
// enough retried triplets the client's network is allowed at once; a sender
// with SPF pass is not greylisted.
func TestGreylisting(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	h := newHarness(t, harnessOpt{now: clock.now, zone: `
$ORIGIN spf.test.
@    SOA ns.spf.test. h.spf.test. 1 3600 600 86400 60
@    TXT "v=spf1 ip4:127.0.0.0/8 -all"
`, cfg: func(c *config.Config) {
		c.Greylist.Enabled = true
		c.Greylist.Delay = config.Duration(5 * time.Minute)
		c.Greylist.RetryWindow = config.Duration(4 * time.Hour)
		c.Greylist.AutoAllow = 2
	}})

	c, code, text := rcpt(h, "127.0.0.2", "alice@good.test", "bob@mxguard.test")
	if code != 451 || !contains(text, "4.7.1") || !contains(text, "(greylist.first)") {
		t.Fatalf("first attempt got %d %q", code, text)
	}
	c.Cmd("QUIT", 221)
	clock.add(time.Minute)
	c, code, text = rcpt(h, "127.0.0.3", "alice@good.test", "bob@mxguard.test") // same /24: same triplet
	if code != 451 || !contains(text, "(greylist.early)") || !contains(text, "240 seconds") {
		t.Fatalf("early retry got %d %q", code, text)
	}
	c.Cmd("QUIT", 221)
	clock.add(5 * time.Minute)
	c, code, text = rcpt(h, "127.0.0.2", "alice@good.test", "bob@mxguard.test")
	if code != 250 {
		t.Fatalf("retry in the window got %d %q", code, text)
	}
	c.DataExpect([]byte("From: alice@good.test\r\nSubject: grey\r\n\r\nretried\r\n"), 250)
	c.Cmd("QUIT", 221)
	msgs, err := h.sink.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msgs[0].Data), "X-Greylist: delayed 360 seconds by mxguard") {
		t.Errorf("no X-Greylist header:\n%.600s", msgs[0].Data)
	}
	if r := h.logs.wait(t, "refused", 2); r[0]["rule"] != "greylist.first" || r[0]["stage"] != "rcpt" || r[1]["rule"] != "greylist.early" {
		t.Errorf("refused records %v", r)
	}

	// A second triplet passes an hour later: two retried triplets, counted
	// once an hour each, and the network is allowed.
	clock.add(time.Hour)
	c, code, _ = rcpt(h, "127.0.0.2", "alice@good.test", "carol@mxguard.test")
	c.Cmd("QUIT", 221)
	clock.add(6 * time.Minute)
	c, code2, _ := rcpt(h, "127.0.0.2", "alice@good.test", "carol@mxguard.test")
	c.Cmd("QUIT", 221)
	if code != 451 || code2 != 250 {
		t.Fatalf("second triplet: %d then %d", code, code2)
	}
	c, code, text = rcpt(h, "127.0.0.4", "dave@good.test", "dave@mxguard.test")
	c.Cmd("QUIT", 221)
	if code != 250 {
		t.Errorf("a new triplet from an auto-allowed network got %d %q", code, text)
	}

	// The retry window passes: a triplet starts over.
	c, code, _ = rcpt(h, "127.0.1.2", "eve@good.test", "bob@mxguard.test")
	c.Cmd("QUIT", 221)
	clock.add(5 * time.Hour)
	c, code2, _ = rcpt(h, "127.0.1.2", "eve@good.test", "bob@mxguard.test")
	c.Cmd("QUIT", 221)
	if code != 451 || code2 != 451 {
		t.Errorf("a retry after the window: %d then %d, want 451 twice", code, code2)
	}

	// SPF pass: not greylisted.
	c, code, text = rcpt(h, "127.0.1.9", "frank@spf.test", "bob@mxguard.test")
	c.Cmd("QUIT", 221)
	if code != 250 {
		t.Errorf("an SPF-pass sender got %d %q", code, text)
	}
}

// Two mxguard instances sharing one Redis share one memory: a client that
// passed the greeting at one is greeted at once by the other, and a rate
// limit is enforced across both.
func TestFleetSharesRedis(t *testing.T) {
	redis := redistest.Start(t)
	fleet := func() *harness {
		return newHarness(t, harnessOpt{state: openState(t, redis.Addr, "fleet:"), cfg: func(c *config.Config) {
			c.Listen.GreetDelay = config.Duration(time.Second)
			c.Reputation.GreetPassTTL = config.Duration(time.Hour)
			c.RateLimit.ConnectionsPerIP = "4 / 1h"
		}})
	}
	a, b := fleet(), fleet()

	// At a, the client waits for the banner, and passes.
	c := a.greeted("127.0.0.2")
	c.Cmd("QUIT", 221)
	a.logs.wait(t, "session", 1)
	a.state.Flush()
	// b greets it at once.
	start := time.Now()
	c = b.greeted("127.0.0.2")
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("b made the client wait %v: it did not know the pass a gave", took)
	}
	c.Cmd("QUIT", 221)

	// The rate limit: 4 an hour from one address, whichever instance.
	// 127.0.0.3 has used none yet.
	for i, h := range []*harness{a, b, a, b} {
		c := h.dial("127.0.0.3")
		if code, text := c.Reply(); code == 421 {
			t.Fatalf("connection %d refused early: %q", i+1, text)
		}
		c.Conn.Close()
	}
	c = b.dial("127.0.0.3")
	if code, text := c.Reply(); code != 421 || !contains(text, "(ratelimit.connections)") {
		t.Errorf("fifth connection across the fleet got %d %q", code, text)
	}
}

// Redis killed mid-run: sessions go on (greylisting fails open, the pass
// cache is empty), no message is lost; when Redis comes back, mxguard uses
// it again by itself.
func TestRedisDown(t *testing.T) {
	redis := redistest.Start(t)
	st := openState(t, redis.Addr, "down:")
	h := newHarness(t, harnessOpt{state: st, cfg: func(c *config.Config) {
		c.Greylist.Enabled = true
		c.RateLimit.RecipientsPerIP = "100 / 1m"
	}})
	send := func(to string) int {
		c, code, _ := rcpt(h, "127.0.0.2", "alice@good.test", to)
		if code == 250 {
			c.DataExpect([]byte("From: alice@good.test\r\n\r\nhi\r\n"), 250)
		}
		c.Cmd("QUIT", 221)
		return code
	}
	if code := send("one@mxguard.test"); code != 451 {
		t.Fatalf("greylisting with Redis up: %d", code)
	}
	redis.Stop()
	const n = 10
	for i := range n {
		if code := send("down" + string(rune('a'+i)) + "@mxguard.test"); code != 250 {
			t.Errorf("message %d with Redis down got %d", i, code)
		}
	}
	if msgs, err := h.sink.WaitMessages(n, 5*time.Second); err != nil || len(msgs) != n {
		t.Fatalf("with Redis down the backend got %d of %d messages: %v", len(msgs), n, err)
	}
	redis.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for st.Store.Health() != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := st.Store.Health(); err != nil {
		t.Fatalf("not recovered: %v", err)
	}
	if code := send("two@mxguard.test"); code != 451 {
		t.Errorf("greylisting after Redis came back: %d", code)
	}
	if h.rep.Passed(netip.MustParseAddr("127.0.0.9"), checks.PregreetName) {
		t.Error("a pass from nowhere")
	}
}

// openState opens a Redis state store for a test.
func openState(t *testing.T, addr, prefix string) *state.State {
	cfg := config.Default()
	cfg.State.Store = config.StoreRedis
	cfg.State.RedisAddress = addr
	cfg.State.Prefix = prefix
	st, err := state.Open(cfg, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// A client no DNS list named is remembered as such for dnsbl.pass_ttl: its
// next connection is not looked up again (nor delayed by the look-up).
func TestDNSBLPass(t *testing.T) {
	h := newHarness(t, harnessOpt{proxied: true, zone: `
$ORIGIN bl.test.
@    SOA ns.bl.test. h.bl.test. 1 3600 600 86400 60
2.0.0.127 A 127.0.0.2
`, cfg: func(c *config.Config) {
		c.DNSBL.Sites = []string{"bl.test"}
		c.DNSBL.PassTTL = config.Duration(time.Hour)
	}})
	for i := range 2 {
		c := h.greetedAs("192.0.2.8")
		c.Cmd("QUIT", 221)
		h.logs.wait(t, "session", i+1)
		h.state.Flush()
	}
	if n := h.dns.Queries("8.2.0.192.bl.test.", dns.TypeA); n != 1 {
		t.Errorf("the list was asked %d times about a client that passed, want once", n)
	}
	if !h.rep.Passed(netip.MustParseAddr("192.0.2.8"), "dnsbl") {
		t.Error("no dnsbl pass remembered")
	}
}
