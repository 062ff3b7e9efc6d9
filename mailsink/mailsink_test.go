package mailsink

import (
	"encoding/json"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

func TestProtocolBasics(t *testing.T) {
	s := startT(t, nil)
	c := dial(t, s.Addr())
	if g := c.expect("220 "); g != "220 sink.test ESMTP mailsink" {
		t.Errorf("greeting %q", g)
	}
	ehlo := c.cmd("EHLO client.example", "250-sink.test")
	want := "250-sink.test\n250-PIPELINING\n250-SIZE\n250-8BITMIME\n250-ENHANCEDSTATUSCODES\n250-SMTPUTF8\n250 DSN"
	if ehlo != want {
		t.Errorf("EHLO reply\n%s\nwant\n%s", ehlo, want)
	}
	c.cmd("NOOP", "250 2.0.0 Ok")
	c.cmd("RCPT TO:<a@b>", "503 5.5.1 ")
	c.cmd("DATA", "503 5.5.1 ")
	c.cmd("FOO bar", "502 5.5.2 ")
	c.cmd("", "500 5.5.2 ")
	c.cmd("MAIL TO:<a@b>", "501 5.5.4 ")
	c.cmd("MAIL FROM:<a@b", "501 5.5.4 ")
	c.cmd("MAIL FROM:<a@b> FOO=1", "555 5.5.4 Unsupported option: FOO")
	c.cmd("MAIL FROM:<a@b> SIZE=x", "501 5.5.4 ")
	c.cmd("mail from: <> BODY=8BITMIME  SIZE=10 RET=HDRS", "250 2.1.0 Ok")
	c.cmd("MAIL FROM:<x@y>", "503 5.5.1 Error: nested MAIL")
	c.cmd("DATA", "503 5.5.1 Error: need RCPT")
	c.cmd("RCPT TO:<>", "501 5.1.3 ")
	c.cmd("RCPT TO:<r1@example.com> NOTIFY=NEVER", "250 2.1.5 Ok")
	c.cmd(`RCPT To:<"a b>c"@example.com>`, "250 2.1.5 Ok")
	c.cmd("RCPT TO:<r3@example.com> SIZE=1", "555 5.5.4 ")
	c.cmd("XCLIENT ADDR=1.2.3.4", "550 5.7.0 ")
	c.cmd("DATA now", "501 5.5.4 Syntax: DATA")
	c.cmd("DATA", "354 ")
	c.send("Subject: hi\r\n\r\nbody\r\n.\r\n")
	rep := c.expect("250 2.0.0 Ok: queued as ")
	c.cmd("RSET", "250 2.0.0 Ok")
	c.cmd("HELO other.example", "250 sink.test")
	c.cmd("QUIT", "221 2.0.0 ")
	c.expectEOF()

	msgs, err := s.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if rep != "250 2.0.0 Ok: queued as "+m.ID || len(m.ID) < 8 || len(m.ID) > 16 {
		t.Errorf("reply %q, ID %q", rep, m.ID)
	}
	if m.Helo != "client.example" || m.From != "" || m.MailParams != "BODY=8BITMIME  SIZE=10 RET=HDRS" {
		t.Errorf("envelope: %+v", m)
	}
	if !slices.Equal(m.To, []string{"r1@example.com", `"a b>c"@example.com`}) ||
		!slices.Equal(m.RcptParams, []string{"NOTIFY=NEVER", ""}) {
		t.Errorf("recipients %q %q", m.To, m.RcptParams)
	}
	if string(m.Data) != "Subject: hi\r\n\r\nbody\r\n" {
		t.Errorf("data %q", m.Data)
	}
	if m.XCLIENT != nil || m.ProxySource != nil || m.Received.IsZero() {
		t.Errorf("unexpected attributes %+v", m)
	}

	waitFor(t, "session end", func() bool { return !lastSession(t, s).Ended.IsZero() })
	si := lastSession(t, s)
	if si.ID != 1 || si.Messages != 1 || si.InTransaction || si.RemoteAddr.String() != c.nc.LocalAddr().String() {
		t.Errorf("session %+v", si)
	}
	if !slices.Equal(si.Helo, []string{"client.example", "other.example"}) {
		t.Errorf("Helo %q", si.Helo)
	}
	if si.Commands[0] != "EHLO client.example" || si.Commands[len(si.Commands)-1] != "QUIT" || len(si.Commands) != 23 {
		t.Errorf("Commands (%d) %q", len(si.Commands), si.Commands)
	}
	if si.Replies[0] != "220 sink.test ESMTP mailsink" || si.Replies[1] != want || len(si.Replies) != 25 {
		t.Errorf("Replies (%d) %q", len(si.Replies), si.Replies)
	}
}

func TestNetSMTPClient(t *testing.T) {
	s := startT(t, &Server{Hostname: "mx.test"})
	body := "From: a@example.com\r\nSubject: t\r\n\r\n.leading dot\r\nhello\r\n"
	if err := smtp.SendMail(s.Addr(), nil, "a@example.com", []string{"b@example.com", "c@example.com"}, []byte(body)); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if string(m.Data) != body || m.From != "a@example.com" || len(m.To) != 2 || m.Helo != "localhost" {
		t.Errorf("message %+v data %q", m, m.Data)
	}
	if m.MailParams != "BODY=8BITMIME SMTPUTF8" {
		t.Errorf("MailParams %q", m.MailParams)
	}
}

func TestDataByteExact(t *testing.T) {
	s := startT(t, nil)
	c := dialGreet(t, s)
	c.cmd("EHLO x", "250")
	long := strings.Repeat("0123456789", 2000) // 20 000 bytes
	eightBit := string([]byte{0x80, 0xc3, 0xa9, 0xfe, 0xff, 0x00, 0x7f})
	bodies := []string{
		"",
		"no final newline",
		".\r\n..\r\n.x\r\n...\r\nx.\r\n",
		"bare LF\n.\nstill data\r\n",
		"bare CR\r.\rstill\r\n",
		"CRLF then dot-LF\r\n.\nx\r\n",
		"8-bit " + eightBit + "\r\n",
		long + "\r\n." + long + "\r\n",
		"trailing blank lines\r\n\r\n\r\n",
	}
	for _, body := range bodies {
		if rep := c.sendMail("a@b", "c@d", body); !strings.HasPrefix(rep, "250 ") {
			t.Fatalf("body %q: reply %q", trunc([]byte(body)), rep)
		}
	}
	// A hand-written wire form, including a terminator split across writes.
	c.cmd("MAIL FROM:<a@b>", "250")
	c.cmd("RCPT TO:<c@d>", "250")
	c.cmd("DATA", "354")
	for _, part := range []string{"..a\r", "\n.", "\n.\r", "\n", ".", "\r", "\n"} {
		c.send(part)
		time.Sleep(2 * time.Millisecond)
	}
	c.expect("250 ")
	msgs := s.Messages()
	if len(msgs) != len(bodies)+1 {
		t.Fatalf("%d messages, want %d", len(msgs), len(bodies)+1)
	}
	for i, body := range bodies {
		if got := string(msgs[i].Data); got != withCRLF(body) {
			t.Errorf("body %d: got %q, want %q", i, trunc([]byte(got)), trunc([]byte(withCRLF(body))))
		}
	}
	if got := string(msgs[len(bodies)].Data); got != ".a\r\n\n.\r\n" {
		t.Errorf("split wire: got %q", got)
	}
}

func TestXCLIENT(t *testing.T) {
	s := startT(t, &Server{XCLIENT: true})
	c := dialGreet(t, s)
	ehlo := c.cmd("EHLO proxy.example", "250-")
	if !strings.Contains(ehlo, "\n250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT REVERSE_NAME\n") &&
		!strings.HasSuffix(ehlo, "\n250 XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT REVERSE_NAME") {
		t.Errorf("EHLO does not advertise XCLIENT:\n%s", ehlo)
	}
	c.cmd("XCLIENT", "501 5.5.4 ")
	c.cmd("XCLIENT FOO=1", "501 5.5.4 Bad XCLIENT attribute name")
	c.cmd("XCLIENT ADDR=1.2.3.4+4", "501 5.5.4 ")
	c.cmd("XCLIENT NAME=mail.example.org ADDR=192.0.2.7 PORT=4321 PROTO=ESMTP", "220 sink.test ESMTP")
	c.cmd("xclient helo=odd+2Bname+20x login=[UNAVAILABLE]", "220 sink.test ESMTP")
	c.cmd("MAIL FROM:<a@b>", "250")
	c.cmd("XCLIENT ADDR=1.1.1.1", "503 5.5.1 ")
	c.cmd("RSET", "250")
	c.cmd("EHLO client.example", "250")
	if rep := c.sendMail("a@b", "c@d", "x"); !strings.HasPrefix(rep, "250 ") {
		t.Fatal(rep)
	}
	m := s.Messages()[0]
	want := map[string]string{
		"NAME": "mail.example.org", "ADDR": "192.0.2.7", "PORT": "4321", "PROTO": "ESMTP",
		"HELO": "odd+name x", "LOGIN": "[UNAVAILABLE]",
	}
	if fmt.Sprint(m.XCLIENT) != fmt.Sprint(want) {
		t.Errorf("XCLIENT %v, want %v", m.XCLIENT, want)
	}
	if m.Helo != "client.example" {
		t.Errorf("Helo %q", m.Helo)
	}
	si := lastSession(t, s)
	if fmt.Sprint(si.XCLIENT) != fmt.Sprint(want) || !slices.Equal(si.Helo, []string{"proxy.example", "client.example"}) {
		t.Errorf("session XCLIENT %v Helo %q", si.XCLIENT, si.Helo)
	}

	// Without a new EHLO, the XCLIENT HELO attribute is the HELO name.
	c.cmd("XCLIENT HELO=via-xclient", "220")
	c.sendMail("a@b", "c@d", "y")
	if m := s.Messages()[1]; m.Helo != "via-xclient" {
		t.Errorf("Helo after XCLIENT %q", m.Helo)
	}
}

func TestProxyHeader(t *testing.T) {
	src := &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 40000}
	src6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::9"), Port: 40001}
	for _, tc := range []struct {
		name    string
		version byte
		src     net.Addr
	}{
		{"v1", 1, src}, {"v2", 2, src}, {"v1-ipv6", 1, src6}, {"v2-ipv6", 2, src6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startT(t, &Server{Proxy: ProxyRequired})
			c := dial(t, s.Addr())
			dst := &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 25}
			if tc.src == src6 {
				dst = &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 25}
			}
			if _, err := proxyproto.HeaderProxyFromAddrs(tc.version, tc.src, dst).WriteTo(c.nc); err != nil {
				t.Fatal(err)
			}
			c.expect("220 ")
			c.cmd("EHLO x", "250")
			c.sendMail("a@b", "c@d", "hi")
			m := s.Messages()[0]
			if m.ProxySource == nil || m.ProxySource.String() != tc.src.String() {
				t.Errorf("ProxySource %v, want %v", m.ProxySource, tc.src)
			}
			si := lastSession(t, s)
			if si.Proxy == nil || si.Proxy.Version != tc.version || si.Proxy.DestinationAddr.String() != dst.String() {
				t.Errorf("Proxy header %+v", si.Proxy)
			}
			if si.ProxySource.String() != tc.src.String() {
				t.Errorf("session ProxySource %v", si.ProxySource)
			}
		})
	}
	t.Run("v2-local", func(t *testing.T) {
		s := startT(t, &Server{Proxy: ProxyRequired})
		c := dial(t, s.Addr())
		proxyproto.HeaderProxyFromAddrs(2, nil, nil).WriteTo(c.nc)
		c.expect("220 ")
		c.cmd("QUIT", "221")
		if si := lastSession(t, s); si.Proxy == nil || si.Proxy.Command != proxyproto.LOCAL || si.ProxySource != nil {
			t.Errorf("session %+v", si)
		}
	})
	t.Run("missing", func(t *testing.T) {
		s := startT(t, &Server{Proxy: ProxyRequired})
		c := dial(t, s.Addr())
		c.send("EHLO x\r\n")
		c.expectEOF()
	})
	t.Run("garbled", func(t *testing.T) {
		s := startT(t, &Server{Proxy: ProxyRequired})
		c := dial(t, s.Addr())
		c.send("PROXY TCP4 nonsense\r\nEHLO x\r\n")
		c.expectEOF()
	})
	t.Run("silent", func(t *testing.T) {
		s := startT(t, &Server{Proxy: ProxyRequired, ReadTimeout: 100 * time.Millisecond})
		c := dial(t, s.Addr())
		c.expectEOF()
	})
	t.Run("not-expected", func(t *testing.T) {
		s := startT(t, nil)
		c := dialGreet(t, s)
		proxyproto.HeaderProxyFromAddrs(1, src, &net.TCPAddr{IP: net.IPv4(1, 2, 3, 4), Port: 25}).WriteTo(c.nc)
		c.expect("502 5.5.2 ")
	})
}

