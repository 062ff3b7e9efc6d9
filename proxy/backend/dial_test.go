package backend

import (
	"context"
	"errors"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

var testID = Identity{
	Addr: net.ParseIP("192.0.2.1"), Port: 4711,
	Name:     "mail.example.org",
	Helo:     "mail.example.org",
	Proto:    "ESMTP",
	DestAddr: net.ParseIP("198.51.100.25"), DestPort: 25,
}

func dial(t *testing.T, f *fakeServer, m Method, id Identity) (*Conn, error) {
	t.Helper()
	c, err := Dial(context.Background(), Options{Addr: f.addr(), Method: m, LocalName: "mx.test",
		CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second}, id)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func mustDial(t *testing.T, f *fakeServer, m Method, id Identity) *Conn {
	t.Helper()
	c, err := dial(t, f, m, id)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	return c
}

func equal[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %#v\nwant %#v", what, got, want)
	}
}

// TestXCLIENTWire checks what goes on the wire for XCLIENT, byte for byte.
func TestXCLIENTWire(t *testing.T) {
	v6 := testID
	v6.Addr, v6.DestAddr = net.ParseIP("2001:db8::1"), net.ParseIP("2001:db8::25")
	mapped := testID
	mapped.Addr = net.ParseIP("::ffff:192.0.2.7")
	odd := testID
	odd.Helo, odd.Name, odd.Login = "a+b=c d\u00e9", "", "bob"
	noAddr := testID
	noAddr.Addr, noAddr.Port, noAddr.DestAddr, noAddr.DestPort = nil, 0, nil, 0
	temp := testID
	temp.Name, temp.Port, temp.Proto = "[TEMPUNAVAIL]", 0, "SMTP"

	tests := []struct {
		name    string
		xclient string // the XCLIENT line of the EHLO reply
		id      Identity
		want    []string
	}{
		{"ipv4", "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT", testID, []string{
			"EHLO mx.test",
			"XCLIENT HELO=mail.example.org PROTO=ESMTP DESTADDR=198.51.100.25 DESTPORT=25 PORT=4711 NAME=mail.example.org ADDR=192.0.2.1",
			"EHLO mail.example.org",
		}},
		{"ipv6", "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT", v6, []string{
			"EHLO mx.test",
			"XCLIENT HELO=mail.example.org PROTO=ESMTP DESTADDR=IPV6:2001:db8::25 DESTPORT=25 PORT=4711 NAME=mail.example.org ADDR=IPV6:2001:db8::1",
			"EHLO mail.example.org",
		}},
		{"v4-mapped v6 is v4", "XCLIENT NAME ADDR", mapped, []string{
			"EHLO mx.test",
			"XCLIENT NAME=mail.example.org ADDR=192.0.2.7",
			"EHLO mail.example.org",
		}},
		{"xtext and unknown name", "XCLIENT NAME ADDR PORT PROTO HELO LOGIN", odd, []string{
			"EHLO mx.test",
			"XCLIENT HELO=a+2Bb+3Dc+20d+C3+A9 PROTO=ESMTP LOGIN=bob PORT=4711 NAME=[UNAVAILABLE] ADDR=192.0.2.1",
			"EHLO a+b=c d\u00e9",
		}},
		{"tempunavail, HELO client", "xclient name addr port proto helo", temp, []string{
			"EHLO mx.test",
			"XCLIENT HELO=mail.example.org PROTO=SMTP PORT=[UNAVAILABLE] NAME=[TEMPUNAVAIL] ADDR=192.0.2.1",
			"HELO mail.example.org",
		}},
		{"unknown address", "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT", noAddr, []string{
			"EHLO mx.test",
			"XCLIENT HELO=mail.example.org PROTO=ESMTP PORT=[UNAVAILABLE] NAME=mail.example.org ADDR=[UNAVAILABLE]",
			"EHLO mail.example.org",
		}},
		{"exim's attributes", "XCLIENT ADDR NAME PORT LOGIN DESTADDR DESTPORT", testID, []string{
			"EHLO mx.test",
			"XCLIENT DESTADDR=198.51.100.25 DESTPORT=25 PORT=4711 NAME=mail.example.org ADDR=192.0.2.1",
			"EHLO mail.example.org",
		}},
		{"no attribute list", "XCLIENT", testID, []string{
			"EHLO mx.test",
			"XCLIENT HELO=mail.example.org PROTO=ESMTP DESTADDR=198.51.100.25 DESTPORT=25 PORT=4711 NAME=mail.example.org ADDR=192.0.2.1",
			"EHLO mail.example.org",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			after := "250-backend.test\n250-SIZE 1000\n250 8BITMIME" // the EHLO reply after XCLIENT
			f := newFake(t, fakeConfig{Replies: map[string][]string{
				"EHLO": {"250-fake.test\n250-" + tt.xclient + "\n250 8BITMIME", after},
				"HELO": {"250 fake.test"},
			}})
			c := mustDial(t, f, MethodXCLIENT, tt.id)
			equal(t, "commands", f.session(t, 0).commands(), tt.want)
			wantExt := map[string]string{"SIZE": "1000", "8BITMIME": ""}
			if tt.id.Proto == "SMTP" {
				wantExt = map[string]string{}
			}
			equal(t, "extensions (of the last EHLO)", c.Extensions(), wantExt)
		})
	}
}

// TestXCLIENTSplit: a long HELO makes two XCLIENT commands, NAME and ADDR
// in the last one, each within 512 characters with CRLF.
func TestXCLIENTSplit(t *testing.T) {
	id := testID
	id.Helo = strings.Repeat("h", 300)
	id.Login = strings.Repeat("l", 420)
	f := newFake(t, fakeConfig{})
	mustDial(t, f, MethodXCLIENT, id)
	cmds := f.session(t, 0).commands()
	equal(t, "commands", cmds, []string{
		"EHLO mx.test",
		"XCLIENT HELO=" + id.Helo + " PROTO=ESMTP",
		"XCLIENT LOGIN=" + id.Login + " DESTADDR=198.51.100.25 DESTPORT=25",
		"XCLIENT PORT=4711 NAME=mail.example.org ADDR=192.0.2.1",
		"EHLO " + id.Helo,
	})
	for _, c := range cmds {
		if len(c)+2 > 512 {
			t.Errorf("command of %d bytes with CRLF: %.40s…", len(c)+2, c)
		}
	}
}

func TestXCLIENTValueTooLong(t *testing.T) {
	id := testID
	id.Helo = strings.Repeat("+", 200) // 600 bytes as xtext: cannot fit
	cmds, err := xclientCommands("", id)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "commands", cmds, []string{
		"XCLIENT HELO=[UNAVAILABLE] PROTO=ESMTP DESTADDR=198.51.100.25 DESTPORT=25 PORT=4711 NAME=mail.example.org ADDR=192.0.2.1",
	})
}

