package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testsrv"

	"github.com/mxguard/mxguard/internal/smtptest"
	"github.com/mxguard/mxguard/mailsink"
)

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, &out); code != 0 || !strings.HasPrefix(out.String(), "mxguard ") {
		t.Errorf("version: %d %q", code, out.String())
	}
	if code := run([]string{"frobnicate"}, &out, &out); code != 2 {
		t.Errorf("unknown command exit %d", code)
	}
}

func TestCheckConfig(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "-config", "../../testdata/config/good.toml"}, &out, &errb); code != 0 {
		t.Fatalf("good config: exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"OK", `hostname = "mx.example.com"`, `write_timeout = "1m0s"`, `greet_delay = "6s"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("effective config lacks %q:\n%s", want, out.String())
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("hostname = \"mx.example.com\"\n[listen]\ngreet_delay = \"soon\"\n"), 0o644)
	out.Reset()
	errb.Reset()
	if code := run([]string{"check-config", "-config", bad}, &out, &errb); code != 1 {
		t.Errorf("bad config: exit %d", code)
	}
	if want := bad + ":3: listen.greet_delay: bad duration"; !strings.Contains(errb.String(), want) {
		t.Errorf("stderr %q lacks %q", errb.String(), want)
	}
	// Errors found when building the rules have their line too.
	rulesFile := filepath.Join(filepath.Dir(bad), "local.toml")
	os.WriteFile(rulesFile, []byte("[scores]\nreject = 8\n\n[outcome.\"helo.typo\"]\naction = \"reject\"\n"), 0o644)
	os.WriteFile(bad, []byte("hostname = \"mx.example.com\"\nrules = [\"local.toml\"]\n"), 0o644)
	errb.Reset()
	if code := run([]string{"check-config", "-config", bad}, &out, &errb); code != 1 || !strings.Contains(errb.String(), rulesFile+":4: unknown outcome \"helo.typo\"") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

const cmdZone = `
$ORIGIN good.test.
@    300 SOA ns.good.test. h.good.test. 1 3600 600 86400 60
mail 300 A 127.0.0.2
`

func writeConfig(t *testing.T, path, listen, backend, dns, logPath, extra string) {
	t.Helper()
	cfg := fmt.Sprintf(`hostname = "mx.mxguard.test"
local_domains = ["mxguard.test"]
trusted_networks = []
[listen]
addresses = [%q]
greet_delay = "100ms"
[backend]
address = %q
[dns]
resolvers = [%q]
timeout = "500ms"
[log]
path = %q
[state]
file = %q
control_socket = %q
%s`, listen, backend, dns, logPath, filepath.Join(filepath.Dir(path), "state.db"), filepath.Join(filepath.Dir(path), "control.sock"), extra)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// rcptReply runs a session with HELO localhost and returns the RCPT reply.
func rcptReply(t *testing.T, addr string) int {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewReader(bufio.NewReader(conn))
	step := func(cmd string) int {
		if cmd != "" {
			fmt.Fprintf(conn, "%s\r\n", cmd)
		}
		code, _, err := tp.ReadResponse(0)
		if err != nil && code == 0 {
			t.Fatal(err)
		}
		return code
	}
	step("")
	step("EHLO localhost")
	step("MAIL FROM:<alice@good.test>")
	code := step("RCPT TO:<bob@mxguard.test>")
	step("QUIT")
	return code
}

func waitLog(t *testing.T, path, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if strings.Count(string(b), want) >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("log never had %d× %q:\n%s", n, want, b)
}

// serve runs until SIGTERM; SIGHUP with a broken config keeps the running
// one (and logs why, with file and line); SIGHUP with a good one applies it
// to new sessions.
func TestServeReloadAndStop(t *testing.T) {
	dns := testsrv.DNS(t, cmdZone)
	sink := testsrv.Sink(t, &mailsink.Server{XCLIENT: true})
	dir := t.TempDir()
	cfgPath, logPath := filepath.Join(dir, "mxguard.toml"), filepath.Join(dir, "mxguard.log")
	listen := freePort(t)
	writeConfig(t, cfgPath, listen, sink.Addr(), dns.Addr(), logPath, "")

	var stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- serve(cfgPath, &stderr) }()
	waitLog(t, logPath, `"msg":"started"`, 1)

	if code := rcptReply(t, listen); code != 550 {
		t.Fatalf("HELO localhost: RCPT got %d, want 550", code)
	}

	os.WriteFile(cfgPath, []byte("hostname = \"mx.mxguard.test\"\n[listen]\ngreet_delay = \"forever\"\n"), 0o644)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitLog(t, logPath, `"msg":"reload failed, keeping the running config"`, 1)
	if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), cfgPath+":3: listen.greet_delay: bad duration") {
		t.Errorf("reload failure does not name file and line:\n%s", b)
	}
	if code := rcptReply(t, listen); code != 550 {
		t.Errorf("after a bad reload: RCPT got %d, want the old config's 550", code)
	}

	os.WriteFile(filepath.Join(dir, "gentle.toml"), []byte("[outcome.\"helo.localhost\"]\naction = \"ignore\"\n"), 0o644)
	writeConfig(t, cfgPath, listen, sink.Addr(), dns.Addr(), logPath, "")
	os.WriteFile(cfgPath, append([]byte("rules = [\"gentle.toml\"]\n"), mustRead(t, cfgPath)...), 0o644)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitLog(t, logPath, `"msg":"reloaded"`, 1)
	if code := rcptReply(t, listen); code != 250 {
		t.Errorf("after a good reload: RCPT got %d, want 250", code)
	}

	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exited %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	if _, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
		t.Error("still listening after SIGTERM")
	}
}

