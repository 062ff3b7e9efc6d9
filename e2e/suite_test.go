package e2e

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/internal/realmta"
)

// backend is one real MTA as the suite sees it.
type backend struct {
	name     string
	addr     string
	identity config.Identity // how mxguard tells it who the client is
	// directProxy is the PROXY version a client talking to the backend
	// directly must send (0: none), for comparing its replies with
	// mxguard's.
	directProxy byte

	log      func() string
	messages func(t *testing.T) []realmta.Delivered
	// deliveryHeaders are what the delivery agent adds on top of the
	// message (Postfix's virtual(8): Return-Path and the like).
	deliveryHeaders []string
	// queueID extracts the queue id from the backend's 250 after DATA.
	queueID func(reply string) string
	// checkReceived checks the backend's own Received header: it must
	// name the original client, not mxguard.
	checkReceived func(t *testing.T, hdr, queueID string, c *client)
	// checkDeliveryLog checks the log line of the accepted message.
	checkDeliveryLog func(t *testing.T, log, queueID string, c *client)
	// checkRejectLog checks the log line of a refused RCPT from sender.
	checkRejectLog func(t *testing.T, log, sender, rcpt string, c *client)
	// connections counts the connections the backend logged.
	connections func(log string) int
}

var seq atomic.Int64

// marker returns a string unique in this test run.
func marker(what string) string {
	return fmt.Sprintf("%s-%d-%d", what, time.Now().UnixNano()%1e9, seq.Add(1))
}

// testMessage is a message with what tends to break relays: lines starting
// with dots (one of them a lone dot), 8-bit text (UTF-8 and invalid bytes),
// trailing white space, a tab, a long line.
func testMessage(subject string) []byte {
	return []byte("From: Alice <alice@good.test>\r\n" +
		"To: Bob <bob@mxguard.test>\r\n" +
		"Subject: " + subject + "\r\n" +
		"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n" +
		"Message-ID: <" + subject + "@good.test>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"\r\n" +
		"Hello Bob,\r\n" +
		".a line that starts with a dot\r\n" +
		"..two dots\r\n" +
		".\r\n" +
		"café, naïve, 日本語, raw \x80\xfe\xff bytes\r\n" +
		"trailing spaces   \r\n" +
		"\ttab first\r\n" +
		strings.Repeat("0123456789", 90) + "\r\n" +
		"\r\n" +
		"-- \r\n" +
		"Alice\r\n")
}

// runSuite runs every end-to-end check of mxguard in front of b.
func runSuite(t *testing.T, b backend) {
	mx := startMxguard(t, b.addr, b.identity)
	t.Run("delivery", func(t *testing.T) { testDelivery(t, mx, b) })
	t.Run("backend_refusals", func(t *testing.T) { testBackendRefusals(t, mx, b) })
	t.Run("own_refusal", func(t *testing.T) { testOwnRefusal(t, mx, b) })
	t.Run("prepared_connections", func(t *testing.T) { testPrepared(t, b) })
}

// Backend connections prepared ahead of the clients (backend.prepared_
// connections) are bound to each client as it comes: XCLIENT, or the
// PROXY header, sent on each, so that the backend names the real client
// in its Received, and every message arrives.
func testPrepared(t *testing.T, b backend) {
	mx := startMxguard(t, b.addr, b.identity, func(c *config.Config) { c.Backend.PreparedConnections = 2 })
	for i := range 4 {
		subject := marker(fmt.Sprintf("prepared-%d", i))
		c, r := sendThrough(t, mx, subject)
		if r.code != 250 {
			t.Fatalf("message %d: end of data: %v\nbackend log:\n%s", i, r, b.log())
		}
		m := waitMessage(t, b, subject)
		rest := m.Data
		for {
			field, after := cutHeader(rest)
			name, _, _ := strings.Cut(field, ":")
			if !containsFold(b.deliveryHeaders, name) {
				break
			}
			rest = after
		}
		recv, _ := cutHeader(rest)
		b.checkReceived(t, recv, b.queueID(r.text), c)
		time.Sleep(50 * time.Millisecond) // the pool refills as a client leaves
	}
}

// sendThrough sends one good message through mxguard from the client and
// returns the client and the reply to the final dot.
func sendThrough(t *testing.T, mx *mxguard, subject string) (*client, reply) {
	t.Helper()
	c := greeted(t, mx.addr, 0)
	c.Cmd("EHLO "+clientHELO, 250)
	// The backend's own texts, not go-smtp's: Postfix's and Exim's.
	if got := c.Cmd("MAIL FROM:<alice@good.test> BODY=8BITMIME", 250); got != "2.1.0 Ok" && got != "OK" {
		t.Errorf("MAIL: 250 %q is not the backend's", got)
	}
	if got := c.Cmd("RCPT TO:<bob@"+domain+">", 250); got != "2.1.5 Ok" && got != "Accepted" {
		t.Errorf("RCPT: 250 %q is not the backend's", got)
	}
	r := c.data(testMessage(subject))
	c.Cmd("QUIT", 221)
	return c, r
}

