package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func ptr[T any](v T) *T { return &v }

func TestMailParams(t *testing.T) {
	all := fakeEHLO + "\n250 AUTH PLAIN"
	all = strings.Replace(all, "250 ENHANCEDSTATUSCODES", "250-ENHANCEDSTATUSCODES", 1)
	bare := "250-fake.test\n250 PIPELINING"
	full := MailParams{Size: 1234, Body: "8bitmime", SMTPUTF8: true, Ret: "hdrs", EnvID: "id+1 x", Auth: ptr("e=mc2@example.org")}
	for _, tt := range []struct {
		name string
		ehlo string
		p    MailParams
		want string
	}{
		{"all advertised", all, full, "MAIL FROM:<a@example.org> SIZE=1234 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1+20x AUTH=e+3Dmc2@example.org"},
		{"none advertised", bare, MailParams{Size: 1234, Body: "7BIT", Ret: "FULL", EnvID: "x", Auth: ptr("")}, "MAIL FROM:<a@example.org>"},
		{"AUTH=<>", all, MailParams{Auth: ptr("")}, "MAIL FROM:<a@example.org> AUTH=<>"},
		{"no params", all, MailParams{}, "MAIL FROM:<a@example.org>"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, fakeConfig{Replies: map[string][]string{"EHLO": {tt.ehlo}}})
			c := mustDial(t, f, MethodNone, testID)
			r, err := c.Mail("a@example.org", tt.p)
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "reply", r.String(), "250 2.1.0 Ok")
			equal(t, "MAIL", f.session(t, 0).commands()[1], tt.want)
		})
	}
}

func TestRcptParams(t *testing.T) {
	for _, tt := range []struct {
		name string
		ehlo string
		p    RcptParams
		want string
	}{
		{"dsn", fakeEHLO, RcptParams{Notify: []string{"success", "FAILURE"}, ORcpt: "rfc822;b+x=y@example.org"},
			"RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx+3Dy@example.org"},
		{"utf-8 orcpt", fakeEHLO, RcptParams{Notify: []string{"NEVER"}, ORcpt: "utf-8;j\u00f6rg\\@\u4f8b.example\t"},
			`RCPT TO:<b@example.org> NOTIFY=NEVER ORCPT=utf-8;j\x{F6}rg\x{5C}@\x{4F8B}.example\x{09}`},
		{"unknown orcpt type dropped", fakeEHLO, RcptParams{ORcpt: "x400;whatever"}, "RCPT TO:<b@example.org>"},
		{"no dsn", "250 fake.test", RcptParams{Notify: []string{"NEVER"}, ORcpt: "rfc822;b@example.org"}, "RCPT TO:<b@example.org>"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, fakeConfig{Replies: map[string][]string{"EHLO": {tt.ehlo}}})
			c := mustDial(t, f, MethodNone, testID)
			if _, err := c.Rcpt("b@example.org", tt.p); err != nil {
				t.Fatal(err)
			}
			equal(t, "RCPT", f.session(t, 0).commands()[1], tt.want)
		})
	}
}

