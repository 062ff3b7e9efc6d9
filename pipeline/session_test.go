package pipeline

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/message"
	"github.com/mxguard/mxguard/rules"
)

// newPipeline builds a pipeline without DNS, with extra rules.
func newPipeline(t *testing.T, rulesTOML string) *Pipeline {
	t.Helper()
	cfg := config.Default()
	cfg.Hostname = "mx.example.com"
	cfg.LocalDomains = []string{"example.com"}
	cfg.TrustedNetworks = []config.Prefix{}
	var tp config.Prefix
	tp.UnmarshalText([]byte("192.0.2.250"))
	cfg.TrustedNetworks = append(cfg.TrustedNetworks, tp)
	if rulesTOML != "" {
		p := filepath.Join(t.TempDir(), "r.toml")
		os.WriteFile(p, []byte(rulesTOML), 0o644)
		cfg.Rules = []string{p}
	}
	p, err := New(cfg, checks.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var client = netip.MustParseAddrPort("192.0.2.7:4000")

func spool(t *testing.T, msg string) *message.Spool {
	s := message.NewSpool(1<<20, "")
	t.Cleanup(func() { s.Close() })
	s.ReadFrom(strings.NewReader(msg))
	return s
}

// what says what a decision does: "" (go on), "hold", or the reply code.
func what(d Decision) string {
	switch {
	case d.Refuse:
		return d.Reply.String()[:3]
	case d.Hold:
		return "hold"
	}
	return ""
}

// The stage at which a refusal is given follows the rule's stage.
func TestStages(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, rules, helo       string
		helo_, mail, rcpt, data string
	}{
		{"default: at RCPT", "", "localhost", "", "hold", "550", ""},
		{"defaults.stage now", "[defaults]\nstage = \"now\"\n", "localhost", "550", "550", "550", ""},
		{"outcome stage now", "[outcome.\"helo.localhost\"]\nstage = \"now\"\n", "localhost", "550", "550", "550", ""},
		{"outcome stage data", "[outcome.\"helo.localhost\"]\nstage = \"data\"\n", "localhost", "", "hold", "hold", "550"},
		{"tempfail", "[outcome.\"helo.localhost\"]\naction = \"tempfail\"\n", "localhost", "", "hold", "451", ""},
		{"ignored", "[outcome.\"helo.localhost\"]\naction = \"ignore\"\n", "localhost", "", "", "", ""},
		{"clean", "", "mail.example.org", "", "", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newPipeline(t, c.rules)
			s := p.NewSession("t", client, nil)
			if d := s.Connect(context.Background(), Greeting{Waited: true}); what(d) != "" {
				t.Fatalf("connect: %q", what(d))
			}
			got := []string{what(s.Helo(ctx, c.helo)), what(s.Mail(ctx, "alice@example.org")), what(s.Rcpt(ctx, "bob@example.com"))}
			want := []string{c.helo_, c.mail, c.rcpt}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("helo, mail, rcpt: %q, want %q", got, want)
			}
			if c.data != "" || c.rcpt == "" {
				d, _ := s.Data(ctx, spool(t, "From: alice@example.org\r\n\r\nx\r\n"))
				if what(d) != c.data {
					t.Errorf("data: %q, want %q", what(d), c.data)
				}
			}
		})
	}
}

// Before the banner only a drop acts; a pregreet made a reject waits.
func TestConnectOnlyDrops(t *testing.T) {
	pre := Greeting{Early: []byte("EHLO x\r\n"), Waited: true}
	p := newPipeline(t, "")
	s := p.NewSession("t", client, nil)
	if d := s.Connect(context.Background(), pre); !d.Refuse || d.Action != rules.Drop || !strings.HasPrefix(d.Reply.String(), "554 5.5.1") {
		t.Errorf("pregreet: %+v", d)
	}
	p = newPipeline(t, "[outcome.pregreet]\naction = \"reject\"\n")
	s = p.NewSession("t", client, nil)
	if d := s.Connect(context.Background(), pre); d.Refuse {
		t.Errorf("a reject acted before the banner: %+v", d)
	}
	if d := s.Helo(context.Background(), "mail.example.org"); d.Refuse {
		t.Errorf("refused at HELO: %+v", d)
	}
	s.Mail(context.Background(), "a@example.org")
	if d := s.Rcpt(context.Background(), "b@example.com"); !d.Refuse {
		t.Errorf("not refused at RCPT: %+v", d)
	}
}

