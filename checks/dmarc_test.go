package checks

import (
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/zonedns"
)

const dmarcZone = `
$TTL 300
$ORIGIN example.test.
@              SOA ns.example.test. h.example.test. 1 3600 600 86400 60
_dmarc         TXT "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.test"
_dmarc.strict  TXT "v=DMARC1; p=reject; aspf=s; adkim=s"
_dmarc.none    TXT "v=DMARC1; p=none"
_dmarc.quar    TXT "v=DMARC1; p=quarantine"
_dmarc.pct0    TXT "v=DMARC1; p=reject; pct=0"
_dmarc.pct0q   TXT "v=DMARC1; p=quarantine; pct=0"
_dmarc.pct50   TXT "v=DMARC1; p=reject; pct=50"
_dmarc.two     TXT "v=DMARC1; p=none"
_dmarc.two     TXT "v=DMARC1; p=reject"
_dmarc.bad     TXT "v=DMARC1; p=bogus"
_dmarc.other   TXT "not a DMARC record"
_dmarc.spaced  TXT "v = DMARC1 ; p = quarantine"
_dmarc.slow    TXT "v=DMARC1; p=reject"
_dmarc.broken  TXT "v=DMARC1; p=reject"
$ORIGIN nosp.test.
@              SOA ns.nosp.test. h.nosp.test. 1 3600 600 86400 60
_dmarc         TXT "v=DMARC1; p=reject"
$ORIGIN slow.test.
@              SOA ns.slow.test. h.slow.test. 1 3600 600 86400 60
_dmarc         TXT "v=DMARC1; p=reject"
$ORIGIN nopolicy.test.
@              SOA ns.nopolicy.test. h.nopolicy.test. 1 3600 600 86400 60
`

