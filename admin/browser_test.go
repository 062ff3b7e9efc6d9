package admin

import (
	"bytes"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/mxguard/mxguard/internal/browsertest"
)

// TestBrowser opens the page in a real headless chromium: the refusal and
// its rule are on it, a session link leads to its story, the form
// filters, and the HELO and sender carrying markup show as text while no
// script runs and no element is made from them.
func TestBrowser(t *testing.T) {
	b := browsertest.Start(t)
	var log bytes.Buffer
	s, err := Start(Options{Listen: "127.0.0.1:0", Recent: fixtureRecent(&log), Registry: testRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if !strings.Contains(log.String(), `"rule":"helo.localhost"`) {
		t.Fatalf("the JSON log lacks the refusal: %s", log.String())
	}

	text := func(sel string) string { return browsertest.Run(t, b, chromedp.Text(chromedp.CSS(sel))) }
	eval := func(js string) int { return browsertest.Run(t, b, chromedp.Evaluate[int](js)) }
	// safe checks that nothing the clients wrote became markup or ran.
	safe := func(where, wantTitle string) {
		t.Helper()
		if title := browsertest.Run(t, b, chromedp.Title()); title != wantTitle {
			t.Errorf("%s: title %q, want %q: a script ran", where, title, wantTitle)
		}
		for js, what := range map[string]string{
			"document.scripts.length":                                "script elements",
			"document.images.length":                                 "img elements",
			"document.querySelectorAll('b,i,iframe,svg').length":     "elements from the clients' markup",
			"document.querySelectorAll('[onerror],[onload]').length": "event handler attributes",
		} {
			if n := eval(js); n != 0 {
				t.Errorf("%s: %d %s", where, n, what)
			}
		}
	}

	// The list: the refusal and its rule are shown.
	if status := b.Load(t, chromedp.Navigate(s.URL())); status != 200 {
		t.Fatalf("status %d", status)
	}
	row := browsertest.Run(t, b, chromedp.Evaluate[string](
		`[...document.querySelectorAll('#sessions tbody tr')].find(r => r.innerText.includes('REFUSED1')).innerText`))
	for _, want := range []string{"192.0.2.7:40280", "localhost", "alice@example.org", "bob@example.com", "reject", "helo.localhost",
		"550 5.5.2 Helo command rejected: localhost is not a mail server's name (helo.localhost)"} {
		if !strings.Contains(row, want) {
			t.Errorf("the refusal's row %q lacks %q", row, want)
		}
	}
	page := text("body")
	for _, want := range []string{evilHELO, evilSender, "RELAYED1", "250 2.0.0 Ok: queued as 4XYZ"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page's text lacks %q", want)
		}
	}
	safe("list", "Recent sessions · mxguard")

	// A session link leads to the story.
	if status := b.Load(t, chromedp.Click(chromedp.CSS(`a[href="session/REFUSED1"]`))); status != 200 {
		t.Fatalf("story: status %d", status)
	}
	if loc := browsertest.Run(t, b, chromedp.Location()); !strings.HasSuffix(loc, "/session/REFUSED1") {
		t.Errorf("the link led to %s", loc)
	}
	story := text("body")
	for _, want := range []string{"Session REFUSED1", "helo.localhost", "HELO localhost is a name for the local machine",
		"(built-in rules/default.toml):40", "REFUSED rcpt 192.0.2.7:40280 helo=localhost", "last_reply", "221 2.0.0 Bye"} {
		if !strings.Contains(story, want) {
			t.Errorf("the story lacks %q", want)
		}
	}
	if n := eval(`document.querySelectorAll('section.record').length`); n != 2 {
		t.Errorf("the story has %d records, want 2", n)
	}
	safe("story", "Session REFUSED1 · mxguard")

	// The story of the client whose HELO is a script: text, nothing ran.
	b.Load(t, chromedp.Click(chromedp.CSS(`nav a`)))
	b.Load(t, chromedp.Click(chromedp.CSS(`a[href="session/EVIL1"]`)))
	if helo := text("#summary dd:nth-of-type(4)"); helo != evilHELO {
		t.Errorf("the HELO shows as %q, want the literal text %q", helo, evilHELO)
	}
	if from := text("#summary dd:nth-of-type(5)"); from != evilSender {
		t.Errorf("the sender shows as %q", from)
	}
	if story := text("body"); !strings.Contains(story, `<svg onload="alert(1)">`) || !strings.Contains(story, `<iframe src="x">`) {
		t.Errorf("the story lacks the other payloads as text")
	}
	safe("the hostile client's story", "Session EVIL1 · mxguard")

	// Filter by rule with the form.
	b.Load(t, chromedp.Navigate(s.URL()))
	b.Load(t, chromedp.SetValue(chromedp.CSS(`input[name=rule]`), "helo.localhost"),
		chromedp.Click(chromedp.CSS(`form button`)))
	if loc := browsertest.Run(t, b, chromedp.Location()); !strings.Contains(loc, "rule=helo.localhost") {
		t.Errorf("the form went to %s", loc)
	}
	ids := browsertest.Run(t, b, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#sessions tbody a')].map(a => a.textContent)`))
	if strings.Join(ids, " ") != "REFUSED1" {
		t.Errorf("filtered by rule: %v, want REFUSED1", ids)
	}
	if c := text("#count"); !strings.Contains(c, "1 of 3 kept sessions match") {
		t.Errorf("count %q", c)
	}
	// By action and client prefix together.
	b.Load(t, chromedp.Clear(chromedp.CSS(`input[name=rule]`)),
		chromedp.SetValue(chromedp.CSS(`select[name=action]`), "reject"),
		chromedp.SetValue(chromedp.CSS(`input[name=client]`), "2001:db8::/32"),
		chromedp.Click(chromedp.CSS(`form button`)))
	ids = browsertest.Run(t, b, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#sessions tbody a')].map(a => a.textContent)`))
	if strings.Join(ids, " ") != "EVIL1" {
		t.Errorf("filtered by action and client: %v, want EVIL1", ids)
	}
	safe("filtered list", "Recent sessions · mxguard")

	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the browser reported errors: %v", errs)
	}
}
