package rules

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
)

func policy(t *testing.T, toml string) *Policy {
	t.Helper()
	p, err := Parse("rules.toml", []byte(toml), known)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func res(outcome string, score float64) checks.Result {
	return checks.Result{Check: checks.Name(strings.Split(outcome, ".")[0]), Outcome: outcome, Score: score, Reason: "because " + outcome}
}

// The built-in rules parse, and every refusal in them has a well-formed
// reply whose class fits its action.
func TestDefaultRules(t *testing.T) {
	p := policy(t, "")
	if p.stage != StageRcpt || p.tagScore != 5 || p.rejectScore != 10 || p.logOnly {
		t.Errorf("defaults: %+v", p)
	}
	for _, name := range p.Outcomes() {
		r, _ := p.lookup(strings.TrimSuffix(name, "*"))
		if !r.Action.Refuses() {
			continue
		}
		if r.Reply.Code == 0 || r.Reply.Enhanced == "" || r.Reply.Text == "" {
			t.Errorf("%s: incomplete reply %+v", name, r.Reply)
		}
		if r.Action != Drop && (r.Action == Tempfail) != r.Reply.Temporary() {
			t.Errorf("%s: action %s with reply %s", name, r.Action, r.Reply)
		}
	}
}

func TestDecide(t *testing.T) {
	p := policy(t, `
[outcome."helo.forward_mismatch"]
action = "score"
weight = 4
[outcome."helo.unresolvable"]
action = "score"
weight = 6
[outcome."helo.no_dot"]
action = "ignore"
[outcome."helo.bare_ip"]
action = "tempfail"
`)
	cases := []struct {
		name    string
		results []checks.Result
		action  Action
		rule    string
		reply   string
		score   float64
	}{
		{"nothing", nil, Accept, "", "", 0},
		{"a pass", []checks.Result{res("helo.pass", 0)}, Accept, "", "", 0},
		{"forced reject names its rule", []checks.Result{res("helo.localhost", 0)}, Reject, "helo.localhost", "550 5.5.2 Helo command rejected: localhost is not a mail server's name (helo.localhost)", 0},
		{"drop beats reject", []checks.Result{res("helo.localhost", 0), res("pregreet", 0)}, Drop, "pregreet", "554 5.5.1 ", 0},
		{"reject beats tempfail", []checks.Result{res("helo.dns_temp", 0), res("sender.spoofs_local", 0)}, Reject, "sender.spoofs_local", "550 5.7.1 ", 0},
		{"tempfail alone", []checks.Result{res("helo.dns_temp", 0)}, Tempfail, "helo.dns_temp", "451 4.4.3 ", 0},
		{"weight under tag", []checks.Result{res("helo.forward_mismatch", 0)}, Accept, "", "", 4},
		{"weight reaches tag", []checks.Result{res("helo.unresolvable", 0)}, Tag, "score", "", 6},
		{"weights reach reject", []checks.Result{res("helo.unresolvable", 0), res("helo.forward_mismatch", 0)}, Reject, "score", "550 5.7.1 Message refused: spam score too high (score 10)", 10},
		{"ignored outcome", []checks.Result{res("helo.no_dot", 0)}, Accept, "", "", 0},
		{"changed to tempfail keeps its text", []checks.Result{res("helo.bare_ip", 0)}, Tempfail, "helo.bare_ip", "451 4.5.2 Helo command rejected: an IP address", 0},
		{"unknown outcome counts by its own score", []checks.Result{res("future.thing", 7)}, Tag, "score", "", 7},
		{"check's own score", []checks.Result{res("future.a", 3), res("future.b", 8)}, Reject, "score", "550", 11},
		{"negative weights", []checks.Result{res("future.a", 11), res("reputation.good", 0)}, Tag, "score", "", 9},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := p.Decide(nil, c.results)
			if v.Action != c.action || v.Rule != c.rule || v.Score != c.score {
				t.Errorf("got %s rule=%q score=%g, want %s rule=%q score=%g", v.Action, v.Rule, v.Score, c.action, c.rule, c.score)
			}
			if c.reply != "" && !strings.HasPrefix(v.Reply.String(), c.reply) {
				t.Errorf("reply %q, want prefix %q", v.Reply, c.reply)
			}
			if v.Action.Refuses() && (v.Reason == "" || v.Where == "") {
				t.Errorf("a refusal without a reason or a place: %+v", v)
			}
		})
	}
}

