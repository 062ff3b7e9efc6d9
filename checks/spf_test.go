package checks

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testsrv"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/resolver"
	"github.com/mxguard/mxguard/zonedns"
)

// authFixture serves zone on loopback and returns mxguard's resolver in
// front of it, with short timeouts so that dropped questions fail fast.
// The SPF, DKIM and DMARC tests share it.
func authFixture(t testing.TB, zone string) (*resolver.Resolver, *zonedns.Server) {
	t.Helper()
	srv := testsrv.DNS(t, zone)
	res, err := resolver.New(resolver.Config{
		Servers:  []string{srv.Addr()},
		Timeout:  250 * time.Millisecond,
		Attempts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, srv
}

// spfZone: the client in most cases is 192.0.2.1.
var spfZone = `
$TTL 300
$ORIGIN spf.test.
@        SOA ns.spf.test. h.spf.test. 1 3600 600 86400 60
pass     TXT "v=spf1 ip4:192.0.2.0/24 -all"
fail     TXT "v=spf1 ip4:198.51.100.0/24 -all"
soft     TXT "v=spf1 ip4:198.51.100.0/24 ~all"
neutral  TXT "v=spf1 ip4:198.51.100.0/24 ?all"
empty    TXT "v=spf1"
other    TXT "google-site-verification=abc"
other    MX  10 mx.other
upper    TXT "V=SPF1 IP4:192.0.2.1 -ALL"
split    TXT "v=spf1 ip4:198.51.100.0/24 " "ip4:192.0.2.0/24 -all"
incl     TXT "v=spf1 include:inner.spf.test -all"
inner    TXT "v=spf1 include:innermost.spf.test ~all"
innermost TXT "v=spf1 a:host.spf.test mx -all"
host     A   192.0.2.1
inclfail TXT "v=spf1 include:fail.spf.test -all"
inclnone TXT "v=spf1 include:missing.spf.test -all"
redir    TXT "v=spf1 redirect=pass.spf.test"
redirfail TXT "v=spf1 redirect=fail.spf.test"
redirnone TXT "v=spf1 redirect=missing.spf.test"
mx       TXT "v=spf1 mx -all"
mx       MX  10 mail
mail     A   192.0.2.1
macro    TXT "v=spf1 exists:%{i}.%{l}.ok.spf.test -all"
192.0.2.1.alice.ok A 127.0.0.2
voids2   TXT "v=spf1 a:v1.spf.test a:v2.spf.test -all"
voids3   TXT "v=spf1 a:v1.spf.test a:v2.spf.test a:v3.spf.test -all"
lookups10 TXT "v=spf1 ` + spfChain(1, 10) + ` -all"
lookups11 TXT "v=spf1 ` + spfChain(1, 11) + ` -all"
nested   TXT "v=spf1 include:lookups10.spf.test -all"
two      TXT "v=spf1 -all"
two      TXT "v=spf1 +all"
syntax   TXT "v=spf1 frobnicate ip4:192.0.2.0/24 -all"
; the library reads lazily: an error after the match goes unseen
lazy     TXT "v=spf1 ip4:192.0.2.0/24 frobnicate -all"
badmask  TXT "v=spf1 ip4:192.0.2.0/33 -all"
tworedir TXT "v=spf1 redirect=a.spf.test redirect=b.spf.test"
slow     TXT "v=spf1 -all"
broken   TXT "v=spf1 -all"
inclslow TXT "v=spf1 include:slow.spf.test -all"
mail6    TXT "v=spf1 ip6:2001:db8:25::/48 -all"
mailhost TXT "v=spf1 a -all"
mailhost A   192.0.2.1
a6       TXT "v=spf1 a:host6.spf.test -all"
host6    AAAA 2001:db8::25
` + spfHosts(11)

// spfChain is "a:h1.spf.test a:h2.spf.test ...": n DNS-querying
// mechanisms that exist but do not match 192.0.2.1.
func spfChain(from, to int) string {
	var f []string
	for i := from; i <= to; i++ {
		f = append(f, fmt.Sprintf("a:h%d.spf.test", i))
	}
	return strings.Join(f, " ")
}

func spfHosts(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "h%d A 203.0.113.%d\n", i, i)
	}
	return b.String()
}

