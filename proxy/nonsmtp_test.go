package proxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
)

// A client that speaks HTTP (or POP3, or sends header lines) to port 25 is
// dropped with 554 at that line, before go-smtp parses it; the refusal is
// logged at the command stage, and the client loses its greeting pass, as
// an early talker does.
func TestNonSMTPCommand(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Reputation.GreetPassTTL = config.Duration(time.Hour)
	}})
	ip := netip.MustParseAddr("127.0.0.2")
	for i, line := range []string{"GET / HTTP/1.1", "CONNECT 192.0.2.1:25 HTTP/1.0", "USER alice", "Host: mx.mxguard.test"} {
		h.rep.Pass(ip, checks.PregreetName, time.Hour)
		c := h.dial("127.0.0.2")
		c.Expect(220) // pass old: no wait
		if i%2 == 1 {
			c.Cmd("EHLO mail.good.test", 250) // after a good command too
		}
		c.Send(line)
		if code, text := c.Reply(); code != 554 || !contains(text, "5.5.1") || !contains(text, "(non_smtp)") {
			t.Errorf("%q got %d %q", line, code, text)
		}
		if !c.Closed() {
			t.Errorf("%q: connection open after the 554", line)
		}
		r := h.logs.wait(t, "refused", i+1)[i]
		if r["stage"] != "command" || r["rule"] != "non_smtp" || r["check"] != "non_smtp" || r["action"] != "drop" {
			t.Errorf("%q: refused record %v", line, r)
		}
		if h.rep.Passed(ip, checks.PregreetName) {
			t.Errorf("%q: the client kept its greeting pass", line)
		}
	}
	if n := len(h.sink.Messages()); n != 0 {
		t.Errorf("backend got %d messages", n)
	}
	// A real client is not troubled, and passes.
	c := h.greeted("127.0.0.3")
	c.SendMail("other.good.test", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\n\r\nhi\r\n"))
	if _, err := h.sink.WaitMessages(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