func TestTempfailThreshold(t *testing.T) {
	p := policy(t, "[scores]\ntempfail = 3\nreject = 20\n")
	v := p.Decide(nil, []checks.Result{res("reputation.bad", 0)})
	if v.Action != Tempfail || !strings.HasPrefix(v.Reply.String(), "451 4.7.1") {
		t.Errorf("got %s %s", v.Action, v.Reply)
	}
}

func TestStages(t *testing.T) {
	p := policy(t, "[outcome.\"helo.no_dot\"]\nstage = \"now\"\n")
	if v := p.Decide(nil, []checks.Result{res("helo.no_dot", 0)}); v.Stage != StageNow {
		t.Errorf("per-outcome stage: %s", v.Stage)
	}
	if v := p.Decide(nil, []checks.Result{res("helo.localhost", 0)}); v.Stage != StageRcpt {
		t.Errorf("default stage: %s", v.Stage)
	}
	p = policy(t, "[defaults]\nstage = \"now\"\n")
	if v := p.Decide(nil, []checks.Result{res("helo.localhost", 0)}); v.Stage != StageNow {
		t.Errorf("defaults.stage: %s", v.Stage)
	}
}

// Log mode: the rule decides and its verdict is kept as Would, but nothing
// is refused.
func TestLogMode(t *testing.T) {
	p := policy(t, "[outcome.\"helo.no_dot\"]\nmode = \"log\"\n")
	v := p.Decide(nil, []checks.Result{res("helo.no_dot", 0)})
	if v.Action != Accept || v.Would == nil || v.Would.Action != Reject || v.Would.Rule != "helo.no_dot" {
		t.Fatalf("got %+v would %+v", v, v.Would)
	}
	// Another rule still enforces.
	v = p.Decide(nil, []checks.Result{res("helo.no_dot", 0), res("sender.spoofs_local", 0)})
	if v.Action != Reject || v.Rule != "sender.spoofs_local" {
		t.Errorf("enforcing rule lost: %+v", v)
	}
	// Globally.
	p = policy(t, "[defaults]\nmode = \"log\"\n")
	v = p.Decide(nil, []checks.Result{res("pregreet", 0), res("helo.localhost", 0)})
	if v.Action != Accept || v.Would == nil || v.Would.Action != Drop {
		t.Errorf("global log mode: %+v would %+v", v, v.Would)
	}
}

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLists(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "partners.txt", "# partners' relays\n192.0.2.0/24\n\n2001:db8:7::/48  # v6\n")
	path := writeFile(t, dir, "lists.toml", `
[[list]]
name = "partners"
type = "client"
action = "allow"
files = ["partners.txt"]
skip = ["greeting", "helo"]

[[list]]
name = "bad-rdns"
type = "rdns"
action = "deny"
entries = [".dynamic.example", "/^host-[0-9]+\\./"]

[[list]]
name = "helo-ok"
type = "helo"
action = "allow"
entries = ["relay.partner.example"]

[[list]]
name = "spammers"
type = "sender"
action = "deny"
reply = "550 5.7.1 Sender blocked"
entries = ["spam.example", "@junk.example", ".bulk.example", "ceo@fraud.example", "<>"]

[[list]]
name = "abuse"
type = "recipient"
action = "allow"
entries = ["postmaster@", "abuse@example.com"]
`)
	p, err := Parse(path, []byte(mustRead(t, path)), known)
	if err != nil {
		t.Fatal(err)
	}
	str := func(s string) *string { return &s }
	cases := []struct {
		name  string
		facts Facts
		want  []string
	}{
		{"client v4", Facts{Client: netip.MustParseAddr("192.0.2.77")}, []string{"partners"}},
		{"client v6", Facts{Client: netip.MustParseAddr("2001:db8:7::1")}, []string{"partners"}},
		{"client mapped", Facts{Client: netip.MustParseAddr("::ffff:192.0.2.1")}, []string{"partners"}},
		{"client no", Facts{Client: netip.MustParseAddr("198.51.100.1")}, nil},
		{"rdns suffix", Facts{RDNS: "a.b.Dynamic.Example."}, []string{"bad-rdns"}},
		{"rdns regexp", Facts{RDNS: "host-123.isp.example"}, []string{"bad-rdns"}},
		{"rdns not the bare suffix", Facts{RDNS: "dynamic.example"}, nil},
		{"helo exact", Facts{HELO: []string{"x.example", "RELAY.partner.example"}}, []string{"helo-ok"}},
		{"sender domain", Facts{From: str("a@spam.example")}, []string{"spammers"}},
		{"sender @domain", Facts{From: str("a@JUNK.example")}, []string{"spammers"}},
		{"sender subdomain", Facts{From: str("a@x.bulk.example")}, []string{"spammers"}},
		{"sender address", Facts{From: str("ceo@fraud.example")}, []string{"spammers"}},
		{"sender other address", Facts{From: str("cfo@fraud.example")}, nil},
		{"null sender", Facts{From: str("")}, []string{"spammers"}},
		{"no sender yet", Facts{}, nil},
		{"rcpt local part", Facts{Rcpt: "PostMaster@anything.example"}, []string{"abuse"}},
		{"rcpt address", Facts{Rcpt: "abuse@example.com"}, []string{"abuse"}},
		{"rcpt other", Facts{Rcpt: "abuse@example.org"}, nil},
	}
	for _, c := range cases {
		var got []string
		for _, l := range p.MatchLists(c.facts) {
			got = append(got, l.Name)
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%s: matched %v, want %v", c.name, got, c.want)
		}
	}
}

