package rules

import (
	"strings"
	"testing"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
)

func policy(t *testing.T, toml string) *Policy {
	t.Helper()
	cfg, err := config.Parse("rules.toml", []byte("hostname = \"mx.example.com\"\n"+toml))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func res(outcome string, score float64) checks.Result {
	return checks.Result{Check: strings.Split(outcome, ".")[0], Outcome: outcome, Score: score, Reason: "because " + outcome}
}

func TestDecide(t *testing.T) {
	p := policy(t, `
[decision]
tag_score = 5
reject_score = 10
[decision.outcomes]
"helo.forward_mismatch" = { action = "score", weight = 4 }
"helo.unresolvable" = { action = "score", weight = 6 }
"helo.no_dot" = { action = "ignore" }
"helo.bare_ip" = { action = "tempfail" }
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
		{"forced reject", []checks.Result{res("helo.localhost", 0)}, Reject, "helo.localhost", "550 5.5.2 ", 0},
		{"drop beats reject", []checks.Result{res("helo.localhost", 0), res("pregreet", 0)}, Drop, "pregreet", "554 5.5.1 ", 0},
		{"reject beats tempfail", []checks.Result{res("helo.dns_temp", 0), res("sender.spoofs_local", 0)}, Reject, "sender.spoofs_local", "550 5.7.1 ", 0},
		{"tempfail alone", []checks.Result{res("helo.dns_temp", 0)}, Tempfail, "helo.dns_temp", "451 4.4.3 ", 0},
		{"weight under tag", []checks.Result{res("helo.forward_mismatch", 0)}, Accept, "", "", 4},
		{"weight reaches tag", []checks.Result{res("helo.unresolvable", 0)}, Tag, "score", "", 6},
		{"weights reach reject", []checks.Result{res("helo.unresolvable", 0), res("helo.forward_mismatch", 0)}, Reject, "score", "550 5.7.1 Message refused", 10},
		{"ignored outcome", []checks.Result{res("helo.no_dot", 0)}, Accept, "", "", 0},
		{"changed to tempfail keeps its text", []checks.Result{res("helo.bare_ip", 0)}, Tempfail, "helo.bare_ip", "451 4.5.2 Helo command rejected: an IP address", 0},
		{"unknown outcome counts by its own score", []checks.Result{res("future.thing", 7)}, Tag, "score", "", 7},
		{"check's own score", []checks.Result{res("future.a", 3), res("future.b", 8)}, Reject, "score", "550", 11},
		{"negative weights", []checks.Result{res("future.a", 12), res("future.wl", -5)}, Tag, "score", "", 7},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := p.Decide(c.results)
			if v.Action != c.action || v.Rule != c.rule || v.Score != c.score {
				t.Errorf("got %s rule=%q score=%g, want %s rule=%q score=%g", v.Action, v.Rule, v.Score, c.action, c.rule, c.score)
			}
			if c.reply != "" && !strings.HasPrefix(v.Reply.String(), c.reply) {
				t.Errorf("reply %q, want prefix %q", v.Reply, c.reply)
			}
			if v.Action.Refuses() && v.Reason == "" {
				t.Error("a refusal without a reason")
			}
		})
	}
}

// Decide reads several result lists (connection and transaction) as one.
func TestDecideSeveralLists(t *testing.T) {
	p := policy(t, "")
	v := p.Decide([]checks.Result{res("helo.pass", 0)}, []checks.Result{res("sender.spoofs_local", 0)})
	if v.Action != Reject || v.Rule != "sender.spoofs_local" {
		t.Errorf("got %+v", v)
	}
}

func TestRejectAt(t *testing.T) {
	if !policy(t, "").RejectAtRcpt {
		t.Error("default is not reject at RCPT")
	}
	if policy(t, "[decision]\nreject_at = \"immediate\"\n").RejectAtRcpt {
		t.Error("immediate ignored")
	}
}

func TestPolicyErrors(t *testing.T) {
	cases := []struct{ toml, want string }{
		{"[decision.outcomes]\n\"helo.nonsense\" = { action = \"reject\" }\n", "rules.toml:3: unknown outcome \"helo.nonsense\""},
		{"[decision.outcomes]\n\"helo.no_dot\" = { reply = \"250 ok\" }\n", "rules.toml:3: reply \"250 ok\" must start with a 4xx or 5xx code"},
		{"[decision.outcomes]\n\"helo.no_dot\" = { reply = \"550 4.7.1 no\" }\n", "does not match the class"},
		{"[decision.outcomes]\n\"helo.no_dot\" = { action = \"tempfail\", reply = \"550 5.7.1 no\" }\n", "rules.toml:3: outcome \"helo.no_dot\": action tempfail does not fit reply"},
	}
	for _, c := range cases {
		cfg, err := config.Parse("rules.toml", []byte("hostname = \"mx.example.com\"\n"+c.toml))
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.toml, err, c.want)
		}
	}
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

// Every built-in refusal has a well-formed reply whose class fits its action.
func TestCatalog(t *testing.T) {
	for _, r := range builtin {
		if !r.Action.Refuses() {
			continue
		}
		if r.Reply.Code == 0 || r.Reply.Enhanced == "" || r.Reply.Text == "" {
			t.Errorf("%s: incomplete reply %+v", r.Outcome, r.Reply)
		}
		if r.Action == Tempfail != r.Reply.Temporary() {
			t.Errorf("%s: action %s with reply %s", r.Outcome, r.Action, r.Reply)
		}
	}
}
