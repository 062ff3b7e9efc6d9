// Package smtptest is a raw SMTP client for tests: it says exactly what a
// test wants it to, and fails the test on anything unexpected. The proxy's
// tests and the end-to-end tests against real MTAs share it.
package smtptest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"sync"
	"testing"
	"time"
)

// Client is one SMTP connection driven by a test.
type Client struct {
	T    testing.TB
	Conn net.Conn
	R    *bufio.Reader
	TP   *textproto.Reader
}

// New wraps conn. It gets a generous deadline so that a stuck test fails
// instead of hanging, and is closed when the test ends.
func New(t testing.TB, conn net.Conn) *Client {
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	return &Client{T: t, Conn: conn, R: r, TP: textproto.NewReader(r)}
}

// Dial connects to addr from the local address from ("" for any).
func Dial(t testing.TB, addr, from string) *Client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return New(t, conn)
}

// Reply reads one (multi-line) reply: its code and text lines joined by \n.
func (c *Client) Reply() (int, string) {
	c.T.Helper()
	code, msg, err := c.TP.ReadResponse(0)
	if err != nil && code == 0 {
		c.T.Fatalf("reading reply: %v", err)
	}
	return code, msg
}

// Expect reads a reply and wants the code.
func (c *Client) Expect(code int) string {
	c.T.Helper()
	got, msg := c.Reply()
	if got != code {
		c.T.Fatalf("got %d %q, want %d", got, msg, code)
	}
	return msg
}

// Send writes a line.
func (c *Client) Send(line string) {
	c.T.Helper()
	if _, err := fmt.Fprintf(c.Conn, "%s\r\n", line); err != nil {
		c.T.Fatalf("send %q: %v", line, err)
	}
}

// Cmd sends a command and wants the code; it returns the text.
func (c *Client) Cmd(line string, code int) string {
	c.T.Helper()
	c.Send(line)
	got, msg := c.Reply()
	if got != code {
		c.T.Fatalf("%s: got %d %q, want %d", line, got, msg, code)
	}
	return msg
}

// Data sends DATA, the message (dot-stuffed here) and the final dot, and
// returns the reply to the dot.
func (c *Client) Data(msg []byte) (int, string) {
	c.T.Helper()
	c.Cmd("DATA", 354)
	if _, err := c.Conn.Write(DotStuff(msg)); err != nil {
		c.T.Fatal(err)
	}
	return c.Reply()
}

// DataExpect is Data wanting the code.
func (c *Client) DataExpect(msg []byte, code int) string {
	c.T.Helper()
	got, text := c.Data(msg)
	if got != code {
		c.T.Fatalf("end of data: got %d %q, want %d", got, text, code)
	}
	return text
}

// SendMail runs one transaction; helo "" skips the EHLO.
func (c *Client) SendMail(helo, from string, to []string, msg []byte) string {
	c.T.Helper()
	if helo != "" {
		c.Cmd("EHLO "+helo, 250)
	}
	c.Cmd("MAIL FROM:<"+from+">", 250)
	for _, r := range to {
		c.Cmd("RCPT TO:<"+r+">", 250)
	}
	return c.DataExpect(msg, 250)
}

// Closed reports whether the server hung up (a read sees EOF soon).
func (c *Client) Closed() bool {
	c.Conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := c.R.ReadByte()
	ne, timeout := err.(net.Error)
	return err != nil && !(timeout && ne.Timeout())
}

// DotStuff encodes a message (CRLF line ends) for DATA: a leading dot is
// doubled, a missing final CRLF added, and the final dot line appended.
func DotStuff(msg []byte) []byte {
	var b bytes.Buffer
	for _, l := range bytes.SplitAfter(msg, []byte("\r\n")) {
		if len(l) > 0 && l[0] == '.' {
			b.WriteByte('.')
		}
		b.Write(l)
	}
	if len(msg) > 0 && !bytes.HasSuffix(msg, []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// SyncBuffer is a bytes.Buffer safe for a writer and a reader in different
// goroutines (a logger and a test).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
