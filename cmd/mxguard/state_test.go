package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
	"github.com/mxguard/mxguard/internal/testsrv"
	"github.com/mxguard/mxguard/mailsink"
)

// TestMain lets a test run `mxguard serve` as a child process (this test
// binary, re-executed), so that it can kill it with SIGKILL.
func TestMain(m *testing.M) {
	if cfg := os.Getenv("MXGUARD_SERVE_CHILD"); cfg != "" {
		os.Exit(serve(cfg, os.Stderr))
	}
	os.Exit(m.Run())
}

// startChild runs `mxguard serve -config cfg` in a child process and waits
// until it has started.
func startChild(t *testing.T, cfg, logPath string) *exec.Cmd {
	t.Helper()
	before := strings.Count(string(readOrEmpty(logPath)), `"msg":"started"`)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "MXGUARD_SERVE_CHILD="+cfg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitLog(t, logPath, `"msg":"started"`, before+1)
	return cmd
}

func readOrEmpty(p string) []byte {
	b, _ := os.ReadFile(p)
	return b
}

// greetTime connects from 127.0.0.2, waits for the whole banner and says
// QUIT; it returns how long the banner took.
func greetTime(t *testing.T, addr string) time.Duration {
	t.Helper()
	start := time.Now()
	code := rcptReply(t, addr) // EHLO localhost: refused at RCPT, but greeted first
	if code != 550 {
		t.Fatalf("RCPT got %d", code)
	}
	return time.Since(start)
}

// The bolt store survives a kill -9: a client that passed the greeting
// test before the crash is greeted at once after the restart, the file
// passes bbolt's check at the restart, and `mxguard state` shows the
// record — through the running mxguard's control socket, and from the file
// itself when none runs.
func TestStateSurvivesKill(t *testing.T) {
	dns := testsrv.DNS(t, cmdZone)
	sink := testsrv.Sink(t, &mailsink.Server{XCLIENT: true})
	dir := t.TempDir()
	cfgPath, logPath := filepath.Join(dir, "mxguard.toml"), filepath.Join(dir, "mxguard.log")
	listen := freePort(t)
	writeConfig(t, cfgPath, listen, sink.Addr(), dns.Addr(), logPath, "[reputation]\ngreet_pass_ttl = \"1h\"\n")
	os.WriteFile(cfgPath, bytes.Replace(mustRead(t, cfgPath), []byte(`greet_delay = "100ms"`), []byte(`greet_delay = "1s"`), 1), 0o644)

	child := startChild(t, cfgPath, logPath)
	if took := greetTime(t, listen); took < time.Second {
		t.Fatalf("a new client was greeted after %v, before the 1s wait", took)
	}
	// The pass is written in the background: wait until the running
	// mxguard shows it (its control socket).
	var out, errb bytes.Buffer
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "pregreet") && time.Now().Before(deadline) {
		out.Reset()
		if code := run([]string{"state", "-config", cfgPath, "show", "127.0.0.2"}, &out, &errb); code != 0 {
			t.Fatalf("state show: %d %s", code, errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "ip:127.0.0.2") || !strings.Contains(out.String(), "pregreet") {
		t.Fatalf("state show through the running mxguard:\n%s", out.String())
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()

	// No mxguard runs: `mxguard state` reads the file itself.
	out.Reset()
	if code := run([]string{"state", "-config", cfgPath, "show", "127.0.0.2"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "pregreet") {
		t.Fatalf("state show from the file: %d\n%s%s", code, out.String(), errb.String())
	}
	startChild(t, cfgPath, logPath)
	if took := greetTime(t, listen); took > 700*time.Millisecond {
		t.Errorf("after the restart the client waited %v: its pass was lost", took)
	}
	out.Reset()
	run([]string{"state", "-config", cfgPath, "top"}, &out, &errb)
	if !strings.Contains(out.String(), "127.0.0.2") || !strings.Contains(out.String(), "worst 1 of 1 addresses") {
		t.Errorf("state top:\n%s%s", out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"state", "-config", cfgPath, "forget", "127.0.0.0/8"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "forgot") {
		t.Errorf("state forget: %d %s%s", code, out.String(), errb.String())
	}
	if took := greetTime(t, listen); took < time.Second {
		t.Errorf("a forgotten client was greeted after %v, without the wait", took)
	}
}

// A corrupt state file is a clear error at start, and check-config says
// so; a missing one is created at first start, not by check-config.
func TestStateFileErrors(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "mxguard.toml")
	db := filepath.Join(dir, "state.db")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("hostname = \"mx.mxguard.test\"\n[state]\nfile = %q\ncontrol_socket = \"\"\n", db)), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "-config", cfgPath}, &out, &errb); code != 0 || !strings.Contains(out.String(), "created at first start") {
		t.Errorf("check-config without a state file: %d %q %q", code, out.String(), errb.String())
	}
	if _, err := os.Stat(db); err == nil {
		t.Error("check-config created the state file")
	}
	os.WriteFile(db, bytes.Repeat([]byte("not a database "), 1000), 0o640)
	out.Reset()
	errb.Reset()
	if code := run([]string{"check-config", "-config", cfgPath}, &out, &errb); code != 1 || !strings.Contains(errb.String(), db) || !strings.Contains(errb.String(), "not a valid bbolt database") {
		t.Errorf("check-config with a corrupt file: %d %q", code, errb.String())
	}
	errb.Reset()
	if code := serve(cfgPath, &errb); code != 1 || !strings.Contains(errb.String(), "not a valid bbolt database") {
		t.Errorf("serve with a corrupt file: %d %q", code, errb.String())
	}
}

// `mxguard state` against Redis: while mxguard runs (its control socket)
// and straight to Redis.
func TestStateCommandRedis(t *testing.T) {
	redis := redistest.Start(t)
	dns := testsrv.DNS(t, cmdZone)
	sink := testsrv.Sink(t, &mailsink.Server{XCLIENT: true})
	dir := t.TempDir()
	cfgPath, logPath := filepath.Join(dir, "mxguard.toml"), filepath.Join(dir, "mxguard.log")
	listen := freePort(t)
	writeConfig(t, cfgPath, listen, sink.Addr(), dns.Addr(), logPath, "")
	os.WriteFile(cfgPath, bytes.Replace(mustRead(t, cfgPath), []byte("[state]\n"),
		[]byte(fmt.Sprintf("[state]\nstore = \"redis\"\nredis_address = %q\nprefix = \"cmdtest:\"\n", redis.Addr)), 1), 0o644)
	startChild(t, cfgPath, logPath)
	rcptReply(t, listen) // a refusal: recorded for 127.0.0.2
	var out, errb bytes.Buffer
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "helo:1") && time.Now().Before(deadline) {
		out.Reset()
		run([]string{"state", "-config", cfgPath, "show", "127.0.0.2"}, &out, &errb)
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "refused helo:1") {
		t.Fatalf("state show (control socket):\n%s%s", out.String(), errb.String())
	}
	// Straight to Redis: the same record.
	os.WriteFile(cfgPath, bytes.Replace(mustRead(t, cfgPath), []byte("control_socket = "), []byte("control_socket = \"\"\n#"), 1), 0o644)
	out.Reset()
	if code := run([]string{"state", "-config", cfgPath, "show", "127.0.0.0/24"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "refused helo:1") {
		t.Errorf("state show (Redis): %d\n%s%s", code, out.String(), errb.String())
	}
}
