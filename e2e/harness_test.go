// Package e2e runs mxguard in front of real backend MTAs: a private Postfix
// (XCLIENT, or the PROXY protocol) and a private Exim (PROXY v1 and v2), as
// internal/realmta starts them. The proxy runs in-process on loopback, DNS
// comes from a fixture server, and clients connect from 127.0.0.2, which the
// fixture names mail.good.test.
//
// Without the MTAs the tests skip (scripts/install-test-mtas.sh installs
// them); with MXGUARD_E2E=1 they fail instead.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testsrv"

	"github.com/pires/go-proxyproto"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/internal/realmta"
	"github.com/mxguard/mxguard/internal/smtptest"
	"github.com/mxguard/mxguard/proxy"
	"github.com/mxguard/mxguard/reputation"
	"github.com/mxguard/mxguard/resolver"
	"github.com/mxguard/mxguard/store"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if left := realmta.Leftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: MTA processes left running after the tests:\n  %s\n", strings.Join(left, "\n  "))
		code = 1
	}
	os.Exit(code)
}

// The fixture DNS: the client 127.0.0.2 is mail.good.test, both ways.
const zone = `
$TTL 300
$ORIGIN good.test.
@         SOA ns.good.test. hostmaster.good.test. 1 3600 600 86400 60
mail      A   127.0.0.2
$ORIGIN 127.in-addr.arpa.
@         SOA ns.good.test. hostmaster.good.test. 1 3600 600 86400 60
2.0.0     PTR mail.good.test.
`

const (
	clientIP   = "127.0.0.2"
	clientHELO = "mail.good.test"
	domain     = "mxguard.test"
	// backendSizeLimit is the backends' own message_size_limit, far below
	// mxguard's (25 MB by default), so that theirs is the one that bites.
	backendSizeLimit = 50000
)

// mxguard is the proxy, in-process, in front of a backend.
type mxguard struct {
	t    *testing.T
	addr string
	logs *logBuffer
}

func startMxguard(t *testing.T, backend string, identity config.Identity, opts ...func(*config.Config)) *mxguard {
	t.Helper()
	dns := testsrv.DNS(t, zone)
	cfg := config.Default()
	cfg.Path = "(e2e)"
	cfg.Hostname = "mx.mxguard.test"
	cfg.LocalDomains = []string{domain}
	cfg.TrustedNetworks = nil
	cfg.Listen.Addresses = []string{"127.0.0.1:0"}
	cfg.Listen.GreetDelay = config.Duration(200 * time.Millisecond)
	cfg.DNS.Resolvers = []string{dns.Addr()}
	cfg.DNS.Timeout = config.Duration(500 * time.Millisecond)
	cfg.Limits.CommandTimeout = config.Duration(10 * time.Second)
	cfg.Backend.Address = backend
	cfg.Backend.ClientIdentity = identity
	cfg.Backend.CommandTimeout = config.Duration(10 * time.Second)
	cfg.Backend.DataTimeout = config.Duration(10 * time.Second)
	// The suite counts the connections the backend logs: each must be a
	// client's (prepared connections are tested on their own).
	cfg.Backend.PreparedConnections = 0
	for _, o := range opts {
		o(cfg)
	}
	res, err := resolver.New(resolver.Config{Servers: cfg.DNS.Resolvers, Timeout: cfg.DNS.Timeout.D(), Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	m := &mxguard{t: t, logs: &logBuffer{}}
	logger := slog.New(slog.NewJSONHandler(m.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st := store.NewMemory(nil)
	async := store.NewAsync(st, 0)
	rep := reputation.New(st, async, reputation.Config{})
	rt, err := proxy.NewRuntime(cfg, proxy.Shared{Resolver: res, Memory: rep}, logger)
	if err != nil {
		t.Fatal(err)
	}
	rt.Start()
	t.Cleanup(rt.Close)
	srv := proxy.New(rt, logger)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Serve(l)
	m.addr = l.Addr().String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return m
}

// client is the shared raw SMTP client, with what these tests add.
type client struct{ *smtptest.Client }

// dial connects to addr from the client address; a non-nil proxyHeader
// (PROXY v1/v2) is sent first, as mxguard would for this client.
func dial(t *testing.T, addr string, proxyVersion byte) *client {
	t.Helper()
	c := &client{smtptest.Dial(t, addr, clientIP)}
	if proxyVersion != 0 {
		h := proxyproto.HeaderProxyFromAddrs(proxyVersion, c.Conn.LocalAddr(), c.Conn.RemoteAddr())
		if _, err := h.WriteTo(c.Conn); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// greeted dials mxguard (or a backend directly) and reads the banner.
func greeted(t *testing.T, addr string, proxyVersion byte) *client {
	t.Helper()
	c := dial(t, addr, proxyVersion)
	c.Expect(220)
	return c
}

// port is the client's own source port.
func (c *client) port() int { return c.Conn.LocalAddr().(*net.TCPAddr).Port }

// do sends a command and returns the reply.
func (c *client) do(line string) reply {
	c.T.Helper()
	c.Send(line)
	code, text := c.Reply()
	return reply{code, text}
}

// data sends DATA, the message (dot-stuffed here) and the final dot, and
// returns the reply to the dot.
func (c *client) data(msg []byte) reply {
	c.T.Helper()
	code, text := c.Data(msg)
	return reply{code, text}
}

type reply struct {
	code int
	text string
}

func (r reply) String() string { return fmt.Sprintf("%d %q", r.code, r.text) }

// toLF is how both MTAs store a message: LF line ends.
func toLF(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) }

// cutHeader splits the first header field (with its continuation lines) off
// an LF-terminated message.
func cutHeader(msg []byte) (field string, rest []byte) {
	i := 0
	for {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			return string(msg), nil
		}
		i += j + 1
		if i >= len(msg) || (msg[i] != ' ' && msg[i] != '\t') {
			return string(msg[:i]), msg[i:]
		}
	}
}

// logBuffer collects mxguard's JSON log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// wait returns the first record with msg and the given field values, waiting
// a few seconds for it.
func (l *logBuffer) wait(t *testing.T, msg string, fields map[string]string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		text := l.b.String()
		l.mu.Unlock()
	lines:
		for _, line := range strings.Split(text, "\n") {
			var m map[string]any
			if line == "" || json.Unmarshal([]byte(line), &m) != nil || m["msg"] != msg {
				continue
			}
			for k, v := range fields {
				if fmt.Sprint(m[k]) != v {
					continue lines
				}
			}
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q log line with %v in:\n%s", msg, fields, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls cond for up to timeout.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