// TestLocalRefusals: arguments refused before anything is sent, as a local
// reply the caller can pass on; the connection stays usable.
func TestLocalRefusals(t *testing.T) {
	noUTF8 := strings.Replace(fakeEHLO, "250-SMTPUTF8\n", "", 1)
	for _, tt := range []struct {
		name  string
		ehlo  string
		call  func(c *Conn) (*Reply, error)
		stage string
		want  string
	}{
		{"CRLF in MAIL", fakeEHLO, func(c *Conn) (*Reply, error) { return c.Mail("a@b\r\nRCPT TO:<evil@x>", MailParams{}) },
			StageMail, "501 5.5.4 sender address contains CR, LF or NUL"},
		{"LF in RCPT", fakeEHLO, func(c *Conn) (*Reply, error) { return c.Rcpt("a@b\nDATA", RcptParams{}) },
			StageRcpt, "501 5.5.4 recipient address contains CR, LF or NUL"},
		{"NUL in MAIL", fakeEHLO, func(c *Conn) (*Reply, error) { return c.Mail("a\x00@b", MailParams{}) },
			StageMail, "501 5.5.4 sender address contains CR, LF or NUL"},
		{"bad BODY", fakeEHLO, func(c *Conn) (*Reply, error) { return c.Mail("a@b", MailParams{Body: "BINARYMIME"}) },
			StageMail, "501 5.5.4 BODY must be 7BIT or 8BITMIME"},
		{"bad RET", fakeEHLO, func(c *Conn) (*Reply, error) { return c.Mail("a@b", MailParams{Ret: "ALL"}) },
			StageMail, "501 5.5.4 RET must be FULL or HDRS"},
		{"bad NOTIFY", fakeEHLO, func(c *Conn) (*Reply, error) {
			return c.Rcpt("a@b", RcptParams{Notify: []string{"NEVER", "DELAY"}})
		}, StageRcpt, "501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"},
		{"SMTPUTF8 toward a backend without it", noUTF8, func(c *Conn) (*Reply, error) {
			return c.Mail("j\u00f6rg@example.org", MailParams{SMTPUTF8: true})
		}, StageMail, "553 5.6.7 SMTPUTF8 is not supported by the mail server behind this one"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, fakeConfig{Replies: map[string][]string{"EHLO": {tt.ehlo}}})
			c := mustDial(t, f, MethodNone, testID)
			r, err := tt.call(c)
			var re *ReplyError
			if !errors.As(err, &re) || re.Reply != r || !r.Local || re.Stage != tt.stage {
				t.Fatalf("got %v, %v; want a local ReplyError at %s", r, err, tt.stage)
			}
			equal(t, "reply", r.String(), tt.want)
			if _, err := c.Noop(); err != nil {
				t.Fatalf("Noop after a local refusal: %v", err)
			}
			equal(t, "commands", f.session(t, 0).commands(), []string{"EHLO mail.example.org", "NOOP"})
		})
	}
	t.Run("CRLF in HELO", func(t *testing.T) {
		f := newFake(t, fakeConfig{})
		id := testID
		id.Helo = "x\r\nMAIL FROM:<evil@x>"
		_, err := dial(t, f, MethodXCLIENT, id)
		var re *ReplyError
		if !errors.As(err, &re) || !re.Reply.Local || re.Stage != StageEHLO || re.Reply.Code != 501 {
			t.Fatalf("err = %v, want a local 501 at ehlo", err)
		}
	})
}

// TestBackendReplies: the backend's refusals come back whole, and the
// connection stays usable (except after 421).
func TestBackendReplies(t *testing.T) {
	for _, tt := range []struct {
		name     string
		verb     string
		reply    string
		call     func(c *Conn) (*Reply, error)
		stage    string
		code     int
		enhanced string
		lines    []string
		usable   bool
	}{
		{"multi-line 550 on RCPT", "RCPT",
			"550-5.1.1 <x@example.org>: Recipient address rejected:\n550 5.1.1 User unknown in virtual mailbox table",
			func(c *Conn) (*Reply, error) { return c.Rcpt("x@example.org", RcptParams{}) },
			StageRcpt, 550, "5.1.1", []string{"<x@example.org>: Recipient address rejected:", "User unknown in virtual mailbox table"}, true},
		{"451 on MAIL", "MAIL", "451 4.3.0 Error: queue file write error",
			func(c *Conn) (*Reply, error) { return c.Mail("a@example.org", MailParams{}) },
			StageMail, 451, "4.3.0", []string{"Error: queue file write error"}, true},
		{"no enhanced code", "MAIL", "550 Sender rejected",
			func(c *Conn) (*Reply, error) { return c.Mail("a@example.org", MailParams{}) },
			StageMail, 550, "", []string{"Sender rejected"}, true},
		{"enhanced code on first line only", "RCPT", "550-5.7.1 Blocked\n550 see https://example.org/5.7.1",
			func(c *Conn) (*Reply, error) { return c.Rcpt("x@example.org", RcptParams{}) },
			StageRcpt, 550, "5.7.1", []string{"Blocked", "see https://example.org/5.7.1"}, true},
		{"bare code", "RSET", "554",
			func(c *Conn) (*Reply, error) { return c.Reset() },
			StageRset, 554, "", []string{""}, true},
		{"421 ends the session", "MAIL", "421 4.4.2 fake.test Error: timeout exceeded",
			func(c *Conn) (*Reply, error) { return c.Mail("a@example.org", MailParams{}) },
			StageMail, 421, "4.4.2", []string{"fake.test Error: timeout exceeded"}, false},
		{"DATA refused", "DATA", "554 5.5.1 Error: no valid recipients",
			func(c *Conn) (*Reply, error) { return c.Data(context.Background(), strings.NewReader("x")) },
			StageData, 554, "5.5.1", []string{"Error: no valid recipients"}, true},
		{"message refused", ".", "550 5.7.1 Message content rejected",
			func(c *Conn) (*Reply, error) { return c.Data(context.Background(), strings.NewReader("x")) },
			StageDataEnd, 550, "5.7.1", []string{"Message content rejected"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, fakeConfig{Replies: map[string][]string{tt.verb: {tt.reply}}})
			c := mustDial(t, f, MethodNone, testID)
			r, err := tt.call(c)
			var re *ReplyError
			if !errors.As(err, &re) || re.Reply != r || re.Stage != tt.stage || r.Local {
				t.Fatalf("got %v, %v; want the backend's ReplyError at %s", r, err, tt.stage)
			}
			equal(t, "code", r.Code, tt.code)
			equal(t, "enhanced", r.Enhanced, tt.enhanced)
			equal(t, "lines", r.Lines, tt.lines)
			equal(t, "String", r.String(), tt.reply)
			equal(t, "Temporary", r.Temporary(), tt.code/100 == 4)
			equal(t, "Permanent", r.Permanent(), tt.code/100 == 5)
			_, err = c.Noop()
			if tt.usable && err != nil {
				t.Errorf("Noop after the refusal: %v", err)
			}
			if !tt.usable && !errors.Is(err, ErrUnusable) {
				t.Errorf("Noop after 421: %v, want ErrUnusable", err)
			}
		})
	}
}