func TestActionMultilineReply(t *testing.T) {
	s := startT(t, &Server{Policy: PolicyFuncs{
		RcptFunc: func(si *SessionInfo, to string) *Action {
			if to == "bad@example.com" {
				return &Action{Reply: "550-5.1.1 <bad@example.com>: Recipient address rejected:\n550 5.1.1 User unknown"}
			}
			return nil
		},
	}})
	c := dialGreet(t, s)
	c.cmd("MAIL FROM:<a@b>", "250")
	c.send("RCPT TO:<bad@example.com>\r\n")
	line1, _ := c.r.ReadString('\n')
	line2, _ := c.r.ReadString('\n')
	if line1 != "550-5.1.1 <bad@example.com>: Recipient address rejected:\r\n" || line2 != "550 5.1.1 User unknown\r\n" {
		t.Fatalf("got %q %q", line1, line2)
	}
	c.cmd("DATA", "503 5.5.1 Error: need RCPT")
	c.cmd("RCPT TO:<good@example.com>", "250")
	c.cmd("DATA", "354")
	c.send("x\r\n.\r\n")
	c.expect("250 ")
	if m := s.Messages(); len(m) != 1 || !slices.Equal(m[0].To, []string{"good@example.com"}) {
		t.Fatalf("messages %+v", m)
	}
}

