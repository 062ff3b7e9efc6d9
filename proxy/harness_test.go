package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/internal/dnsfixture"
	"github.com/mxguard/mxguard/internal/mailsink"
	"github.com/mxguard/mxguard/reputation"
	"github.com/mxguard/mxguard/resolver"
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
	t    *testing.T
	dns  *dnsfixture.Server
	sink *mailsink.Server
	srv  *Server
	cfg  *config.Config
	addr string
	logs *logBuffer
	rep  *reputation.Store
}

type harnessOpt struct {
	cfg  func(*config.Config)
	sink func(*mailsink.Server)
	zone string // more fixture DNS data
	// proxied: 127.0.0.1 is a load balancer sending PROXY headers, so
	// tests can present clients with real-looking addresses (dialAs).
	proxied bool
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
	cfg.Backend.CommandTimeout = config.Duration(5 * time.Second)
	cfg.Backend.DataTimeout = config.Duration(5 * time.Second)
	return cfg
}

func newHarness(t *testing.T, o harnessOpt) *harness {
	t.Helper()
	h := &harness{t: t, logs: &logBuffer{}}
	h.dns = dnsfixture.StartT(t, testZone+o.zone)
	h.sink = &mailsink.Server{Hostname: "backend.test", XCLIENT: true}
	if o.sink != nil {
		o.sink(h.sink)
	}
	mailsink.StartT(t, h.sink)
	h.cfg = testConfig()
	h.cfg.Backend.Address = h.sink.Addr()
	h.cfg.DNS.Resolvers = []string{h.dns.Addr()}
	if o.proxied {
		h.cfg.Listen.ProxyProtocolFrom = []config.Prefix{mustPrefix("127.0.0.1")}
	}
	if o.cfg != nil {
		o.cfg(h.cfg)
	}
	h.rep = reputation.New(reputation.Config{GreetPassTTL: h.cfg.Reputation.GreetPassTTL.D()})
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
	rt, err := NewRuntime(cfg, Shared{Resolver: res, Reputation: h.rep}, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	rt.Start()
	h.t.Cleanup(rt.Close)
	return rt
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

// client is a raw SMTP client: it says exactly what a test wants it to.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	tp   *textproto.Reader
}

// dial connects from source address from (127.0.0.x).
func (h *harness) dial(from string) *client {
	h.t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(conn)
	return &client{t: h.t, conn: conn, r: r, tp: textproto.NewReader(r)}
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
	fmt.Fprintf(c.conn, "PROXY %s %s %s 40000 %s\r\n", fam, ip, strings.Split(h.addr, ":")[0], port)
	return c
}

// greetedAs dials as ip and reads the whole banner.
func (h *harness) greetedAs(ip string) *client {
	c := h.dialAs(ip)
	c.expect(220)
	return c
}

// greeted dials and reads the whole banner.
func (h *harness) greeted(from string) *client {
	c := h.dial(from)
	c.expect(220)
	return c
}

// reply reads one (multi-line) reply: code and the text lines.
func (c *client) reply() (int, string) {
	c.t.Helper()
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil && code == 0 {
		c.t.Fatalf("reading reply: %v", err)
	}
	return code, msg
}

func (c *client) expect(code int) string {
	c.t.Helper()
	got, msg := c.reply()
	if got != code {
		c.t.Fatalf("got %d %q, want %d", got, msg, code)
	}
	return msg
}

func (c *client) send(line string) {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.conn, "%s\r\n", line); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

// cmd sends a command and checks the reply code; it returns the text.
func (c *client) cmd(line string, code int) string {
	c.t.Helper()
	c.send(line)
	got, msg := c.reply()
	if got != code {
		c.t.Fatalf("%s: got %d %q, want %d", line, got, msg, code)
	}
	return msg
}

// data sends DATA, the message (dot-stuffed here) and the final dot.
func (c *client) data(msg []byte, code int) string {
	c.t.Helper()
	c.cmd("DATA", 354)
	if _, err := c.conn.Write(dotStuff(msg)); err != nil {
		c.t.Fatal(err)
	}
	got, text := c.reply()
	if got != code {
		c.t.Fatalf("end of data: got %d %q, want %d", got, text, code)
	}
	return text
}

// closed reports whether the server hung up (reads EOF soon).
func (c *client) closed() bool {
	c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := c.r.ReadByte()
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// dotStuff encodes a message for DATA: CRLF line ends are expected in msg,
// a leading dot is doubled, and the final CRLF.CRLF is added.
func dotStuff(msg []byte) []byte {
	var b bytes.Buffer
	lines := bytes.SplitAfter(msg, []byte("\r\n"))
	for _, l := range lines {
		if len(l) > 0 && l[0] == '.' {
			b.WriteByte('.')
		}
		b.Write(l)
	}
	if !bytes.HasSuffix(msg, []byte("\r\n")) && len(msg) > 0 {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// sendMail runs one transaction on a greeted client.
func (c *client) sendMail(helo, from string, to []string, msg []byte) string {
	c.t.Helper()
	if helo != "" {
		c.cmd("EHLO "+helo, 250)
	}
	c.cmd("MAIL FROM:<"+from+">", 250)
	for _, r := range to {
		c.cmd("RCPT TO:<"+r+">", 250)
	}
	return c.data(msg, 250)
}

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
