package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// listen opens a datagram socket like systemd's and returns its name for
// NOTIFY_SOCKET and a function that waits for the next message.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
}

func TestNotify(t *testing.T) {
	sockets := []struct{ name, addr string }{
		{"path", filepath.Join(t.TempDir(), "notify")},
		{"abstract", fmt.Sprintf("@mxguard-sdnotify-test-%d", os.Getpid())},
	}
	for _, s := range sockets {
		t.Run(s.name, func(t *testing.T) {
			next := listen(t, s.addr)
			t.Setenv("NOTIFY_SOCKET", s.addr)
			n := New(func(err error) { t.Errorf("send: %v", err) })
			cases := []struct {
				send func() error
				want string // a regexp
			}{
				{func() error { return n.Ready("serving 127.0.0.1:25") }, `^READY=1\nSTATUS=serving 127\.0\.0\.1:25$`},
				{func() error { return n.Reloading("") }, `^RELOADING=1\nMONOTONIC_USEC=(\d+)$`},
				{func() error { return n.Ready("reload failed: x.toml:3: bad\nkept") }, `^READY=1\nSTATUS=reload failed: x\.toml:3: bad kept$`},
				{func() error { return n.Stopping("stopping") }, `^STOPPING=1\nSTATUS=stopping$`},
				{func() error { return n.Send("WATCHDOG=1", "") }, `^WATCHDOG=1$`},
			}
			for _, c := range cases {
				before, _ := MonotonicUsec()
				if err := c.send(); err != nil {
					t.Fatal(err)
				}
				after, _ := MonotonicUsec()
				got := next()
				m := regexp.MustCompile(c.want).FindStringSubmatch(got)
				if m == nil {
					t.Errorf("got %q, want %s", got, c.want)
					continue
				}
				if len(m) > 1 {
					us, _ := strconv.ParseUint(m[1], 10, 64)
					if us < before || us > after {
						t.Errorf("MONOTONIC_USEC=%d not between %d and %d", us, before, after)
					}
				}
			}
		})
	}
}

func TestNoSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := New(nil)
	if n != nil || n.Ready("x") != nil || n.Reloading("") != nil || n.Stopping("") != nil {
		t.Error("without NOTIFY_SOCKET the notifier should do nothing")
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	var reported error
	n = New(func(err error) { reported = err })
	if err := n.Ready(""); err == nil || reported != err {
		t.Errorf("a missing socket: err %v, reported %v", err, reported)
	}
}
