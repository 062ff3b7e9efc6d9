package realmta

import (
	"fmt"
	"net"
	"net/smtp"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if left := Leftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "realmta: processes left running after the tests:\n  %s\n", strings.Join(left, "\n  "))
		code = 1
	}
	os.Exit(code)
}

// sendDirect sends one message with net/smtp from source address from.
func sendDirect(t *testing.T, addr, from, helo, sender string, rcpts []string, msg string) error {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	host, _, _ := net.SplitHostPort(addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello(helo); err != nil {
		return err
	}
	if err := c.Mail(sender); err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

const testMsg = "From: <alice@good.test>\r\nTo: <bob@mxguard.test>\r\nSubject: direct\r\n\r\n.dot line\r\ncaf\xc3\xa9\r\n"

func TestPostfixDirect(t *testing.T) {
	Require(t, "postfix")
	start := time.Now()
	p := StartPostfix(t, PostfixOptions{MessageSizeLimit: 50000})
	t.Logf("postfix up on %s in %v", p.Addr(), time.Since(start))
	if err := sendDirect(t, p.Addr(), "127.0.0.3", "direct.good.test", "alice@good.test", []string{"bob@mxguard.test"}, testMsg); err != nil {
		t.Fatalf("send: %v\n%s", err, p.Log())
	}
	got := p.WaitMessages(t, 1, 10*time.Second)
	m := got[0]
	if m.From != "alice@good.test" || m.To[0] != "bob@mxguard.test" {
		t.Errorf("envelope %q %q", m.From, m.To)
	}
	if want := ".dot line\ncaf\xc3\xa9\n"; string(m.Body()) != want {
		t.Errorf("body %q, want %q", m.Body(), want)
	}
	err := sendDirect(t, p.Addr(), "127.0.0.3", "direct.good.test", "alice@good.test", []string{"nobody@mxguard.test"}, testMsg)
	if err == nil || !strings.Contains(err.Error(), "User unknown in virtual mailbox table") {
		t.Errorf("unknown user: %v", err)
	}
	err = sendDirect(t, p.Addr(), "127.0.0.3", "direct.good.test", "alice@good.test", []string{"x@elsewhere.test"}, testMsg)
	if err == nil || !strings.Contains(err.Error(), "Relay access denied") {
		t.Errorf("relay: %v", err)
	}
	err = sendDirect(t, p.Addr(), "127.0.0.3", "direct.good.test", "alice@good.test", []string{"bob@mxguard.test"}, testMsg+strings.Repeat("x", 60000)+"\r\n")
	if err == nil || !strings.Contains(err.Error(), "552") {
		t.Errorf("size: %v", err)
	}
	if log := p.Log(); !strings.Contains(log, "client=unknown[127.0.0.3]") {
		t.Errorf("maillog lacks the client:\n%s", log)
	}
}

func TestEximDirect(t *testing.T) {
	Require(t, "exim")
	start := time.Now()
	e := StartExim(t, EximOptions{MessageSizeLimit: 50000})
	t.Logf("exim up on %s in %v", e.Addr(), time.Since(start))
	if err := sendDirect(t, e.Addr(), "127.0.0.3", "direct.good.test", "alice@good.test", []string{"bob@mxguard.test"}, testMsg); err != nil {
		t.Fatalf("send: %v\n%s", err, e.MainLog())
	}
	got := e.WaitMessages(t, 1, 10*time.Second)
	m := got[0]
	if m.From != "alice@good.test" || len(m.To) != 1 || m.To[0] != "bob@mxguard.test" {
		t.Errorf("envelope %q %q", m.From, m.To)
	}
	if want := ".dot line\ncaf\xc3\xa9\n"; string(m.Body()) != want {
		t.Errorf("body %q, want %q", m.Body(), want)
	}
	if !strings.HasPrefix(m.Headers(), "Received: from ") || !strings.Contains(m.Headers(), "\nSubject: direct\n") {
		t.Errorf("headers %q", m.Headers())
	}
	err := sendDirect(t, e.Addr(), "127.0.0.3", "direct.good.test", "alice@good.test", []string{"nobody@mxguard.test"}, testMsg)
	if err == nil || !strings.HasPrefix(err.Error(), "550") {
		t.Errorf("unknown user: %v", err)
	}
	err = sendDirect(t, e.Addr(), "127.0.0.3", "direct.good.test", "alice@good.test", []string{"x@elsewhere.test"}, testMsg)
	if err == nil || !strings.HasPrefix(err.Error(), "550") {
		t.Errorf("relay: %v", err)
	}
	err = sendDirect(t, e.Addr(), "127.0.0.3", "direct.good.test", "alice@good.test", []string{"bob@mxguard.test"}, testMsg+strings.Repeat("x", 60000)+"\r\n")
	if err == nil || !strings.Contains(err.Error(), "552") {
		t.Errorf("size: %v", err)
	}
	if log := e.MainLog(); !strings.Contains(log, "H=(direct.good.test) [127.0.0.3]") {
		t.Errorf("mainlog lacks the client:\n%s", log)
	}
}

func TestFreePort(t *testing.T) {
	p := freePort(t)
	if p <= 0 || p > 65535 {
		t.Fatalf("port %d", p)
	}
}

func TestMasterCF(t *testing.T) {
	if _, err := os.Stat("/etc/postfix/master.cf"); err != nil {
		Require(t, "postfix")
	}
	m, err := masterCF(12345)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m, "\n127.0.0.1:12345 inet n - n - - smtpd\n") || !strings.Contains(m, "\npostlog unix-dgram") {
		t.Errorf("master.cf:\n%s", m)
	}
	for _, l := range strings.Split(m, "\n") {
		if f := strings.Fields(l); len(f) >= 8 && l[0] != '#' && l[0] != ' ' && l[0] != '\t' && f[4] != "n" {
			t.Errorf("chrooted service: %q", l)
		}
	}
}

func TestSetLines(t *testing.T) {
	got := setLines([]string{"a = 1", "# b = 2", "c=3"}, []string{"c = 4", "d = 5", "a=6"})
	want := []string{"a=6", "# b = 2", "c = 4", "d = 5"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %q, want %q", got, want)
	}
}