// A recipient on a full allow list is accepted despite a pending refusal;
// when every recipient is, the message goes through.
func TestRecipientExemption(t *testing.T) {
	ctx := context.Background()
	p := newPipeline(t, "[[list]]\nname = \"abuse\"\ntype = \"recipient\"\naction = \"allow\"\nentries = [\"postmaster@\"]\n")
	s := p.NewSession("t", client, nil)
	s.Helo(ctx, "localhost")
	if d := s.Mail(ctx, "a@example.org"); !d.Hold {
		t.Fatalf("MAIL not held: %+v", d)
	}
	if d := s.Rcpt(ctx, "bob@example.com"); !d.Refuse {
		t.Errorf("bob not refused: %+v", d)
	}
	if d := s.Rcpt(ctx, "postmaster@example.com"); d.Refuse || d.Hold || d.Rule != "allow.abuse" {
		t.Errorf("postmaster not exempt: %+v", d)
	}
	if got := s.Rcpts(); len(got) != 1 || got[0] != "postmaster@example.com" {
		t.Errorf("relayed recipients %v", got)
	}
	d, _ := s.Data(ctx, spool(t, "From: a@example.org\r\n\r\nx\r\n"))
	if d.Refuse || d.Rule != "allow.recipients" || d.Would == nil || d.Would.Rule != "helo.localhost" {
		t.Errorf("data for exempt recipients: %+v", d)
	}
}

// Trusted clients skip every check, and their messages go on untouched.
func TestTrusted(t *testing.T) {
	ctx := context.Background()
	p := newPipeline(t, "")
	s := p.NewSession("t", netip.MustParseAddrPort("192.0.2.250:1"), nil)
	if skip, why := s.SkipGreeting(); !skip || why != "trusted" {
		t.Errorf("greeting: %v %q", skip, why)
	}
	for _, d := range []Decision{s.Helo(ctx, "localhost"), s.Mail(ctx, "ceo@example.com"), s.Rcpt(ctx, "b@example.com")} {
		if d.Refuse || d.Hold {
			t.Errorf("trusted client refused: %+v", d)
		}
	}
	d, prep := s.Data(ctx, spool(t, "no header at all"))
	if d.Refuse || prep.Header != nil {
		t.Errorf("trusted data: %+v %+v", d, prep)
	}
	if n := len(s.Results()); n != 0 {
		t.Errorf("checks ran for a trusted client: %d results", n)
	}
}

// An allow list skipping some checks: they do not run at all.
func TestSkippedChecksDoNotRun(t *testing.T) {
	ctx := context.Background()
	p := newPipeline(t, "[[list]]\nname = \"p\"\ntype = \"client\"\naction = \"allow\"\nskip = [\"helo\", \"sender\"]\nentries = [\"192.0.2.0/24\"]\n")
	s := p.NewSession("t", client, nil)
	s.Helo(ctx, "localhost")
	d := s.Mail(ctx, "ceo@example.com")
	if d.Refuse || d.Hold || len(s.Results()) != 0 {
		t.Errorf("skipped checks ran: %+v %v", d, s.Results())
	}
}

// The header fields: forged A-R claiming our name removed, ours added, the
// tag headers on tagged mail only, incoming copies of our fields dropped.
func TestDataHeaders(t *testing.T) {
	ctx := context.Background()
	p := newPipeline(t, "[outcome.\"helo.forward_mismatch\"]\naction = \"tag\"\n[outcome.\"helo.localhost\"]\naction = \"tag\"\n")
	s := p.NewSession("t", client, nil)
	s.Helo(ctx, "localhost")
	s.Mail(ctx, "a@example.org")
	s.Rcpt(ctx, "b@example.com")
	msg := "Authentication-Results: MX.EXAMPLE.COM; dkim=pass\r\nX-Spam-Flag: NO\r\nX-Spam-Score: -100\r\nAuthentication-Results: other.example; spf=pass\r\nFrom: a@example.org\r\n\r\nbody\r\n"
	d, prep := s.Data(ctx, spool(t, msg))
	if d.Action != rules.Tag {
		t.Fatalf("not tagged: %+v", d)
	}
	var out strings.Builder
	sp := spool(t, msg)
	b := make([]byte, 4096)
	r := prep.Reader(sp, []byte("Received: x\r\n"))
	for {
		n, err := r.Read(b)
		out.Write(b[:n])
		if err != nil {
			break
		}
	}
	got := out.String()
	for _, want := range []string{"Received: x\r\nAuthentication-Results: mx.example.com;", "X-Spam-Score: 0\r\nX-Spam-Flag: YES\r\n", "Authentication-Results: other.example; spf=pass\r\nFrom: a@example.org\r\n\r\nbody\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("message lacks %q:\n%s", want, got)
		}
	}
	for _, gone := range []string{"dkim=pass", "X-Spam-Flag: NO", "-100"} {
		if strings.Contains(got, gone) {
			t.Errorf("message keeps %q:\n%s", gone, got)
		}
	}
}
