package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
)

// Past the per-IP limit a client gets 421 4.7.0, and the log says which
// limit. Past the total, the connection silent longest before MAIL is shed
// to make room; only when every one has begun a transaction is the new
// client refused.
func TestConnectionLimits(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Limits.MaxConnections = 3
		c.Limits.MaxConnectionsPerIP = 2
		c.Stress.Threshold = 100
	}})
	a1, a2 := h.greeted("127.0.0.2"), h.greeted("127.0.0.2")
	c := h.dial("127.0.0.2")
	if code, text := c.Reply(); code != 421 || !contains(text, "4.7.0") || !contains(text, "from your address") {
		t.Errorf("third connection from one IP got %d %q", code, text)
	}
	l := h.logs.wait(t, "refused", 1)
	if l[0]["rule"] != "limit" || l[0]["stage"] != "connect" || !contains(l[0]["reason"].(string), "from your address") {
		t.Errorf("refused line %v", l[0])
	}
	time.Sleep(50 * time.Millisecond)
	a2.Cmd("EHLO mail.good.test", 250) // a2 spoke last: a1 is silent longest
	b1 := h.greeted("127.0.0.3")
	d1 := h.greeted("127.0.0.4") // full: a1 is shed for it
	if code, text := a1.Reply(); code != 421 || !contains(text, "busy") {
		t.Errorf("the idle connection got %d %q, want 421 busy", code, text)
	}
	if !a1.Closed() {
		t.Error("the shed connection is still open")
	}
	if r := h.logs.wait(t, "refused", 2)[1]; r["rule"] != "limit" || !contains(r["reason"].(string), "shed") || r["action"] != "drop" {
		t.Errorf("shed record %v", r)
	}
	// Every connection in a transaction: nothing to shed.
	a2.Cmd("MAIL FROM:<alice@good.test>", 250)
	b1.Cmd("EHLO mail.good.test", 250)
	b1.Cmd("MAIL FROM:<alice@good.test>", 250)
	d1.Cmd("EHLO mail.good.test", 250)
	d1.Cmd("MAIL FROM:<alice@good.test>", 250)
	c = h.dial("127.0.0.5")
	if code, text := c.Reply(); code != 421 || !contains(text, "too many connections") {
		t.Errorf("connection past the limit got %d %q", code, text)
	}
	// Slots come back when connections end.
	a2.Cmd("QUIT", 221)
	b1.Cmd("QUIT", 221)
	d1.Conn.Close()
	h.logs.wait(t, "session", 4)
	h.greeted("127.0.0.2").Cmd("QUIT", 221)
}

// Recipients, message size and line length have limits with clear replies.
func TestProtocolLimits(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Limits.MaxRecipients = 2
		c.Limits.MaxMessageSize = 1000
		c.Limits.MaxLineLength = 1000
	}})
	c := h.greeted("127.0.0.2")
	if ehlo := c.Cmd("EHLO mail.good.test", 250); !contains(ehlo, "SIZE 1000") {
		t.Errorf("EHLO does not advertise the size limit: %q", ehlo)
	}
	c.Cmd("MAIL FROM:<alice@good.test> SIZE=5000", 552)
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Cmd("RCPT TO:<a@mxguard.test>", 250)
	c.Cmd("RCPT TO:<b@mxguard.test>", 250)
	c.Cmd("RCPT TO:<c@mxguard.test>", 452)
	c.DataExpect([]byte("From: alice@good.test\r\nSubject: big\r\n\r\n"+strings.Repeat(strings.Repeat("z", 70)+"\r\n", 20)), 552)
	// Nothing reached the backend's mailbox.
	if n := len(h.sink.Messages()); n != 0 {
		t.Errorf("backend stored %d messages", n)
	}
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Cmd("RCPT TO:<a@mxguard.test>", 250)
	c.Cmd("DATA", 354)
	c.Conn.Write([]byte(strings.Repeat("l", 1500) + "\r\n.\r\n"))
	if code, text := c.Reply(); code != 500 || !contains(text, "longer than 1000") {
		t.Errorf("long line in DATA got %d %q", code, text)
	}
	c = h.greeted("127.0.0.2")
	c.Send("NOOP " + strings.Repeat("x", 2000))
	if code, text := c.Reply(); code != 500 || !contains(text, "line") {
		t.Errorf("long line got %d %q", code, text)
	}
}

// A client that says nothing is cut off after the command timeout.
func TestCommandTimeout(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Limits.CommandTimeout = config.Duration(300 * time.Millisecond)
	}})
	c := h.greeted("127.0.0.2")
	if code, text := c.Reply(); code != 421 || !contains(text, "timeout") {
		t.Errorf("idle client got %d %q", code, text)
	}
}

// session_timeout bounds a connection's whole life, even one that keeps
// talking.
func TestSessionTimeout(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Limits.SessionTimeout = config.Duration(600 * time.Millisecond)
	}})
	c := h.greeted("127.0.0.2")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.Conn.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Conn.Write([]byte("NOOP\r\n")); err != nil {
			break
		}
		if _, _, err := c.TP.ReadResponse(250); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if time.Now().After(deadline) {
		t.Fatal("a talkative client outlived session_timeout")
	}
	if s := h.logs.wait(t, "session", 1)[0]; s["session_timeout"] != true {
		t.Errorf("summary line does not say session_timeout: %v", s)
	}
}