func TestActionRefusals(t *testing.T) {
	s := startT(t, &Server{Policy: PolicyFuncs{
		MailFunc: func(si *SessionInfo, from string) *Action {
			if from == "spam@example.com" {
				return &Action{Reply: "451 4.7.1 Try again later"}
			}
			return nil
		},
		DataStartFunc: func(si *SessionInfo) *Action {
			if si.From == "nodata@example.com" {
				return &Action{Reply: "554 5.5.1 Error: no valid recipients"}
			}
			return nil
		},
		DataEndFunc: func(si *SessionInfo, m *Message) *Action {
			switch string(m.Data) {
			case "reject\r\n":
				return &Action{Reply: "550 5.7.1 Message content rejected"}
			case "lie\r\n":
				return &Action{Store: new(false)}
			case "half\r\n":
				return &Action{Reply: "451 4.3.0 Temporary failure after commit", Store: new(true)}
			case "custom\r\n":
				return &Action{Reply: "250 2.0.0 fine " + m.ID}
			}
			return nil
		},
	}})
	c := dialGreet(t, s)
	c.cmd("MAIL FROM:<spam@example.com>", "451 4.7.1 ")
	c.cmd("RCPT TO:<a@b>", "503 5.5.1 Error: need MAIL")
	c.cmd("MAIL FROM:<nodata@example.com>", "250")
	c.cmd("RCPT TO:<a@b>", "250")
	c.cmd("DATA", "554 5.5.1 ")
	c.cmd("RSET", "250")
	if rep := c.sendMail("a@b", "c@d", "reject"); rep != "550 5.7.1 Message content rejected" {
		t.Errorf("reject: %q", rep)
	}
	if rep := c.sendMail("a@b", "c@d", "lie"); !strings.HasPrefix(rep, "250 2.0.0 Ok: queued as ") {
		t.Errorf("lie: %q", rep)
	}
	if rep := c.sendMail("a@b", "c@d", "half"); !strings.HasPrefix(rep, "451 ") {
		t.Errorf("half: %q", rep)
	}
	if rep := c.sendMail("a@b", "c@d", "custom"); !strings.HasPrefix(rep, "250 2.0.0 fine ") {
		t.Errorf("custom: %q", rep)
	}
	msgs := s.Messages()
	if len(msgs) != 2 || string(msgs[0].Data) != "half\r\n" || string(msgs[1].Data) != "custom\r\n" {
		t.Fatalf("stored %d messages", len(msgs))
	}
}

