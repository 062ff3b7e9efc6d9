package browsertest

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "chromium")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	fake := filepath.Join(dir, "fake")
	os.WriteFile(fake, []byte("#!/bin/sh\necho Firefox 1\n"), 0o755)
	tests := []struct{ path, want string }{
		{filepath.Join(dir, "missing"), "not found"},
		{dir, "not executable"},
		{notExec, "not executable"},
		{fake, "--version failed"},
	}
	for _, tt := range tests {
		if got := check(tt.path); !strings.Contains(got, tt.want) {
			t.Errorf("check(%s) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

// TestBrowser: a page on loopback is opened, its script runs, and its
// console errors and exceptions are heard.
func TestBrowser(t *testing.T) {
	b := Start(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!DOCTYPE html><title>before</title><p id="p">hello <b>world</b></p>
<script>document.title = "after"; console.error("oops", 42); setTimeout(() => { throw new Error("thrown") }, 0);</script>`))
	}))
	defer srv.Close()
	b.Do(t, chromedp.Navigate(srv.URL), chromedp.WaitVisible(chromedp.ID("p")))
	if title := Run(t, b, chromedp.Title()); title != "after" {
		t.Errorf("title %q: the script did not run", title)
	}
	if text := Run(t, b, chromedp.Text(chromedp.ID("p"))); text != "hello world" {
		t.Errorf("text %q", text)
	}
	Run(t, b, chromedp.Evaluate[bool](`new Promise(r => setTimeout(() => r(true), 50))`, chromedp.EvalAwaitPromise))
	var console, exception bool
	for _, m := range b.Errors() {
		console = console || m.Source == "console" && strings.Contains(m.Text, `"oops" 42`)
		exception = exception || m.Source == "exception" && strings.Contains(m.Text, "thrown")
	}
	if !console || !exception {
		t.Errorf("messages %v: want the console error and the exception", b.Messages())
	}
}
