package proxy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/mailsink"
)

// Clean mail reaches the backend byte for byte: dot-stuffing undone, 8-bit
// bytes and long lines intact, CRLF kept; only our Received header is added.
func TestRelayByteExact(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	big := make([]byte, 0, 10<<20+4096)
	rng := rand.New(rand.NewPCG(1, 2))
	big = append(big, "From: alice@good.test\r\nSubject: ten megabytes\r\n\r\n"...)
	for len(big) < 10<<20 {
		line := make([]byte, 76)
		for i := range line {
			line[i] = byte('A' + rng.IntN(26))
		}
		if rng.IntN(50) == 0 {
			line[0] = '.'
		}
		big = append(append(big, line...), "\r\n"...)
	}
	messages := map[string][]byte{
		"plain":       []byte("From: alice@good.test\r\nSubject: hi\r\n\r\nhello\r\n"),
		"dots":        []byte("From: alice@good.test\r\nSubject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\n...\r\nend\r\n"),
		"8bit":        []byte("From: alice@good.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\ncafé, naïve, 日本語, \x80\xff bytes\r\n"),
		"long lines":  []byte("From: alice@good.test\r\nSubject: long\r\n\r\n" + strings.Repeat("x", 7000) + "\r\n" + strings.Repeat("y", 998) + "\r\n"),
		"empty body":  []byte("From: alice@good.test\r\nSubject: empty\r\n\r\n"),
		"no final LF": []byte("From: alice@good.test\r\nSubject: x\r\n\r\nno newline at end"),
		"10 MB":       big,
	}
	for name, msg := range messages {
		t.Run(name, func(t *testing.T) {
			h.sink.Reset()
			c := h.greeted("127.0.0.2")
			reply := c.SendMail("mail.good.test", "alice@good.test", []string{"bob@mxguard.test"}, msg)
			c.Cmd("QUIT", 221)
			got, err := h.sink.WaitMessages(1, 5e9)
			if err != nil {
				t.Fatal(err)
			}
			m := got[0]
			if !strings.Contains(reply, "queued as "+m.ID) {
				t.Errorf("client got %q, not the backend's own reply with queue id %s", reply, m.ID)
			}
			recv, body := stripReceived(t, m.Data)
			fields, _ := ourFields(m.Data)
			for i := range fields {
				fields[i] = strings.ReplaceAll(fields[i], "\r\n\t", " ")
			}
			if len(fields) != 3 ||
				!strings.HasPrefix(fields[1], "Authentication-Results: mx.mxguard.test; spf=none smtp.mailfrom=alice@good.test;") ||
				!strings.Contains(fields[1], "dkim=none") || !strings.Contains(fields[1], "dmarc=none header.from=good.test") ||
				!strings.HasPrefix(fields[2], "X-Spam-Score: ") {
				t.Errorf("our header fields: %q", fields)
			}
			want := msg
			if !bytes.HasSuffix(msg, []byte("\r\n")) {
				want = append(append([]byte(nil), msg...), "\r\n"...) // DATA ends lines
			}
			if !bytes.Equal(body, want) {
				t.Errorf("backend got %d bytes, want %d; first difference at %d", len(body), len(want), firstDiff(body, want))
			}
			for _, w := range []string{"from mail.good.test (mail.good.test [127.0.0.2])", "by mx.mxguard.test (mxguard) with ESMTP id ", "for <bob@mxguard.test>"} {
				if !strings.Contains(recv, w) {
					t.Errorf("Received header %q lacks %q", recv, w)
				}
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// The backend's replies reach the client unchanged: a multi-line 550 on one
// of two recipients, a 451 on MAIL, its own 250 texts to MAIL and RCPT (one
// of them multi-line) in place of go-smtp's; and the message goes to the
// recipient the backend accepted only.
func TestBackendRepliesPassThrough(t *testing.T) {
	h := newHarness(t, harnessOpt{sink: func(s *mailsink.Server) {
		s.Policy = mailsink.PolicyFuncs{
			MailFunc: func(_ *mailsink.SessionInfo, from string) *mailsink.Action {
				if from == "deferred@good.test" {
					return &mailsink.Action{Reply: "451 4.3.0 <deferred@good.test>: Temporary lookup failure"}
				}
				return &mailsink.Action{Reply: "250 2.1.0 Sender <" + from + "> ok, says the backend"}
			},
			RcptFunc: func(_ *mailsink.SessionInfo, to string) *mailsink.Action {
				if to == "nobody@mxguard.test" {
					return &mailsink.Action{Reply: "550-5.1.1 <nobody@mxguard.test>: Recipient address rejected:\n550 5.1.1 User unknown in virtual mailbox table"}
				}
				return &mailsink.Action{Reply: "250-2.1.5 Recipient <" + to + "> ok\n250 2.1.5 Mailbox on the backend"}
			},
		}
	}})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.Send("MAIL FROM:<deferred@good.test>")
	if code, text := c.Reply(); code != 451 || text != "4.3.0 <deferred@good.test>: Temporary lookup failure" {
		t.Errorf("MAIL: got %d %q", code, text)
	}
	c.Send("MAIL FROM:<alice@good.test>")
	if code, text := c.Reply(); code != 250 || text != "2.1.0 Sender <alice@good.test> ok, says the backend" {
		t.Errorf("MAIL: got %d %q", code, text)
	}
	c.Send("RCPT TO:<nobody@mxguard.test>")
	code, text := c.Reply()
	want := "5.1.1 <nobody@mxguard.test>: Recipient address rejected:\n5.1.1 User unknown in virtual mailbox table"
	if code != 550 || text != want {
		t.Errorf("RCPT: got %d %q, want 550 %q", code, text, want)
	}
	c.Send("RCPT TO:<bob@mxguard.test>")
	code, text = c.Reply()
	if want := "2.1.5 Recipient <bob@mxguard.test> ok\n2.1.5 Mailbox on the backend"; code != 250 || text != want {
		t.Errorf("RCPT: got %d %q, want 250 %q", code, text, want)
	}
	c.DataExpect([]byte("From: alice@good.test\r\nSubject: x\r\n\r\nx\r\n"), 250)
	// Pipelined, each reply is still the backend's own, in order.
	c.Conn.Write([]byte("MAIL FROM:<alice@good.test>\r\nRCPT TO:<nobody@mxguard.test>\r\nRCPT TO:<bob@mxguard.test>\r\nRSET\r\n"))
	for i, want := range []string{"250 2.1.0 Sender <alice@good.test> ok, says the backend",
		"550 5.1.1 <nobody@mxguard.test>: Recipient address rejected:\n5.1.1 User unknown in virtual mailbox table",
		"250 2.1.5 Recipient <bob@mxguard.test> ok\n2.1.5 Mailbox on the backend"} {
		if code, text := c.Reply(); fmt.Sprintf("%d %s", code, text) != want {
			t.Errorf("pipelined reply %d: %d %q, want %q", i+1, code, text, want)
		}
	}
	if code, _ := c.Reply(); code != 250 { // RSET
		t.Errorf("pipelined RSET: %d", code)
	}
	got, err := h.sink.WaitMessages(1, 5e9)
	if err != nil {
		t.Fatal(err)
	}
	if len(got[0].To) != 1 || got[0].To[0] != "bob@mxguard.test" {
		t.Errorf("backend recipients %v", got[0].To)
	}
}

// Several transactions on one connection, with RSET between, go over one
// backend connection, and the backend learns the client once.
func TestSeveralTransactions(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.SendMail("", "a@good.test", []string{"x@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: 1\r\n\r\n1\r\n"))
	c.Cmd("MAIL FROM:<b@good.test>", 250)
	c.Cmd("RCPT TO:<y@mxguard.test>", 250)
	c.Cmd("RSET", 250)
	c.SendMail("", "c@good.test", []string{"z@mxguard.test", "w@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: 3\r\n\r\n3\r\n"))
	c.Cmd("QUIT", 221)
	got, err := h.sink.WaitMessages(2, 5e9)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].From != "a@good.test" || got[1].From != "c@good.test" || len(got[1].To) != 2 {
		t.Errorf("messages: %+v / %+v", got[0], got[1])
	}
	if got[0].Session != got[1].Session {
		t.Errorf("the two messages came over different backend connections")
	}
	if recv, _ := stripReceived(t, got[1].Data); strings.Contains(recv, " for <") {
		t.Errorf("Received names a recipient of a multi-recipient message: %q", recv)
	}
	if n := len(h.sink.Sessions()); n != 1 {
		t.Errorf("%d backend connections, want 1", n)
	}
	var rsets int
	for _, cmd := range h.sink.Sessions()[0].Commands {
		if cmd == "RSET" {
			rsets++
		}
	}
	if rsets != 1 {
		t.Errorf("backend saw %d RSET, want 1 (only the client's)", rsets)
	}
}
