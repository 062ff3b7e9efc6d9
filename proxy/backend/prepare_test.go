package backend

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func testOptions(f *fakeServer, m Method) Options {
	return Options{Addr: f.addr(), Method: m, LocalName: "mx.test", CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second}
}

// Prepare then Bind puts on the wire exactly what Dial does, for every
// method, and the Conn then works as one from Dial.
func TestPrepareBindSameAsDial(t *testing.T) {
	for _, m := range []Method{MethodNone, MethodXCLIENT, MethodProxyV1, MethodProxyV2} {
		t.Run(m.String(), func(t *testing.T) {
			proxy := m == MethodProxyV1 || m == MethodProxyV2
			f := newFake(t, fakeConfig{Proxy: proxy})
			mustDial(t, f, m, testID)
			c, err := Prepare(t.Context(), testOptions(f, m))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Mail("a@example.org", MailParams{}); err == nil || !strings.Contains(err.Error(), "before Bind") {
				t.Errorf("MAIL before Bind: %v", err)
			}
			// What the backend has seen of the prepared one so far.
			time.Sleep(20 * time.Millisecond)
			before := f.session(t, 1).commands()
			want := map[Method][]string{MethodXCLIENT: {"EHLO mx.test"}}[m]
			equal(t, "commands before Bind", len(before), len(want))
			if err := c.Bind(t.Context(), testID); err != nil {
				t.Fatal(err)
			}
			if err := c.Bind(t.Context(), testID); err == nil {
				t.Error("a second Bind succeeded")
			}
			if _, err := c.Mail("a@example.org", MailParams{}); err != nil {
				t.Fatal(err)
			}
			dialled, _, _, h0 := f.session(t, 0).snapshot()
			bound, _, _, h1 := f.session(t, 1).snapshot()
			equal(t, "commands", bound[:len(bound)-1], dialled)
			if proxy {
				if h0 == nil || h1 == nil {
					t.Fatalf("PROXY headers %v, %v", h0, h1)
				}
				f0, err0 := h0.Format()
				f1, err1 := h1.Format()
				if err0 != nil || err1 != nil || string(f0) != string(f1) {
					t.Errorf("PROXY header %q (%v), by Dial %q (%v)", f1, err1, f0, err0)
				}
				a0, b0, _ := h0.TCPAddrs()
				a1, b1, _ := h1.TCPAddrs()
				equal(t, "PROXY addresses", [2]string{a1.String(), b1.String()}, [2]string{a0.String(), b0.String()})
			}
			if err := c.Quit(); err != nil {
				t.Errorf("Quit: %v", err)
			}
		})
	}
}

// A prepared Conn whose backend gave up on it meanwhile fails at Bind, and
// is closed.
func TestBindStale(t *testing.T) {
	for _, reply := range []string{actClose, "421 4.4.2 fake.test Error: timeout exceeded"} {
		f := newFake(t, fakeConfig{Replies: map[string][]string{"EHLO": {reply}}})
		c, err := Prepare(t.Context(), testOptions(f, MethodNone))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Bind(t.Context(), testID)
		if err == nil {
			t.Fatalf("%s: Bind succeeded", reply)
		}
		if _, err := c.Mail("a@example.org", MailParams{}); !errors.Is(err, ErrUnusable) {
			t.Errorf("%s: MAIL after a failed Bind: %v", reply, err)
		}
	}
}

// A prepared PROXY connection sends nothing at all, not even QUIT, before
// its header: Quit only closes it.
func TestPreparedProxyQuit(t *testing.T) {
	f := newFake(t, fakeConfig{Proxy: true})
	c, err := Prepare(t.Context(), testOptions(f, MethodProxyV2))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if err := c.Bind(t.Context(), testID); !errors.Is(err, ErrUnusable) {
		t.Errorf("Bind after Quit: %v", err)
	}
}

// Bind checks the identity as Dial does; Prepare fails as Dial does when
// the backend refuses.
func TestPrepareErrors(t *testing.T) {
	f := newFake(t, fakeConfig{Proxy: true})
	c, err := Prepare(t.Context(), testOptions(f, MethodProxyV1))
	if err != nil {
		t.Fatal(err)
	}
	id := testID
	id.DestAddr = nil
	if err := c.Bind(t.Context(), id); err == nil || !strings.Contains(err.Error(), "DestAddr") {
		t.Errorf("Bind: %v", err)
	}

	f = newFake(t, fakeConfig{Replies: map[string][]string{"": {"554 5.3.2 No service here"}}})
	_, err = Prepare(t.Context(), testOptions(f, MethodNone))
	var re *ReplyError
	if !errors.As(err, &re) || re.Stage != StageGreeting || re.Reply.Code != 554 {
		t.Errorf("Prepare: %v", err)
	}
	f = newFake(t, fakeConfig{Replies: map[string][]string{"EHLO": {"250-fake.test\n250 PIPELINING"}}})
	if _, err = Prepare(t.Context(), testOptions(f, MethodXCLIENT)); !errors.Is(err, ErrNoXCLIENT) {
		t.Errorf("Prepare without XCLIENT: %v", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := Prepare(context.Background(), Options{Addr: addr}); err == nil {
		t.Error("Prepare to a closed port succeeded")
	}
}
