package main

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testsrv"

	"github.com/mxguard/mxguard/internal/sdnotify"
	"github.com/mxguard/mxguard/mailsink"
)

// notifySocket is a datagram socket like systemd's NOTIFY_SOCKET; next
// waits for the next message.
func notifySocket(t *testing.T, path string) (next func() string) {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
}

func wantMessage(t *testing.T, got, pattern string) []string {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("notification %q does not match %s", got, pattern)
	}
	return m
}

// Under systemd (Type=notify), serve says READY=1 once it accepts
// connections, RELOADING=1 with MONOTONIC_USEC then READY=1 around each
// SIGHUP (a failed reload too: the old config runs on), STOPPING=1 on
// SIGTERM.
func TestServeNotifiesSystemd(t *testing.T) {
	dns := testsrv.DNS(t, cmdZone)
	sink := testsrv.Sink(t, &mailsink.Server{XCLIENT: true})
	dir := t.TempDir()
	cfgPath, logPath, sock := filepath.Join(dir, "mxguard.toml"), filepath.Join(dir, "mxguard.log"), filepath.Join(dir, "notify")
	listen := freePort(t)
	writeConfig(t, cfgPath, listen, sink.Addr(), dns.Addr(), logPath, "")
	next := notifySocket(t, sock)
	t.Setenv("NOTIFY_SOCKET", sock)

	var stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- serve(cfgPath, &stderr) }()

	wantMessage(t, next(), `^READY=1\nSTATUS=listening on `+regexp.QuoteMeta(listen)+`$`)
	conn, err := net.DialTimeout("tcp", listen, time.Second) // no retry: it must accept already
	if err != nil {
		t.Fatalf("READY=1 before the port accepts connections: %v", err)
	}
	conn.Close()

	reload := func(status string) {
		t.Helper()
		before, _ := sdnotify.MonotonicUsec()
		syscall.Kill(os.Getpid(), syscall.SIGHUP)
		m := wantMessage(t, next(), `^RELOADING=1\nMONOTONIC_USEC=(\d+)\nSTATUS=reloading `+regexp.QuoteMeta(cfgPath)+`$`)
		after, _ := sdnotify.MonotonicUsec()
		if us, _ := strconv.ParseUint(m[1], 10, 64); us < before || us > after {
			t.Errorf("MONOTONIC_USEC=%d, not between %d and %d (CLOCK_MONOTONIC µs around the SIGHUP)", us, before, after)
		}
		wantMessage(t, next(), `^READY=1\nSTATUS=`+status)
	}
	reload(`reloaded ` + regexp.QuoteMeta(cfgPath) + `$`)

	os.WriteFile(cfgPath, []byte("hostname = \"mx.mxguard.test\"\n[listen]\ngreet_delay = \"forever\"\n"), 0o644)
	reload(`reload failed, still running the previous config: ` + regexp.QuoteMeta(cfgPath) + `:3: listen.greet_delay: bad duration`)
	if code := rcptReply(t, listen); code != 550 {
		t.Errorf("after a failed reload: RCPT got %d, want the old config's 550", code)
	}

	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	wantMessage(t, next(), `^STOPPING=1\nSTATUS=stopping on terminated$`)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exited %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
}
