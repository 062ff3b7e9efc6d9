// Package realmta runs private instances of real MTAs, Postfix and Exim, on
// loopback high ports for tests: mxguard's end-to-end tests put the proxy in
// front of them. Each instance lives in a test's temporary directory (its
// configuration, queue, mailboxes and log) and is stopped, and killed for
// sure, when the test ends. Nothing touches port 25 or the system's own MTA
// configuration.
//
// The MTAs come from scripts/install-test-mtas.sh (as root, Debian 12):
// Postfix installed from apt, and Exim's heavy daemon (the Debian build with
// PROXY protocol support) unpacked under /opt/mxguard-test/exim without being
// installed, because Debian's postfix and exim4 packages conflict. Tests call
// Require first: without the MTAs they skip, unless MXGUARD_E2E=1 (CI), where
// they fail.
//
// Both MTAs store mail with LF line ends; Delivered.Data is the message as
// stored, byte for byte.
package realmta

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultEximDir is where scripts/install-test-mtas.sh unpacks Exim's heavy
// daemon; MXGUARD_EXIM_DIR overrides it.
const DefaultEximDir = "/opt/mxguard-test/exim"

// EnvE2E, set to "1", turns a missing MTA from a skip into a failure.
const EnvE2E = "MXGUARD_E2E"

const installHint = "run `sudo bash scripts/install-test-mtas.sh` (Debian 12) to install them"

// Delivered is one message as the MTA stored it.
type Delivered struct {
	// Data is the stored message: for Postfix the maildir file (with the
	// Return-Path, Delivered-To and X-Original-To lines the delivery agent
	// adds on top), for Exim the spool's header lines followed by a blank
	// line and the body (-D file). Line ends are LF, as both store them.
	Data []byte
	// From is the envelope sender and To the envelope recipients, as far as
	// the stored form tells them (Postfix: the one recipient of the mailbox).
	From string
	To   []string
	// ID is the MTA's queue id (Exim) or the maildir file name (Postfix).
	ID string
}

// Headers returns the header block of Data (up to the first empty line).
func (d Delivered) Headers() string {
	h, _, _ := bytes.Cut(d.Data, []byte("\n\n"))
	return string(h) + "\n"
}

// Body returns what follows the first empty line of Data.
func (d Delivered) Body() []byte {
	_, b, _ := bytes.Cut(d.Data, []byte("\n\n"))
	return b
}

var found struct {
	once                sync.Once
	postfixWhy, eximWhy string // why each is unusable; "" if it is usable
	exim                string
}

func probe() {
	found.once.Do(func() {
		if os.Geteuid() != 0 {
			found.postfixWhy = "not root (the MTAs run as root and switch to their own users)"
			found.eximWhy = found.postfixWhy
			return
		}
		found.postfixWhy = findPostfix()
		found.eximWhy = findExim()
		if found.eximWhy == "" {
			found.exim = eximBinary()
		}
	})
}

// Find reports what is installed: whether Postfix is (with its daemons), the
// path of an Exim binary with PROXY protocol support ("" if none), and why
// something is missing ("" if nothing is).
func Find() (postfix bool, exim string, why string) {
	probe()
	var whys []string
	if found.postfixWhy != "" {
		whys = append(whys, "postfix: "+found.postfixWhy)
	}
	if found.eximWhy != "" {
		whys = append(whys, "exim: "+found.eximWhy)
	}
	return found.postfixWhy == "", found.exim, strings.Join(whys, "; ")
}

func findPostfix() string {
	for _, cmd := range []string{"postfix", "postconf"} {
		if _, err := exec.LookPath(cmd); err != nil {
			return "not installed (" + cmd + " not in PATH)"
		}
	}
	if _, err := exec.LookPath("script"); err != nil {
		return "script (util-linux) not in PATH: it shows postfix's errors"
	}
	out, err := exec.Command("postconf", "-d", "-h", "daemon_directory").Output()
	if err != nil {
		return "postconf -d failed: " + err.Error()
	}
	master := filepath.Join(strings.TrimSpace(string(out)), "master")
	if _, err := os.Stat(master); err != nil {
		return "incomplete: " + err.Error()
	}
	if _, err := user.Lookup("postfix"); err != nil {
		return "incomplete: no postfix user"
	}
	return ""
}

func eximBinary() string {
	dir := os.Getenv("MXGUARD_EXIM_DIR")
	if dir == "" {
		dir = DefaultEximDir
	}
	return filepath.Join(dir, "usr/sbin/exim4")
}

func findExim() string {
	bin := eximBinary()
	if _, err := os.Stat(bin); err != nil {
		return "the heavy daemon is not unpacked: " + err.Error()
	}
	// The binary resolves its compiled-in user before reading -C.
	if _, err := user.Lookup("Debian-exim"); err != nil {
		return "no Debian-exim user, which the binary looks up before reading its configuration"
	}
	dir, err := os.MkdirTemp("", "realmta-exim-bV")
	if err != nil {
		return err.Error()
	}
	defer os.RemoveAll(dir)
	conf := filepath.Join(dir, "exim.conf")
	os.WriteFile(conf, []byte("exim_user = mail\nexim_group = mail\nprimary_hostname = exim.test\nkeep_environment =\n"), 0o644)
	out, err := exec.Command(bin, "-C", conf, "-bV").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s -bV failed: %v: %s", bin, err, firstLines(out, 5))
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Support for:") && strings.Contains(l+" ", " PROXY ") {
			return ""
		}
	}
	return bin + " is built without PROXY protocol support (exim4-daemon-light?); the heavy daemon has it"
}