func TestMalformedReplies(t *testing.T) {
	long := strings.Repeat("250-x\n", maxReplyLines) + "250 ok"
	huge := "250-" + strings.Repeat("x", maxReplyBytes) + "\n250 ok"
	for name, reply := range map[string]string{
		"not a code":         "hello",
		"code 199":           "199 ok",
		"code changes":       "250-ok\n251 ok",
		"bad separator":      "250+ok",
		"too many lines":     long,
		"too many bytes":     huge,
		"positive, but 354?": "354 go ahead",
	} {
		t.Run(name, func(t *testing.T) {
			f := newFake(t, fakeConfig{Replies: map[string][]string{"NOOP": {reply}}})
			c := mustDial(t, f, MethodNone, testID)
			if _, err := c.Noop(); !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol", err)
			}
			if _, err := c.Noop(); !errors.Is(err, ErrUnusable) {
				t.Fatalf("second call: %v, want ErrUnusable", err)
			}
		})
	}
	t.Run("DATA answered 250, not 354", func(t *testing.T) {
		f := newFake(t, fakeConfig{Replies: map[string][]string{"DATA": {"250 2.0.0 Ok"}}})
		c := mustDial(t, f, MethodNone, testID)
		if r, err := c.Data(context.Background(), strings.NewReader("x")); !errors.Is(err, ErrProtocol) || r != nil {
			t.Fatalf("got %v, %v; want ErrProtocol and no reply", r, err)
		}
	})
	t.Run("100 lines are fine", func(t *testing.T) {
		reply := strings.Repeat("250-x\n", maxReplyLines-1) + "250 ok"
		f := newFake(t, fakeConfig{Replies: map[string][]string{"NOOP": {reply}}})
		c := mustDial(t, f, MethodNone, testID)
		r, err := c.Noop()
		if err != nil || len(r.Lines) != maxReplyLines {
			t.Fatalf("got %d lines, %v", len(r.Lines), err)
		}
	})
}

// normalize is the reference for what the backend must receive: every line
// ending (CRLF, bare LF, bare CR) as CRLF, the last line ended.
func normalize(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return strings.ReplaceAll(s, "\n", "\r\n")
}

