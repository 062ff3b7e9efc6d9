package backend

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// Replies with a special meaning in a fake script.
const (
	actClose = "<close>" // close the connection instead of replying
	actStall = "<stall>" // never reply; wait until the client goes away
)

const fakeEHLO = "250-fake.test\n250-PIPELINING\n250-SIZE 10240000\n250-8BITMIME\n250-DSN\n250-SMTPUTF8\n" +
	"250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT\n250 ENHANCEDSTATUSCODES"

var fakeDefaults = map[string]string{
	"":        "220 fake.test ESMTP", // the greeting
	"EHLO":    fakeEHLO,
	"HELO":    "250 fake.test",
	"XCLIENT": "220 fake.test ESMTP",
	"MAIL":    "250 2.1.0 Ok",
	"RCPT":    "250 2.1.5 Ok",
	"DATA":    "354 End data with <CR><LF>.<CR><LF>",
	".":       "250 2.0.0 Ok: queued as 4ABC", // after the final dot
	"RSET":    "250 2.0.0 Ok",
	"NOOP":    "250 2.0.0 Ok",
	"QUIT":    "221 2.0.0 Bye",
	"?":       "502 5.5.2 Error: command not recognized", // any other verb
}

// fakeConfig scripts a fake backend.
type fakeConfig struct {
	// Replies maps a verb ("EHLO", "MAIL", ...; "" = greeting, "." = after
	// the final dot) to its replies, used in turn, the last one repeating.
	// A reply's lines are separated by "\n". Unset verbs get fakeDefaults.
	Replies map[string][]string
	// Proxy makes the fake read a PROXY header before its greeting.
	Proxy bool
	// DataCloseAfter > 0: close the connection after that many data bytes.
	DataCloseAfter int
	// DataStall: after the 354, stop reading (the client's writes block).
	DataStall bool
	// NoRecord turns off recording (benchmarks).
	NoRecord bool
}

// fakeServer is a scriptable SMTP server on 127.0.0.1 recording what it gets.
type fakeServer struct {
	cfg     fakeConfig
	replies map[string][][]byte // verb → wire replies (CRLF)
	ln      net.Listener
	wg      sync.WaitGroup
	quit    chan struct{} // closed by stop

	mu       sync.Mutex
	conns    []net.Conn
	sessions []*fakeSession
}

// fakeSession is what one connection received.
type fakeSession struct {
	mu     sync.Mutex
	header *proxyproto.Header
	lines  []string // command lines, without CRLF
	raw    [][]byte // each DATA section's bytes as received, final ".\r\n" included
	msgs   [][]byte // each complete message, un-stuffed
	done   chan struct{}
}

func newFake(t testing.TB, cfg fakeConfig) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{cfg: cfg, ln: ln, replies: map[string][][]byte{}, quit: make(chan struct{})}
	for verb, def := range fakeDefaults {
		script := cfg.Replies[verb]
		if len(script) == 0 {
			script = []string{def}
		}
		for _, r := range script {
			if r != actClose && r != actStall {
				r = strings.ReplaceAll(r, "\n", "\r\n") + "\r\n"
			}
			f.replies[verb] = append(f.replies[verb], []byte(r))
		}
	}
	for verb := range cfg.Replies {
		if _, ok := f.replies[verb]; !ok {
			t.Fatalf("fake: no such verb %q", verb)
		}
	}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(f.stop)
	return f
}

func (f *fakeServer) addr() string { return f.ln.Addr().String() }

func (f *fakeServer) stop() {
	close(f.quit)
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *fakeServer) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		s := &fakeSession{done: make(chan struct{})}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.sessions = append(f.sessions, s)
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer close(s.done)
			defer c.Close()
			f.handle(c, s)
		}()
	}
}

// session returns the n-th session (0-based), waiting a little for it.
func (f *fakeServer) session(t testing.TB, n int) *fakeSession {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		f.mu.Lock()
		if n < len(f.sessions) {
			s := f.sessions[n]
			f.mu.Unlock()
			return s
		}
		f.mu.Unlock()
	}
	t.Fatalf("fake: no session %d", n)
	return nil
}