func TestXCLIENTRefused(t *testing.T) {
	f := newFake(t, fakeConfig{Replies: map[string][]string{
		"XCLIENT": {"550 5.7.0 Error: insufficient authorization"},
	}})
	_, err := dial(t, f, MethodXCLIENT, testID)
	var re *ReplyError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want *ReplyError", err)
	}
	equal(t, "stage", re.Stage, StageXCLIENT)
	equal(t, "reply", re.Reply.String(), "550 5.7.0 Error: insufficient authorization")
	equal(t, "enhanced", re.Reply.Enhanced, "5.7.0")
	equal(t, "lines", re.Reply.Lines, []string{"Error: insufficient authorization"})
	equal(t, "local", re.Reply.Local, false)
	s := f.session(t, 0)
	s.wait(t)
	cmds := s.commands()
	equal(t, "last command", cmds[len(cmds)-1], "QUIT")
}

func TestXCLIENTNotOffered(t *testing.T) {
	for _, ehlo := range []string{"250-fake.test\n250 8BITMIME", "250-fake.test\n250 XCLIENT NAME HELO"} {
		f := newFake(t, fakeConfig{Replies: map[string][]string{"EHLO": {ehlo}}})
		_, err := dial(t, f, MethodXCLIENT, testID)
		if !errors.Is(err, ErrNoXCLIENT) {
			t.Errorf("EHLO %q: err = %v, want ErrNoXCLIENT", ehlo, err)
		}
		s := f.session(t, 0)
		s.wait(t)
		equal(t, "commands", s.commands(), []string{"EHLO mx.test", "QUIT"})
	}
}

