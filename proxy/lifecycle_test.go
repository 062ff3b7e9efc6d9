package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
)

// HELO arguments and addresses with control characters, 8-bit bytes or
// comment delimiters never reach our Received header unescaped, and
// XCLIENT values are xtext-encoded.
func TestHeaderInjection(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.TrustedNetworks = []config.Prefix{mustPrefix("127.0.0.5")} // so odd HELOs pass the checks
	}})
	c := h.greeted("127.0.0.5")
	helo := "evil.example\x7f(comment);X-Injected:\tyes\x1b[0m\xc3\xa9\x01"
	c.Cmd("EHLO "+helo, 250)
	c.SendMail("", "alice@good.test", []string{"\"we(ird);\"@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: x\r\n\r\nx\r\n"))
	got, err := h.sink.WaitMessages(1, 5e9)
	if err != nil {
		t.Fatal(err)
	}
	recv, _ := stripReceived(t, got[0].Data)
	for i := 0; i < len(recv); i++ {
		b := recv[i]
		if b >= 0x7f || (b < ' ' && b != '\r' && b != '\n' && b != '\t') {
			t.Fatalf("Received header carries byte %#x: %q", b, recv)
		}
	}
	if contains(recv, "(comment)") || contains(recv, "X-Injected:\tyes") {
		t.Errorf("Received header %q keeps the client's syntax", recv)
	}
	if x := got[0].XCLIENT["HELO"]; x != helo {
		t.Errorf("XCLIENT HELO decoded to %q, want the client's exact HELO", x)
	}
	for _, line := range h.sink.Sessions()[0].Commands {
		if len(line) > 7 && line[:7] == "XCLIENT" {
			for i := 0; i < len(line); i++ {
				if line[i] < '!' && line[i] != ' ' || line[i] > '~' {
					t.Errorf("XCLIENT line carries byte %#x: %q", line[i], line)
				}
			}
		}
	}
}

// A reload applies to new connections; a session in flight keeps the rules
// it started with.
func TestReloadKeepsSessionRules(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		withRules(t, c, "[outcome.\"helo.localhost\"]\naction = \"ignore\"\n")
	}})
	old := h.greeted("127.0.0.2")
	old.Cmd("EHLO localhost", 250)

	cfg := testConfig()
	cfg.Backend.Address = h.sink.Addr()
	cfg.DNS.Resolvers = []string{h.dns.Addr()}
	h.srv.Reload(h.runtime(cfg))

	old.SendMail("", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: old rules\r\n\r\nx\r\n"))
	fresh := h.greeted("127.0.0.2")
	fresh.Cmd("EHLO localhost", 250)
	fresh.Cmd("MAIL FROM:<alice@good.test>", 250)
	fresh.Send("RCPT TO:<bob@mxguard.test>")
	if code, _ := fresh.Reply(); code != 550 {
		t.Errorf("new session after reload got %d, want the new rules' 550", code)
	}
	old.SendMail("", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: still old\r\n\r\nx\r\n"))
}

// Shutdown stops accepting, lets an open session finish, and returns.
func TestShutdownLetsSessionsFinish(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.Cmd("MAIL FROM:<alice@good.test>", 250)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- h.srv.Shutdown(ctx)
	}()
	deadline := time.Now().Add(2 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", h.addr, time.Second)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections after Shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Cmd("RCPT TO:<bob@mxguard.test>", 250)
	c.DataExpect([]byte("From: alice@good.test\r\nSubject: during shutdown\r\n\r\nx\r\n"), 250)
	select {
	case <-done:
		t.Fatal("Shutdown returned while a session was open")
	default:
	}
	c.Cmd("QUIT", 221)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return after the last session ended")
	}
}

// Past the shutdown timeout, sessions are closed and Shutdown says so.
func TestShutdownTimeout(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err == nil {
		t.Error("Shutdown with a session still open returned no error")
	}
	if !c.Closed() {
		t.Error("the open session was not closed")
	}
}

// A NUL in a command line is refused with a clear 500 before anything
// parses it (limits.nul_bytes), from a trusted client as from any other,
// and logged; with nul_bytes = "remove" the NUL is dropped and the line
// judged as what is left.
func TestHELOWithNUL(t *testing.T) {
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.TrustedNetworks = []config.Prefix{mustPrefix("127.0.0.5")}
	}})
	for _, from := range []string{"127.0.0.5", "127.0.0.2"} {
		c := h.greeted(from)
		if text := c.Cmd("EHLO nul\x00.example", 500); !contains(text, "NUL") {
			t.Errorf("%s: EHLO with a NUL got %q", from, text)
		}
		c.Cmd("EHLO mail.good.test", 250) // the session goes on
		c.Cmd("QUIT", 221)
	}
	if r := h.logs.wait(t, "refused", 2); r[0]["rule"] != "protocol" || !contains(r[0]["reason"].(string), "NUL") {
		t.Errorf("refused record %v", r[0])
	}
	if len(h.sink.Sessions()) != 0 {
		t.Error("the backend was contacted")
	}

	h = newHarness(t, harnessOpt{cfg: func(c *config.Config) { c.Limits.NULBytes = config.NULRemove }})
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good\x00.test", 250)
	c.SendMail("mail.good.test", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\n\r\nhi\r\n"))
	if _, err := h.sink.WaitMessages(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