// wait waits for the session's connection to end.
func (s *fakeSession) wait(t testing.TB) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("fake: session did not end")
	}
}

func (s *fakeSession) snapshot() (lines []string, raw, msgs [][]byte, h *proxyproto.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...), append([][]byte(nil), s.raw...), append([][]byte(nil), s.msgs...), s.header
}

func (s *fakeSession) commands() []string { l, _, _, _ := s.snapshot(); return l }

func (f *fakeServer) handle(c net.Conn, s *fakeSession) {
	br := bufio.NewReader(c)
	if f.cfg.Proxy {
		h, err := proxyproto.Read(br)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.header = h
		s.mu.Unlock()
	}
	counts := map[string]int{}
	// send sends verb's next reply and returns it, nil if the connection
	// is to end.
	send := func(verb string) []byte {
		script := f.replies[verb]
		i := counts[verb]
		if i < len(script)-1 {
			counts[verb] = i + 1
		}
		switch r := script[i]; string(r) {
		case actClose:
			return nil
		case actStall:
			io.Copy(io.Discard, c)
			return nil
		default:
			if _, err := c.Write(r); err != nil {
				return nil
			}
			return r
		}
	}
	if send("") == nil {
		return
	}
	var line []byte
	var vbuf [16]byte
	for {
		var err error
		if line, err = readLine(br, line[:0]); err != nil {
			return
		}
		cmd := bytes.TrimRight(line, "\r\n")
		if !f.cfg.NoRecord {
			s.mu.Lock()
			s.lines = append(s.lines, string(cmd))
			s.mu.Unlock()
		}
		v, _, _ := bytes.Cut(cmd, []byte(" "))
		verb := "?"
		if len(v) <= len(vbuf) {
			up := vbuf[:len(v)]
			for i, ch := range v {
				if 'a' <= ch && ch <= 'z' {
					ch -= 'a' - 'A'
				}
				up[i] = ch
			}
			if k, ok := verbs[string(up)]; ok {
				verb = k
			}
		}
		r := send(verb)
		switch {
		case r == nil || verb == "QUIT":
			return
		case verb == "DATA" && bytes.HasPrefix(r, []byte("354")) && f.cfg.DataStall:
			<-f.quit
			return
		case verb == "DATA" && bytes.HasPrefix(r, []byte("354")):
			if line, err = f.readData(br, s, line); err != nil || send(".") == nil {
				return
			}
		}
	}
}

var verbs = map[string]string{}

func init() {
	for v := range fakeDefaults {
		if v != "" && v != "." && v != "?" {
			verbs[v] = v
		}
	}
}

// readData reads a DATA section up to the line ".\r\n"; only a CRLF ends a
// line (the strict reading; tests check the wire holds no bare CR or LF, so
// that a lenient server would read it the same way). line is scratch space.
func (f *fakeServer) readData(br *bufio.Reader, s *fakeSession, line []byte) ([]byte, error) {
	var raw []byte
	msg := []byte{}
	total := 0
	for {
		var err error
		if line, err = readLine(br, line[:0]); err != nil {
			f.keep(s, raw, nil)
			return line, err
		}
		total += len(line)
		if f.cfg.DataCloseAfter > 0 && total > f.cfg.DataCloseAfter {
			return line, io.ErrClosedPipe
		}
		if f.cfg.NoRecord {
			if string(line) == ".\r\n" {
				return line, nil
			}
			continue
		}
		raw = append(raw, line...)
		if string(line) == ".\r\n" {
			f.keep(s, raw, msg)
			return line, nil
		}
		if line[0] == '.' {
			line = line[1:]
		}
		msg = append(msg, line...)
	}
}

func (f *fakeServer) keep(s *fakeSession, raw, msg []byte) {
	if f.cfg.NoRecord {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw = append(s.raw, raw)
	if msg != nil {
		s.msgs = append(s.msgs, msg)
	}
}

// readLine appends the next line, LF included, to buf.
func readLine(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		chunk, err := br.ReadSlice('\n')
		buf = append(buf, chunk...)
		if err != bufio.ErrBufferFull {
			return buf, err
		}
	}
}