// Lists are read in order: the first that decides wins; partial allows add
// up; a full allow accepts despite later outcomes.
func TestListPrecedence(t *testing.T) {
	p := policy(t, `
[[list]]
name = "greet-only"
type = "client"
action = "allow"
entries = ["192.0.2.0/24"]
skip = ["pregreet"]

[[list]]
name = "blocked"
type = "sender"
action = "deny"
entries = ["spam.example"]

[[list]]
name = "vip"
type = "client"
action = "allow"
entries = ["192.0.2.1"]
`)
	from := "x@spam.example"
	matched := p.MatchLists(Facts{Client: netip.MustParseAddr("192.0.2.1"), From: &from})
	v := p.Decide(matched, []checks.Result{res("pregreet", 0)})
	if v.Action != Reject || v.Rule != "deny.blocked" || !strings.HasSuffix(v.Reply.Text, "(deny.blocked)") {
		t.Errorf("deny after a partial allow: %+v", v)
	}
	// Without the sender, the full allow at the end decides.
	matched = p.MatchLists(Facts{Client: netip.MustParseAddr("192.0.2.1")})
	v = p.Decide(matched, []checks.Result{res("helo.localhost", 0)})
	if v.Action != Accept || !v.SkipAll || v.Rule != "allow.vip" {
		t.Errorf("full allow: %+v", v)
	}
	// A partial allow removes only its checks' results.
	matched = p.MatchLists(Facts{Client: netip.MustParseAddr("192.0.2.9")})
	v = p.Decide(matched, []checks.Result{res("pregreet", 0)})
	if v.Action != Accept || !v.Skips("pregreet") || v.Skips("helo") {
		t.Errorf("partial allow: %+v", v)
	}
	v = p.Decide(matched, []checks.Result{res("pregreet", 0), res("helo.localhost", 0)})
	if v.Action != Reject || v.Rule != "helo.localhost" {
		t.Errorf("partial allow let a HELO through: %+v", v)
	}
}

// Policy.Skips agrees with Decide's verdict.
func TestSkipsAgreesWithDecide(t *testing.T) {
	p := policy(t, `
[[list]]
name = "partial"
type = "client"
action = "allow"
entries = ["192.0.2.0/24"]
skip = ["pregreet", "helo"]
[[list]]
name = "deny"
type = "client"
action = "deny"
entries = ["192.0.2.66"]
[[list]]
name = "all"
type = "client"
action = "allow"
entries = ["192.0.2.7", "198.51.100.7"]
[[list]]
name = "logged"
type = "client"
action = "allow"
mode = "log"
entries = ["203.0.113.0/24"]
`)
	for _, ip := range []string{"192.0.2.1", "192.0.2.66", "192.0.2.7", "198.51.100.7", "203.0.113.1", "10.0.0.1"} {
		m := p.MatchLists(Facts{Client: netip.MustParseAddr(ip)})
		v := p.Decide(m)
		for _, c := range append(known.Checks, "unknown") {
			if got, want := p.Skips(m, c), v.Skips(c); got != want {
				t.Errorf("%s %s: Skips %v, Decide %v", ip, c, got, want)
			}
		}
	}
}