func TestServeBadConfig(t *testing.T) {
	var stderr bytes.Buffer
	if code := serve("/nonexistent/mxguard.toml", &stderr); code != 1 || !strings.Contains(stderr.String(), "no such file") {
		t.Errorf("exit %d: %s", code, stderr.String())
	}
}

// The demo works as the README says: mail sent to it lands in its folder.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	listen := freePort(t)
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- demo(listen, dir, 100*time.Millisecond, &stdout, &stderr) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "Ctrl-C stops the demo") {
		if time.Now().After(deadline) {
			t.Fatalf("demo did not start: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(conn)
	expect := func(cmd string, code int) {
		t.Helper()
		if cmd != "" {
			tp.PrintfLine("%s", cmd)
		}
		if _, msg, err := tp.ReadResponse(code); err != nil {
			t.Fatalf("%s: %v %s", cmd, err, msg)
		}
	}
	expect("", 220)
	expect("EHLO mail.sender.example", 250)
	expect("MAIL FROM:<alice@sender.example>", 250)
	expect("RCPT TO:<bob@demo.example>", 250)
	expect("DATA", 354)
	expect("From: alice@sender.example\r\nSubject: demo\r\n\r\nhello\r\n.", 250)
	expect("QUIT", 221)
	files, _ := filepath.Glob(filepath.Join(dir, "mail", "*.eml"))
	if len(files) != 1 {
		t.Errorf("demo folder has %d messages", len(files))
	}
	// The early-talker recipe works even after a polite session from the
	// same address.
	early, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	early.SetDeadline(time.Now().Add(10 * time.Second))
	early.Write([]byte("EHLO mail.sender.example\r\n"))
	reply, _ := io.ReadAll(early)
	early.Close()
	if !strings.Contains(string(reply), "554 5.5.1") {
		t.Errorf("early talker after a polite session got %q", reply)
	}
	syscall.Kill(os.Getpid(), syscall.SIGINT)
	if code := <-done; code != 0 {
		t.Errorf("demo exit %d", code)
	}
	if !strings.Contains(stdout.String(), `"msg":"relayed"`) {
		t.Errorf("demo log lacks the relayed line:\n%s", stdout.String())
	}
}

// syncBuffer is the shared goroutine-safe buffer.
type syncBuffer struct{ smtptest.SyncBuffer }

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// SIGHUP reopens log.path, as logrotate expects: after the file is moved
// away, new lines go to a new file at the configured path.
func TestServeReopensLog(t *testing.T) {
	dns := testsrv.DNS(t, cmdZone)
	sink := testsrv.Sink(t, &mailsink.Server{XCLIENT: true})
	dir := t.TempDir()
	cfgPath, logPath := filepath.Join(dir, "mxguard.toml"), filepath.Join(dir, "mxguard.log")
	listen := freePort(t)
	writeConfig(t, cfgPath, listen, sink.Addr(), dns.Addr(), logPath, "")

	var stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- serve(cfgPath, &stderr) }()
	waitLog(t, logPath, `"msg":"started"`, 1)

	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitLog(t, logPath, `"msg":"reloaded"`, 1)
	if b, _ := os.ReadFile(rotated); !strings.Contains(string(b), `"msg":"started"`) || strings.Contains(string(b), `"msg":"reloaded"`) {
		t.Errorf("the rotated file should keep the old lines only:\n%s", b)
	}

	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	if code := <-done; code != 0 {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
}

// Every subcommand prints its usage for -h and succeeds; an unknown flag
// is a usage error (exit 2) that shows the usage.
func TestSubcommandHelp(t *testing.T) {
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run([]string{c.name, "-h"}, &out, &errb); code != 0 {
				t.Errorf("-h: exit %d, stderr %q", code, errb.String())
			}
			if !strings.Contains(out.String(), "usage: mxguard "+c.name) {
				t.Errorf("-h printed %q", out.String())
			}
			out.Reset()
			errb.Reset()
			if code := run([]string{c.name, "-no-such-flag"}, &out, &errb); code != 2 {
				t.Errorf("unknown flag: exit %d", code)
			}
			if !strings.Contains(errb.String(), "flag provided but not defined") || !strings.Contains(errb.String(), "usage: mxguard "+c.name) {
				t.Errorf("unknown flag: stderr %q", errb.String())
			}
		})
	}
	var out bytes.Buffer
	if code := run([]string{"-h"}, &out, &out); code != 0 || !strings.Contains(out.String(), "check-config") {
		t.Errorf("mxguard -h: %d %q", code, out.String())
	}
}
