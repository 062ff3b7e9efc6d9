package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testsrv"
	"github.com/mxguard/mxguard/state"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/internal/smtptest"
	"github.com/mxguard/mxguard/mailsink"
	"github.com/mxguard/mxguard/reputation"
	"github.com/mxguard/mxguard/resolver"
	"github.com/mxguard/mxguard/store"
	"github.com/mxguard/mxguard/zonedns"
)

// The fixture DNS every proxy test starts with. Clients connect from
// 127.0.0.x; mail.good.test resolves to 127.0.0.2 and has a PTR back.
const testZone = `
$TTL 300
$ORIGIN good.test.
@         SOA ns.good.test. hostmaster.good.test. 1 3600 600 86400 60
mail      A   127.0.0.2
mail6     AAAA ::1
other     A   127.0.0.3
elsewhere A   192.0.2.1
slow      A   127.0.0.2
$ORIGIN 127.in-addr.arpa.
@         SOA ns.good.test. hostmaster.good.test. 1 3600 600 86400 60
2.0.0     PTR mail.good.test.
3.0.0     PTR other.good.test.
`

// harness is mxguard on loopback in front of an in-process backend, with a
// fixture DNS server. Everything stops when the test ends.
type harness struct {
	t     testing.TB
	dns   *zonedns.Server
	sink  *mailsink.Server
	srv   *Server
	cfg   *config.Config
	addr  string
	logs  *logBuffer
	rep   *testMemory
	state *state.State
	now   func() time.Time
}

type harnessOpt struct {
	cfg  func(*config.Config)
	sink func(*mailsink.Server)
	zone string // more fixture DNS data
	// proxied: 127.0.0.1 is a load balancer sending PROXY headers, so
	// tests can present clients with real-looking addresses (dialAs).
	proxied bool
	// state is the state store mxguard keeps its memory of clients,
	// greylisting and rate limits in (a shared Redis, a bolt file); nil
	// is an in-memory store of the harness's own.
	state *state.State
	// now is mxguard's clock (greylisting); nil is time.Now.
	now func() time.Time
}

func testConfig() *config.Config {
	cfg := config.Default()
	cfg.Path = "(test)"
	cfg.Hostname = "mx.mxguard.test"
	cfg.LocalDomains = []string{"mxguard.test"}
	cfg.TrustedNetworks = nil
	cfg.Listen.Addresses = []string{"127.0.0.1:0"}
	cfg.Listen.GreetDelay = config.Duration(150 * time.Millisecond)
	cfg.DNS.Timeout = config.Duration(300 * time.Millisecond)
	cfg.Limits.CommandTimeout = config.Duration(5 * time.Second)
	// The tests' clients all come from 127.0.0.0/24, many at a time.
	cfg.Limits.MaxConnectionsPerNet = 100000
	cfg.Limits.ConnectionRatePerIP = 0
	cfg.State.Store = config.StoreMemory
	cfg.State.ControlSocket = ""
	cfg.Backend.CommandTimeout = config.Duration(5 * time.Second)
	cfg.Backend.DataTimeout = config.Duration(5 * time.Second)
	// The tests count the backend's sessions: each one a client's.
	// bepool_test.go tests prepared connections.
	cfg.Backend.PreparedConnections = 0
	return cfg
}

