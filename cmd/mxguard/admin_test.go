package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testsrv"

	"github.com/chromedp/chromedp"

	"github.com/mxguard/mxguard/internal/browsertest"
	"github.com/mxguard/mxguard/mailsink"
)

// The admin listener, end to end: mail goes through `mxguard serve`, then a
// real headless chromium opens the page of recent decisions and finds the
// refusal and its rule; the client whose HELO is a script shows as text
// and runs nothing. /metrics counts the refusal by its rule; /healthz is
// ready with the backend up.
func TestAdminEndToEnd(t *testing.T) {
	b := browsertest.Start(t)
	dns := testsrv.DNS(t, cmdZone)
	sink := testsrv.Sink(t, &mailsink.Server{XCLIENT: true})
	dir := t.TempDir()
	cfgPath, logPath := filepath.Join(dir, "mxguard.toml"), filepath.Join(dir, "mxguard.log")
	listen, adminAddr := freePort(t), freePort(t)
	writeConfig(t, cfgPath, listen, sink.Addr(), dns.Addr(), logPath, fmt.Sprintf("[admin]\nlisten = %q\n", adminAddr))

	var stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- serve(cfgPath, &stderr) }()
	waitLog(t, logPath, `"msg":"started"`, 1)
	defer func() {
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d: %s", code, stderr.String())
		}
	}()

	const evil = `<script>document.title='pwned'</script><img/src=x/onerror=document.title='pwned'>`
	session(t, listen, "localhost", "bob@mxguard.test")
	session(t, listen, evil, "carol@mxguard.test")
	waitLog(t, logPath, `"msg":"session"`, 2)

	base := "http://" + adminAddr
	if status := b.Load(t, chromedp.Navigate(base+"/")); status != 200 {
		t.Fatalf("page: status %d", status)
	}
	page := browsertest.Run(t, b, chromedp.Text(chromedp.CSS("body")))
	for _, want := range []string{"helo.localhost", "550 5.5.2 Helo command rejected: localhost is not a mail server's name (helo.localhost)",
		"bob@mxguard.test", evil, "helo.bad_syntax"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}
	title := browsertest.Run(t, b, chromedp.Title())
	scripts := browsertest.Run(t, b, chromedp.Evaluate[int](`document.scripts.length + document.images.length`))
	if strings.Contains(title, "pwned") || scripts != 0 {
		t.Errorf("the client's HELO became markup: title %q, %d script and img elements", title, scripts)
	}

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `mxguard_refusals_total{action="reject",check="helo",rule="helo.localhost",stage="rcpt"} 1`) {
		t.Errorf("/metrics does not count the refusal:\n%s", grepLines(string(body), "mxguard_refusals_total"))
	}
	resp, err = http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz: %d with the backend up", resp.StatusCode)
	}
}

// session runs EHLO helo, MAIL, RCPT to and QUIT from 127.0.0.2.
func session(t *testing.T, addr, helo, to string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewReader(bufio.NewReader(conn))
	for _, cmd := range []string{"", "EHLO " + helo, "MAIL FROM:<alice@good.test>", "RCPT TO:<" + to + ">", "QUIT"} {
		if cmd != "" {
			fmt.Fprintf(conn, "%s\r\n", cmd)
		}
		if _, _, err := tp.ReadResponse(0); err != nil && !strings.Contains(err.Error(), " ") {
			t.Fatal(err)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
