package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/mailsink"
)

// With the backend down, the client gets 451 4.4.1 at MAIL: it keeps the
// message and retries later.
func TestBackendDown(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.sink.Close()
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.Send("MAIL FROM:<alice@good.test>")
	if code, text := c.Reply(); code != 451 || !contains(text, "4.4.1") {
		t.Errorf("MAIL with the backend down got %d %q", code, text)
	}
}

// A backend that dies mid-DATA, or before answering the final dot, never
// gives the client a 250: it gets 451 4.4.2, and the next transaction on
// the same client connection gets a fresh backend connection.
func TestBackendCutMidData(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy mailsink.PolicyFuncs
	}{
		{"cut mid-DATA", mailsink.PolicyFuncs{DataStartFunc: func(si *mailsink.SessionInfo) *mailsink.Action {
			if si.ID == 1 {
				return &mailsink.Action{CutMidData: true}
			}
			return nil
		}}},
		{"dies before its reply", mailsink.PolicyFuncs{DataEndFunc: func(si *mailsink.SessionInfo, _ *mailsink.Message) *mailsink.Action {
			if si.ID == 1 {
				return &mailsink.Action{Close: true}
			}
			return nil
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpt{sink: func(s *mailsink.Server) { s.Policy = tc.policy }})
			c := h.greeted("127.0.0.2")
			c.Cmd("EHLO mail.good.test", 250)
			c.Cmd("MAIL FROM:<alice@good.test>", 250)
			c.Cmd("RCPT TO:<bob@mxguard.test>", 250)
			c.DataExpect([]byte("From: alice@good.test\r\nSubject: x\r\n\r\n"+strings.Repeat(strings.Repeat("b", 998)+"\r\n", 100)), 451)
			if n := len(h.sink.Messages()); n != 0 {
				t.Fatalf("backend stored %d messages after failing", n)
			}
			c.SendMail("", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: again\r\n\r\nx\r\n"))
			if _, err := h.sink.WaitMessages(1, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A backend that stalls past its command timeout gives 451, not a hang.
func TestBackendStall(t *testing.T) {
	h := newHarness(t, harnessOpt{sink: func(s *mailsink.Server) {
		s.Policy = mailsink.PolicyFuncs{RcptFunc: func(*mailsink.SessionInfo, string) *mailsink.Action {
			return &mailsink.Action{Delay: 10 * time.Second}
		}}
	}})
	h.srv.rt.Load().Backend.CommandTimeout = 300 * time.Millisecond
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	start := time.Now()
	c.Send("RCPT TO:<bob@mxguard.test>")
	if code, text := c.Reply(); code != 451 || !contains(text, "4.4.2") {
		t.Errorf("RCPT to a stalled backend got %d %q", code, text)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("stalled for %v", d)
	}
}

// A client that disappears mid-DATA leaves nothing at the backend.
func TestClientGoneMidData(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Cmd("RCPT TO:<bob@mxguard.test>", 250)
	c.Cmd("DATA", 354)
	c.Conn.Write([]byte("From: alice@good.test\r\nSubject: half\r\n\r\nhalf a message"))
	c.Conn.Close()
	h.logs.wait(t, "session", 1)
	time.Sleep(100 * time.Millisecond)
	if n := len(h.sink.Messages()); n != 0 {
		t.Errorf("backend stored %d messages", n)
	}
	for _, s := range h.sink.Sessions() {
		for _, cmd := range s.Commands {
			if cmd == "DATA" {
				t.Errorf("backend saw DATA for a message the client never finished")
			}
		}
	}
}

// A backend that refuses the DATA command itself keeps its transaction
// open: mxguard resets it, so the client's next message is not bounced
// with "nested MAIL command".
func TestBackendRefusesDataCommand(t *testing.T) {
	h := newHarness(t, harnessOpt{sink: func(s *mailsink.Server) {
		first := true
		s.Policy = mailsink.PolicyFuncs{DataStartFunc: func(*mailsink.SessionInfo) *mailsink.Action {
			if first {
				first = false
				return &mailsink.Action{Reply: "451 4.3.0 Error: queue file write error"}
			}
			return nil
		}}
	}})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Cmd("RCPT TO:<bob@mxguard.test>", 250)
	if text := c.DataExpect([]byte("From: alice@good.test\r\nSubject: 1\r\n\r\nx\r\n"), 451); !strings.Contains(text, "queue file write error") {
		t.Errorf("DATA refusal not passed on: %q", text)
	}
	c.SendMail("", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: 2\r\n\r\nx\r\n"))
	if _, err := h.sink.WaitMessages(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// A backend 421 closes the session: the client gets it and mxguard hangs
// up too, instead of replaying it from a dead connection.
func TestBackend421(t *testing.T) {
	h := newHarness(t, harnessOpt{sink: func(s *mailsink.Server) {
		s.Policy = mailsink.PolicyFuncs{MailFunc: func(*mailsink.SessionInfo, string) *mailsink.Action {
			return &mailsink.Action{Reply: "421 4.3.2 Service shutting down", CloseAfter: true}
		}}
	}})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.Send("MAIL FROM:<alice@good.test>")
	if code, text := c.Reply(); code != 421 || text != "4.3.2 Service shutting down" {
		t.Errorf("MAIL got %d %q, want the backend's 421", code, text)
	}
	if !c.Closed() {
		t.Error("the client connection stays open after the backend's 421")
	}
}

// A kept backend connection that the backend closed meanwhile is dialled
// again for the next transaction, instead of failing it.
func TestBackendConnectionRedial(t *testing.T) {
	h := newHarness(t, harnessOpt{sink: func(s *mailsink.Server) {
		s.Policy = mailsink.PolicyFuncs{DataEndFunc: func(*mailsink.SessionInfo, *mailsink.Message) *mailsink.Action {
			return &mailsink.Action{CloseAfter: true} // store, reply 250, hang up
		}}
	}})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	for i := 0; i < 3; i++ {
		c.SendMail("", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: again\r\n\r\nx\r\n"))
	}
	if got, err := h.sink.WaitMessages(3, 5*time.Second); err != nil || len(got) != 3 {
		t.Fatalf("%d messages: %v", len(got), err)
	}
	if n := len(h.sink.Sessions()); n != 3 {
		t.Errorf("%d backend connections, want 3 (one redial per message)", n)
	}
}