func TestListLogMode(t *testing.T) {
	p := policy(t, "[[list]]\nname = \"b\"\ntype = \"client\"\naction = \"drop\"\nmode = \"log\"\nentries = [\"192.0.2.1\"]\n")
	v := p.Decide(p.MatchLists(Facts{Client: netip.MustParseAddr("192.0.2.1")}))
	if v.Action != Accept || v.Would == nil || v.Would.Action != Drop || v.Would.Rule != "deny.b" {
		t.Errorf("got %+v", v)
	}
}

// Every mistake in a rule file is reported at its file and line.
func TestRuleErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "bad.txt", "192.0.2.0/24\nnot-an-ip\n")
	cases := []struct{ toml, want string }{
		{"[outcome.\"helo.nonsense\"]\naction = \"reject\"\n", "r.toml:1: unknown outcome \"helo.nonsense\""},
		{"[outcome.\"helo.no_dot\"]\naction = \"nuke\"\n", "r.toml:2: bad action \"nuke\""},
		{"[outcome.\"helo.no_dot\"]\nreply = \"250 ok\"\n", "r.toml:2: outcome \"helo.no_dot\": reply \"250 ok\" must start with a 4xx or 5xx code"},
		{"[outcome.\"helo.no_dot\"]\naction = \"tempfail\"\nreply = \"550 5.7.1 no\"\n", "r.toml:3: outcome \"helo.no_dot\": action tempfail does not fit reply"},
		{"[outcome.\"helo.no_dot\"]\nstage = \"later\"\n", "r.toml:2: bad stage \"later\""},
		{"[outcome.\"helo.no_dot\"]\nmode = \"maybe\"\n", "r.toml:2: mode \"maybe\""},
		{"[outcome.\"helo.no_dot\"]\nwieght = 3\n", "r.toml:2: unknown key \"outcome.\\\"helo.no_dot\\\".wieght\""},
		{"[scores]\nreject = -1\n", "r.toml:2: scores.reject must not be negative"},
		{"[defaults]\nstage = \"data\"\n", "r.toml:2: defaults.stage"},
		{"[[list]]\nname = \"a\"\ntype = \"client\"\naction = \"deny\"\nentries = [\"192.0.2.0/33\"]\n", "r.toml:5: list \"a\": bad network \"192.0.2.0/33\""},
		{"[[list]]\nname = \"a\"\ntype = \"helo\"\naction = \"deny\"\nentries = [\"/[unclosed/\"]\n", "r.toml:5: list \"a\": bad regexp"},
		{"[[list]]\nname = \"a\"\ntype = \"ip\"\naction = \"deny\"\nentries = [\"x\"]\n", "r.toml:3: list type \"ip\""},
		{"[[list]]\nname = \"a\"\ntype = \"client\"\naction = \"maybe\"\nentries = [\"192.0.2.1\"]\n", "r.toml:4: list action \"maybe\""},
		{"[[list]]\nname = \"a\"\ntype = \"client\"\naction = \"allow\"\nreply = \"550 5.7.1 x\"\nentries = [\"192.0.2.1\"]\n", "r.toml:5: an allow list gives no reply"},
		{"[[list]]\nname = \"a\"\ntype = \"client\"\naction = \"allow\"\nskip = [\"spf\", \"telepathy\"]\nentries = [\"192.0.2.1\"]\n", "r.toml:5: unknown check \"telepathy\""},
		{"[[list]]\nname = \"a\"\ntype = \"client\"\naction = \"deny\"\nskip = [\"spf\"]\nentries = [\"192.0.2.1\"]\n", "r.toml:5: a deny list skips nothing"},
		{"[[list]]\nname = \"a\"\ntype = \"client\"\naction = \"deny\"\n", "has no entries"},
		{"[[list]]\nname = \"a\"\ntype = \"client\"\naction = \"deny\"\nentries = [\"192.0.2.1\"]\n\n[[list]]\nname = \"a\"\ntype = \"helo\"\naction = \"deny\"\nentries = [\"x.example\"]\n", "r.toml:8: list \"a\" is already defined at r.toml:1"},
		{"[[list]]\nname = \"a\"\ntype = \"client\"\naction = \"deny\"\nfiles = [\"bad.txt\"]\n", filepath.Join(dir, "bad.txt") + ":2: list \"a\": bad network \"not-an-ip\""},
		{"[[list]]\nname = \"a\"\ntype = \"client\"\naction = \"deny\"\nfiles = [\"missing.txt\"]\n", "missing.txt: no such file"},
		{"[outcome\n", "r.toml:2: expected '.' or ']' to end table name"},
	}
	for _, c := range cases {
		_, err := Parse(filepath.Join(dir, "r.toml"), []byte(c.toml), known)
		if err == nil || !strings.Contains(err.Error(), strings.ReplaceAll(c.want, "r.toml", filepath.Join(dir, "r.toml"))) {
			t.Errorf("%q:\n got %v\nwant %q", c.toml, err, c.want)
		}
	}
}

