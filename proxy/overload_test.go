package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
)

// An idle flood that takes every slot — connections that read the banner
// and say nothing, from addresses in many networks, within the per-address
// and per-network limits — does not keep a well-behaved client out: when
// the slots are all taken, the connection silent longest before MAIL is
// shed to make room. Stress mode is entered, logged, and left when the
// flood is gone.
func TestFloodShedsIdle(t *testing.T) {
	slots := max(100, floodSize(t, 600)/2)
	flood := slots * 3 / 2
	const good = 30
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		// The shipped policy, scaled down: 20 per address, 50 per network,
		// stress at 70%; fewer slots, so a test can fill them.
		c.Limits.MaxConnections = slots
		c.Limits.MaxConnectionsPerIP = 20
		c.Limits.MaxConnectionsPerNet = 50
		c.Limits.ConnectionRatePerIP = 300
		c.Stress.MinDuration = config.Duration(300 * time.Millisecond)
	}})
	h.rep.Pass(netip.MustParseAddr("127.0.0.2"), checks.PregreetName, time.Hour)

	// The flood: 10 connections per address, 2 addresses per /24.
	var mu sync.Mutex
	var conns []net.Conn
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < flood; i += 8 {
				k := i / 10
				from := fmt.Sprintf("127.1.%d.%d", k/2, k%2+1)
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
				c, err := d.Dial("tcp", h.addr)
				if err != nil {
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				if i > slots {
					select { // past the slots, newcomers keep knocking
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		}()
	}
	// A good client every 20 ms once the flood has taken nearly every slot,
	// while the rest of it comes in and sits.
	for deadline := time.Now().Add(30 * time.Second); h.srv.lim.open() < slots*9/10 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	var took []time.Duration
	for i := range good {
		took = append(took, goodClient(t, h, fmt.Sprintf("good %d", i)))
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if n := len(h.sink.Messages()); n != good {
		t.Errorf("%d of %d good sessions delivered", n, good)
	}
	shed := 0
	for _, r := range h.logs.lines("refused") {
		if strings.Contains(fmt.Sprint(r["reason"]), "shed") {
			shed++
		}
	}
	if shed == 0 {
		t.Error("nothing was shed")
	}
	if open := h.srv.lim.open(); open > slots+1 {
		t.Errorf("%d connections open, limit %d", open, slots)
	}
	on := func(state string) int {
		n := 0
		for _, r := range h.logs.lines("stress") {
			if r["state"] == state {
				n++
			}
		}
		return n
	}
	if on("on") != 1 {
		t.Errorf("stress entered %d times, want once", on("on"))
	}
	slices.Sort(took)
	t.Logf("idle flood of %d connections on %d slots: %d good sessions served of %d, shed %d, latency p50 %v p99 %v",
		len(conns), slots, len(h.sink.Messages()), good, shed, took[len(took)/2].Round(time.Millisecond), took[len(took)*99/100].Round(time.Millisecond))

	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	waitOpen(t, h, 0, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for on("off") == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if on("off") != 1 {
		t.Errorf("stress left %d times, want once:\n%v", on("off"), h.logs.lines("stress"))
	}
}

// In stress mode the command timeout is the stress one: an idle client is
// cut sooner.
func TestStressShortensTimeouts(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Limits.MaxConnections = 4
		c.Stress.Threshold = 50 // two connections
		c.Stress.CommandTimeout = config.Duration(300 * time.Millisecond)
	}})
	a := h.greeted("127.0.0.2")
	start := time.Now()
	b := h.greeted("127.0.0.3")
	for _, c := range []*client{a, b} {
		if code, text := c.Reply(); code != 421 || !contains(text, "timeout") {
			t.Errorf("idle client under stress got %d %q", code, text)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("cut after %v, want about the stress command_timeout 300ms (not 5s)", took)
	}
	if len(h.logs.wait(t, "stress", 1)) != 1 {
		t.Error("no stress record")
	}
}

// The junk, error and unknown-command limits cut a client off with 421, and
// the stress values apply under stress.
func TestJunkLimits(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Limits.JunkCommandLimit = 3
		c.Limits.HardErrorLimit = 2
		c.Limits.UnknownCommandLimit = 2
	}})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	for range 5 { // 3 free, then errors 1 and 2
		c.Cmd("NOOP", 250)
	}
	if text := c.Cmd("NOOP", 421); !contains(text, "too many errors") {
		t.Errorf("junk past the limits: %q", text)
	}
	if !c.Closed() {
		t.Error("still open")
	}

	c = h.greeted("127.0.0.2")
	c.Cmd("FROB", 500)
	c.Cmd("ZORK", 500)
	if text := c.Cmd("PLGH", 421); !contains(text, "too many unknown commands") {
		t.Errorf("unknown commands: %q", text)
	}

	c = h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.Cmd("RCPT TO:<a@mxguard.test>", 502) // errors 1 and 2
	c.Cmd("DATA", 502)
	c.Cmd("MAIL FROM alice", 501) // error 3: the reply, then the hang-up
	if code, text := c.Reply(); code != 421 || !contains(text, "too many errors") {
		t.Errorf("errors past the limit: %d %q", code, text)
	}
	recs := h.logs.wait(t, "session", 3)
	for _, r := range h.logs.lines("refused") {
		if r["rule"] == "limit" && !strings.Contains(r["reason"].(string), "limits.") {
			t.Errorf("limit record does not name its key: %v", r)
		}
	}
	_ = recs
}

