// Package browsertest runs a real headless browser for tests: Debian's
// chromium, driven by github.com/chromedp/chromedp over a pipe (no
// debugging port). Each Browser has a fresh profile in the test's
// temporary directory, talks to nothing but what the test opens (no
// background networking, updates, sync or QUIC), records the page's
// console messages and uncaught exceptions, and is stopped, with every
// process it started, when the test ends.
//
// chromium comes from `apt-get install -y chromium` (Debian's package,
// /usr/bin/chromium; not the snap, not chromium-driver). Tests call Start
// (or Require): without chromium they skip, unless MXGUARD_E2E=1 (CI),
// where they fail.
package browsertest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// DefaultPath is Debian's chromium; EnvPath overrides it.
const (
	DefaultPath = "/usr/bin/chromium"
	EnvPath     = "MXGUARD_CHROMIUM"
)

// EnvE2E, set to "1", turns a missing chromium from a skip into a failure.
const EnvE2E = "MXGUARD_E2E"

const installHint = "install it with `apt-get install -y chromium` (Debian's package: not the snap, not chromium-driver)"

// RunTimeout bounds each Run.
const RunTimeout = 30 * time.Second

var found struct {
	once      sync.Once
	path, why string
}

// Find returns chromium's path, or why it is unusable.
func Find() (path, why string) {
	found.once.Do(func() {
		found.path = DefaultPath
		if p := os.Getenv(EnvPath); p != "" {
			found.path = p
		}
		found.why = check(found.path)
	})
	return found.path, found.why
}

// check says why the chromium at path is unusable, "" if it is usable.
func check(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return path + " not found"
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return path + " is not executable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("Chromium")) {
		return fmt.Sprintf("%s --version failed: %v: %s", path, err, bytes.TrimSpace(out))
	}
	return ""
}

// Require returns chromium's path, or skips the test saying why (fails
// it with MXGUARD_E2E=1).
func Require(t testing.TB) string {
	t.Helper()
	path, why := Find()
	if why == "" {
		return path
	}
	msg := fmt.Sprintf("chromium not usable: %s; %s", why, installHint)
	if os.Getenv(EnvE2E) == "1" {
		t.Fatalf("%s (%s=1: not skipping)", msg, EnvE2E)
	}
	t.Skip(msg + " (with " + EnvE2E + "=1 this fails instead)")
	return ""
}

// Message is a console message, a log entry or an uncaught exception of
// the page.
type Message struct {
	Source string // "console", "log" (the browser's own: CSP violations, failed loads) or "exception"
	Level  string // "log", "info", "warning", "error", ...
	Text   string
}

func (m Message) String() string { return m.Source + " " + m.Level + ": " + m.Text }

// Browser is one headless chromium with one tab.
type Browser struct {
	ctx context.Context // the tab's

	mu       sync.Mutex
	messages []Message
	logs     bytes.Buffer // chromedp's own errors, shown if the test fails
}

// Options returns the allocator options Start uses: chromium at path,
// headless, sandbox off (the tests run as root), with its profile in dir,
// and quiet on the network.
func Options(path, dir string) []chromedp.ExecAllocatorOption {
	return []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(dir),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-client-side-phishing-detection", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,AutofillServerCommunication"),
		chromedp.Flag("safebrowsing-disable-auto-update", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("no-proxy-server", true), // loopback pages direct, and nothing through an environment's proxy
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
}

// Start launches chromium for the test (after Require) and opens a blank
// tab. The browser is closed, and its processes are gone, when the test
// ends; a process left behind fails the test.
func Start(t testing.TB) *Browser {
	t.Helper()
	path := Require(t)
	dir := t.TempDir() // removed after the cleanup below has stopped chromium
	b := &Browser{}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), Options(path, dir)...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(b.logf), chromedp.WithLogf(b.logf))
	t.Cleanup(func() {
		cancel()      // closes the browser and waits for it
		cancelAlloc() // kills it if it did not close, and waits
		if left := waitGone(dir, 10*time.Second); len(left) > 0 {
			t.Errorf("browsertest: chromium processes left running: %v", left)
		}
		b.mu.Lock()
		if t.Failed() && b.logs.Len() > 0 {
			t.Logf("browsertest: chromedp's log:\n%s", b.logs.String())
		}
		b.mu.Unlock()
	})
	// Listen starts the browser under the tab's own context (a later Run
	// under a shorter-lived context must not own it) and hears the page
	// from its first message.
	if err := chromedp.Listen(ctx, b.listen); err != nil {
		t.Fatalf("browsertest: starting %s: %v", path, err)
	}
	b.ctx = ctx
	return b
}

func (b *Browser) logf(format string, a ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprintf(&b.logs, format+"\n", a...)
}

func (b *Browser) listen(ev any) {
	var m Message
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		var args []string
		for _, a := range ev.Args {
			if a.Value != nil {
				args = append(args, string(a.Value)) // JSON
			} else {
				args = append(args, a.Description)
			}
		}
		m = Message{"console", string(ev.Type), strings.Join(args, " ")}
	case *runtime.EventExceptionThrown:
		text := ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			text += " " + ev.ExceptionDetails.Exception.Description
		}
		m = Message{"exception", "error", text}
	case *log.EventEntryAdded:
		m = Message{"log", string(ev.Entry.Level), ev.Entry.Text + " " + ev.Entry.URL}
	default:
		return
	}
	b.mu.Lock()
	b.messages = append(b.messages, m)
	b.mu.Unlock()
}

// Context returns the tab's context, for chromedp.Run with a deadline of
// the caller's own.
func (b *Browser) Context() context.Context { return b.ctx }

// Do runs the steps in the tab, in order, within RunTimeout, failing the
// test on an error.
func (b *Browser) Do(t testing.TB, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	Run(t, b, chromedp.Steps(steps...))
}

// Load runs steps that make the tab load a page (chromedp.Navigate, a
// click on a link or a submit button) and waits until the page has
// loaded, within RunTimeout, failing the test on an error. It returns the
// page's HTTP status.
func (b *Browser) Load(t testing.TB, steps ...chromedp.Action[chromedp.Void]) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, RunTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	return int(resp.Status)
}

// Run runs an action that returns a value (chromedp.Title,
// chromedp.Text, chromedp.Evaluate, ...) in the tab within RunTimeout,
// failing the test on an error.
func Run[T any](t testing.TB, b *Browser, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, RunTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	return v
}

// Messages returns the page's console messages, the browser's log entries
// and uncaught exceptions so far.
func (b *Browser) Messages() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Message(nil), b.messages...)
}

// Errors returns the Messages at level error (exceptions included).
func (b *Browser) Errors() []Message {
	var out []Message
	for _, m := range b.Messages() {
		if m.Level == "error" {
			out = append(out, m)
		}
	}
	return out
}

// waitGone waits until no process has dir (the profile) on its command
// line, and returns those still there after timeout.
func waitGone(dir string, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		left := processesWith(dir)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func processesWith(s string) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cmd, []byte(s)) {
			continue
		}
		if stat, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil && bytes.Contains(stat, []byte(") Z ")) {
			continue // a zombie is gone but for its parent's wait
		}
		name, _, _ := bytes.Cut(cmd, []byte{0})
		out = append(out, e.Name()+" "+string(name))
	}
	return out
}