// Conflicts across an admin's files are errors naming both places; the
// built-in rules are overridden freely.
func TestLoadFiles(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "rules.d"), 0o755)
	writeFile(t, filepath.Join(dir, "rules.d"), "10-gentle.toml", "[outcome.\"helo.forward_mismatch\"]\naction = \"score\"\nweight = 4\n")
	writeFile(t, filepath.Join(dir, "rules.d"), "20-scores.toml", "[scores]\nreject = 7\n")
	cfg := config.Default()
	cfg.Path = filepath.Join(dir, "mxguard.toml")
	cfg.Rules = []string{"rules.d/*.toml"}
	p, err := Load(cfg, known)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := p.Rule("helo.forward_mismatch"); r.Action != Score || r.Weight != 4 || !strings.HasSuffix(r.Where, "10-gentle.toml:1") {
		t.Errorf("override: %+v", r)
	}
	if p.rejectScore != 7 {
		t.Errorf("later file's scores not applied: %g", p.rejectScore)
	}
	writeFile(t, filepath.Join(dir, "rules.d"), "30-again.toml", "[outcome.\"helo.forward_mismatch\"]\naction = \"reject\"\n")
	_, err = Load(cfg, known)
	if err == nil || !strings.Contains(err.Error(), "30-again.toml:1: outcome \"helo.forward_mismatch\" is already set at "+filepath.Join(dir, "rules.d", "10-gentle.toml")+":1") {
		t.Errorf("conflict: %v", err)
	}
	cfg.Rules = []string{"nope.toml"}
	if _, err := Load(cfg, known); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

func mustRead(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseReply(t *testing.T) {
	cases := []struct {
		in   string
		want Reply
		ok   bool
	}{
		{"550 5.7.1 Go away", Reply{550, "5.7.1", "Go away"}, true},
		{"451 Try later", Reply{451, "", "Try later"}, true},
		{"421 4.7.0 Too busy now", Reply{421, "4.7.0", "Too busy now"}, true},
		{"250 ok", Reply{}, false},
		{"55 no", Reply{}, false},
		{"550", Reply{}, false},
		{"550 5.7.1", Reply{}, false},
		{"550 4.7.1 mismatch", Reply{}, false},
		{"550 bad\x01char", Reply{}, false},
	}
	for _, c := range cases {
		got, err := ParseReply(c.in)
		if (err == nil) != c.ok || (c.ok && got != c.want) {
			t.Errorf("ParseReply(%q) = %+v, %v", c.in, got, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(defaultRules)
	f.Add([]byte("[[list]]\nname = \"a\"\ntype = \"client\"\naction = \"allow\"\nentries = [\"192.0.2.0/24\"]\nskip = [\"helo\"]\n"))
	f.Add([]byte("[outcome.\"helo.no_dot\"]\naction = \"tempfail\"\nreply = \"451 4.7.1 x\"\nstage = \"now\"\nmode = \"log\"\n"))
	f.Add([]byte("[scores]\ntag = 1.5\n[defaults]\nmode = \"log\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.toml", data, known)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.toml") && !strings.Contains(err.Error(), "built-in") {
				t.Fatalf("error without a place: %v", err)
			}
			return
		}
		p.Decide(p.MatchLists(Facts{Client: netip.MustParseAddr("192.0.2.1"), HELO: []string{"x"}}), []checks.Result{res("helo.no_dot", 1)})
	})
}
