package proxy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
)

// Reloads under load: clients keep sending while the rules flip between
// two versions. Every session is judged by the rules it started under,
// every accepted message lands once, and nothing else goes wrong.
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	listFile := filepath.Join(dir, "blocked.txt")
	os.WriteFile(listFile, []byte("# none yet\nnobody.test\n"), 0o644)
	gentle := filepath.Join(dir, "gentle.toml")
	os.WriteFile(gentle, []byte("[outcome.\"helo.localhost\"]\naction = \"ignore\"\n"), 0o644)
	lists := filepath.Join(dir, "lists.toml")
	os.WriteFile(lists, []byte("[[list]]\nname = \"blocked\"\ntype = \"sender\"\naction = \"deny\"\nfiles = [\"blocked.txt\"]\n"), 0o644)

	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Limits.MaxConnectionsPerIP = 100
		c.Rules = []string{gentle, lists}
	}})
	version := func(gentleRules bool) *Runtime {
		cfg := testConfig()
		cfg.Backend.Address = h.sink.Addr()
		cfg.DNS.Resolvers = []string{h.dns.Addr()}
		cfg.Limits.MaxConnectionsPerIP = 100
		cfg.Rules = []string{lists}
		if gentleRules {
			cfg.Rules = []string{gentle, lists}
		}
		return h.runtime(cfg)
	}

	// A session opened under the gentle rules stays gentle across reloads.
	long := h.greeted("127.0.0.3")
	long.Cmd("EHLO localhost", 250)

	var accepted, refused, wrong atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				c := h.greeted("127.0.0.2")
				c.Cmd("EHLO localhost", 250)
				c.Cmd("MAIL FROM:<alice@good.test>", 250)
				c.Send("RCPT TO:<bob@mxguard.test>")
				code, _ := c.Reply()
				switch code {
				case 250: // gentle rules: relay it
					c.DataExpect([]byte(fmt.Sprintf("From: alice@good.test\r\nSubject: %d-%d\r\n\r\nx\r\n", i, n)), 250)
					accepted.Add(1)
				case 550: // strict rules
					refused.Add(1)
				default:
					wrong.Add(1)
				}
				c.Cmd("QUIT", 221)
			}
		}(i)
	}
	for r := 0; r < 10; r++ {
		time.Sleep(60 * time.Millisecond)
		h.srv.Reload(version(r%2 == 1))
		long.SendMail("", "alice@good.test", []string{"bob@mxguard.test"}, []byte(fmt.Sprintf("From: alice@good.test\r\nSubject: long %d\r\n\r\nx\r\n", r)))
	}
	// The list file changes; the next reload reads it again.
	os.WriteFile(listFile, []byte("spammer.test\n"), 0o644)
	h.srv.Reload(version(true))
	close(stop)
	wg.Wait()

	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	c.Cmd("MAIL FROM:<x@spammer.test>", 250)
	c.Send("RCPT TO:<bob@mxguard.test>")
	if code, text := c.Reply(); code != 550 || !contains(text, "deny.blocked") {
		t.Errorf("list file change not applied on reload: %d %q", code, text)
	}

	if wrong.Load() != 0 {
		t.Errorf("%d unexpected replies during reloads", wrong.Load())
	}
	if accepted.Load() == 0 || refused.Load() == 0 {
		t.Errorf("accepted %d, refused %d: both rule versions should have been seen", accepted.Load(), refused.Load())
	}
	want := int(accepted.Load()) + 10
	got, err := h.sink.WaitMessages(want, 5*time.Second)
	if err != nil || len(got) != want {
		t.Fatalf("backend has %d messages, want %d: %v", len(got), want, err)
	}
	subjects := map[string]int{}
	for _, m := range got {
		i := bytes.Index(m.Data, []byte("Subject: "))
		j := bytes.IndexByte(m.Data[i:], '\r')
		subjects[string(m.Data[i:i+j])]++
	}
	for s, n := range subjects {
		if n > 1 {
			t.Errorf("message %q stored %d times", s, n)
		}
	}
	t.Logf("%d accepted under the gentle rules, %d refused under the strict ones, 10 on the long session", accepted.Load(), refused.Load())
}