func TestSPF(t *testing.T) {
	res, srv := authFixture(t, spfZone)
	srv.SetFault("slow.spf.test", zonedns.Fault{Drop: true})
	srv.SetFault("broken.spf.test", zonedns.Fault{Rcode: dns.RcodeServerFailure})
	s := &SPF{Resolver: res, Timeout: 2 * time.Second}
	client := netip.MustParseAddr("192.0.2.1")

	cases := []struct {
		name   string
		ip     netip.Addr
		helo   string
		sender string
		want   string
		why    string // a substring of the explanation, if set
	}{
		{"pass", client, "x.test", "alice@pass.spf.test", "pass", "matched ip"},
		{"fail -all", client, "x.test", "alice@fail.spf.test", "fail", "matched all"},
		{"softfail ~all", client, "x.test", "alice@soft.spf.test", "softfail", ""},
		{"neutral ?all", client, "x.test", "alice@neutral.spf.test", "neutral", ""},
		{"neutral, empty record", client, "x.test", "alice@empty.spf.test", "neutral", "no mechanism matched"},
		{"none, no record", client, "x.test", "alice@other.spf.test", "none", "no SPF record"},
		{"none, no domain", client, "x.test", "alice@missing.spf.test", "none", "no SPF record"},
		{"case-insensitive", client, "x.test", "alice@upper.spf.test", "pass", ""},
		{"sender domain case and dot", client, "x.test", "Alice@PASS.spf.test.", "pass", ""},
		{"record in two strings", client, "x.test", "alice@split.spf.test", "pass", ""},
		{"include chain", client, "x.test", "alice@incl.spf.test", "pass", ""},
		{"include of a fail is no match", client, "x.test", "alice@inclfail.spf.test", "fail", ""},
		{"include of nothing", client, "x.test", "alice@inclnone.spf.test", "permerror", ""},
		{"redirect", client, "x.test", "alice@redir.spf.test", "pass", ""},
		{"redirect to fail", client, "x.test", "alice@redirfail.spf.test", "fail", ""},
		{"redirect to nothing", client, "x.test", "alice@redirnone.spf.test", "permerror", ""},
		{"mx", client, "x.test", "alice@mx.spf.test", "pass", "matched mx"},
		{"macros", client, "x.test", "alice@macro.spf.test", "pass", ""},
		{"macros, other local part", client, "x.test", "bob@macro.spf.test", "fail", ""},
		{"two void lookups allowed", client, "x.test", "alice@voids2.spf.test", "fail", ""},
		{"third void lookup", client, "x.test", "alice@voids3.spf.test", "permerror", "void lookup limit"},
		{"10 lookups allowed", client, "x.test", "alice@lookups10.spf.test", "fail", ""},
		{"11th lookup", client, "x.test", "alice@lookups11.spf.test", "permerror", "lookup limit"},
		{"include counts too", client, "x.test", "alice@nested.spf.test", "permerror", "lookup limit"},
		{"two records", client, "x.test", "alice@two.spf.test", "permerror", "multiple"},
		{"unknown mechanism", client, "x.test", "alice@syntax.spf.test", "permerror", "unknown field"},
		{"error after the match", client, "x.test", "alice@lazy.spf.test", "pass", ""},
		{"bad mask", client, "x.test", "alice@badmask.spf.test", "permerror", ""},
		{"two redirects", client, "x.test", "alice@tworedir.spf.test", "permerror", ""},
		{"timeout", client, "x.test", "alice@slow.spf.test", "temperror", "timeout"},
		{"SERVFAIL", client, "x.test", "alice@broken.spf.test", "temperror", "SERVFAIL"},
		{"timeout in an include", client, "x.test", "alice@inclslow.spf.test", "temperror", ""},
		{"mapped client", netip.MustParseAddr("::ffff:192.0.2.1"), "x.test", "alice@pass.spf.test", "pass", ""},
		{"ip6 pass", netip.MustParseAddr("2001:db8:25::1"), "x.test", "alice@mail6.spf.test", "pass", ""},
		{"ip6 fail", netip.MustParseAddr("2001:db8:26::1"), "x.test", "alice@mail6.spf.test", "fail", ""},
		{"ip6 client, ip4 policy", netip.MustParseAddr("2001:db8:25::1"), "x.test", "alice@pass.spf.test", "fail", ""},
		{"ip6 via AAAA", netip.MustParseAddr("2001:db8::25"), "x.test", "alice@a6.spf.test", "pass", ""},
		{"empty local part", client, "x.test", "@pass.spf.test", "pass", ""},
	}
	for _, c := range cases {
		r := s.Check(t.Context(), c.ip, c.helo, c.sender)
		if r.Result != c.want || r.Check.Outcome != "spf."+c.want {
			t.Errorf("%s: %s / %s (%s), want %s", c.name, r.Result, r.Check.Outcome, r.Check.Reason, c.want)
			continue
		}
		if !strings.Contains(r.Explanation, c.why) {
			t.Errorf("%s: explanation %q, want it to mention %q", c.name, r.Explanation, c.why)
		}
		if r.Identity != "mailfrom" || r.Check.Check != "spf" {
			t.Errorf("%s: %+v", c.name, r)
		}
		wantReason := fmt.Sprintf("SPF %s for %s from %s: ", c.want, c.sender, c.ip.Unmap())
		if !strings.HasPrefix(r.Check.Reason, wantReason) {
			t.Errorf("%s: reason %q, want it to start %q", c.name, r.Check.Reason, wantReason)
		}
	}

	r := s.Check(t.Context(), client, "x.test", "alice@fail.spf.test")
	if r.Domain != "fail.spf.test" || r.Check.Evidence != `fail.spf.test TXT "v=spf1 ip4:198.51.100.0/24 -all"` {
		t.Errorf("fail: domain %q, evidence %q", r.Domain, r.Check.Evidence)
	}
	if r.Check.Reason != "SPF fail for alice@fail.spf.test from 192.0.2.1: matched all" {
		t.Errorf("fail: reason %q", r.Check.Reason)
	}
	r = s.Check(t.Context(), client, "x.test", "alice@two.spf.test")
	if r.Check.Evidence != `two.spf.test TXT "v=spf1 -all", "v=spf1 +all"` && r.Check.Evidence != `two.spf.test TXT "v=spf1 +all", "v=spf1 -all"` {
		t.Errorf("two records: evidence %q", r.Check.Evidence)
	}
}