// Require skips the test unless what ("postfix", "exim" or "all") is
// installed; with MXGUARD_E2E=1 it fails the test instead, so that CI never
// skips silently.
func Require(t testing.TB, what string) {
	t.Helper()
	probe()
	var why string
	switch what {
	case "postfix":
		why = found.postfixWhy
	case "exim":
		why = found.eximWhy
	case "all", "":
		_, _, why = Find()
	default:
		t.Fatalf("realmta.Require: unknown MTA %q (want postfix, exim or all)", what)
	}
	if why == "" {
		return
	}
	msg := fmt.Sprintf("real %s not usable: %s; %s", what, why, installHint)
	if os.Getenv(EnvE2E) == "1" {
		t.Fatalf("%s (%s=1: not skipping)", msg, EnvE2E)
	}
	t.Skip(msg + " (with " + EnvE2E + "=1 this fails instead)")
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("realmta: finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// tempDir returns a fresh directory inside t.TempDir() that every user can
// traverse: the MTAs' own users must reach their queue, log and mailboxes.
func tempDir(t testing.TB, name string) string {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, name)
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("realmta: %v", err)
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("realmta: %v", err)
	}
	for d := filepath.Dir(filepath.Dir(base)); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			t.Fatalf("realmta: %s is not searchable by other users, and the MTAs' users must reach %s: set TMPDIR to a directory like /tmp", d, dir)
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	register(dir)
	return dir
}

// lookupIDs returns a user's uid and gid.
func lookupIDs(t testing.TB, name string) (int, int) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("realmta: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

func mkdirOwned(t testing.TB, dir string, uid, gid int, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(dir, mode); err != nil {
		t.Fatalf("realmta: %v", err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatalf("realmta: %v", err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatalf("realmta: %v", err)
	}
}

func writeFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatalf("realmta: %v", err)
	}
}

// ptyRun runs a command with its output on a pseudo-terminal (script -qec):
// Postfix's commands write their errors to stderr only when it is a
// terminal, and to syslog, which test machines do not have.
func ptyRun(timeout time.Duration, env []string, args ...string) (string, error) {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	cmd := exec.Command("script", "-qec", strings.Join(quoted, " "), "/dev/null")
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return cleanTTY(out.String()), err
	case <-time.After(timeout):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return cleanTTY(out.String()), fmt.Errorf("%s: timed out after %v", strings.Join(args, " "), timeout)
	}
}

func cleanTTY(s string) string {
	return strings.TrimSpace(strings.ReplaceAll(s, "\r\n", "\n"))
}

func firstLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "\n")
}

// waitSMTP waits until addr answers with a 220 greeting; it reports the
// last error if it does not in time. With proxy, each probe starts with a
// PROXY v1 header, as the instance then expects from 127.0.0.1.
func waitSMTP(addr string, proxy bool, timeout time.Duration, alive func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if alive != nil {
			if err := alive(); err != nil {
				return err
			}
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if proxy {
				l, r := c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr)
				fmt.Fprintf(c, "PROXY TCP4 %s %s %d %d\r\n", l.IP, r.IP, l.Port, r.Port)
			}
			buf := make([]byte, 512)
			n, rerr := c.Read(buf)
			c.Write([]byte("QUIT\r\n"))
			c.Close()
			if n >= 4 && string(buf[:4]) == "220 " || n >= 4 && string(buf[:4]) == "220-" {
				return nil
			}
			last = fmt.Errorf("greeting %q (%v)", buf[:n], rerr)
		} else {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no SMTP greeting on %s within %v: %v", addr, timeout, last)
}

// Process bookkeeping: every directory an instance lives in is registered,
// so that Leftovers can find processes that outlived their test.

var (
	regMu sync.Mutex
	dirs  []string
)

func register(dir string) {
	regMu.Lock()
	dirs = append(dirs, dir)
	regMu.Unlock()
}

// Leftovers lists the processes still running that belong to an instance
// this package started (their command line or MAIL_CONFIG names one of its
// directories), as "pid command line". Call it after all tests, in
// TestMain, to prove that everything was stopped.
func Leftovers() []string {
	regMu.Lock()
	ds := append([]string(nil), dirs...)
	regMu.Unlock()
	if len(ds) == 0 {
		return nil
	}
	var out []string
	for _, p := range allPIDs() {
		if p == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p))
		for _, d := range ds {
			if bytes.Contains(cmdline, []byte(d)) || bytes.Contains(environ, []byte("MAIL_CONFIG="+d)) {
				out = append(out, fmt.Sprintf("%d %s", p, bytes.ReplaceAll(bytes.TrimRight(cmdline, "\x00"), []byte{0}, []byte{' '})))
				break
			}
		}
	}
	return out
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// waitGone waits for a process (not our child) to end.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !alive(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("bad pid file %s: %q", path, b)
	}
	return pid, nil
}

// groupMembers lists the live processes whose process group is pgid.
func groupMembers(pgid int) []int {
	var out []int
	for _, p := range allPIDs() {
		if g, err := syscall.Getpgid(p); err == nil && g == pgid && alive(p) {
			out = append(out, p)
		}
	}
	return out
}
