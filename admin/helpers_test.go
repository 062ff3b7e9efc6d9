package admin

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/decisionlog"
)

// The attacker-controlled strings of the tests.
const (
	evilHELO   = `<script>document.title='pwned'</script><img src=x onerror="document.title='pwned'">`
	evilSender = `<b>markup</b>@evil.example`
)

// fixtureRecent logs three sessions in mxguard's format through a real
// JSON logger: a refusal by helo.localhost, a relayed message, and a
// client whose HELO and sender carry markup. The JSON lines go to w.
func fixtureRecent(w io.Writer) *decisionlog.Recent {
	r := decisionlog.NewRecent(100)
	l := slog.New(r.Handler(slog.NewJSONHandler(w, nil)))
	logSessions(l)
	return r
}

func logSessions(l *slog.Logger) {
	ctx := context.Background()
	res := []checks.Result{{Check: "helo", Outcome: "helo.localhost", Reason: "HELO localhost is a name for the local machine"}}
	l.LogAttrs(ctx, slog.LevelInfo, "refused",
		slog.String("session", "REFUSED1"), slog.String("client", "192.0.2.7:40280"), slog.String("stage", "rcpt"),
		slog.String("action", "reject"), slog.String("rule", "helo.localhost"),
		slog.String("reason", "HELO localhost is a name for the local machine"), slog.Float64("score", 0),
		slog.String("reply", "550 5.5.2 Helo command rejected: localhost is not a mail server's name (helo.localhost)"),
		slog.String("where", "(built-in rules/default.toml):40"), slog.String("helo", "localhost"),
		slog.String("from", "alice@example.org"), slog.String("rcpt", "bob@example.com"),
		slog.Any("checks", res), slog.Float64("elapsed", 2.006))
	l.LogAttrs(ctx, slog.LevelInfo, "session",
		slog.String("session", "REFUSED1"), slog.String("client", "192.0.2.7:40280"), slog.Any("helo", []string{"localhost"}),
		slog.Int("accepted", 0), slog.Int("refused", 1), slog.Any("checks", res), slog.Float64("elapsed", 2.1),
		slog.String("last_reply", "221 2.0.0 Bye"))

	ok := []checks.Result{{Check: "helo", Outcome: "helo.pass", Reason: "mail.sender.example resolves to the client"}}
	l.Info("relayed", "session", "RELAYED1", "client", "198.51.100.5:5000", "helo", "mail.sender.example",
		"from", "carol@sender.example", "rcpt", []string{"dave@example.com"}, "size", 321, "action", "accept",
		"score", 0.0, "reply", "250 2.0.0 Ok: queued as 4XYZ")
	l.LogAttrs(ctx, slog.LevelInfo, "session",
		slog.String("session", "RELAYED1"), slog.String("client", "198.51.100.5:5000"),
		slog.Any("helo", []string{"mail.sender.example"}), slog.Int("accepted", 1), slog.Any("checks", ok))

	evil := []checks.Result{{Check: "helo", Outcome: "helo.bad_syntax", Reason: "HELO " + evilHELO + " is not a valid name",
		Evidence: `<iframe src="x">`}}
	l.LogAttrs(ctx, slog.LevelInfo, "refused",
		slog.String("session", "EVIL1"), slog.String("client", "[2001:db8::66]:4000"), slog.String("stage", "rcpt"),
		slog.String("action", "reject"), slog.String("rule", "helo.bad_syntax"),
		slog.String("reason", "HELO "+evilHELO+" is not a valid name"),
		slog.String("reply", "550 5.5.2 <"+evilHELO+">: Helo command rejected (helo.bad_syntax)"),
		slog.String("helo", evilHELO), slog.String("from", evilSender), slog.String("rcpt", `"<i>x</i>"@example.com`),
		slog.Any("checks", evil), slog.String("note", `<svg onload="alert(1)">`))
}

// serve serves the admin handler for opts on an httptest server.
func serve(t *testing.T, opts Options) *httptest.Server {
	t.Helper()
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// get fetches a URL and returns the response and its body.
func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	return do(t, http.MethodGet, url, nil)
}

func do(t *testing.T, method, url string, edit func(*http.Request)) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// rows returns the session ids listed on the index page, in order.
func rows(body string) []string {
	var ids []string
	for _, part := range strings.Split(body, `<a href="session/`)[1:] {
		id, _, _ := strings.Cut(part, `"`)
		ids = append(ids, id)
	}
	return ids
}