// waitMessage waits for the message with the given subject.
func waitMessage(t *testing.T, b backend, subject string) realmta.Delivered {
	t.Helper()
	var found *realmta.Delivered
	ok := waitFor(10*time.Second, func() bool {
		for _, m := range b.messages(t) {
			if bytes.Contains(m.Data, []byte("\nSubject: "+subject+"\n")) {
				found = &m
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("the message %q did not arrive at %s; its log:\n%s", subject, b.name, b.log())
	}
	return *found
}

// A message sent through mxguard lands in the backend's mailbox byte for
// byte, with only header fields added on top: the backend's own Received
// (newest first, as trace fields go) naming the original client, then
// mxguard's Received and what its DATA stage adds (Authentication-Results,
// X-Spam-Score). The backend's log names the original client and HELO.
func testDelivery(t *testing.T, mx *mxguard, b backend) {
	subject := marker("delivery")
	c, r := sendThrough(t, mx, subject)
	if r.code != 250 {
		t.Fatalf("end of data: %v\nbackend log:\n%s", r, b.log())
	}
	qid := b.queueID(r.text)
	if qid == "" {
		t.Fatalf("the client got %q, not the backend's own reply with its queue id", r.text)
	}
	m := waitMessage(t, b, subject)

	rest := m.Data
	for {
		field, after := cutHeader(rest)
		name, _, _ := strings.Cut(field, ":")
		if !containsFold(b.deliveryHeaders, name) {
			break
		}
		rest = after
	}
	backendRecv, rest := cutHeader(rest)
	if !strings.HasPrefix(backendRecv, "Received: ") {
		t.Fatalf("first header after the delivery headers is not the backend's Received: %q\nmessage:\n%s", backendRecv, m.Data)
	}
	b.checkReceived(t, backendRecv, qid, c)
	if strings.Contains(backendRecv, "127.0.0.1") {
		t.Errorf("the backend's Received names mxguard's address: %q", backendRecv)
	}
	ourRecv, rest := cutHeader(rest)
	wantOurs := "Received: from mail.good.test (mail.good.test [127.0.0.2])\n\tby mx.mxguard.test (mxguard) with ESMTP id "
	if !strings.HasPrefix(ourRecv, wantOurs) || !strings.Contains(ourRecv, "\n\tfor <bob@mxguard.test>;\n\t") {
		t.Errorf("the header after the backend's Received is not mxguard's Received:\n%s\nwant it to start with %q", ourRecv, wantOurs)
	}
	// Then what mxguard's DATA stage adds (Authentication-Results and the
	// like), then the message exactly as sent.
	want := toLF(testMessage(subject))
	if !bytes.HasSuffix(rest, want) {
		t.Fatalf("the message as sent is not at the end of the stored one (stored tail differs at byte %d of the last %d):\nstored %q\nsent   %q",
			firstDiff(rest[max(0, len(rest)-len(want)):], want), len(want), rest, want)
	}
	added := rest[:len(rest)-len(want)]
	t.Logf("%s stored, above the message as sent:\n%s%s%s", b.name, backendRecv, ourRecv, added)
	for len(added) > 0 {
		var field string
		field, added = cutHeader(added)
		name, _, _ := strings.Cut(field, ":")
		switch {
		case name == "Authentication-Results":
			if !strings.HasPrefix(field, "Authentication-Results: mx.mxguard.test;") {
				t.Errorf("Authentication-Results not by mxguard: %q", field)
			}
		case name == "Received-SPF", strings.HasPrefix(name, "X-Spam-"):
		default:
			t.Errorf("a header field neither mxguard's nor in the message as sent: %q", field)
		}
	}
	if m.From != "alice@good.test" || len(m.To) != 1 || m.To[0] != "bob@"+domain {
		t.Errorf("envelope: from %q to %q", m.From, m.To)
	}

	var log string
	waitFor(5*time.Second, func() bool { log = b.log(); return strings.Contains(log, qid) })
	b.checkDeliveryLog(t, log, qid, c)
	mx.logs.wait(t, "relayed", map[string]string{"client": fmt.Sprintf("%s:%d", clientIP, c.port()), "reply": "250 " + r.text})
}

// The backend's own refusals reach the client unchanged: the same code and
// text as a client talking to the backend directly gets.
func testBackendRefusals(t *testing.T, mx *mxguard, b backend) {
	big := append(testMessage("too big"), bytes.Repeat([]byte(strings.Repeat("x", 76)+"\r\n"), 2*backendSizeLimit/78)...)
	cases := []struct {
		name string
		// run talks to a greeted connection (mxguard or the backend) with
		// the given sender and returns the refusal.
		run  func(c *client, sender string) reply
		rcpt string // for the log check
	}{
		{"unknown_user", func(c *client, sender string) reply {
			c.Cmd("MAIL FROM:<"+sender+">", 250)
			return c.do("RCPT TO:<nobody@" + domain + ">")
		}, "nobody@" + domain},
		{"relay_denied", func(c *client, sender string) reply {
			c.Cmd("MAIL FROM:<"+sender+">", 250)
			return c.do("RCPT TO:<someone@elsewhere.test>")
		}, "someone@elsewhere.test"},
		{"size_declared_at_mail", func(c *client, sender string) reply {
			return c.do(fmt.Sprintf("MAIL FROM:<%s> SIZE=%d", sender, 2*backendSizeLimit))
		}, ""},
		{"size_at_end_of_data", func(c *client, sender string) reply {
			c.Cmd("MAIL FROM:<"+sender+">", 250)
			c.Cmd("RCPT TO:<bob@"+domain+">", 250)
			return c.data(big)
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			talk := func(addr string, proxyVersion byte, sender string) (reply, *client) {
				c := greeted(t, addr, proxyVersion)
				c.Cmd("EHLO "+clientHELO, 250)
				r := tc.run(c, sender)
				c.Cmd("QUIT", 221)
				return r, c
			}
			directSender := marker("direct") + "@good.test"
			viaSender := marker("via-mxguard") + "@good.test"
			direct, _ := talk(b.addr, b.directProxy, directSender)
			via, c := talk(mx.addr, 0, viaSender)
			if direct.code/100 != 5 {
				t.Fatalf("the backend itself does not refuse: %v (test setup?)", direct)
			}
			if via != direct {
				t.Errorf("through mxguard: %v\ndirectly:      %v", via, direct)
			}
			t.Logf("%s says %v", b.name, via)
			if tc.rcpt != "" {
				var log string
				waitFor(5*time.Second, func() bool { log = b.log(); return strings.Contains(log, viaSender) })
				b.checkRejectLog(t, log, viaSender, tc.rcpt, c)
			}
		})
	}
}

// mxguard's own refusal (a HELO of localhost, refused at RCPT) never reaches
// the backend: the backend logs no connection for that session.
func testOwnRefusal(t *testing.T, mx *mxguard, b backend) {
	before := b.connections(b.log())
	sender := marker("refused") + "@good.test"
	c := greeted(t, mx.addr, 0)
	c.Cmd("EHLO localhost", 250)
	c.Cmd("MAIL FROM:<"+sender+">", 250)
	r := c.do("RCPT TO:<bob@" + domain + ">")
	if r.code != 550 || !strings.HasPrefix(r.text, "5.5.2 ") {
		t.Errorf("RCPT after HELO localhost: %v, want mxguard's 550 5.5.2", r)
	}
	c.Cmd("QUIT", 221)
	mx.logs.wait(t, "refused", map[string]string{"rule": "helo.localhost", "from": sender})

	// A good session after it: once its message is in, the backend has
	// logged everything before it.
	subject := marker("barrier")
	_, gr := sendThrough(t, mx, subject)
	if gr.code != 250 {
		t.Fatalf("good session after the refused one: %v", gr)
	}
	qid := b.queueID(gr.text)
	waitMessage(t, b, subject)
	var log string
	waitFor(5*time.Second, func() bool { log = b.log(); return strings.Contains(log, qid) })
	if n := b.connections(log) - before; n != 1 {
		t.Errorf("the backend logged %d connections for the refused session and the good one after it, want 1 (the good one):\n%s", n, log)
	}
	if strings.Contains(log, sender) {
		t.Errorf("the backend's log mentions the refused session's sender %s:\n%s", sender, log)
	}
}

func containsFold(list []string, s string) bool {
	for _, l := range list {
		if strings.EqualFold(l, s) {
			return true
		}
	}
	return false
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// countLines counts the log lines matching re.
func countLines(log string, re *regexp.Regexp) int {
	return len(re.FindAllStringIndex(log, -1))
}

// logLine returns the first log line containing all of parts, or "".
func logLine(log string, parts ...string) string {
lines:
	for _, l := range strings.Split(log, "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue lines
			}
		}
		return l
	}
	return ""
}