func TestActionDelay(t *testing.T) {
	const d = 150 * time.Millisecond
	s := startT(t, &Server{Policy: PolicyFuncs{
		RcptFunc: func(*SessionInfo, string) *Action { return &Action{Delay: d} },
	}})
	c := dialGreet(t, s)
	c.cmd("MAIL FROM:<a@b>", "250")
	start := time.Now()
	c.cmd("RCPT TO:<c@d>", "250 2.1.5 Ok")
	if el := time.Since(start); el < d {
		t.Errorf("reply after %v, want >= %v", el, d)
	}
}

func TestActionCloseAtDataEnd(t *testing.T) {
	dir := t.TempDir()
	s := startT(t, &Server{Dir: dir, Policy: PolicyFuncs{
		DataEndFunc: func(si *SessionInfo, m *Message) *Action {
			if strings.HasPrefix(string(m.Data), "commit") {
				return &Action{Close: true, Store: new(true)}
			}
			return &Action{Close: true}
		},
	}})
	c := dialGreet(t, s)
	c.cmd("MAIL FROM:<a@b>", "250")
	c.cmd("RCPT TO:<c@d>", "250")
	c.cmd("DATA", "354")
	c.send("crash\r\n.\r\n")
	c.expectEOF()
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("%d messages stored, want 0", n)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files in Dir: %v", ents)
	}
	// Committed, then died before replying.
	c = dialGreet(t, s)
	c.cmd("MAIL FROM:<a@b>", "250")
	c.cmd("RCPT TO:<c@d>", "250")
	c.cmd("DATA", "354")
	c.send("commit\r\n.\r\n")
	c.expectEOF()
	if n := len(s.Messages()); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