func TestProxyHeader(t *testing.T) {
	v6 := testID
	v6.Addr, v6.DestAddr, v6.Port = net.ParseIP("2001:db8::1"), net.ParseIP("2001:db8::25"), 65535
	for _, tt := range []struct {
		m  Method
		id Identity
	}{
		{MethodProxyV1, testID}, {MethodProxyV2, testID}, {MethodProxyV1, v6}, {MethodProxyV2, v6},
	} {
		t.Run(tt.m.String()+"/"+tt.id.Addr.String(), func(t *testing.T) {
			f := newFake(t, fakeConfig{Proxy: true})
			mustDial(t, f, tt.m, tt.id)
			cmds, _, _, h := f.session(t, 0).snapshot()
			if h == nil {
				t.Fatal("no PROXY header received")
			}
			equal(t, "version", h.Version, byte(tt.m-MethodProxyV1+1))
			src, dst, ok := h.TCPAddrs()
			if !ok {
				t.Fatalf("header has no TCP addresses: %+v", h)
			}
			equal(t, "source", src.String(), (&net.TCPAddr{IP: tt.id.Addr, Port: tt.id.Port}).String())
			equal(t, "destination", dst.String(), (&net.TCPAddr{IP: tt.id.DestAddr, Port: tt.id.DestPort}).String())
			equal(t, "commands", cmds, []string{"EHLO mail.example.org"})
		})
	}
}

func TestProxyNeedsAddresses(t *testing.T) {
	id := testID
	id.DestAddr = nil
	f := newFake(t, fakeConfig{Proxy: true})
	if _, err := dial(t, f, MethodProxyV2, id); err == nil || !strings.Contains(err.Error(), "DestAddr") {
		t.Fatalf("err = %v, want one naming DestAddr", err)
	}
}

func TestMethodNone(t *testing.T) {
	f := newFake(t, fakeConfig{})
	c := mustDial(t, f, MethodNone, testID)
	equal(t, "commands", f.session(t, 0).commands(), []string{"EHLO mail.example.org"})
	if _, ok := c.Extensions()["PIPELINING"]; !ok {
		t.Errorf("extensions %v lack PIPELINING", c.Extensions())
	}
}

func TestHELOFallback(t *testing.T) {
	for _, code := range []string{"500 5.5.1 Command unrecognized", "502 5.5.2 Not implemented"} {
		f := newFake(t, fakeConfig{Replies: map[string][]string{"EHLO": {code}}})
		c := mustDial(t, f, MethodNone, testID)
		equal(t, "commands", f.session(t, 0).commands(), []string{"EHLO mail.example.org", "HELO mail.example.org"})
		equal(t, "extensions", c.Extensions(), map[string]string{})
		// Without extensions no parameter is passed on.
		if _, err := c.Mail("a@example.org", MailParams{Size: 10, Body: "8BITMIME"}); err != nil {
			t.Fatal(err)
		}
		equal(t, "MAIL", f.session(t, 0).commands()[2], "MAIL FROM:<a@example.org>")
	}
}

