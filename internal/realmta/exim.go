package realmta

import (
	"bufio"
	"bytes"
	"fmt"
	"github.com/mxguard/mxguard/internal/smtptest"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// EximOptions configure a private Exim.
type EximOptions struct {
	// Domain is the one domain it receives mail for (default
	// "mxguard.test"); Users are its known local parts (default alice, bob,
	// postmaster). Other users of Domain are refused at RCPT ("550
	// Unrouteable address"), other domains with "550 relay not permitted",
	// as in Exim's default configuration.
	Domain string
	Users  []string
	// Hostname is primary_hostname (default "exim.backend.test").
	Hostname string
	// ProxyProtocol makes Exim expect a PROXY v1 or v2 header from
	// 127.0.0.1 (hosts_proxy = 127.0.0.1); other loopback addresses talk
	// plain SMTP.
	ProxyProtocol bool
	// MessageSizeLimit is message_size_limit in bytes (0: Exim's 50M).
	MessageSizeLimit int64
	// Main holds more main-section lines ("name = value"); each replaces
	// the line setting the same name, if any.
	Main []string
}

// Exim is a running private Exim daemon. Received messages stay in its
// spool (queue_only): an unpacked Exim cannot re-execute itself for
// deliveries, and the spool is all a test needs.
type Exim struct {
	Dir  string // exim.conf, spool/, log/
	Port int
	Bin  string
	Opts EximOptions

	conf   string
	spool  string
	logDir string
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *syncBuffer
}

// Addr returns the daemon's "127.0.0.1:port".
func (e *Exim) Addr() string { return fmt.Sprintf("127.0.0.1:%d", e.Port) }

// StartExim starts a private Exim daemon (the unpacked heavy build) on a free
// loopback port and stops it when the test ends. A failure to start fails
// the test with Exim's own error text.
func StartExim(t testing.TB, opts EximOptions) *Exim {
	t.Helper()
	Require(t, "exim")
	if opts.Domain == "" {
		opts.Domain = "mxguard.test"
	}
	if len(opts.Users) == 0 {
		opts.Users = []string{"alice", "bob", "postmaster"}
	}
	if opts.Hostname == "" {
		opts.Hostname = "exim.backend.test"
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		e, err := startExim(t, opts)
		if err == nil {
			return e
		}
		lastErr = err
		if !strings.Contains(err.Error(), "in use") {
			break
		}
	}
	t.Fatalf("realmta: exim did not start: %v", lastErr)
	return nil
}

func startExim(t testing.TB, opts EximOptions) (*Exim, error) {
	t.Helper()
	_, bin, _ := Find()
	dir := tempDir(t, "exim")
	e := &Exim{
		Dir:    dir,
		Port:   freePort(t),
		Bin:    bin,
		Opts:   opts,
		conf:   filepath.Join(dir, "exim.conf"),
		spool:  filepath.Join(dir, "spool"),
		logDir: filepath.Join(dir, "log"),
		done:   make(chan struct{}),
		stderr: &syncBuffer{},
	}
	uid, gid := lookupIDs(t, "mail")
	mkdirOwned(t, e.spool, uid, gid, 0o750)
	mkdirOwned(t, e.logDir, uid, gid, 0o750)

	users := strings.Join(opts.Users, " : ")
	conf := []string{
		"# private test instance (internal/realmta)",
		"primary_hostname = " + opts.Hostname,
		"exim_user = mail",
		"exim_group = mail",
		"spool_directory = " + e.spool,
		"log_file_path = " + e.logDir + "/%slog",
		"pid_file_path = " + filepath.Join(dir, "exim.pid"),
		"log_selector = +smtp_connection +incoming_interface +incoming_port +proxy +received_recipients +smtp_protocol_error",
		fmt.Sprintf("daemon_smtp_ports = %d", e.Port),
		"local_interfaces = 127.0.0.1",
		"domainlist local_domains = " + opts.Domain,
		"queue_only = true",
		"keep_environment =",
		"tls_advertise_hosts =",
		"host_lookup =",
		"rfc1413_hosts =",
		"smtp_banner = $smtp_active_hostname ESMTP Exim $version_number $tod_full",
		"acl_smtp_rcpt = acl_check_rcpt",
	}
	if opts.ProxyProtocol {
		conf = append(conf, "hosts_proxy = 127.0.0.1")
	}
	if opts.MessageSizeLimit > 0 {
		conf = append(conf, fmt.Sprintf("message_size_limit = %d", opts.MessageSizeLimit))
	}
	conf = setLines(conf, opts.Main)
	conf = append(conf,
		"",
		"begin acl",
		"",
		"acl_check_rcpt:",
		"  require message = relay not permitted",
		"          domains = +local_domains",
		"  require verify = recipient",
		"  accept",
		"",
		"begin routers",
		"",
		"known_users:",
		"  driver = accept",
		"  domains = +local_domains",
		"  local_parts = "+users,
		"  transport = mailbox",
		"",
		"begin transports",
		"",
		"mailbox:",
		"  driver = appendfile",
		"  directory = "+filepath.Join(dir, "mail")+"/$local_part",
		"  maildir_format",
		"  user = mail",
	)
	writeFile(t, e.conf, strings.Join(conf, "\n")+"\n")

	// -bdf: the daemon stays in the foreground, our child, in a process
	// group of its own with the processes it forks for each connection.
	e.cmd = exec.Command(bin, "-C", e.conf, "-bdf", "-oP", filepath.Join(dir, "exim.pid"))
	e.cmd.Dir = dir
	e.cmd.Stdout, e.cmd.Stderr = e.stderr, e.stderr
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %v", bin, err)
	}
	go func() {
		e.cmd.Wait()
		close(e.done)
	}()
	t.Cleanup(func() { e.stop(t) })
	err := waitSMTP(e.Addr(), opts.ProxyProtocol, 15*time.Second, func() error {
		select {
		case <-e.done:
			return fmt.Errorf("exim exited: %v", e.cmd.ProcessState)
		default:
			return nil
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%v\n%s", err, e.diagnostics())
	}
	return e, nil
}

func (e *Exim) diagnostics() string {
	var b strings.Builder
	if s := strings.TrimSpace(e.stderr.String()); s != "" {
		b.WriteString("exim's output:\n" + s + "\n")
	}
	for _, f := range []string{"paniclog", "mainlog", "rejectlog"} {
		if data, err := os.ReadFile(filepath.Join(e.logDir, f)); err == nil && len(data) > 0 {
			fmt.Fprintf(&b, "%s:\n%s\n", f, lastLines(string(data), 30))
		}
	}
	if b.Len() == 0 {
		return "(exim wrote nothing)"
	}
	return b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *Exim) stop(t testing.TB) {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	pid := e.cmd.Process.Pid
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
	}
	// The daemon's children (sessions still open) are in its group.
	syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		t.Errorf("realmta: exim (pid %d) did not exit", pid)
	}
	for _, p := range groupMembers(pid) {
		if !waitGone(p, 2*time.Second) {
			t.Errorf("realmta: exim process %d survived", p)
		}
	}
}