func TestDMARC(t *testing.T) {
	res, srv := authFixture(t, dmarcZone)
	srv.SetFault("_dmarc.slow.example.test", zonedns.Fault{Drop: true})
	srv.SetFault("_dmarc.broken.example.test", zonedns.Fault{Rcode: dns.RcodeServerFailure})
	srv.SetFault("_dmarc.slow.test", zonedns.Fault{Drop: true})

	spfr := func(result, domain string) SPFResult {
		return SPFResult{Result: result, Domain: domain, Identity: "mailfrom"}
	}
	sig := func(domain, result string) DKIMSignature {
		return DKIMSignature{Domain: domain, Selector: "sel", Result: result}
	}
	none := spfr("none", "")
	cases := []struct {
		name    string
		from    []string
		spf     SPFResult
		dkim    []DKIMSignature
		rand    int // what Rand returns; -1: must not be called
		result  string
		outcome string
		policy  string
		reason  string // a substring of the reason
	}{
		// alignment
		{"SPF aligned", []string{"example.test"}, spfr("pass", "example.test"), nil, -1, "pass", "dmarc.pass", "reject", "SPF pass for example.test, aligned (relaxed)"},
		{"SPF relaxed", []string{"example.test"}, spfr("pass", "bounce.example.test"), nil, -1, "pass", "dmarc.pass", "reject", "aligned (relaxed)"},
		{"SPF not aligned", []string{"example.test"}, spfr("pass", "evil.test"), nil, -1, "fail", "dmarc.reject", "reject", "SPF pass for evil.test, not aligned (relaxed)"},
		{"SPF aligned but fail", []string{"example.test"}, spfr("fail", "example.test"), nil, -1, "fail", "dmarc.reject", "reject", "SPF fail for example.test; no DKIM signature"},
		{"DKIM aligned", []string{"example.test"}, spfr("fail", "example.test"), []DKIMSignature{sig("example.test", "pass")}, -1, "pass", "dmarc.pass", "reject", "DKIM signature d=example.test s=sel, aligned (relaxed)"},
		{"DKIM relaxed", []string{"example.test"}, none, []DKIMSignature{sig("mail.example.test", "pass")}, -1, "pass", "dmarc.pass", "reject", ""},
		{"DKIM second signature", []string{"example.test"}, none, []DKIMSignature{sig("esp.test", "pass"), sig("Example.Test", "pass")}, -1, "pass", "dmarc.pass", "reject", ""},
		{"DKIM not aligned", []string{"example.test"}, none, []DKIMSignature{sig("esp.test", "pass")}, -1, "fail", "dmarc.reject", "reject", "DKIM d=esp.test s=sel pass, not aligned (relaxed)"},
		{"DKIM aligned but fail", []string{"example.test"}, none, []DKIMSignature{sig("example.test", "fail")}, -1, "fail", "dmarc.reject", "reject", "DKIM d=example.test s=sel fail"},
		{"strict SPF, subdomain", []string{"strict.example.test"}, spfr("pass", "bounce.strict.example.test"), nil, -1, "fail", "dmarc.reject", "reject", "not aligned (strict)"},
		{"strict SPF, exact", []string{"strict.example.test"}, spfr("pass", "strict.example.test"), nil, -1, "pass", "dmarc.pass", "reject", "aligned (strict)"},
		{"strict DKIM, subdomain", []string{"strict.example.test"}, none, []DKIMSignature{sig("sub.strict.example.test", "pass")}, -1, "fail", "dmarc.reject", "reject", "aspf=s adkim=s"},
		{"strict DKIM, parent", []string{"strict.example.test"}, none, []DKIMSignature{sig("example.test", "pass")}, -1, "fail", "dmarc.reject", "reject", ""},
		{"strict DKIM, exact", []string{"STRICT.example.test."}, none, []DKIMSignature{sig("strict.example.test", "pass")}, -1, "pass", "dmarc.pass", "reject", ""},

		// policies
		{"p=none", []string{"none.example.test"}, none, nil, -1, "fail", "dmarc.fail_none", "none", "p=none from _dmarc.none.example.test"},
		{"p=quarantine", []string{"quar.example.test"}, none, nil, -1, "fail", "dmarc.quarantine", "quarantine", ""},
		{"p=reject", []string{"example.test"}, none, nil, -1, "fail", "dmarc.reject", "reject", "p=reject from _dmarc.example.test, aspf=r adkim=r"},
		{"spaces in the record", []string{"spaced.example.test"}, none, nil, -1, "fail", "dmarc.quarantine", "quarantine", ""},

		// organizational domain
		{"org fallback, sp=", []string{"sub.example.test"}, none, nil, -1, "fail", "dmarc.quarantine", "quarantine", "sp=quarantine from _dmarc.example.test"},
		{"org fallback, pass", []string{"sub.example.test"}, spfr("pass", "example.test"), nil, -1, "pass", "dmarc.pass", "quarantine", ""},
		{"org fallback past a non-DMARC TXT", []string{"other.example.test"}, none, nil, -1, "fail", "dmarc.quarantine", "quarantine", ""},
		{"org fallback, no sp=", []string{"a.b.nosp.test"}, none, nil, -1, "fail", "dmarc.reject", "reject", "p=reject from _dmarc.nosp.test"},
		{"no policy", []string{"nopolicy.test"}, none, nil, -1, "none", "dmarc.none", "", "nopolicy.test publishes no DMARC policy"},
		{"no policy, subdomain", []string{"x.nopolicy.test"}, none, nil, -1, "none", "dmarc.none", "", ""},
		{"no zone at all", []string{"unknown.invalid"}, spfr("pass", "unknown.invalid"), nil, -1, "none", "dmarc.none", "", ""},

		// pct
		{"pct=0 reject sampled out", []string{"pct0.example.test"}, none, nil, 0, "fail", "dmarc.quarantine", "quarantine", "not in the pct=0 sample: reject applied as quarantine"},
		{"pct=0 quarantine sampled out", []string{"pct0q.example.test"}, none, nil, 0, "fail", "dmarc.fail_none", "none", ""},
		{"pct=50 in", []string{"pct50.example.test"}, none, nil, 49, "fail", "dmarc.reject", "reject", ""},
		{"pct=50 out", []string{"pct50.example.test"}, none, nil, 50, "fail", "dmarc.quarantine", "quarantine", ""},
		{"pct=0 pass", []string{"pct0.example.test"}, spfr("pass", "pct0.example.test"), nil, -1, "pass", "dmarc.pass", "reject", ""},

		// errors
		{"timeout", []string{"slow.example.test"}, none, nil, -1, "temperror", "dmarc.temperror", "", "slow.example.test"},
		{"SERVFAIL", []string{"broken.example.test"}, none, nil, -1, "temperror", "dmarc.temperror", "", ""},
		{"timeout at the org domain", []string{"sub.slow.test"}, none, nil, -1, "temperror", "dmarc.temperror", "", ""},
		{"two records", []string{"two.example.test"}, none, nil, -1, "permerror", "dmarc.permerror", "", "2 DMARC records"},
		{"bad record", []string{"bad.example.test"}, none, nil, -1, "permerror", "dmarc.permerror", "", "invalid policy"},
		{"aligned SPF temperror", []string{"example.test"}, spfr("temperror", "example.test"), nil, -1, "temperror", "dmarc.temperror", "reject", "SPF for example.test had a temporary error"},
		{"aligned DKIM temperror", []string{"example.test"}, none, []DKIMSignature{sig("example.test", "temperror")}, -1, "temperror", "dmarc.temperror", "reject", "DKIM d=example.test s=sel had a temporary error"},
		{"unaligned DKIM temperror", []string{"example.test"}, none, []DKIMSignature{sig("esp.test", "temperror")}, -1, "fail", "dmarc.reject", "reject", ""},

		// From
		{"no From", nil, spfr("pass", "example.test"), nil, -1, "none", "dmarc.bad_from", "", "no usable From address"},
		{"two Froms", []string{"example.test", "evil.test"}, spfr("pass", "example.test"), nil, -1, "none", "dmarc.bad_from", "", "2 addresses (example.test, evil.test)"},
		{"empty domain", []string{""}, none, nil, -1, "none", "dmarc.bad_from", "", ""},
	}
	for _, c := range cases {
		d := &DMARC{Resolver: res, Rand: func() int {
			if c.rand < 0 {
				t.Errorf("%s: Rand called", c.name)
			}
			return c.rand
		}}
		r := d.Check(t.Context(), c.from, c.spf, c.dkim)
		if r.Result != c.result || r.Check.Outcome != c.outcome || r.Policy != c.policy {
			t.Errorf("%s: %s %s policy %q (%s), want %s %s %q", c.name, r.Result, r.Check.Outcome, r.Policy, r.Check.Reason, c.result, c.outcome, c.policy)
			continue
		}
		if r.Check.Check != "dmarc" || !strings.Contains(r.Check.Reason, c.reason) {
			t.Errorf("%s: reason %q, want it to contain %q", c.name, r.Check.Reason, c.reason)
		}
	}
}

