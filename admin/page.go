package admin

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/decisionlog"
)

//go:embed templates/*.html
var templateFS embed.FS

// The templates are html/template: every value is escaped for where it
// lands. Record data is attacker-controlled; it is never template.HTML.
var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"timestamp":   timestamp,
	"pathEscape":  url.PathEscape,
	"join":        strings.Join,
	"line":        decisionlog.Line,
	"fields":      fields,
	"actionClass": actionClass,
}).ParseFS(templateFS, "templates/*.html"))

// Actions are the actions the filter offers: those a decision record can
// show.
var Actions = []string{"reject", "tempfail", "drop", "tag", "accept", "would reject", "would tempfail", "would drop", "would tag"}

// defaultShown is how many sessions the page lists unless asked for all.
const defaultShown = 200

type pages struct {
	recent *decisionlog.Recent
}

// page is what every template gets.
type page struct {
	Title, Nonce, Base string
}

type indexPage struct {
	page
	Client, Action, Rule string
	Actions              []string
	Error                string
	Filtered             bool
	Sessions             []decisionlog.RecentSession
	Total, Kept, Cap     int
}

type sessionPage struct {
	page
	ID      string
	Session *decisionlog.RecentSession
	Cap     int
}

func (p *pages) index(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := indexPage{
		page:    page{Title: "Recent sessions", Base: "./"},
		Client:  q.Get("client"),
		Action:  q.Get("action"),
		Rule:    q.Get("rule"),
		Actions: Actions,
	}
	f, err := parseFilter(d.Client, d.Action, d.Rule)
	status := http.StatusOK
	if err != nil {
		d.Error = err.Error()
		status = http.StatusBadRequest
	} else if p.recent != nil {
		limit := defaultShown
		if q.Get("all") != "" {
			limit = 0
		}
		d.Filtered = f != (decisionlog.RecentFilter{})
		d.Sessions, d.Total = p.recent.Sessions(f, limit)
		d.Kept, d.Cap = p.recent.Len(), p.recent.Cap()
	}
	render(w, status, "index.html", &d, &d.page)
}

func (p *pages) session(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d := sessionPage{page: page{Title: "Session " + id, Base: "../"}, ID: id}
	status := http.StatusOK
	if p.recent != nil {
		d.Cap = p.recent.Cap()
		if s, ok := p.recent.Session(id); ok {
			d.Session = &s
		}
	}
	if d.Session == nil {
		status = http.StatusNotFound
	}
	render(w, status, "session.html", &d, &d.page)
}

// parseFilter reads the form: a client address or prefix, an action from
// the list, a rule pattern (path.Match syntax, as `mxguard log -rule`).
func parseFilter(client, action, rule string) (decisionlog.RecentFilter, error) {
	var f decisionlog.RecentFilter
	if client = strings.TrimSpace(client); client != "" {
		pfx, err := parseClient(client)
		if err != nil {
			return f, err
		}
		f.Client = pfx
	}
	if action != "" && !slices.Contains(Actions, action) {
		return f, fmt.Errorf("unknown action %q", action)
	}
	f.Action = action
	if rule = strings.TrimSpace(rule); rule != "" {
		if _, err := path.Match(rule, ""); err != nil {
			return f, fmt.Errorf("bad rule pattern %q: %v", rule, err)
		}
	}
	f.Rule = rule
	return f, nil
}

func parseClient(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad client prefix %q: want an address or CIDR like 192.0.2.0/24", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad client address %q: want an address or CIDR like 192.0.2.0/24", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// render executes a template into a buffer first, so a failure is a clean
// 500, and sets the page's Content-Security-Policy: no scripts, no
// images, no frames; only the page's own style element, by its nonce.
func render(w http.ResponseWriter, status int, name string, data any, p *page) {
	var n [16]byte
	rand.Read(n[:])
	p.Nonce = base64.RawURLEncoding.EncodeToString(n[:])
	var buf bytes.Buffer
	if err := templates.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+p.Nonce+"'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

func actionClass(a string) string {
	if strings.HasPrefix(a, "would ") {
		return "would"
	}
	return a
}

// field is one row of a record's table.
type field struct{ Key, Value string }

// fields lists every field a record has: those of decisionlog.Record that
// are set, in the log's order, then the others the line had.
func fields(e decisionlog.RecentRecord) []field {
	var out []field
	add := func(k, v string) {
		if v != "" {
			out = append(out, field{k, v})
		}
	}
	if !e.Time.IsZero() {
		add("time", e.Time.UTC().Format(time.RFC3339Nano))
	}
	add("level", e.Level)
	add("msg", e.Msg)
	add("session", e.Session)
	add("client", e.Client)
	add("stage", e.Stage)
	add("action", e.Action)
	add("rule", e.Rule)
	add("reason", e.Reason)
	if e.Action != "" || e.Score != 0 {
		add("score", strconv.FormatFloat(e.Score, 'g', -1, 64))
	}
	add("reply", e.Reply)
	add("where", e.Where)
	add("mode", e.Mode)
	add("helo", e.HELO())
	if e.From != nil {
		from := *e.From
		if from == "" {
			from = "<>"
		}
		add("from", from)
	}
	add("rcpt", e.Recipients())
	if e.Elapsed != 0 {
		add("elapsed", strconv.FormatFloat(e.Elapsed, 'g', -1, 64))
	}
	for _, a := range e.Extra {
		out = append(out, field{a.Key, a.Value.String()})
	}
	return out
}