func newHarness(t testing.TB, o harnessOpt) *harness {
	t.Helper()
	h := &harness{t: t, logs: &logBuffer{}}
	h.dns = testsrv.DNS(t, testZone+o.zone)
	h.sink = &mailsink.Server{Hostname: "backend.test", XCLIENT: true}
	if o.sink != nil {
		o.sink(h.sink)
	}
	testsrv.Sink(t, h.sink)
	h.cfg = testConfig()
	h.cfg.Backend.Address = h.sink.Addr()
	h.cfg.DNS.Resolvers = []string{h.dns.Addr()}
	if o.proxied {
		h.cfg.Listen.ProxyProtocolFrom = []config.Prefix{mustPrefix("127.0.0.1")}
	}
	if o.cfg != nil {
		o.cfg(h.cfg)
	}
	if o.state == nil {
		st, err := state.Open(h.cfg, state.Options{Now: o.now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		o.state = st
	}
	h.state, h.now = o.state, o.now
	h.rep = &testMemory{reputation.New(o.state.Store, o.state.Async, reputation.Config{Now: o.now}), o.state.Async}
	rt := h.runtime(h.cfg)
	h.srv = New(rt, slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.srv.Serve(l)
	h.addr = l.Addr().String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.srv.Shutdown(ctx)
	})
	return h
}

func (h *harness) runtime(cfg *config.Config) *Runtime {
	h.t.Helper()
	res, err := resolver.New(resolver.Config{Servers: cfg.DNS.Resolvers, Timeout: cfg.DNS.Timeout.D(), Attempts: 1})
	if err != nil {
		h.t.Fatal(err)
	}
	rt, err := NewRuntime(cfg, Shared{Resolver: res, Memory: h.rep.Memory, State: h.state, Now: h.now}, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	rt.Start()
	h.t.Cleanup(rt.Close)
	return rt
}

// testMemory is the memory of clients the harness gives mxguard, on an
// in-memory store. mxguard writes to it in the background; the test's own
// Pass and Passed wait for those writes, so a test reads what it wrote and
// what a finished session wrote.
type testMemory struct {
	*reputation.Memory
	async *store.Async
}

func (m *testMemory) flush() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m.async.Flush(ctx)
}

// Pass remembers a pass, and waits until it is written.
func (m *testMemory) Pass(ip netip.Addr, test checks.Name, ttl time.Duration) {
	m.Memory.Pass(ip, test, ttl)
	m.flush()
}

// Passed reports whether ip has a pass of test, once every write queued
// so far is applied.
func (m *testMemory) Passed(ip netip.Addr, test checks.Name) bool {
	m.flush()
	return m.Recall(context.Background(), ip).Passed[test]
}

// withRules adds a rule file with the given TOML to cfg.
func withRules(t *testing.T, cfg *config.Config, toml string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rules.toml")
	if err := os.WriteFile(p, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Rules = append(cfg.Rules, p)
}

// client is the raw SMTP client the tests drive.
type client = smtptest.Client

// dial connects from source address from (127.0.0.x).
func (h *harness) dial(from string) *client {
	h.t.Helper()
	return smtptest.Dial(h.t, h.addr, from)
}

// dialAs connects through the "load balancer" at 127.0.0.1, whose PROXY
// header says the client is ip.
func (h *harness) dialAs(ip string) *client {
	h.t.Helper()
	c := h.dial("127.0.0.1")
	fam := "TCP4"
	if strings.Contains(ip, ":") {
		fam = "TCP6"
	}
	_, port, _ := net.SplitHostPort(h.addr)
	fmt.Fprintf(c.Conn, "PROXY %s %s %s 40000 %s\r\n", fam, ip, strings.Split(h.addr, ":")[0], port)
	return c
}

// greetedAs dials as ip and reads the whole banner.
func (h *harness) greetedAs(ip string) *client {
	c := h.dialAs(ip)
	c.Expect(220)
	return c
}

// greeted dials and reads the whole banner.
func (h *harness) greeted(from string) *client {
	c := h.dial(from)
	c.Expect(220)
	return c
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

var dotStuff = smtptest.DotStuff

// stripReceived removes the header fields we add on top of a message the
// backend got — our Received, then Authentication-Results, Received-SPF
// and the spam headers — and returns the Received field and the rest.
func stripReceived(t *testing.T, data []byte) (received string, rest []byte) {
	t.Helper()
	if !bytes.HasPrefix(data, []byte("Received: from ")) {
		t.Fatalf("message does not start with our Received header: %.200q", data)
	}
	fields, rest := ourFields(data)
	return fields[0], rest
}

// ourFields splits the leading fields we add from the message.
func ourFields(data []byte) (fields []string, rest []byte) {
	ours := []string{"Received:", "Authentication-Results: mx.mxguard.test;", "Received-SPF:", "X-Spam-Score:", "X-Spam-Flag:"}
	for i := 0; ; i++ {
		name := ""
		for _, o := range ours {
			if bytes.HasPrefix(data, []byte(o)) && (o != "Received:" || i == 0) {
				name = o
			}
		}
		if name == "" {
			return fields, data
		}
		end := 0
		for {
			j := bytes.Index(data[end:], []byte("\r\n"))
			if j < 0 {
				return fields, data
			}
			end += j + 2
			if end >= len(data) || (data[end] != '\t' && data[end] != ' ') {
				break
			}
		}
		fields = append(fields, string(data[:end]))
		data = data[end:]
	}
}

// logBuffer collects the JSON log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the log records with the given msg.
func (l *logBuffer) lines(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.b.String(), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			panic(fmt.Sprintf("log line is not JSON: %q", line))
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// wait polls for log lines with msg, up to a few seconds: the summary line
// is written when the server notices the connection ended.
func (l *logBuffer) wait(t *testing.T, msg string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := l.lines(msg)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("wanted %d %q log lines, have %d:\n%s", n, msg, len(got), l.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