// MainLog returns Exim's mainlog.
func (e *Exim) MainLog() string {
	b, _ := os.ReadFile(filepath.Join(e.logDir, "mainlog"))
	return string(b)
}

// RejectLog returns Exim's rejectlog.
func (e *Exim) RejectLog() string {
	b, _ := os.ReadFile(filepath.Join(e.logDir, "rejectlog"))
	return string(b)
}

// Messages returns the messages in the spool, oldest first, rebuilt from the
// -H file (envelope and header lines) and the -D file (body).
func (e *Exim) Messages(t testing.TB) []Delivered {
	t.Helper()
	in := filepath.Join(e.spool, "input")
	ents, err := os.ReadDir(in)
	if err != nil {
		return nil
	}
	var ids []string
	for _, ent := range ents {
		if id, ok := strings.CutSuffix(ent.Name(), "-H"); ok {
			ids = append(ids, id)
		}
	}
	// Exim ids start with the time of arrival in base 62, so their order is
	// that of arrival (within a second, of the sub-second part).
	slices.Sort(ids)
	var out []Delivered
	for _, id := range ids {
		d, err := readEximSpool(in, id)
		if err != nil {
			t.Fatalf("realmta: exim spool message %s: %v", id, err)
		}
		out = append(out, d)
	}
	return out
}