// checkWire checks a DATA section as received: no bare CR or LF anywhere, and
// no line "." but the last. Then no reading of line ends, strict or lenient,
// can end the data early (SMTP smuggling).
func checkWire(t *testing.T, raw []byte) {
	t.Helper()
	for i, ch := range raw {
		if ch == '\r' && (i+1 == len(raw) || raw[i+1] != '\n') {
			t.Fatalf("bare CR at %d on the wire: %q", i, raw[max(0, i-10):min(len(raw), i+10)])
		}
		if ch == '\n' && (i == 0 || raw[i-1] != '\r') {
			t.Fatalf("bare LF at %d on the wire: %q", i, raw[max(0, i-10):min(len(raw), i+10)])
		}
	}
	if !bytes.HasSuffix(raw, []byte(".\r\n")) || !(len(raw) == 3 || bytes.HasSuffix(raw, []byte("\r\n.\r\n"))) {
		t.Fatalf("data does not end with the final dot: %q", raw[max(0, len(raw)-20):])
	}
	if i := bytes.Index(append([]byte("\r\n"), raw...), []byte("\r\n.\r\n")); i != len(raw)-3 {
		t.Fatalf("a line \".\" at %d before the end", i)
	}
}

func TestData(t *testing.T) {
	eight := string([]byte{'S', 'u', 'b', ':', ' ', 0xe9, 0xff, 0x80, '\r', '\n', '\r', '\n', 0x00, 0x01, 'x'})
	long := strings.Repeat("0123456789", 10000) // a 100 000-byte line
	for _, tt := range []struct {
		name, body string
		want       string // what the backend gets after un-stuffing; "" = normalize(body)
	}{
		{"plain", "Subject: hi\r\n\r\nhello\r\n", "Subject: hi\r\n\r\nhello\r\n"},
		{"no final line end", "Subject: hi\r\n\r\nhello", "Subject: hi\r\n\r\nhello\r\n"},
		{"empty", "", ""},
		{"dots", ".\r\n..\r\n.x\r\nx.\r\n. \r\n", ".\r\n..\r\n.x\r\nx.\r\n. \r\n"},
		{"dot first and last", ".", ".\r\n"},
		{"bare LF", "a\nb\n\nc", "a\r\nb\r\n\r\nc\r\n"},
		{"bare CR", "a\rb\r\rc\r", "a\r\nb\r\n\r\nc\r\n"},
		{"CR CR LF", "a\r\r\nb", "a\r\n\r\nb\r\n"},
		{"LF CR", "a\n\rb", "a\r\n\r\nb\r\n"},
		{"smuggling LF.LF", "Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\n\r\nevil\r\n.\r\n", ""},
		{"smuggling CR.CR", "hi\r.\rMAIL FROM:<evil@x>\r\n", ""},
		{"smuggling LF.CRLF", "hi\n.\r\nQUIT\r\n", ""},
		{"smuggling CRLF.LF", "hi\r\n.\nQUIT\r\n", ""},
		{"smuggling CR.CRLF", "hi\r.\r\nQUIT\r\n", ""},
		{"8-bit and NUL", eight, eight + "\r\n"},
		{"long line", long, long + "\r\n"},
		{"mixed", ".a\n.b\r.c\r\n\n.\r", ""},
	} {
		for _, rd := range []struct {
			name string
			wrap func(io.Reader) io.Reader
		}{
			{"whole", func(r io.Reader) io.Reader { return r }},
			{"byte by byte", iotest.OneByteReader},
			{"half", iotest.HalfReader},
		} {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				want := tt.want
				if want == "" {
					want = normalize(tt.body)
				}
				f := newFake(t, fakeConfig{})
				c := mustDial(t, f, MethodNone, testID)
				r, err := c.Data(context.Background(), rd.wrap(strings.NewReader(tt.body)))
				if err != nil {
					t.Fatal(err)
				}
				equal(t, "reply", r.String(), "250 2.0.0 Ok: queued as 4ABC")
				cmds, raw, msgs, _ := f.session(t, 0).snapshot()
				equal(t, "commands", cmds, []string{"EHLO mail.example.org", "DATA"})
				if len(raw) != 1 || len(msgs) != 1 {
					t.Fatalf("the backend got %d messages, %d data sections", len(msgs), len(raw))
				}
				checkWire(t, raw[0])
				if string(msgs[0]) != want {
					t.Errorf("message at the backend:\n got %q\nwant %q", trunc(msgs[0]), trunc([]byte(want)))
				}
				// The next command is read as a command, not as data.
				if _, err := c.Noop(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func trunc(b []byte) string {
	if len(b) > 200 {
		return fmt.Sprintf("%s…(%d bytes)", b[:200], len(b))
	}
	return string(b)
}

// TestTransaction runs a whole lockstep transaction and a second one.
func TestTransaction(t *testing.T) {
	f := newFake(t, fakeConfig{Replies: map[string][]string{"RCPT": {"250 2.1.5 Ok", "550 5.1.1 nope"}}})
	c := mustDial(t, f, MethodXCLIENT, testID)
	if _, err := c.Mail("a@example.org", MailParams{Size: 42, Body: "8BITMIME"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Rcpt("b@example.org", RcptParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Rcpt("c@example.org", RcptParams{}); err == nil {
		t.Fatal("second RCPT: no refusal")
	}
	if _, err := c.Data(context.Background(), strings.NewReader("Subject: x\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	s := f.session(t, 0)
	s.wait(t)
	equal(t, "commands", s.commands(), []string{
		"EHLO mx.test",
		"XCLIENT HELO=mail.example.org PROTO=ESMTP DESTADDR=198.51.100.25 DESTPORT=25 PORT=4711 NAME=mail.example.org ADDR=192.0.2.1",
		"EHLO mail.example.org",
		"MAIL FROM:<a@example.org> SIZE=42 BODY=8BITMIME",
		"RCPT TO:<b@example.org>",
		"RCPT TO:<c@example.org>",
		"DATA",
		"RSET",
		"QUIT",
	})
	if _, err := c.Noop(); !errors.Is(err, ErrUnusable) {
		t.Errorf("Noop after Quit: %v, want ErrUnusable", err)
	}
	if err := c.Quit(); !errors.Is(err, ErrUnusable) {
		t.Errorf("second Quit: %v, want ErrUnusable", err)
	}
}

func TestDataBackendCloses(t *testing.T) {
	f := newFake(t, fakeConfig{DataCloseAfter: 1000})
	c := mustDial(t, f, MethodNone, testID)
	body := strings.Repeat("a line of a long message\r\n", 200000) // 5 MB, more than socket buffers
	r, err := c.Data(context.Background(), strings.NewReader(body))
	var re *ReplyError
	if err == nil || errors.As(err, &re) || r != nil {
		t.Fatalf("got %v, %v; want an I/O error", r, err)
	}
	if _, err := c.Noop(); !errors.Is(err, ErrUnusable) {
		t.Errorf("Noop after: %v, want ErrUnusable", err)
	}
}

// TestDataClientFails: when the message source fails midway (the client went
// away), the backend never gets the final dot, so it delivers nothing.
func TestDataClientFails(t *testing.T) {
	f := newFake(t, fakeConfig{})
	c := mustDial(t, f, MethodNone, testID)
	cause := errors.New("client vanished")
	msg := io.MultiReader(strings.NewReader("Subject: half\r\n\r\nfirst half\r\n"), iotest.ErrReader(cause))
	if _, err := c.Data(context.Background(), msg); !errors.Is(err, cause) {
		t.Fatalf("err = %v, want the reader's", err)
	}
	s := f.session(t, 0)
	s.wait(t)
	_, raw, msgs, _ := s.snapshot()
	if len(msgs) != 0 {
		t.Errorf("the backend got a message: %q", msgs)
	}
	if len(raw) != 1 || bytes.HasSuffix(raw[0], []byte(".\r\n")) {
		t.Errorf("data as received: %q", raw)
	}
	if _, err := c.Noop(); !errors.Is(err, ErrUnusable) {
		t.Errorf("Noop after: %v, want ErrUnusable", err)
	}
}

// slowReader yields a KiB of message every 10ms, forever.
type slowReader struct{}

func (slowReader) Read(p []byte) (int, error) {
	time.Sleep(10 * time.Millisecond)
	return copy(p, bytes.Repeat([]byte("slow line of a slow client\r\n"), 40)), nil
}

// infiniteReader yields message lines as fast as they are read, forever.
type infiniteReader struct{}

func (infiniteReader) Read(p []byte) (int, error) {
	const line = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"
	n := 0
	for n+len(line) <= len(p) {
		n += copy(p[n:], line)
	}
	return n, nil
}

func TestDataContextCancelled(t *testing.T) {
	f := newFake(t, fakeConfig{})
	c := mustDial(t, f, MethodNone, testID)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Data(ctx, slowReader{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Data returned %v after a 100ms context", el)
	}
	if _, err := c.Noop(); !errors.Is(err, ErrUnusable) {
		t.Errorf("Noop after: %v, want ErrUnusable", err)
	}
	s := f.session(t, 0)
	s.wait(t)
	if _, _, msgs, _ := s.snapshot(); len(msgs) != 0 {
		t.Errorf("the backend got a message from an aborted DATA")
	}
}

// TestDataWriteIdle: a backend that stops reading in the middle of the
// message is given up on after CommandTimeout without progress, while a slow
// but moving transfer may take longer than that.
func TestDataWriteIdle(t *testing.T) {
	const d = 150 * time.Millisecond
	f := newFake(t, fakeConfig{DataStall: true})
	c, err := Dial(context.Background(), Options{Addr: f.addr(), CommandTimeout: d, DataTimeout: time.Hour}, testID)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Data(context.Background(), infiniteReader{})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("gave up after %v", el)
	}

	// A transfer that keeps moving outlives CommandTimeout.
	f = newFake(t, fakeConfig{})
	c, err = Dial(context.Background(), Options{Addr: f.addr(), CommandTimeout: d, DataTimeout: d}, testID)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Data(context.Background(), io.LimitReader(slowReader{}, 40<<10)); err != nil {
		t.Fatalf("slow but steady DATA (~%v): %v", 40*10*time.Millisecond, err)
	}
}

// TestTimeouts: a backend that stops answering is given up on after the
// configured time, with an error that says timeout.
func TestTimeouts(t *testing.T) {
	const d = 150 * time.Millisecond
	for _, tt := range []struct {
		verb string
		call func(c *Conn) error
	}{
		{"MAIL", func(c *Conn) error { _, err := c.Mail("a@example.org", MailParams{}); return err }},
		{"RCPT", func(c *Conn) error { _, err := c.Rcpt("a@example.org", RcptParams{}); return err }},
		{"DATA", func(c *Conn) error { _, err := c.Data(context.Background(), strings.NewReader("x")); return err }},
		{".", func(c *Conn) error { _, err := c.Data(context.Background(), strings.NewReader("x")); return err }},
		{"QUIT", func(c *Conn) error { return c.Quit() }},
	} {
		t.Run(tt.verb, func(t *testing.T) {
			f := newFake(t, fakeConfig{Replies: map[string][]string{tt.verb: {actStall}}})
			c, err := Dial(context.Background(), Options{Addr: f.addr(), CommandTimeout: d, DataTimeout: d}, testID)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			err = tt.call(c)
			el := time.Since(start)
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("err = %v, want a timeout", err)
			}
			if el < d || el > d+2*time.Second {
				t.Errorf("gave up after %v, timeout %v", el, d)
			}
			start = time.Now()
			if _, err := c.Noop(); !errors.Is(err, ErrUnusable) || time.Since(start) > 50*time.Millisecond {
				t.Errorf("Noop after a timeout: %v after %v, want ErrUnusable at once", err, time.Since(start))
			}
		})
	}
}

func TestCloseAborts(t *testing.T) {
	f := newFake(t, fakeConfig{Replies: map[string][]string{"MAIL": {actStall}}})
	c := mustDial(t, f, MethodNone, testID)
	time.AfterFunc(50*time.Millisecond, func() { c.Close() })
	start := time.Now()
	if _, err := c.Mail("a@example.org", MailParams{}); err == nil {
		t.Fatal("Mail on a closed conn: no error")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Close took %v to abort Mail", el)
	}
}

func TestReplyString(t *testing.T) {
	r := &Reply{Code: 550, Enhanced: "5.1.1", Lines: []string{"a", "b"}}
	equal(t, "String", r.String(), "550-5.1.1 a\n550 5.1.1 b")
	r = &Reply{Code: 250, Lines: []string{"ok"}}
	equal(t, "String", r.String(), "250 ok")
	equal(t, "Positive", r.Positive(), true)
	e := (&ReplyError{Reply: &Reply{Code: 550, Enhanced: "5.1.1", Lines: []string{"a", "b"}}, Stage: StageRcpt}).Error()
	equal(t, "Error", e, "backend: rcpt refused: 550-5.1.1 a | 550 5.1.1 b")
	_, err := (&Conn{}).refuse(StageMail, "bad")
	equal(t, "Error", err.Error(), "backend: mail refused locally: 501 5.5.4 bad")
}
