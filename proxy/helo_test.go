package proxy

import (
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/zonedns"
)

func mustPrefix(s string) config.Prefix {
	var p config.Prefix
	if err := p.UnmarshalText([]byte(s)); err != nil {
		panic(err)
	}
	return p
}

// Invalid and fraudulent HELOs are refused at RCPT TO with the reply of
// their outcome, and the refusal is logged with the envelope.
func TestHELORefusals(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	cases := []struct {
		from, helo, rule, reply string
	}{
		{"127.0.0.2", "localhost", "helo.localhost", "550 5.5.2"},
		{"127.0.0.2", "mail", "helo.no_dot", "550 5.5.2"},
		{"127.0.0.2", "127.0.0.2", "helo.bare_ip", "550 5.5.2"},
		{"127.0.0.2", "bad_name.good.test", "helo.bad_syntax", "550 5.5.2"},
		{"127.0.0.2", "[127.0.0.2", "helo.bad_literal", "550 5.5.2"},
		{"127.0.0.2", "mx.mxguard.test", "helo.claims_us", "550 5.7.1"},
		{"127.0.0.2", "mxguard.test", "helo.claims_us", "550 5.7.1"},
		{"127.0.0.2", "[127.0.0.9]", "helo.literal_mismatch", "550 5.7.1"},
		{"127.0.0.2", "other.good.test", "helo.forward_mismatch", "550 5.7.1"},
		{"127.0.0.2", "nx.good.test", "helo.unresolvable", "550 5.7.1"},
		{"127.0.0.2", "[IPv6:2001:db8::9]", "helo.literal_mismatch", "550 5.7.1"},
		{"127.0.0.2", "[IPv6:::1]", "helo.claims_us", "550 5.7.1"}, // an address of this machine
	}
	for _, tc := range cases {
		t.Run(tc.helo, func(t *testing.T) {
			before := len(h.logs.lines("refused"))
			c := h.greeted(tc.from)
			c.Cmd("EHLO "+tc.helo, 250)
			c.Cmd("MAIL FROM:<alice@good.test>", 250)
			c.Send("RCPT TO:<bob@mxguard.test>")
			code, text := c.Reply()
			if got := fmtReply(code, text); got[:9] != tc.reply {
				t.Errorf("RCPT got %q, want %s", got, tc.reply)
			}
			l := h.logs.wait(t, "refused", before+1)[before]
			if l["rule"] != tc.rule || l["helo"] != tc.helo || l["from"] != "alice@good.test" || l["rcpt"] != "bob@mxguard.test" {
				t.Errorf("refused line: %v", l)
			}
		})
	}
	if n := len(h.sink.Sessions()); n != 0 {
		t.Errorf("the backend was contacted %d times for refused sessions", n)
	}
}

// reject_at = "immediate" refuses the HELO itself.
func TestHELORefusedImmediately(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) { withRules(t, c, "[defaults]\nstage = \"now\"\n") }})
	c := h.greeted("127.0.0.2")
	c.Send("EHLO localhost")
	if code, text := c.Reply(); code != 550 || !contains(text, "localhost") {
		t.Fatalf("EHLO got %d %q", code, text)
	}
	// Saying a good name now does not wash the verdict.
	c.Send("EHLO mail.good.test")
	if code, _ := c.Reply(); code != 550 {
		t.Errorf("second EHLO got %d, want 550: the verdict did not stick", code)
	}
	c.Send("MAIL FROM:<alice@good.test>")
	if code, _ := c.Reply(); code/100 != 5 {
		t.Errorf("MAIL after refused HELOs got %d", code)
	}
}

// The HELO verdict sticks to the connection, in either order, across
// HELO/EHLO again and across RSET.
func TestStickyHELO(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	sequences := [][]string{
		{"EHLO localhost", "EHLO mail.good.test"},
		{"EHLO mail.good.test", "EHLO localhost"},
		{"HELO localhost", "RSET", "EHLO mail.good.test", "RSET"},
		{"EHLO other.good.test", "HELO mail.good.test"},
	}
	for _, seq := range sequences {
		t.Run(seq[0]+"+"+seq[1], func(t *testing.T) {
			c := h.greeted("127.0.0.2")
			for _, cmd := range seq {
				c.Cmd(cmd, 250)
			}
			c.Cmd("MAIL FROM:<alice@good.test>", 250)
			c.Send("RCPT TO:<bob@mxguard.test>")
			if code, text := c.Reply(); code != 550 {
				t.Errorf("RCPT got %d %q: the bad HELO was washed", code, text)
			}
		})
	}
}

// A DNS timeout on the HELO name is a temporary refusal, never a pass or 5xx.
func TestHELODNSTimeout(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.dns.SetFault("slow.good.test", zonedns.Fault{Drop: true})
	start := time.Now()
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO slow.good.test", 250)
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Send("RCPT TO:<bob@mxguard.test>")
	if code, text := c.Reply(); code != 451 || !contains(text, "4.4.3") {
		t.Errorf("RCPT got %d %q, want 451 4.4.3", code, text)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
}

// Hosted-domain spoofing: our domain as sender from outside is refused; the
// null sender and trusted clients are not.
func TestSpoofing(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.TrustedNetworks = []config.Prefix{mustPrefix("127.0.0.5")}
	}})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.Cmd("MAIL FROM:<CEO@MXGUARD.TEST>", 250)
	c.Send("RCPT TO:<bob@mxguard.test>")
	if code, text := c.Reply(); code != 550 || !contains(text, "5.7.1") {
		t.Errorf("spoofed sender: RCPT got %d %q", code, text)
	}
	l := h.logs.wait(t, "refused", 1)[0]
	if l["rule"] != "sender.spoofs_local" {
		t.Errorf("refused line %v", l)
	}
	c.Cmd("RSET", 250)
	c.SendMail("", "", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: bounce\r\n\r\nx\r\n"))
	c.SendMail("", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: other\r\n\r\nx\r\n"))

	tc := h.greeted("127.0.0.5")
	tc.SendMail("anything", "ceo@mxguard.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: ours\r\n\r\nx\r\n"))
	if _, err := h.sink.WaitMessages(3, 5e9); err != nil {
		t.Fatal(err)
	}
}

func fmtReply(code int, text string) string {
	return itoa(code) + " " + text
}

func itoa(n int) string {
	return string(rune('0'+n/100)) + string(rune('0'+n/10%10)) + string(rune('0'+n%10))
}