func TestDMARCDetails(t *testing.T) {
	res, _ := authFixture(t, dmarcZone)
	d := &DMARC{Resolver: res}
	r := d.Check(t.Context(), []string{"sub.example.test"}, SPFResult{Result: "softfail", Domain: "sub.example.test"},
		[]DKIMSignature{{Domain: "esp.test", Selector: "s1", Result: "pass"}})
	want := "DMARC fail for sub.example.test (sp=quarantine from _dmarc.example.test, aspf=r adkim=r): " +
		"SPF softfail for sub.example.test; DKIM d=esp.test s=s1 pass, not aligned (relaxed)"
	if r.Check.Reason != want {
		t.Errorf("reason\n%q, want\n%q", r.Check.Reason, want)
	}
	if r.Domain != "sub.example.test" || r.PolicyDomain != "example.test" {
		t.Errorf("domains %q %q", r.Domain, r.PolicyDomain)
	}
	if r.Check.Evidence != `_dmarc.example.test TXT "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.test"` {
		t.Errorf("evidence %q", r.Check.Evidence)
	}
}

func TestOrgDomain(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"example.com", "example.com"},
		{"a.b.example.com", "example.com"},
		{"mail.example.co.uk", "example.co.uk"},
		{"co.uk", "co.uk"},
		{"com", "com"},
		{"x.example.test", "example.test"},
	} {
		if got := orgDomain(c.in); got != c.want {
			t.Errorf("orgDomain(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
