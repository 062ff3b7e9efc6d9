package realmta

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PostfixOptions configure a private Postfix.
type PostfixOptions struct {
	// Domain is the one domain it receives mail for, as virtual mailboxes
	// (default "mxguard.test"); Users are its mailboxes (default alice, bob,
	// postmaster). Any other user of Domain is refused at RCPT, and any other
	// domain is relay-denied.
	Domain string
	Users  []string
	// Hostname is myhostname (default "postfix.backend.test").
	Hostname string
	// XCLIENT lets loopback clients (127.0.0.0/8) send XCLIENT
	// (smtpd_authorized_xclient_hosts).
	XCLIENT bool
	// ProxyProtocol makes smtpd expect a PROXY v1 or v2 header on every
	// connection (smtpd_upstream_proxy_protocol = haproxy).
	ProxyProtocol bool
	// MessageSizeLimit is message_size_limit (0: Postfix's default, 10240000).
	MessageSizeLimit int64
	// MainCF holds more main.cf lines ("name = value"); each replaces the
	// line setting the same name, if any.
	MainCF []string
}

// Postfix is a running private Postfix.
type Postfix struct {
	// Dir holds everything: etc/ (main.cf, master.cf, mailbox table),
	// queue/, data/, mail/ (the maildirs) and maillog.
	Dir  string
	Port int
	// ConfigDir is what postfix -c takes.
	ConfigDir string
	Opts      PostfixOptions

	logFile string
	mailDir string
	pidFile string
	pid     int
}

// Addr returns the smtpd's "127.0.0.1:port".
func (p *Postfix) Addr() string { return fmt.Sprintf("127.0.0.1:%d", p.Port) }

// StartPostfix starts a private Postfix listening on a free loopback port and
// stops it when the test ends. A failure to start fails the test with
// Postfix's own error text.
func StartPostfix(t testing.TB, opts PostfixOptions) *Postfix {
	t.Helper()
	Require(t, "postfix")
	if opts.Domain == "" {
		opts.Domain = "mxguard.test"
	}
	if len(opts.Users) == 0 {
		opts.Users = []string{"alice", "bob", "postmaster"}
	}
	if opts.Hostname == "" {
		opts.Hostname = "postfix.backend.test"
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		p, err := startPostfix(t, opts)
		if err == nil {
			return p
		}
		lastErr = err
		if !strings.Contains(err.Error(), "in use") {
			break
		}
	}
	t.Fatalf("realmta: postfix did not start: %v", lastErr)
	return nil
}

