// Package redistest runs a private redis-server for tests, on a loopback
// high port, with no persistence and its working directory in the test's
// temporary directory. The server is killed when the test ends (and, should
// the test binary die first, by the kernel: it gets SIGKILL when its parent
// goes). Tests can Stop it and Restart it on the same port to see what a
// client does while Redis is gone.
//
// redis-server comes from Debian's redis-server package (or
// MXGUARD_REDIS_SERVER names one). Without it, Start skips the test, unless
// MXGUARD_E2E=1 (CI), where it fails.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvE2E, set to "1", turns a missing redis-server from a skip into a
// failure.
const EnvE2E = "MXGUARD_E2E"

const installHint = "install it with `apt-get install -y redis-server`"

// startTimeout bounds how long a starting server may take to answer PING.
const startTimeout = 10 * time.Second

// EnvBinary names a redis-server binary to use instead of the one in PATH.
const EnvBinary = "MXGUARD_REDIS_SERVER"

// Binary returns the path of redis-server, or why there is none.
func Binary() (path, why string) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", EnvBinary + ": " + err.Error()
		}
		return p, ""
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, ""
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server", ""
	}
	return "", "redis-server is not in PATH nor /usr/bin"
}

// Require returns the path of redis-server. Without one it skips the test,
// or fails it when MXGUARD_E2E=1.
func Require(t testing.TB) string {
	t.Helper()
	bin, why := Binary()
	if why == "" {
		return bin
	}
	msg := "real Redis not usable: " + why + "; " + installHint
	if os.Getenv(EnvE2E) == "1" {
		t.Fatalf("%s (%s=1: not skipping)", msg, EnvE2E)
	}
	t.Skip(msg + " (with " + EnvE2E + "=1 this fails instead)")
	return ""
}

// Server is one running (or stopped) redis-server.
type Server struct {
	// Addr is host:port on 127.0.0.1; it stays the same across Restart.
	Addr string

	t    testing.TB
	bin  string
	dir  string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start starts a redis-server on a free loopback port and stops it when the
// test ends. A server that does not come up fails the test with its output.
// args are added to the command line, e.g. "--requirepass", "secret".
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	bin := Require(t)
	s := &Server{t: t, bin: bin, dir: t.TempDir(), args: args}
	t.Cleanup(s.Stop)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		s.Addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
		if err = s.start(); err == nil {
			return s
		}
	}
	t.Fatalf("redistest: %v", err)
	return nil
}

// Stop kills the server (SIGKILL: as abrupt as a crash) and waits until it
// has exited. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same address (its data is gone:
// there is no persistence). It fails the test if the server does not come
// up.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		// The port may linger for a moment after the kill.
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart: %v", err)
}

func (s *Server) start() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	args := append([]string{
		"--bind", "127.0.0.1",
		"--port", port,
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--protected-mode", "yes",
		"--loglevel", "warning",
	}, s.args...)
	cmd := exec.Command(s.bin, args...)
	out := &syncWriter{}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-done:
			return fmt.Errorf("%s exited at start: %s", s.bin, strings.TrimSpace(out.String()))
		default:
		}
		if err := Ping(s.Addr, 200*time.Millisecond); err == nil {
			break
		} else if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("%s does not answer PING on %s after %v: %v", s.bin, s.Addr, startTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	return nil
}

// Ping sends PING to addr and waits up to timeout for +PONG (or NOAUTH,
// from a server that wants a password).
func Ping(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	// A server with a password answers NOAUTH: it is up all the same.
	if line = strings.TrimSpace(line); line != "+PONG" && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncWriter is a buffer the server's output goroutine and the test share.
type syncWriter struct {
	mu sync.Mutex
	w  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.String()
}
