package proxy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/config"
)

// The decision log tells the whole story: every reply that refuses — a
// limit or a protocol error as much as a check — leaves one "refused"
// record with its stage, reason and recipients; the session record counts
// them and holds every outcome of the session, DATA-stage ones of
// delivered mail included.
func TestDecisionLogStory(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Limits.MaxRecipients = 2
		c.Limits.MaxMessageSize = 1000
		c.Limits.MaxLineLength = 1000
	}})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.Cmd("MAIL FROM alice", 501) // a protocol error
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Cmd("RCPT TO:<a@mxguard.test>", 250)
	c.Cmd("RCPT TO:<b@mxguard.test>", 250)
	c.Cmd("RCPT TO:<c@mxguard.test>", 452) // the recipient limit
	c.DataExpect([]byte("From: alice@good.test\r\n\r\n"+strings.Repeat(strings.Repeat("z", 70)+"\r\n", 20)), 552)
	// A delivered message: its SPF, DKIM and DMARC outcomes are logged.
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Cmd("RCPT TO:<a@mxguard.test>", 250)
	c.DataExpect([]byte("From: alice@good.test\r\nSubject: hi\r\n\r\nhello\r\n"), 250)
	c.Cmd("QUIT", 221)

	refused := h.logs.wait(t, "refused", 3)
	want := []struct{ stage, rule, check, code, rcpt string }{
		{"mail", "protocol", "protocol", "501", ""},
		{"rcpt", "limit", "limit", "452", "c@mxguard.test"},
		{"data", "limit", "limit", "552", "[a@mxguard.test b@mxguard.test]"},
	}
	for i, w := range want {
		r := refused[i]
		if r["stage"] != w.stage || r["rule"] != w.rule || r["check"] != w.check ||
			!strings.HasPrefix(r["reply"].(string), w.code) || r["reason"] == "" {
			t.Errorf("refusal %d: %v, want %+v", i, r, w)
		}
		if got := fmt.Sprint(r["rcpt"]); w.rcpt != "" && got != w.rcpt {
			t.Errorf("refusal %d: rcpt %s, want %s", i, got, w.rcpt)
		}
	}
	relayed := h.logs.wait(t, "relayed", 1)[0]
	s := h.logs.wait(t, "session", 1)[0]
	if s["refused"] != float64(3) || s["accepted"] != float64(1) {
		t.Errorf("session record counts: %v", s)
	}
	for _, rec := range []map[string]any{relayed, s} {
		outcomes := map[string]bool{}
		for _, c := range rec["checks"].([]any) {
			outcomes[c.(map[string]any)["outcome"].(string)] = true
		}
		for _, o := range []string{"helo.pass", "spf.none", "dkim.none", "dmarc.none"} {
			if !outcomes[o] {
				t.Errorf("%s record lacks %s: %v", rec["msg"], o, rec["checks"])
			}
		}
	}
}

// A refusal held until DATA names the message's recipients; a line too
// long in a message gets one reply, and the connection ends.
func TestDataRefusalStory(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		withRules(t, c, "[outcome.\"helo.localhost\"]\nstage = \"data\"\n")
	}})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO localhost", 250)
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Cmd("RCPT TO:<a@mxguard.test>", 250)
	c.Cmd("RCPT TO:<b@mxguard.test>", 250)
	c.DataExpect([]byte("From: alice@good.test\r\n\r\nhi\r\n"), 550)
	r := h.logs.wait(t, "refused", 1)[0]
	if r["stage"] != "data" || r["rule"] != "helo.localhost" || fmt.Sprint(r["rcpt"]) != "[a@mxguard.test b@mxguard.test]" {
		t.Errorf("refused at DATA: %v", r)
	}

	c = h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Cmd("RCPT TO:<a@mxguard.test>", 250)
	c.Cmd("DATA", 354)
	c.Conn.Write([]byte(strings.Repeat("l", 9000) + "\r\n.\r\nQUIT\r\n"))
	if code, text := c.Reply(); code != 500 || !contains(text, "longer than") {
		t.Errorf("long line in DATA got %d %q", code, text)
	}
	if !c.Closed() {
		t.Error("a second reply followed the first, or the connection stayed open")
	}
	r = h.logs.wait(t, "refused", 2)[1]
	if r["stage"] != "data" || r["rule"] != "limit" || r["action"] != "drop" {
		t.Errorf("long line refusal: %v", r)
	}
}