func TestHandshakeRefusals(t *testing.T) {
	for _, tt := range []struct {
		name    string
		replies map[string][]string
		stage   string
		code    int
	}{
		{"greeting 554", map[string][]string{"": {"554 5.3.2 No service here"}}, StageGreeting, 554},
		{"greeting 421", map[string][]string{"": {"421 4.3.2 Busy"}}, StageGreeting, 421},
		{"EHLO 550", map[string][]string{"EHLO": {"550 5.7.1 Go away"}}, StageEHLO, 550},
		{"HELO after EHLO 502 refused", map[string][]string{"EHLO": {"502 no"}, "HELO": {"501 5.5.2 Bad HELO"}}, StageEHLO, 501},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, fakeConfig{Replies: tt.replies})
			_, err := dial(t, f, MethodNone, testID)
			var re *ReplyError
			if !errors.As(err, &re) || re.Stage != tt.stage || re.Reply.Code != tt.code || re.Reply.Local {
				t.Fatalf("err = %v, want a ReplyError %d at %s", err, tt.code, tt.stage)
			}
		})
	}
	t.Run("greeting not 220", func(t *testing.T) {
		f := newFake(t, fakeConfig{Replies: map[string][]string{"": {"250 hello?"}}})
		if _, err := dial(t, f, MethodNone, testID); !errors.Is(err, ErrProtocol) {
			t.Fatalf("err = %v, want ErrProtocol", err)
		}
	})
}

func TestDialIOErrors(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, err = Dial(context.Background(), Options{Addr: addr}, testID)
		var re *ReplyError
		if err == nil || errors.As(err, &re) {
			t.Fatalf("err = %v, want a dial error", err)
		}
	})
	t.Run("closed at greeting", func(t *testing.T) {
		f := newFake(t, fakeConfig{Replies: map[string][]string{"": {actClose}}})
		if _, err := dial(t, f, MethodNone, testID); err == nil || !strings.Contains(err.Error(), "closed by the backend") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("greeting stalls", func(t *testing.T) {
		f := newFake(t, fakeConfig{Replies: map[string][]string{"": {actStall}}})
		start := time.Now()
		_, err := Dial(context.Background(), Options{Addr: f.addr(), CommandTimeout: 100 * time.Millisecond}, testID)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v, want a timeout", err)
		}
		if el := time.Since(start); el < 100*time.Millisecond || el > 3*time.Second {
			t.Errorf("took %v for a 100ms timeout", el)
		}
	})
	t.Run("ctx cancelled while the greeting stalls", func(t *testing.T) {
		f := newFake(t, fakeConfig{Replies: map[string][]string{"": {actStall}}})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := Dial(ctx, Options{Addr: f.addr()}, testID)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("took %v for a 100ms context", el)
		}
	})
}

func TestDialArguments(t *testing.T) {
	f := newFake(t, fakeConfig{})
	for _, tt := range []struct {
		name string
		o    Options
		id   func(*Identity)
		want string
	}{
		{"no addr", Options{}, nil, "Addr"},
		{"bad method", Options{Addr: f.addr(), Method: 9}, nil, "Method(9)"},
		{"no helo", Options{Addr: f.addr()}, func(id *Identity) { id.Helo = "" }, "Helo"},
		{"bad proto", Options{Addr: f.addr()}, func(id *Identity) { id.Proto = "LMTP" }, "Proto"},
		{"bad local name", Options{Addr: f.addr(), LocalName: "a\r\nb"}, nil, "LocalName"},
	} {
		id := testID
		if tt.id != nil {
			tt.id(&id)
		}
		if _, err := Dial(context.Background(), tt.o, id); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one naming %s", tt.name, err, tt.want)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sessions) != 0 {
		t.Errorf("%d connections made for invalid arguments", len(f.sessions))
	}
}

func TestParseMethod(t *testing.T) {
	for s, want := range map[string]Method{"none": MethodNone, "XCLIENT": MethodXCLIENT, "proxy-v1": MethodProxyV1, "Proxy-V2": MethodProxyV2} {
		m, err := ParseMethod(s)
		if err != nil || m != want {
			t.Errorf("ParseMethod(%q) = %v, %v", s, m, err)
		}
		var u Method
		if err := u.UnmarshalText([]byte(s)); err != nil || u != want {
			t.Errorf("UnmarshalText(%q) = %v, %v", s, u, err)
		}
		if b, _ := want.MarshalText(); !strings.EqualFold(string(b), s) {
			t.Errorf("MarshalText(%v) = %s", want, b)
		}
	}
	for _, s := range []string{"", "proxy", "proxyv2"} {
		if _, err := ParseMethod(s); err == nil {
			t.Errorf("ParseMethod(%q): no error", s)
		}
	}
}