func startPostfix(t testing.TB, opts PostfixOptions) (*Postfix, error) {
	t.Helper()
	dir := tempDir(t, "postfix")
	p := &Postfix{
		Dir:       dir,
		Port:      freePort(t),
		ConfigDir: filepath.Join(dir, "etc"),
		Opts:      opts,
		logFile:   filepath.Join(dir, "maillog"),
		mailDir:   filepath.Join(dir, "mail"),
	}
	queue := filepath.Join(dir, "queue")
	p.pidFile = filepath.Join(queue, "pid", "master.pid")
	puid, pgid := lookupIDs(t, "postfix")
	mkdirOwned(t, p.ConfigDir, 0, 0, 0o755)
	mkdirOwned(t, queue, 0, 0, 0o755)
	mkdirOwned(t, filepath.Join(dir, "data"), puid, pgid, 0o700)
	// Mailboxes belong to nobody: virtual(8) delivers as that user.
	mkdirOwned(t, p.mailDir, 65534, 65534, 0o755)

	var mbox strings.Builder
	for _, u := range opts.Users {
		fmt.Fprintf(&mbox, "%s@%s %s/%s/\n", u, opts.Domain, opts.Domain, u)
	}
	writeFile(t, filepath.Join(p.ConfigDir, "vmailbox"), mbox.String())

	main := []string{
		"# private test instance (internal/realmta)",
		"compatibility_level = 3.6",
		"queue_directory = " + queue,
		"data_directory = " + filepath.Join(dir, "data"),
		"myhostname = " + opts.Hostname,
		"mydomain = " + opts.Domain,
		"myorigin = $myhostname",
		"mydestination = localhost",
		"inet_interfaces = 127.0.0.1",
		"inet_protocols = ipv4",
		// Only the proxy's own address is a trusted network: a client the
		// proxy failed to name (XCLIENT or PROXY) could relay through it.
		"mynetworks = 127.0.0.1/32",
		"smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
		// The tests' client addresses have no PTR in the system's DNS.
		"smtpd_peername_lookup = no",
		"virtual_mailbox_domains = " + opts.Domain,
		"virtual_mailbox_maps = texthash:" + filepath.Join(p.ConfigDir, "vmailbox"),
		"virtual_mailbox_base = " + p.mailDir,
		"virtual_uid_maps = static:65534",
		"virtual_gid_maps = static:65534",
		"alias_maps =",
		"alias_database =",
		"biff = no",
		"append_dot_mydomain = no",
		"relayhost =",
		// No syslog on test machines.
		"maillog_file = " + p.logFile,
		"maillog_file_prefixes = " + dir,
		"smtpd_banner = $myhostname ESMTP $mail_name",
	}
	if opts.XCLIENT {
		main = append(main, "smtpd_authorized_xclient_hosts = 127.0.0.0/8")
	}
	if opts.ProxyProtocol {
		main = append(main, "smtpd_upstream_proxy_protocol = haproxy")
	}
	if opts.MessageSizeLimit > 0 {
		main = append(main, fmt.Sprintf("message_size_limit = %d", opts.MessageSizeLimit))
	}
	main = setLines(main, opts.MainCF)
	writeFile(t, filepath.Join(p.ConfigDir, "main.cf"), strings.Join(main, "\n")+"\n")
	master, err := masterCF(p.Port)
	if err != nil {
		t.Fatalf("realmta: %v", err)
	}
	writeFile(t, filepath.Join(p.ConfigDir, "master.cf"), master)

	env := []string{"MAIL_CONFIG=" + p.ConfigDir}
	out, err := ptyRun(30*time.Second, env, "postfix", "-c", p.ConfigDir, "start")
	if pid, perr := readPID(p.pidFile); perr == nil {
		p.pid = pid
	}
	// Registered now, so that whatever did start is stopped.
	t.Cleanup(func() { p.stop(t) })
	if err != nil {
		return nil, fmt.Errorf("postfix -c %s start: %v\n%s%s", p.ConfigDir, err, out, p.logTail())
	}
	if p.pid == 0 {
		pid, perr := readPID(p.pidFile)
		if perr != nil {
			return nil, fmt.Errorf("postfix -c %s start: no master pid: %v\n%s%s", p.ConfigDir, perr, out, p.logTail())
		}
		p.pid = pid
	}
	err = waitSMTP(p.Addr(), opts.ProxyProtocol, 15*time.Second, func() error {
		if !alive(p.pid) {
			return fmt.Errorf("the postfix master (pid %d) exited", p.pid)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%v\n%s%s", err, out, p.logTail())
	}
	return p, nil
}

// setLines sets "name = value" lines in a configuration: a line for a name
// already there replaces it, others are appended.
func setLines(conf, set []string) []string {
	conf = slices.Clone(conf)
	for _, l := range set {
		name, _, _ := strings.Cut(l, "=")
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(conf, func(c string) bool {
			n, _, ok := strings.Cut(c, "=")
			return ok && strings.TrimSpace(n) == name
		})
		if i >= 0 && name != "" {
			conf[i] = l
		} else {
			conf = append(conf, l)
		}
	}
	return conf
}

// masterCF is the system's master.cf with the smtp inet service moved to
// 127.0.0.1:port and no service chrooted (the queue is a temp dir without
// the chroot's copies of /etc files).
func masterCF(port int) (string, error) {
	var src []byte
	var err error
	for _, f := range []string{"/etc/postfix/master.cf", "/usr/share/postfix/master.cf.dist"} {
		if src, err = os.ReadFile(f); err == nil {
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("no master.cf to copy: %v", err)
	}
	var b strings.Builder
	b.WriteString("# copied from the system's master.cf by internal/realmta:\n")
	b.WriteString("# smtp inet moved to loopback, chroot off\n")
	sawPostlog := false
	skipping := false
	sc := bufio.NewScanner(strings.NewReader(string(src)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			b.WriteString(line + "\n")
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if skipping {
				b.WriteString("#" + line + "\n")
			} else {
				b.WriteString(line + "\n")
			}
			continue
		}
		f := strings.Fields(line)
		skipping = false
		if len(f) < 8 {
			b.WriteString(line + "\n")
			continue
		}
		if f[1] == "inet" {
			if f[0] != "smtp" {
				skipping = true
				b.WriteString("#" + line + "\n")
				continue
			}
			f[0] = fmt.Sprintf("127.0.0.1:%d", port)
		}
		if f[0] == "postlog" {
			sawPostlog = true
		}
		f[4] = "n"
		b.WriteString(strings.Join(f, " ") + "\n")
	}
	if !sawPostlog {
		b.WriteString("postlog unix-dgram n - n - 1 postlogd\n")
	}
	return b.String(), nil
}

// stop runs postfix stop, then kills whatever is left of the instance: the
// master is a session leader, and its daemons are in its process group.
func (p *Postfix) stop(t testing.TB) {
	if p.pid == 0 {
		if pid, err := readPID(p.pidFile); err == nil {
			p.pid = pid
		}
	}
	if p.pid == 0 {
		return
	}
	if alive(p.pid) {
		out, err := ptyRun(15*time.Second, []string{"MAIL_CONFIG=" + p.ConfigDir}, "postfix", "-c", p.ConfigDir, "stop")
		if err != nil {
			t.Logf("realmta: postfix stop: %v: %s", err, out)
		}
		waitGone(p.pid, 5*time.Second)
	}
	syscall.Kill(-p.pid, syscall.SIGKILL)
	syscall.Kill(p.pid, syscall.SIGKILL)
	gone := func() bool { return !alive(p.pid) && len(groupMembers(p.pid)) == 0 }
	deadline := time.Now().Add(5 * time.Second)
	for !gone() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !gone() {
		t.Errorf("realmta: postfix processes survived SIGKILL: master %d, group %v", p.pid, groupMembers(p.pid))
	}
}

// Log returns the instance's maillog.
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(p.logFile)
	return string(b)
}

func (p *Postfix) logTail() string {
	lines := strings.Split(strings.TrimSpace(p.Log()), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return "\n(maillog " + p.logFile + " is empty)"
	}
	return "\nmaillog:\n" + strings.Join(lines, "\n")
}

// Messages returns the messages delivered to the mailboxes, oldest first.
func (p *Postfix) Messages(t testing.TB) []Delivered {
	t.Helper()
	var out []Delivered
	type file struct {
		path, rcpt string
		mod        time.Time
	}
	var files []file
	for _, u := range p.Opts.Users {
		for _, sub := range []string{"new", "cur"} {
			d := filepath.Join(p.mailDir, p.Opts.Domain, u, sub)
			ents, err := os.ReadDir(d)
			if err != nil {
				continue
			}
			for _, e := range ents {
				info, err := e.Info()
				if err != nil || !info.Mode().IsRegular() {
					continue
				}
				files = append(files, file{filepath.Join(d, e.Name()), u + "@" + p.Opts.Domain, info.ModTime()})
			}
		}
	}
	slices.SortStableFunc(files, func(a, b file) int {
		if c := a.mod.Compare(b.mod); c != 0 {
			return c
		}
		return strings.Compare(filepath.Base(a.path), filepath.Base(b.path))
	})
	for _, f := range files {
		data, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatalf("realmta: %v", err)
		}
		d := Delivered{Data: data, To: []string{f.rcpt}, ID: filepath.Base(f.path)}
		if l, ok := strings.CutPrefix(string(data), "Return-Path: <"); ok {
			d.From, _, _ = strings.Cut(l, ">")
		}
		out = append(out, d)
	}
	return out
}

// WaitMessages waits until at least n messages were delivered and returns
// them all; it fails the test, showing the maillog, if they do not come in
// time.
func (p *Postfix) WaitMessages(t testing.TB, n int, timeout time.Duration) []Delivered {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := p.Messages(t)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("realmta: postfix delivered %d messages in %v, want %d\n%s", len(got), timeout, n, p.logTail())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Queue lists what is still in the queue (postqueue -p), for diagnostics.
func (p *Postfix) Queue() string {
	out, _ := exec.Command("postqueue", "-c", p.ConfigDir, "-p").CombinedOutput()
	return string(out)
}