func TestActionCloseAfter(t *testing.T) {
	s := startT(t, &Server{Policy: PolicyFuncs{
		DataEndFunc: func(*SessionInfo, *Message) *Action { return &Action{CloseAfter: true} },
	}})
	c := dialGreet(t, s)
	if rep := c.sendMail("a@b", "c@d", "hello"); !strings.HasPrefix(rep, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("reply %q", rep)
	}
	c.expectEOF()
	if msgs := s.Messages(); len(msgs) != 1 || string(msgs[0].Data) != "hello\r\n" {
		t.Fatalf("messages %v", msgs)
	}
}

func TestActionCloseAtMailAndRcpt(t *testing.T) {
	s := startT(t, &Server{Policy: PolicyFuncs{
		MailFunc: func(_ *SessionInfo, from string) *Action {
			return &Action{Close: from == "die@b", CloseAfter: from == "bye@b", Reply: "421 4.3.2 going down"}
		},
	}})
	c := dialGreet(t, s)
	c.cmd("NOOP", "250")
	c.send("MAIL FROM:<die@b>\r\n")
	c.expectEOF()
	c = dialGreet(t, s)
	c.cmd("MAIL FROM:<bye@b>", "421 4.3.2 going down")
	c.expectEOF()
}

func TestActionCutMidData(t *testing.T) {
	s := startT(t, &Server{Policy: PolicyFuncs{
		DataStartFunc: func(*SessionInfo) *Action { return &Action{CutMidData: true} },
	}})
	c := dialGreet(t, s)
	c.cmd("MAIL FROM:<a@b>", "250")
	c.cmd("RCPT TO:<c@d>", "250")
	c.cmd("DATA", "354 ")
	c.send("Subject: partial\r\n")
	c.expectEOF()
	// The client keeps writing into a dead connection: it must fail soon.
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = c.nc.Write([]byte(strings.Repeat("x", 1000) + "\r\n"))
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Error("writes after the cut kept succeeding")
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestMaxSize(t *testing.T) {
	s := startT(t, &Server{MaxSize: 100})
	c := dialGreet(t, s)
	if ehlo := c.cmd("EHLO x", "250"); !strings.Contains(ehlo, "\n250-SIZE 100\n") {
		t.Errorf("EHLO does not advertise SIZE 100:\n%s", ehlo)
	}
	c.cmd("MAIL FROM:<a@b> SIZE=101", "552 5.3.4 ")
	c.cmd("MAIL FROM:<a@b> SIZE=100", "250")
	c.cmd("RCPT TO:<c@d>", "250")
	c.cmd("DATA", "354")
	c.send(strings.Repeat("0123456789\r\n", 9) + ".\r\n") // 108 bytes
	c.expect("552 5.3.4 Message size exceeds fixed limit")
	// The session stays in sync and usable.
	exact := strings.Repeat("x", 98) + "\r\n" // exactly 100 bytes
	if rep := c.sendMail("a@b", "c@d", exact); !strings.HasPrefix(rep, "250 ") {
		t.Fatalf("reply %q", rep)
	}
	if msgs := s.Messages(); len(msgs) != 1 || string(msgs[0].Data) != exact {
		t.Fatalf("messages %v", msgs)
	}
}

func TestDirStorage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail")
	s := startT(t, &Server{Dir: dir})
	c := dialGreet(t, s)
	c.cmd("EHLO client.example", "250")
	const n = 5
	for i := range n {
		c.sendMail(fmt.Sprintf("from%d@example.com", i), "to@example.com", fmt.Sprintf("message %d\r\n.dot\r\n", i))
	}
	msgs := s.Messages()
	if len(msgs) != n {
		t.Fatalf("%d messages", len(msgs))
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2*n {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("files %q, want %d", names, 2*n)
	}
	for i, m := range msgs {
		eml, err := os.ReadFile(filepath.Join(dir, m.ID+".eml"))
		if err != nil || string(eml) != string(m.Data) || string(eml) != fmt.Sprintf("message %d\r\n.dot\r\n", i) {
			t.Errorf("%s.eml: %q, %v", m.ID, eml, err)
		}
		js, err := os.ReadFile(filepath.Join(dir, m.ID+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			ID, Helo, From string
			To             []string
			Size           int
			Received       time.Time
		}
		if err := json.Unmarshal(js, &env); err != nil {
			t.Fatal(err)
		}
		if env.ID != m.ID || env.Helo != "client.example" || env.From != m.From ||
			!slices.Equal(env.To, m.To) || env.Size != len(m.Data) || !env.Received.Equal(m.Received) {
			t.Errorf("%s.json: %s", m.ID, js)
		}
	}
}

func TestDirWriteError(t *testing.T) {
	dir := t.TempDir()
	s := startT(t, &Server{Dir: dir})
	os.RemoveAll(dir) // the server can no longer write there
	c := dialGreet(t, s)
	if rep := c.sendMail("a@b", "c@d", "x"); !strings.HasPrefix(rep, "451 4.3.0 ") {
		t.Fatalf("reply %q", rep)
	}
	if len(s.Messages()) != 0 {
		t.Fatal("message recorded although not written")
	}
}

func TestPipelining(t *testing.T) {
	s := startT(t, nil)
	c := dial(t, s.Addr())
	// Everything at once, even the message and QUIT (not allowed by RFC 2920,
	// but buffered input must cope, as Postfix does).
	c.send("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n" +
		"line 1\r\n..line 2\r\n.\r\nMAIL FROM:<g@h>\r\nRCPT TO:<i@j>\r\nDATA\r\nsecond\r\n.\r\nQUIT\r\n")
	for _, want := range []string{"220 ", "250-", "250 2.1.0", "250 2.1.5", "250 2.1.5", "354 ", "250 2.0.0",
		"250 2.1.0", "250 2.1.5", "354 ", "250 2.0.0", "221 "} {
		c.expect(want)
	}
	c.expectEOF()
	msgs := s.Messages()
	if len(msgs) != 2 || string(msgs[0].Data) != "line 1\r\n.line 2\r\n" || len(msgs[0].To) != 2 ||
		string(msgs[1].Data) != "second\r\n" {
		t.Fatalf("messages %+v", msgs)
	}
}

// TestFlushBeforeBlocking checks that replies queued while pipelined input
// was pending are sent as soon as the server needs more input, even when a
// partial line is buffered.
func TestFlushBeforeBlocking(t *testing.T) {
	s := startT(t, nil)
	c := dialGreet(t, s)
	c.send("NOOP\r\nNOOP\r\nNO")
	c.expect("250 ")
	c.expect("250 ")
	c.send("OP\r\n")
	c.expect("250 ")
}

func TestLongLines(t *testing.T) {
	s := startT(t, nil)
	c := dialGreet(t, s)
	ok := "NOOP " + strings.Repeat("a", MaxLineLength-5)
	c.cmd(ok, "250 ")
	c.send("NOOP " + strings.Repeat("a", 100<<10) + "\r\n")
	c.expect("500 5.5.0 ")
	c.expectEOF()

	// Without any line ending at all: bounded, answered and closed too.
	c = dialGreet(t, s)
	go c.nc.Write([]byte(strings.Repeat("a", 1<<20)))
	c.expect("500 5.5.0 ")
	c.expectEOF()
}

func TestIdleTimeout(t *testing.T) {
	s := startT(t, &Server{ReadTimeout: 100 * time.Millisecond})
	c := dialGreet(t, s)
	c.cmd("EHLO x", "250")
	c.cmd("MAIL FROM:<a@b>", "250")
	c.cmd("RCPT TO:<c@d>", "250")
	c.cmd("DATA", "354")
	c.send("partial data\r\n")
	c.expect("421 4.4.2 sink.test Error: timeout exceeded")
	c.expectEOF()
}

func TestCloseWithStalledAction(t *testing.T) {
	stalled := make(chan struct{}, 4)
	s := &Server{Policy: PolicyFuncs{
		DataEndFunc: func(*SessionInfo, *Message) *Action {
			stalled <- struct{}{}
			return &Action{Delay: time.Hour}
		},
		RcptFunc: func(_ *SessionInfo, to string) *Action {
			if to == "stall@b" {
				stalled <- struct{}{}
				return &Action{Delay: time.Hour}
			}
			return nil
		},
	}}
	startT(t, s)
	c1 := dialGreet(t, s)
	c1.cmd("MAIL FROM:<a@b>", "250")
	c1.cmd("RCPT TO:<c@d>", "250")
	c1.cmd("DATA", "354")
	c1.send("x\r\n.\r\n")
	c2 := dialGreet(t, s)
	c2.cmd("MAIL FROM:<a@b>", "250")
	c2.send("RCPT TO:<stall@b>\r\n")
	dialGreet(t, s) // an idle connection
	<-stalled
	<-stalled

	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- s.Close() }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Close hangs with stalled actions")
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("Close took %v", el)
	}
	c1.expectEOF()
	c2.expectEOF()
	if len(s.Messages()) != 0 {
		t.Error("stalled message was stored")
	}
	if leaked := leakedGoroutines(2 * time.Second); leaked != "" {
		t.Errorf("goroutines left after Close:\n%s", leaked)
	}
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Error("listener still accepting after Close")
	}
	if err := s.Start("127.0.0.1:0"); err == nil {
		t.Error("Start after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestWaitMessages(t *testing.T) {
	s := startT(t, nil)
	start := time.Now()
	msgs, err := s.WaitMessages(1, 100*time.Millisecond)
	if err == nil || len(msgs) != 0 {
		t.Fatalf("WaitMessages on an idle server: %v %v", msgs, err)
	}
	if el := time.Since(start); el < 100*time.Millisecond || el > 2*time.Second {
		t.Errorf("timeout after %v", el)
	}

	go func() {
		for range 3 {
			smtp.SendMail(s.Addr(), nil, "a@b", []string{"c@d"}, []byte("x\r\n"))
		}
	}()
	msgs, err = s.WaitMessages(3, 10*time.Second)
	if err != nil || len(msgs) < 3 {
		t.Fatalf("WaitMessages(3): %d, %v", len(msgs), err)
	}

	s.Reset()
	if len(s.Messages()) != 0 || len(s.Sessions()) != 0 {
		t.Fatal("Reset did not forget")
	}
	// A waiter is woken (with an error) by Close.
	errc := make(chan error, 1)
	go func() { _, err := s.WaitMessages(1, time.Hour); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("WaitMessages after Close: no error")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("WaitMessages not woken by Close")
	}
}

func TestConcurrentClients(t *testing.T) {
	s := startT(t, &Server{Dir: t.TempDir()})
	const clients, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			for j := range each {
				body := fmt.Sprintf("Subject: %d-%d\r\n\r\nbody\r\n", i, j)
				if err := smtp.SendMail(s.Addr(), nil, "a@b", []string{"c@d"}, []byte(body)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	go func() {
		for range 50 {
			s.Sessions()
			s.Messages()
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	msgs := s.Messages()
	if len(msgs) != clients*each {
		t.Fatalf("%d messages", len(msgs))
	}
	ids := map[string]bool{}
	for _, m := range msgs {
		if ids[m.ID] {
			t.Fatalf("duplicate ID %s", m.ID)
		}
		ids[m.ID] = true
	}
	if n := len(s.Sessions()); n != clients*each {
		t.Errorf("%d sessions", n)
	}
}

func TestIDs(t *testing.T) {
	prev := ""
	for range 10000 {
		id := newID()
		if len(id) != 13 && len(id) != 12 || id <= prev {
			t.Fatalf("ID %q after %q", id, prev)
		}
		prev = id
	}
}

func TestCustomExtensions(t *testing.T) {
	s := startT(t, &Server{Extensions: []string{}, Hostname: "backend.test"})
	c := dialGreet(t, s)
	c.cmd("EHLO x", "250 backend.test")
	c.cmd("MAIL FROM:<a@b> BODY=8BITMIME", "555 5.5.4 Unsupported option: BODY")
	c.cmd("MAIL FROM:<a@b> SMTPUTF8", "555 ")
	c.cmd("MAIL FROM:<a@b>", "250")
	c.cmd("RCPT TO:<a@b> NOTIFY=NEVER", "555 ")
}

func TestSessionLogCap(t *testing.T) {
	if testing.Short() {
		t.Skip("sends many commands")
	}
	s := startT(t, nil)
	c := dialGreet(t, s)
	batch := strings.Repeat("NOOP\r\n", 1000)
	for range MaxLogEntries/1000 + 1 {
		c.send(batch)
		for range 1000 {
			c.expect("250 ")
		}
	}
	si := lastSession(t, s)
	if len(si.Commands) != MaxLogEntries || len(si.Replies) != MaxLogEntries || si.Dropped == 0 {
		t.Fatalf("commands %d replies %d dropped %d", len(si.Commands), len(si.Replies), si.Dropped)
	}
}
