package mailsink

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to d for the goroutines of the package's servers
// to be gone and returns the stacks of those left.
func leakedGoroutines(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "mailsink.(*Server).") || strings.Contains(g, "mailsink.(*conn).") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// client is a raw SMTP client for tests.
type client struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// dialGreet connects and consumes the greeting.
func dialGreet(t testing.TB, s *Server) *client {
	t.Helper()
	c := dial(t, s.Addr())
	c.expect("220 ")
	return c
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// readReply reads one (possibly multi-line) reply, lines joined by "\n".
func (c *client) readReply() (string, error) {
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return strings.Join(lines, "\n"), err
		}
		if !strings.HasSuffix(line, "\r\n") {
			return "", fmt.Errorf("reply line %q not CRLF-terminated", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n"), nil
		}
	}
}

// expect reads a reply and checks its prefix.
func (c *client) expect(prefix string) string {
	c.t.Helper()
	rep, err := c.readReply()
	if err != nil {
		c.t.Fatalf("reading reply (want %q): %v (got %q)", prefix, err, rep)
	}
	if !strings.HasPrefix(rep, prefix) {
		c.t.Fatalf("reply %q, want prefix %q", rep, prefix)
	}
	return rep
}

// cmd sends a command line and checks the reply's prefix.
func (c *client) cmd(line, prefix string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(prefix)
}

// expectEOF checks that the server hangs up without saying more.
func (c *client) expectEOF() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := c.r.ReadByte()
	if err == nil {
		rest, _ := c.r.Peek(c.r.Buffered())
		c.t.Fatalf("expected hang-up, got %q", append([]byte{b}, rest...))
	}
	if !errors.Is(err, io.EOF) && !isReset(err) {
		c.t.Fatalf("expected EOF, got %v", err)
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

// sendMail runs one transaction, returning the final reply.
func (c *client) sendMail(from, to, body string) string {
	c.t.Helper()
	c.cmd("MAIL FROM:<"+from+">", "250 ")
	c.cmd("RCPT TO:<"+to+">", "250 ")
	c.cmd("DATA", "354 ")
	c.send(dotStuff(body) + ".\r\n")
	rep, err := c.readReply()
	if err != nil {
		c.t.Fatalf("reading final reply: %v", err)
	}
	return rep
}

// dotStuff encodes body for the wire the way a conforming client does:
// lines are CRLF-terminated (a CRLF is added at the end if missing) and a
// dot is added in front of every line starting with one.
func dotStuff(body string) string {
	var b strings.Builder
	lineStart := true
	for i := 0; i < len(body); i++ {
		if lineStart && body[i] == '.' {
			b.WriteByte('.')
		}
		b.WriteByte(body[i])
		lineStart = body[i] == '\n' && i > 0 && body[i-1] == '\r'
	}
	if !strings.HasSuffix(body, "\r\n") {
		b.WriteString("\r\n")
	}
	return b.String()
}

// withCRLF is the content a body arrives as: dotStuff adds a final CRLF.
func withCRLF(body string) string {
	if strings.HasSuffix(body, "\r\n") {
		return body
	}
	return body + "\r\n"
}

// refDecode is an independent byte-by-byte reference for readData: it
// returns the content and the bytes after the terminator, or ok=false if
// wire holds no terminator.
func refDecode(wire []byte) (data, rest []byte, ok bool) {
	data = []byte{}
	lineStart := true
	for i := 0; i < len(wire); {
		if lineStart && bytes.HasPrefix(wire[i:], []byte(".\r\n")) {
			return data, wire[i+3:], true
		}
		if lineStart && wire[i] == '.' {
			i++
			lineStart = false
			continue
		}
		data = append(data, wire[i])
		i++
		lineStart = wire[i-1] == '\n' && i >= 2 && wire[i-2] == '\r'
	}
	return nil, nil, false
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lastSession returns a snapshot of the most recent session.
func lastSession(t testing.TB, s *Server) *SessionInfo {
	t.Helper()
	ss := s.Sessions()
	if len(ss) == 0 {
		t.Fatal("no sessions recorded")
	}
	return ss[len(ss)-1]
}