// WaitMessages waits until at least n messages are in the spool and returns
// them all; it fails the test, showing the logs, if they do not come in time.
func (e *Exim) WaitMessages(t testing.TB, n int, timeout time.Duration) []Delivered {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := e.Messages(t)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("realmta: exim has %d messages after %v, want %d\n%s", len(got), timeout, n, e.diagnostics())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// readEximSpool rebuilds a message from its spool files (Exim spec, "Format
// of spool files").
func readEximSpool(dir, id string) (Delivered, error) {
	d := Delivered{ID: id}
	h, err := os.ReadFile(filepath.Join(dir, id+"-H"))
	if err != nil {
		return d, err
	}
	body, err := os.ReadFile(filepath.Join(dir, id+"-D"))
	if err != nil {
		return d, err
	}
	// -D: the first line is the file's name, the body follows.
	if i := bytes.IndexByte(body, '\n'); i >= 0 && string(body[:i]) == id+"-D" {
		body = body[i+1:]
	} else {
		return d, fmt.Errorf("-D file does not start with %q", id+"-D")
	}
	r := bufio.NewReader(bytes.NewReader(h))
	line := func() (string, error) {
		l, err := r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("-H file truncated: %v", err)
		}
		return strings.TrimSuffix(l, "\n"), nil
	}
	// The name, the owner, the sender in <>, the time, then "-" options.
	if l, err := line(); err != nil || l != id+"-H" {
		return d, fmt.Errorf("-H file does not start with %q", id+"-H")
	}
	if _, err := line(); err != nil {
		return d, err
	}
	l, err := line()
	if err != nil {
		return d, err
	}
	d.From = strings.TrimSuffix(strings.TrimPrefix(l, "<"), ">")
	if _, err := line(); err != nil {
		return d, err
	}
	for {
		if l, err = line(); err != nil {
			return d, err
		}
		if !strings.HasPrefix(l, "-") {
			break
		}
	}
	// The tree of recipients already delivered ("XX" when empty), then
	// the recipient count and the recipients.
	if l != "XX" {
		for {
			if l, err = line(); err != nil {
				return d, err
			}
			if _, err := strconv.Atoi(l); err == nil {
				break
			}
		}
	} else if l, err = line(); err != nil {
		return d, err
	}
	n, err := strconv.Atoi(l)
	if err != nil {
		return d, fmt.Errorf("-H file: bad recipient count %q", l)
	}
	for i := 0; i < n; i++ {
		if l, err = line(); err != nil {
			return d, err
		}
		addr, _, _ := strings.Cut(l, " ")
		d.To = append(d.To, addr)
	}
	if l, err = line(); err != nil || l != "" {
		return d, fmt.Errorf("-H file: no blank line after the recipients (%q)", l)
	}
	// Header lines: a length (of the text, newlines included), a flag
	// character ('*' = deleted), a space, and the text.
	var msg bytes.Buffer
	for {
		size := 0
		digits := 0
		var flag byte
		for {
			c, err := r.ReadByte()
			if err != nil {
				if digits == 0 {
					goto done // end of file
				}
				return d, fmt.Errorf("-H file: truncated header length")
			}
			if c >= '0' && c <= '9' && digits < 9 {
				size = size*10 + int(c-'0')
				digits++
				continue
			}
			if digits == 0 {
				return d, fmt.Errorf("-H file: header line without a length (at %q)", c)
			}
			flag = c
			break
		}
		if sp, err := r.ReadByte(); err != nil || sp != ' ' {
			return d, fmt.Errorf("-H file: header length and flag not followed by a space")
		}
		text := make([]byte, size)
		if _, err := io.ReadFull(r, text); err != nil {
			return d, fmt.Errorf("-H file: header shorter than its length: %v", err)
		}
		if flag != '*' {
			msg.Write(text)
		}
	}
done:
	msg.WriteByte('\n')
	msg.Write(body)
	d.Data = msg.Bytes()
	return d, nil
}

// syncBuffer is the shared goroutine-safe buffer.
type syncBuffer struct{ smtptest.SyncBuffer }
