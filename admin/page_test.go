package admin

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/decisionlog"
)

func TestIndexFilters(t *testing.T) {
	srv := serve(t, Options{Recent: fixtureRecent(io.Discard)})
	tests := []struct {
		query  string
		status int
		want   string // the session ids listed
		text   string // also in the page
	}{
		{"", 200, "EVIL1 RELAYED1 REFUSED1", "3 sessions kept"},
		{"client=192.0.2.7", 200, "REFUSED1", "1 of 3 kept sessions match"},
		{"client=192.0.2.0%2F24", 200, "REFUSED1", ""},
		{"client=198.51.100.0/24", 200, "RELAYED1", ""},
		{"client=2001:db8::66", 200, "EVIL1", ""},
		{"client=%5B2001:db8::66%5D", 200, "EVIL1", ""},
		{"client=2001:db8::/32", 200, "EVIL1", ""},
		{"client=::ffff:192.0.2.7", 200, "REFUSED1", ""},
		{"client=203.0.113.1", 200, "", "No sessions match"},
		{"action=reject", 200, "EVIL1 REFUSED1", ""},
		{"action=accept", 200, "RELAYED1", ""},
		{"action=would+reject", 200, "", ""},
		{"rule=helo.localhost", 200, "REFUSED1", ""},
		{"rule=helo.*", 200, "EVIL1 REFUSED1", ""},
		{"rule=helo.*&action=reject&client=2001:db8::/32", 200, "EVIL1", ""},
		{"client=not-an-address", 400, "", "bad client address"},
		{"client=192.0.2.0/99", 400, "", "bad client prefix"},
		{"action=explode", 400, "", "unknown action"},
		{"rule=%5B", 400, "", "bad rule pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp, body := get(t, srv.URL+"/?"+tt.query)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if got := strings.Join(rows(body), " "); got != tt.want {
				t.Errorf("listed %q, want %q", got, tt.want)
			}
			if !strings.Contains(body, tt.text) {
				t.Errorf("page lacks %q", tt.text)
			}
		})
	}
}

// TestFormKeepsValues: the form shows the filter it was sent, escaped.
func TestFormKeepsValues(t *testing.T) {
	srv := serve(t, Options{Recent: fixtureRecent(io.Discard)})
	_, body := get(t, srv.URL+"/?action=tempfail&rule="+url.QueryEscape(`"><script>x</script>`))
	for _, want := range []string{`<option value="tempfail" selected>`, `value="&#34;&gt;&lt;script&gt;x&lt;/script&gt;"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if strings.Contains(body, "<script>") {
		t.Error("the rule filter came back as markup")
	}
}

func TestIndexRow(t *testing.T) {
	srv := serve(t, Options{Recent: fixtureRecent(io.Discard)})
	_, body := get(t, srv.URL+"/?rule=helo.localhost")
	for _, want := range []string{
		`<a href="session/REFUSED1">REFUSED1</a>`, "192.0.2.7:40280", "localhost", "alice@example.org", "bob@example.com",
		`<td class="reject">reject</td>`, "<td>helo.localhost</td>",
		"550 5.5.2 Helo command rejected: localhost is not a mail server&#39;s name (helo.localhost)",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("row lacks %s", want)
		}
	}
}

// TestShowAll: past defaultShown the page lists the most recent and links
// to all, keeping the filter.
func TestShowAll(t *testing.T) {
	r := decisionlog.NewRecent(1000)
	for i := range defaultShown + 10 {
		r.Add(decisionlog.Record{Msg: "refused", Session: fmt.Sprint("S", i), Action: "reject", Rule: "helo.no_dot", Client: "192.0.2.1:1"})
	}
	srv := serve(t, Options{Recent: r})
	_, body := get(t, srv.URL+"/?rule=helo.*")
	if n := len(rows(body)); n != defaultShown {
		t.Errorf("%d rows, want %d", n, defaultShown)
	}
	if !strings.Contains(body, `<a href="?all=1&amp;client=&amp;action=&amp;rule=helo.%2a">show all</a>`) {
		t.Errorf("no show-all link keeping the filter")
	}
	_, body = get(t, srv.URL+"/?all=1&rule=helo.*")
	if n := len(rows(body)); n != defaultShown+10 {
		t.Errorf("all: %d rows", n)
	}
}

func TestSessionPage(t *testing.T) {
	srv := serve(t, Options{Recent: fixtureRecent(io.Discard)})
	resp, body := get(t, srv.URL+"/session/REFUSED1")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, want := range []string{
		"Session <span class=\"mono\">REFUSED1</span>",
		// the terse line of mxguard log
		"REFUSED rcpt 192.0.2.7:40280 helo=localhost from=&lt;alice@example.org&gt; to=&lt;bob@example.com&gt; rule=helo.localhost session=REFUSED1: 550 5.5.2",
		// every field
		`<td class="mono">where</td><td>(built-in rules/default.toml):40</td>`,
		`<td class="mono">elapsed</td><td>2.006</td>`,
		`<td class="mono">score</td><td>0</td>`,
		`<td class="mono">last_reply</td><td>221 2.0.0 Bye</td>`,
		`<td class="mono">refused</td><td>1</td>`,
		// the check outcomes with reasons
		"<td>helo</td><td>helo.localhost</td><td></td><td>HELO localhost is a name for the local machine</td>",
		"1 refused, 0 relayed, 0 would refuse; 2 kept",
		`<a href="../">Recent sessions</a>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("story lacks %s", want)
		}
	}
}

