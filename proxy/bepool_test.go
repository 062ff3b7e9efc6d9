package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/mailsink"
)

func poolHarness(t *testing.T, n int, sink func(*mailsink.Server)) *harness {
	t.Helper()
	return newHarness(t, harnessOpt{sink: sink, cfg: func(c *config.Config) { c.Backend.PreparedConnections = n }})
}

// readyConns is how many prepared connections wait in h's pool.
func readyConns(h *harness) int {
	p := h.srv.pool(h.srv.Runtime())
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready)
}

func waitReady(t *testing.T, h *harness, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); readyConns(h) < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d prepared connections after 5s, want %d", readyConns(h), n)
		}
	}
}

func sendOne(t *testing.T, h *harness, subject string) time.Time {
	t.Helper()
	began := time.Now()
	c := h.greeted("127.0.0.2")
	c.SendMail("mail.good.test", "alice@good.test", []string{"bob@mxguard.test"},
		[]byte("From: alice@good.test\r\nSubject: "+subject+"\r\n\r\nhello\r\n"))
	c.Cmd("QUIT", 221)
	return began
}

// Clients that keep coming find backend connections connected and greeted
// before they arrived; each is still told to the backend by XCLIENT, on a
// connection of its own, and everything arrives.
func TestPreparedConnections(t *testing.T) {
	h := poolHarness(t, 2, nil)
	const n = 5
	var began []time.Time
	began = append(began, sendOne(t, h, "0"))
	began = append(began, sendOne(t, h, "1")) // the second client: the pool fills
	for i := 2; i < n; i++ {
		waitReady(t, h, 2)
		began = append(began, sendOne(t, h, string(rune('0'+i))))
	}
	msgs, err := h.sink.WaitMessages(n, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sessions := map[int]*mailsink.SessionInfo{}
	for _, s := range h.sink.Sessions() {
		sessions[s.ID] = s
	}
	prepared := 0
	for i, m := range msgs {
		s := sessions[m.Session]
		if m.XCLIENT["ADDR"] != "127.0.0.2" || m.XCLIENT["HELO"] != "mail.good.test" || m.Helo != "mail.good.test" {
			t.Errorf("message %d: XCLIENT %v, HELO %q", i, m.XCLIENT, m.Helo)
		}
		xclients := 0
		for _, c := range s.Commands {
			if strings.HasPrefix(c, "XCLIENT ") {
				xclients++
			}
		}
		if xclients != 1 || s.Messages != 1 {
			t.Errorf("message %d: its backend session had %d XCLIENT and %d messages: %q", i, xclients, s.Messages, s.Commands)
		}
		if !strings.HasSuffix(string(m.Data), "Subject: "+string(rune('0'+i))+"\r\n\r\nhello\r\n") {
			t.Fatalf("message %d is not the %dth client's: %q", i, i, m.Data)
		}
		if s.Started.Before(began[i]) {
			prepared++
		}
	}
	if prepared < n-2 {
		t.Errorf("%d of %d messages went over a connection prepared before their client came, want at least %d", prepared, n, n-2)
	}
}

// A lone client leaves no prepared connection behind: the pool fills only
// while clients keep coming.
func TestPreparedConnectionsIdle(t *testing.T) {
	h := poolHarness(t, 4, nil)
	sendOne(t, h, "alone")
	time.Sleep(100 * time.Millisecond)
	if n := len(h.sink.Sessions()); n != 1 || readyConns(h) != 0 {
		t.Errorf("%d backend sessions, %d prepared, after one client", n, readyConns(h))
	}
}

// Prepared connections the backend dropped while they waited are dialled
// again for the client, which never notices.
func TestPreparedConnectionsStale(t *testing.T) {
	h := poolHarness(t, 2, func(s *mailsink.Server) { s.ReadTimeout = 300 * time.Millisecond })
	sendOne(t, h, "0")
	sendOne(t, h, "1")
	waitReady(t, h, 2)
	time.Sleep(600 * time.Millisecond) // the backend times them out
	if readyConns(h) != 2 {
		t.Fatalf("%d prepared connections", readyConns(h))
	}
	began := sendOne(t, h, "2")
	msgs, err := h.sink.WaitMessages(3, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range h.sink.Sessions() {
		if s.ID == msgs[2].Session && s.Started.Before(began) {
			t.Errorf("the message went over a connection from before its client")
		}
	}
	for _, line := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			t.Errorf("logged: %s", line)
		}
	}
}

// A reload lets go of the old configuration's prepared connections, and so
// does the shutdown: politely (QUIT), and the backend sees every one end.
func TestPreparedConnectionsClosed(t *testing.T) {
	h := poolHarness(t, 2, nil)
	sendOne(t, h, "0")
	sendOne(t, h, "1")
	waitReady(t, h, 2)
	cfg := *h.cfg
	h.srv.Reload(h.runtime(&cfg))
	ended := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			n := 0
			for _, s := range h.sink.Sessions() {
				if !s.Ended.IsZero() {
					n++
					if len(s.Commands) == 0 || s.Commands[len(s.Commands)-1] != "QUIT" {
						t.Fatalf("backend session %d ended without QUIT: %q", s.ID, s.Commands)
					}
				}
			}
			if n >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d backend sessions ended, want %d", n, want)
			}
		}
	}
	ended(4) // the two clients' and the two prepared ones
	sendOne(t, h, "2")
	sendOne(t, h, "3")
	waitReady(t, h, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	ended(8)
	if n := len(h.sink.Sessions()); n != 8 {
		t.Errorf("%d backend sessions, want 8", n)
	}
}