// Connections per network, and per address per minute.
func TestConnectionRateAndNetwork(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Limits.MaxConnectionsPerIP = 2
		c.Limits.MaxConnectionsPerNet = 3
		c.Limits.ConnectionRatePerIP = 4
	}})
	a, b, c := h.greeted("127.0.0.2"), h.greeted("127.0.0.3"), h.greeted("127.0.0.4")
	d := h.dial("127.0.0.5")
	if code, text := d.Reply(); code != 421 || !contains(text, "from your network") {
		t.Errorf("fourth connection from one /24 got %d %q", code, text)
	}
	for _, x := range []*client{a, b, c} {
		x.Cmd("QUIT", 221)
	}
	h.logs.wait(t, "session", 3)
	// 127.0.0.2 has used 1 of its 4 a minute.
	for range 3 {
		h.greeted("127.0.0.2").Cmd("QUIT", 221)
	}
	e := h.dial("127.0.0.2")
	if code, text := e.Reply(); code != 421 || !contains(text, "per minute") {
		t.Errorf("fifth connection in a minute got %d %q", code, text)
	}
}

// The pipelining test: PIPELINING is not offered, and a client that sends
// commands before their replies is refused (at RCPT, with the envelope
// logged); a client that waits passes, and the pass is remembered.
func TestPipeliningTest(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Tests.Pipelining = true
	}})
	c := h.greeted("127.0.0.2")
	if ehlo := c.Cmd("EHLO mail.good.test", 250); contains(ehlo, "PIPELINING") {
		t.Errorf("PIPELINING offered with the pipelining test on: %q", ehlo)
	}
	c.Conn.Write([]byte("MAIL FROM:<alice@good.test>\r\nRCPT TO:<bob@mxguard.test>\r\n"))
	c.Expect(250)
	if code, text := c.Reply(); code != 550 || !contains(text, "(pipelining)") {
		t.Errorf("pipelined RCPT got %d %q", code, text)
	}
	c.Cmd("QUIT", 221)
	if r := h.logs.wait(t, "refused", 1)[0]; r["rule"] != "pipelining" || r["stage"] != "rcpt" {
		t.Errorf("refused record %v", r)
	}

	ip := netip.MustParseAddr("127.0.0.3")
	c = h.greeted("127.0.0.3")
	c.SendMail("other.good.test", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\n\r\nhi\r\n"))
	c.Cmd("QUIT", 221)
	h.logs.wait(t, "session", 2)
	if !h.rep.Passed(ip, checks.PipeliningName) {
		t.Error("a polite client's pass is not remembered")
	}
	if h.rep.Passed(netip.MustParseAddr("127.0.0.2"), checks.PipeliningName) {
		t.Error("the pipelining client passed")
	}
}

// The bare newline test: a command ending in LF alone is refused at RCPT.
func TestBareNewlineTest(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Tests.BareNewline = true
	}})
	c := h.greeted("127.0.0.2")
	c.Conn.Write([]byte("EHLO mail.good.test\n"))
	c.Expect(250)
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Send("RCPT TO:<bob@mxguard.test>")
	if code, text := c.Reply(); code != 550 || !contains(text, "(bare_newline)") {
		t.Errorf("RCPT after a bare newline got %d %q", code, text)
	}
}

// A load balancer's PROXY header that names no client (v1 UNKNOWN) does not
// make the balancer the client: even where the balancer is trusted, the
// connection is an untrusted client of unknown address — or refused, by
// listen.proxy_protocol_unknown.
func TestProxyUnknown(t *testing.T) {
	for _, policy := range []config.UnknownPolicy{config.UnknownUntrusted, config.UnknownRefuse} {
		t.Run(string(policy), func(t *testing.T) {
			h := newHarness(t, harnessOpt{proxied: true, cfg: func(c *config.Config) {
				c.TrustedNetworks = []config.Prefix{mustPrefix("127.0.0.1")}
				c.Listen.ProxyProtocolUnknown = policy
			}})
			c := h.dial("127.0.0.1")
			fmt.Fprintf(c.Conn, "PROXY UNKNOWN\r\n")
			if policy == config.UnknownRefuse {
				if code, text := c.Reply(); code != 421 || !contains(text, "unknown") {
					t.Errorf("got %d %q", code, text)
				}
				return
			}
			c.Expect(220)
			c.Cmd("EHLO localhost", 250)
			c.Cmd("MAIL FROM:<alice@good.test>", 250)
			c.Cmd("RCPT TO:<bob@mxguard.test>", 550) // checked, not trusted
			c.Cmd("QUIT", 221)
			c = h.dial("127.0.0.1")
			fmt.Fprintf(c.Conn, "PROXY UNKNOWN\r\n")
			c.Expect(220)
			c.SendMail("mail.good.test", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\n\r\nhi\r\n"))
			c.Cmd("QUIT", 221)
			msgs, err := h.sink.WaitMessages(1, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if a := msgs[0].XCLIENT["ADDR"]; a != "[UNAVAILABLE]" {
				t.Errorf("backend told ADDR=%q", a)
			}
			if s := h.logs.wait(t, "session", 2)[0]; s["client"] != "unknown" || s["trusted"] != false {
				t.Errorf("session record %v", s)
			}
		})
	}
}