func TestSessionMissing(t *testing.T) {
	srv := serve(t, Options{Recent: fixtureRecent(io.Discard)})
	for _, id := range []string{"NOPE", "%3Cscript%3Ealert(1)%3C%2Fscript%3E"} {
		resp, body := get(t, srv.URL+"/session/"+id)
		if resp.StatusCode != 404 || !strings.Contains(body, "Session not found") {
			t.Errorf("%s: status %d", id, resp.StatusCode)
		}
		if strings.Contains(body, "<script>") {
			t.Errorf("%s: the id came back as markup", id)
		}
	}
	if !strings.Contains(func() string { _, b := get(t, srv.URL+"/session/NOPE"); return b }(), "mxguard log -all -session NOPE") {
		t.Error("no hint to read the log")
	}
}

// TestEscaping: whatever a client wrote is text on every page, never
// markup: none of the payloads' tags survive, on the list or the story.
func TestEscaping(t *testing.T) {
	srv := serve(t, Options{Recent: fixtureRecent(io.Discard)})
	for _, path := range []string{"/", "/?rule=helo.bad_syntax", "/session/EVIL1"} {
		_, body := get(t, srv.URL+path)
		for _, bad := range []string{"<script", "<img", "<b>", "<iframe", "<svg", "<i>", "onerror=\"", "onload=\""} {
			if strings.Contains(body, bad) {
				t.Errorf("%s: %q unescaped", path, bad)
			}
		}
		for _, want := range []string{"&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;", "&lt;b&gt;markup&lt;/b&gt;@evil.example"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s: lacks the escaped %s", path, want)
			}
		}
	}
	_, body := get(t, srv.URL+"/session/EVIL1")
	for _, want := range []string{"&lt;iframe src=&#34;x&#34;&gt;", "&lt;svg onload=&#34;alert(1)&#34;&gt;", "&#34;&lt;i&gt;x&lt;/i&gt;&#34;@example.com"} {
		if !strings.Contains(body, want) {
			t.Errorf("story lacks the escaped %s", want)
		}
	}
}

func TestNoRecent(t *testing.T) {
	srv := serve(t, Options{})
	resp, body := get(t, srv.URL+"/")
	if resp.StatusCode != 200 || !strings.Contains(body, "No sessions") {
		t.Errorf("status %d body %s", resp.StatusCode, body)
	}
	if resp, _ := get(t, srv.URL+"/session/X"); resp.StatusCode != 404 {
		t.Errorf("session: %d", resp.StatusCode)
	}
	if resp, _ := get(t, srv.URL+"/metrics"); resp.StatusCode != 404 {
		t.Errorf("metrics without a registry: %d", resp.StatusCode)
	}
}

// TestHeaders: every response forbids scripts, sniffing, framing and
// caching; HTML pages allow only their own style element.
func TestHeaders(t *testing.T) {
	srv := serve(t, Options{Recent: fixtureRecent(io.Discard)})
	for _, path := range []string{"/", "/session/REFUSED1", "/session/NOPE", "/healthz", "/nothing"} {
		resp, body := get(t, srv.URL+path)
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		if !strings.HasPrefix(csp, "default-src 'none'; ") || strings.Contains(csp, "script-src") || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		if path == "/" || strings.HasPrefix(path, "/session") {
			nonce, _, _ := strings.Cut(strings.TrimPrefix(csp[strings.Index(csp, "style-src 'nonce-"):], "style-src 'nonce-"), "'")
			if nonce == "" || !strings.Contains(body, `<style nonce="`+nonce+`">`) {
				t.Errorf("%s: the style's nonce is not the CSP's (%q)", path, csp)
			}
			if strings.Contains(body, "<script") || strings.Contains(body, " style=") {
				t.Errorf("%s: a script or a style attribute in the page", path)
			}
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if h.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", path, k, h.Get(k), v)
			}
		}
	}
	_, a := get(t, srv.URL+"/")
	_, b := get(t, srv.URL+"/")
	if nonce := func(s string) string { _, n, _ := strings.Cut(s, `nonce="`); return n[:10] }; nonce(a) == nonce(b) {
		t.Error("the nonce does not change")
	}
}

func TestReadOnly(t *testing.T) {
	srv := serve(t, Options{Recent: fixtureRecent(io.Discard)})
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions, "TRACE"} {
		for _, path := range []string{"/", "/session/REFUSED1", "/metrics", "/healthz"} {
			resp, _ := do(t, m, srv.URL+path, nil)
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: %d, Allow %q", m, path, resp.StatusCode, resp.Header.Get("Allow"))
			}
		}
	}
	resp, body := do(t, http.MethodHead, srv.URL+"/", nil)
	if resp.StatusCode != 200 || body != "" {
		t.Errorf("HEAD: %d %q", resp.StatusCode, body)
	}
}