// The null sender is checked as postmaster@helo (RFC 7208 §2.4).
func TestSPFHELO(t *testing.T) {
	res, _ := authFixture(t, spfZone)
	s := &SPF{Resolver: res}
	client := netip.MustParseAddr("192.0.2.1")
	cases := []struct {
		helo, sender, want string
	}{
		{"mailhost.spf.test", "", "pass"},
		{"MAILHOST.spf.test.", "", "pass"},
		{"fail.spf.test", "", "fail"},
		{"missing.spf.test", "", "none"},
		{"[192.0.2.1]", "", "none"}, // not a domain name: RFC 7208 §2.3
		{"192.0.2.1", "", "none"},
		{"localhost", "", "none"},
		{"nodot", "", "none"},
		{"", "", "none"},
		{"mailhost.spf.test", "postmaster", "pass"}, // no domain part: HELO too
	}
	for _, c := range cases {
		r := s.Check(t.Context(), client, c.helo, c.sender)
		if r.Result != c.want || r.Identity != "helo" {
			t.Errorf("HELO %q: %s (%s) identity %s, want %s", c.helo, r.Result, r.Check.Reason, r.Identity, c.want)
		}
		if !strings.HasPrefix(r.Check.Reason, "SPF "+c.want+" for HELO ") {
			t.Errorf("HELO %q: reason %q", c.helo, r.Check.Reason)
		}
	}
	if r := s.Check(t.Context(), client, "mailhost.spf.test", ""); r.Domain != "mailhost.spf.test" || r.HELO != "mailhost.spf.test" || r.Sender != "" {
		t.Errorf("HELO result %+v", r)
	}
}

// Timeout bounds the evaluation even when the resolver would wait longer.
func TestSPFTimeout(t *testing.T) {
	srv := testsrv.DNS(t, spfZone)
	srv.SetFault("slow.spf.test", zonedns.Fault{Drop: true})
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := &SPF{Resolver: res, Timeout: 200 * time.Millisecond}
	start := time.Now()
	r := s.Check(t.Context(), netip.MustParseAddr("192.0.2.1"), "x.test", "a@slow.spf.test")
	if r.Result != "temperror" || time.Since(start) > 2*time.Second {
		t.Errorf("%s after %v", r.Result, time.Since(start))
	}
	// A caller's cancelled context is a temporary failure too.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if r := s.Check(ctx, netip.MustParseAddr("192.0.2.1"), "x.test", "a@pass.spf.test"); r.Result != "temperror" {
		t.Errorf("cancelled: %s", r.Result)
	}
}
