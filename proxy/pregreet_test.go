package proxy

import (
	"fmt"
	"github.com/mxguard/mxguard/checks"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// An early talker is caught whatever it sends and whenever it sends it
// within the wait, and is dropped with 554; its log line has the byte count,
// the delay and the bytes, escaped.
func TestPregreet(t *testing.T) {
	for _, bait := range []bool{true, false} {
		h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
			c.Listen.GreetDelay = config.Duration(400 * time.Millisecond)
			c.Listen.BaitBanner = bait
		}})
		cases := []struct {
			send  string
			after time.Duration
		}{
			{"E", 0},
			{"EHLO x\r\n", 0},
			{"EHLO spam.example\r\nMAIL FROM:<a@b>\r\n", 100 * time.Millisecond},
			{strings.Repeat("A", 100) + "\r\n", 250 * time.Millisecond},
			{"\x00\x01\xff\r\n", 50 * time.Millisecond},
		}
		for i, tc := range cases {
			t.Run(fmt.Sprintf("bait=%v/%d", bait, i), func(t *testing.T) {
				before := len(h.logs.lines("pregreet"))
				c := h.dial("127.0.0.2")
				if bait {
					if line, err := c.R.ReadString('\n'); err != nil || line != "220-mx.mxguard.test ESMTP\r\n" {
						t.Fatalf("bait line %q, %v", line, err)
					}
				}
				time.Sleep(tc.after)
				c.Conn.Write([]byte(tc.send))
				code, text := c.Reply()
				if code != 554 || !contains(text, "5.5.1") {
					t.Fatalf("early talker got %d %q, want 554 5.5.1", code, text)
				}
				if !c.Closed() {
					t.Errorf("connection still open after the 554")
				}
				lines := h.logs.wait(t, "pregreet", before+1)
				l := lines[len(lines)-1]
				if int(l["bytes"].(float64)) < 1 || int(l["bytes"].(float64)) > len(tc.send) {
					t.Errorf("logged %v bytes for %d sent", l["bytes"], len(tc.send))
				}
				after := l["after"].(float64)
				if after < tc.after.Seconds()-0.02 || after > 0.4 {
					t.Errorf("logged after=%v, sent after %v", after, tc.after)
				}
				if txt := l["text"].(string); strings.ContainsAny(txt, "\r\n\x00") || !strings.HasPrefix(checks.Escape([]byte(tc.send), 100), txt[:1]) {
					t.Errorf("logged text %q for %q", txt, tc.send)
				}
			})
		}
		// A patient client gets the full banner after the wait and is served.
		t.Run(fmt.Sprintf("bait=%v/patient", bait), func(t *testing.T) {
			start := time.Now()
			c := h.greeted("127.0.0.2")
			if waited := time.Since(start); waited < 350*time.Millisecond {
				t.Errorf("banner after %v, before the greeting delay", waited)
			}
			c.SendMail("mail.good.test", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: x\r\n\r\nx\r\n"))
		})
	}
}

// A pregreet the rules only score (here: turned into a plain reject at RCPT)
// keeps the early bytes: they are the client's first command.
func TestPregreetEnforceAtRcpt(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		withRules(t, c, "[outcome.pregreet]\naction = \"reject\"\n")
	}})
	c := h.dial("127.0.0.2")
	c.Conn.Write([]byte("EHLO mail.good.test\r\n"))
	c.Expect(220)
	c.Expect(250) // the EHLO sent early was answered
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Send("RCPT TO:<bob@mxguard.test>")
	if code, text := c.Reply(); code != 554 || !contains(text, "talked before the greeting") {
		t.Errorf("RCPT got %d %q", code, text)
	}
	r := h.logs.wait(t, "refused", 1)[0]
	if r["rule"] != "pregreet" || r["rcpt"] != "bob@mxguard.test" || r["from"] != "alice@good.test" || r["stage"] != "rcpt" {
		t.Errorf("refused line %v", r)
	}
}

// Trusted networks skip the wait and the checks.
func TestTrustedSkipsGreeting(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Listen.GreetDelay = config.Duration(5 * time.Second)
		c.TrustedNetworks = []config.Prefix{mustPrefix("127.0.0.5/32")}
	}})
	start := time.Now()
	c := h.dial("127.0.0.5")
	c.Conn.Write([]byte("EHLO localhost\r\n")) // would be a pregreet and a bad HELO
	c.Expect(220)
	if time.Since(start) > 2*time.Second {
		t.Errorf("trusted client waited for the banner")
	}
	c.Expect(250)
	c.SendMail("", "ceo@mxguard.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: x\r\n\r\nx\r\n"))
}

// A client that waited politely skips the wait next time (postscreen's
// PASS OLD); talking early takes that away.
func TestGreetingPassCache(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Listen.GreetDelay = config.Duration(500 * time.Millisecond)
	}})
	timed := func() time.Duration {
		start := time.Now()
		c := h.greeted("127.0.0.2")
		d := time.Since(start)
		c.Cmd("QUIT", 221)
		return d
	}
	if d := timed(); d < 450*time.Millisecond {
		t.Fatalf("first connection greeted after %v, before the delay", d)
	}
	if d := timed(); d > 300*time.Millisecond {
		t.Errorf("second connection waited %v: the pass was not remembered", d)
	}
	if d := h.greetedFrom("127.0.0.3"); d < 450*time.Millisecond {
		t.Errorf("another address skipped the wait (%v)", d)
	}
	// An early talker from a remembered address would not be caught; a
	// fresh address that talks early loses nothing it had, and waits again.
	c := h.dial("127.0.0.4")
	c.Conn.Write([]byte("EHLO x\r\n"))
	if line, _ := c.R.ReadString('\n'); !strings.HasPrefix(line, "220-") {
		t.Fatalf("bait line %q", line)
	}
	c.Expect(554)
	if d := h.greetedFrom("127.0.0.4"); d < 450*time.Millisecond {
		t.Errorf("an early talker skipped the wait next time (%v)", d)
	}
}

func (h *harness) greetedFrom(ip string) time.Duration {
	start := time.Now()
	c := h.greeted(ip)
	d := time.Since(start)
	c.Cmd("QUIT", 221)
	return d
}
