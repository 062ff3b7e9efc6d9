package mailsink

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

// benchBody is a 1 KiB message, already on the wire: CRLF lines, one of
// them dot-stuffed, followed by the terminator.
var benchBody = func() []byte {
	var b bytes.Buffer
	b.WriteString("From: a@example.com\r\nTo: b@example.com\r\nSubject: benchmark\r\n\r\n")
	b.WriteString("..a dot-stuffed line\r\n")
	for b.Len() < 1024-2 {
		n := min(76, 1024-2-b.Len())
		b.WriteString(strings.Repeat("x", n))
		b.WriteString("\r\n")
	}
	b.Truncate(1024)
	return append(b.Bytes(), ".\r\n"...)
}()

// benchClient is a raw SMTP client that does not allocate once connected,
// so that in the session benchmarks allocs/op are the server's.
type benchClient struct {
	b  *testing.B
	nc net.Conn
	r  *bufio.Reader
}

func benchDial(b *testing.B, addr string) *benchClient {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	return &benchClient{b: b, nc: nc, r: bufio.NewReader(nc)}
}

func (c *benchClient) write(p []byte) {
	if _, err := c.nc.Write(p); err != nil {
		c.b.Fatal(err)
	}
}

// expect reads one reply and checks its code.
func (c *benchClient) expect(code string) {
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			c.b.Fatal(err)
		}
		if len(line) < 4 || string(line[:3]) != code {
			c.b.Fatalf("reply %q, want %s", line, code)
		}
		if line[3] != '-' {
			return
		}
	}
}

var (
	benchEHLO = []byte("EHLO bench.example\r\n")
	benchMail = []byte("MAIL FROM:<sender@example.com> SIZE=1024\r\n")
	benchRcpt = []byte("RCPT TO:<rcpt@example.com>\r\n")
	benchData = []byte("DATA\r\n")
	benchQuit = []byte("QUIT\r\n")
	benchTx   = []byte("MAIL FROM:<sender@example.com> SIZE=1024\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n")
)

// BenchmarkSink measures the server receiving 1 KiB messages: on one
// connection with commands in lockstep (as mxguard relays), on one
// connection with PIPELINING, and with one message per connection.
func BenchmarkSink(b *testing.B) {
	b.Run("session-lockstep", func(b *testing.B) { benchSession(b, false) })
	b.Run("session-pipelined", func(b *testing.B) { benchSession(b, true) })
	b.Run("conn-per-message", benchConnPerMessage)
}

func benchServer(b *testing.B) *Server {
	// The benchmarks call Reset every 1024 messages so that memory does not
	// grow with b.N.
	return startT(b, &Server{ReadTimeout: 10 * time.Second})
}

func benchSession(b *testing.B, pipelined bool) {
	s := benchServer(b)
	c := benchDial(b, s.Addr())
	defer c.nc.Close()
	c.expect("220")
	c.write(benchEHLO)
	c.expect("250")
	b.ReportAllocs()
	b.SetBytes(1024)
	b.ResetTimer()
	for i := range b.N {
		if pipelined {
			c.write(benchTx)
			c.expect("250")
			c.expect("250")
			c.expect("354")
		} else {
			c.write(benchMail)
			c.expect("250")
			c.write(benchRcpt)
			c.expect("250")
			c.write(benchData)
			c.expect("354")
		}
		c.write(benchBody)
		c.expect("250")
		if i%1024 == 1023 {
			s.Reset()
		}
	}
	b.StopTimer()
	c.write(benchQuit)
	c.expect("221")
	if msgs := s.Messages(); len(msgs) > 0 && len(msgs[len(msgs)-1].Data) != 1024-1 {
		b.Fatalf("stored %d bytes, want 1023 (1024 on the wire, one stuffed dot)", len(msgs[len(msgs)-1].Data))
	}
}

func benchConnPerMessage(b *testing.B) {
	s := benchServer(b)
	b.ReportAllocs()
	b.SetBytes(1024)
	b.ResetTimer()
	for i := range b.N {
		c := benchDial(b, s.Addr())
		c.expect("220")
		c.write(benchEHLO)
		c.expect("250")
		c.write(benchTx)
		c.expect("250")
		c.expect("250")
		c.expect("354")
		c.write(benchBody)
		c.expect("250")
		c.write(benchQuit)
		c.expect("221")
		c.nc.Close()
		if i%1024 == 1023 {
			s.Reset()
		}
	}
}
