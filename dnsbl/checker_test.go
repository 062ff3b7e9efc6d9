package dnsbl

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testsrv"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/internal/smtptest"
	"github.com/mxguard/mxguard/resolver"
	"github.com/mxguard/mxguard/zonedns"
)

// zoneBuilder writes fixture records for list entries. The records live
// outside any SOA zone, so the fixture answers NXDOMAIN for the rest.
type zoneBuilder struct {
	t testing.TB
	b strings.Builder
}

// ip lists ip in zone with the given A records.
func (z *zoneBuilder) ip(ip, zone string, as ...string) *zoneBuilder {
	for _, a := range as {
		fmt.Fprintf(&z.b, "%s%s. 300 IN A %s\n", rev(z.t, ip), zone, a)
	}
	return z
}

func (z *zoneBuilder) txt(ip, zone, txt string) *zoneBuilder {
	fmt.Fprintf(&z.b, "%s%s. 300 IN TXT %s\n", rev(z.t, ip), zone, txt)
	return z
}

func (z *zoneBuilder) raw(line string) *zoneBuilder {
	z.b.WriteString(line + "\n")
	return z
}

// testPoints gives zone the RFC 5782 IPv4 test point.
func (z *zoneBuilder) testPoints(zones ...string) *zoneBuilder {
	for _, zone := range zones {
		z.ip("127.0.0.2", zone, "127.0.0.2")
	}
	return z
}

func (z *zoneBuilder) String() string { return z.b.String() }

// The lists of most tests:
//
//	zen.test  Spamhaus-like, two filters (PBL codes weigh less)
//	bl.test   any answer, weight 2
//	wl.test   a DNSWL
//	dbl.test  a domain list
func listZone(t testing.TB) string {
	z := &zoneBuilder{t: t}
	z.testPoints("zen.test", "bl.test", "wl.test")
	z.raw(mapped2 + "zen.test. 300 IN A 127.0.0.2") // zen.test serves IPv6, bl.test and wl.test do not
	z.raw("test.dbl.test. 300 IN A 127.0.1.2")

	z.ip("192.0.2.1", "zen.test", "127.0.0.4").txt("192.0.2.1", "zen.test", `"https://zen.test/query/ip/192.0.2.1"`)
	z.ip("192.0.2.1", "bl.test", "127.0.0.2")
	z.ip("192.0.2.2", "zen.test", "127.0.0.10", "127.0.0.11")
	z.ip("192.0.2.4", "zen.test", "127.255.255.254")
	z.ip("192.0.2.5", "zen.test", "192.0.2.99")
	z.ip("192.0.2.6", "wl.test", "127.0.10.2")
	z.ip("192.0.2.7", "zen.test", "127.0.0.200")
	z.ip("192.0.2.8", "wl.test", "127.0.0.255")
	z.ip("192.0.2.9", "zen.test", "127.0.0.4").ip("192.0.2.9", "wl.test", "127.0.10.1")
	z.ip("192.0.2.10", "zen.test", "127.0.0.2", "127.255.255.252")
	z.ip("192.0.2.11", "bl.test", "127.0.0.2").txt("192.0.2.11", "bl.test", `"line one\013\010Bcc: x" "second string"`)
	z.ip("192.0.2.12", "zen.test", "127.255.255.255")
	z.ip("2001:db8::1", "zen.test", "127.0.0.3")
	z.ip("2001:db8::1", "bl.test", "127.0.0.2")

	z.raw("spam.example.dbl.test. 300 IN A 127.0.1.2")
	z.raw(`spam.example.dbl.test. 300 IN TXT "https://dbl.test/spam.example"`)
	z.raw("bad.example.dbl.test. 300 IN A 127.255.255.254")
	return z.String()
}

var listConfig = Config{
	Sites: []string{
		"zen.test=127.0.0.[2..11]*3",
		"zen.test=127.0.0.[10..11]*-1", // a second filter on the same zone: PBL weighs 2 in all
		"bl.test*2",
		"wl.test=127.0.[0..255].[1..3]*-5",
	},
	DomainSites:        []string{"dbl.test=127.0.1.[2..99]*3"},
	AllowlistThreshold: -3,
	Timeout:            time.Second,
}

// syncBuffer is the shared goroutine-safe buffer.
type syncBuffer struct{ smtptest.SyncBuffer }

// count counts the log lines holding all of words.
func (s *syncBuffer) count(words ...string) int {
	n := 0
	for line := range strings.Lines(s.String()) {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			n++
		}
	}
	return n
}

type env struct {
	c   *Checker
	fx  *zonedns.Server
	r   *resolver.Resolver
	log *syncBuffer
}

// setup starts a fixture serving zone and a checker using it through a
// caching resolver (rcfg may change that).
func setup(t testing.TB, zone string, cfg Config, rcfg resolver.Config) *env {
	t.Helper()
	fx := testsrv.DNS(t, zone)
	rcfg.Servers = []string{fx.Addr()}
	if rcfg.Timeout == 0 {
		rcfg.Timeout = 5 * time.Second // longer than the checks: the checker's deadline must be what ends them
	}
	rcfg.Attempts = 1
	r, err := resolver.New(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := New(cfg, r, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &env{c: c, fx: fx, r: r, log: buf}
}

func outcomes(v *Verdict) []string {
	var out []string
	for _, r := range v.Results() {
		out = append(out, fmt.Sprintf("%s %g", r.Outcome, r.Score))
	}
	return out
}

func zoneErrors(v *Verdict) []string {
	var out []string
	for _, e := range v.Errors {
		out = append(out, e.Zone+": "+e.Reason)
	}
	return out
}

func TestCheckIP(t *testing.T) {
	cfg := listConfig
	cfg.IPv6 = true
	e := setup(t, listZone(t), cfg, resolver.Config{})
	e.c.Start() // bl.test fails its IPv6 test point

	cases := []struct {
		ip          string
		score       float64
		listed      bool
		allowlisted bool
		outcomes    []string
		errors      []string
	}{
		{"192.0.2.1", 5, true, false, []string{"dnsbl.zen.test 3", "dnsbl.bl.test 2", "dnsbl 0"}, nil},
		// Two A records matching one pattern add its weight once; the
		// second pattern on the same zone adds its own.
		{"192.0.2.2", 2, true, false, []string{"dnsbl.zen.test 3", "dnswl.zen.test -1", "dnsbl 0"}, nil},
		{"192.0.2.3", 0, false, false, nil, nil},
		{"192.0.2.4", 0, false, false, nil,
			[]string{"zen.test: error code 127.255.255.254: query through a public or open resolver (Spamhaus)"}},
		{"192.0.2.5", 0, false, false, nil, []string{"zen.test: answer 192.0.2.99 outside 127.0.0.0/8"}},
		{"192.0.2.6", -5, false, true, []string{"dnswl.wl.test -5", "dnswl 0"}, nil},
		{"192.0.2.7", 0, false, false, nil, nil}, // 127.0.0.200 is outside the filter
		{"192.0.2.8", 0, false, false, nil, []string{"wl.test: error code 127.0.0.255: over the query limit (dnswl.org)"}},
		{"192.0.2.9", -2, false, false, []string{"dnsbl.zen.test 3", "dnswl.wl.test -5"}, nil},
		// A good code beside an error code: the answer is not trusted.
		{"192.0.2.10", 0, false, false, nil, []string{"zen.test: error code 127.255.255.252: typing error in the list name (Spamhaus)"}},
		{"192.0.2.12", 0, false, false, nil, []string{"zen.test: error code 127.255.255.255: over the query limit (Spamhaus)"}},
		{"::ffff:192.0.2.1", 5, true, false, []string{"dnsbl.zen.test 3", "dnsbl.bl.test 2", "dnsbl 0"}, nil},
		// bl.test lists it too, but failed its IPv6 self-test.
		{"2001:db8::1", 3, true, false, []string{"dnsbl.zen.test 3", "dnsbl 0"}, nil},
		// Not asked at all.
		{"10.0.0.1", 0, false, false, nil, nil},
		{"127.0.0.2", 0, false, false, nil, nil},
		{"fe80::1", 0, false, false, nil, nil},
	}
	for _, c := range cases {
		v := e.c.CheckIP(t.Context(), netip.MustParseAddr(c.ip))
		if v.Score != c.score || v.Listed != c.listed || v.Allowlisted != c.allowlisted {
			t.Errorf("%s: score %g listed %v allowlisted %v, want %g %v %v",
				c.ip, v.Score, v.Listed, v.Allowlisted, c.score, c.listed, c.allowlisted)
		}
		if got := outcomes(v); !reflect.DeepEqual(got, c.outcomes) {
			t.Errorf("%s: outcomes %q, want %q", c.ip, got, c.outcomes)
		}
		if got := zoneErrors(v); !reflect.DeepEqual(got, c.errors) {
			t.Errorf("%s: errors %q, want %q", c.ip, got, c.errors)
		}
	}

	for _, zone := range []string{"bl.test", "wl.test"} {
		if n := e.log.count(`msg="dnsbl zone broken"`, "zone="+zone, "family=ipv6"); n != 1 {
			t.Errorf("%s not broken for IPv6:\n%s", zone, e.log)
		}
	}
	if n := e.log.count(`msg="dnsbl zone broken"`); n != 2 {
		t.Errorf("%d broken lines, want bl.test and wl.test for IPv6 alone:\n%s", n, e.log)
	}

	// postscreen asks each domain once, whatever the number of patterns.
	if n := e.fx.Queries(rev(t, "192.0.2.2")+"zen.test", dns.TypeA); n != 1 {
		t.Errorf("zen.test asked %d times for 192.0.2.2, want once", n)
	}
	for _, ip := range []string{"10.0.0.1", "fe80::1"} {
		if n := e.fx.Queries(rev(t, ip)+"zen.test", dns.TypeA); n != 0 {
			t.Errorf("%s was looked up", ip)
		}
	}
	// Only listing zones are asked for their TXT.
	if n := e.fx.Queries(rev(t, "192.0.2.3")+"zen.test", dns.TypeTXT); n != 0 {
		t.Errorf("TXT asked for an unlisted client")
	}
	if n := e.fx.Queries(rev(t, "192.0.2.7")+"zen.test", dns.TypeTXT); n != 0 {
		t.Errorf("TXT asked although no filter matched")
	}
	if n := e.fx.Queries(rev(t, "192.0.2.1")+"zen.test", dns.TypeTXT); n != 1 {
		t.Errorf("TXT asked %d times for a listing zone, want once", n)
	}
}

func TestIPv6Off(t *testing.T) {
	e := setup(t, listZone(t), listConfig, resolver.Config{})
	v := e.c.CheckIP(t.Context(), netip.MustParseAddr("2001:db8::1"))
	if v.Score != 0 || len(v.Hits) != 0 || e.fx.TotalQueries() != 0 {
		t.Errorf("IPv6 client looked up with IPv6 off: %+v, %d queries", v, e.fx.TotalQueries())
	}
}

func TestThresholds(t *testing.T) {
	for _, c := range []struct {
		threshold, allow    float64
		ip                  string
		listed, allowlisted bool
	}{
		{0, 0, "192.0.2.1", true, false}, // default 1
		{5, 0, "192.0.2.1", true, false}, // >=
		{6, 0, "192.0.2.1", false, false},
		{0, 0, "192.0.2.6", false, false},  // allowlisting off
		{0, -5, "192.0.2.6", false, true},  // <=
		{0, -6, "192.0.2.6", false, false}, //
		{0, -1, "192.0.2.3", false, false}, // not listed anywhere is not allowlisted
	} {
		cfg := listConfig
		cfg.Threshold, cfg.AllowlistThreshold = c.threshold, c.allow
		e := setup(t, listZone(t), cfg, resolver.Config{})
		v := e.c.CheckIP(t.Context(), netip.MustParseAddr(c.ip))
		if v.Listed != c.listed || v.Allowlisted != c.allowlisted {
			t.Errorf("threshold %g allowlist %g %s (score %g): listed %v allowlisted %v, want %v %v",
				c.threshold, c.allow, c.ip, v.Score, v.Listed, v.Allowlisted, c.listed, c.allowlisted)
		}
	}
}

func TestResults(t *testing.T) {
	z := listZone(t) + (&zoneBuilder{t: t}).
		testPoints("s3cr3t.zen.dq.test").
		ip("192.0.2.1", "s3cr3t.zen.dq.test", "127.0.0.4", "127.0.0.10").
		txt("192.0.2.1", "s3cr3t.zen.dq.test", `"SBL: see" " https://dq.test/"`).
		String()
	cfg := Config{
		Sites:              []string{"s3cr3t.zen.dq.test=127.0.0.[2..11]*3", "s3cr3t.zen.dq.test=127.0.0.[10..11]*-1, bl.test*2 wl.test*-5"},
		AllowlistThreshold: -3,
		ReplyMap:           map[string]string{"S3CR3T.zen.dq.test.": "zen.spamhaus.org"},
	}
	e := setup(t, z, cfg, resolver.Config{})
	e.c.Start()

	v := e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.1"))
	want := []checks.Result{
		{Check: "dnsbl", Outcome: "dnsbl.zen.spamhaus.org", Score: 3,
			Reason:   "client 192.0.2.1 listed by zen.spamhaus.org as 127.0.0.4, 127.0.0.10",
			Evidence: "127.0.0.4, 127.0.0.10; SBL: see https://dq.test/"},
		{Check: "dnsbl", Outcome: "dnswl.zen.spamhaus.org", Score: -1,
			Reason:   "client 192.0.2.1 listed by zen.spamhaus.org as 127.0.0.10",
			Evidence: "127.0.0.10; SBL: see https://dq.test/"},
		{Check: "dnsbl", Outcome: "dnsbl.bl.test", Score: 2,
			Reason:   "client 192.0.2.1 listed by bl.test as 127.0.0.2",
			Evidence: "127.0.0.2"},
		{Check: "dnsbl", Outcome: "dnsbl", Score: 0,
			Reason:   "DNSBL rank 4 for [192.0.2.1]",
			Evidence: "zen.spamhaus.org, bl.test"},
	}
	if got := v.Results(); !reflect.DeepEqual(got, want) {
		t.Errorf("Results:\n%s\nwant\n%s", dump(got), dump(want))
	}
	if v.Hits[0].Zone != "s3cr3t.zen.dq.test" || v.Hits[0].Name != "zen.spamhaus.org" {
		t.Errorf("hit zone %q name %q", v.Hits[0].Zone, v.Hits[0].Name)
	}
	for _, r := range v.Results() {
		if strings.Contains(fmt.Sprint(r), "s3cr3t") {
			t.Errorf("secret key in %+v", r)
		}
	}

	v = e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.6"))
	want = []checks.Result{
		{Check: "dnsbl", Outcome: "dnswl.wl.test", Score: -5,
			Reason: "client 192.0.2.6 listed by wl.test as 127.0.10.2", Evidence: "127.0.10.2"},
		{Check: "dnsbl", Outcome: "dnswl", Score: 0, Reason: "DNSWL rank -5 for [192.0.2.6]", Evidence: "wl.test"},
	}
	if got := v.Results(); !reflect.DeepEqual(got, want) {
		t.Errorf("Results:\n%s\nwant\n%s", dump(got), dump(want))
	}

	if got := e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.3")).Results(); got != nil {
		t.Errorf("unlisted client: %v", got)
	}
	var nilVerdict *Verdict
	if nilVerdict.Results() != nil {
		t.Error("nil verdict has results")
	}
}

func dump(rs []checks.Result) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  %+v\n", r)
	}
	return b.String()
}

func TestTXT(t *testing.T) {
	e := setup(t, listZone(t), listConfig, resolver.Config{})
	v := e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.1"))
	if len(v.Hits) != 2 || v.Hits[0].TXT != "https://zen.test/query/ip/192.0.2.1" || v.Hits[1].TXT != "" {
		t.Errorf("hits %+v", v.Hits)
	}
	// Strings joined, control characters escaped: a CR LF from a list
	// must not reach a reply or a log line.
	v = e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.11"))
	if len(v.Hits) != 1 || v.Hits[0].TXT != `line one\013\010Bcc: xsecond string` {
		t.Errorf("hits %+v", v.Hits)
	}

	long := strings.Repeat("x", 250)
	e = setup(t, (&zoneBuilder{t: t}).ip("192.0.2.1", "bl.test", "127.0.0.2").
		txt("192.0.2.1", "bl.test", `"`+long+`"`).String(), Config{Sites: []string{"bl.test"}}, resolver.Config{})
	v = e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.1"))
	if len(v.Hits) != 1 || v.Hits[0].TXT != long[:200] {
		t.Errorf("hits %+v", v.Hits)
	}
}

func TestCheckDomain(t *testing.T) {
	e := setup(t, listZone(t), listConfig, resolver.Config{})
	e.c.Start()
	cases := []struct {
		domain, role string
		results      []checks.Result
		errors       []string
	}{
		{"spam.example", "sender", []checks.Result{
			{Check: "rhsbl", Outcome: "rhsbl.dbl.test", Score: 3,
				Reason:   "sender domain spam.example listed by dbl.test as 127.0.1.2",
				Evidence: "127.0.1.2; https://dbl.test/spam.example"},
			{Check: "rhsbl", Outcome: "rhsbl", Reason: "RHSBL rank 3 for sender domain spam.example", Evidence: "dbl.test"},
		}, nil},
		{"SPAM.Example.", "helo", []checks.Result{
			{Check: "rhsbl", Outcome: "rhsbl.dbl.test", Score: 3,
				Reason:   "HELO domain spam.example listed by dbl.test as 127.0.1.2",
				Evidence: "127.0.1.2; https://dbl.test/spam.example"},
			{Check: "rhsbl", Outcome: "rhsbl", Reason: "RHSBL rank 3 for HELO domain spam.example", Evidence: "dbl.test"},
		}, nil},
		{"ham.example", "sender", nil, nil},
		{"bad.example", "sender", nil, []string{"dbl.test: error code 127.255.255.254: query through a public or open resolver (Spamhaus)"}},
		{"[192.0.2.1]", "helo", nil, nil},
		{"192.0.2.1", "helo", nil, nil},
		{"localhost", "helo", nil, nil},
		{"", "sender", nil, nil},
	}
	for _, c := range cases {
		v := e.c.CheckDomain(t.Context(), c.domain, c.role)
		if got := v.Results(); !reflect.DeepEqual(got, c.results) {
			t.Errorf("%s %q: results\n%s\nwant\n%s", c.role, c.domain, dump(got), dump(c.results))
		}
		if got := zoneErrors(v); !reflect.DeepEqual(got, c.errors) {
			t.Errorf("%s %q: errors %q, want %q", c.role, c.domain, got, c.errors)
		}
	}
	for _, name := range []string{"[192.0.2.1].dbl.test", "1.2.0.192.dbl.test", "192.0.2.1.dbl.test", "localhost.dbl.test"} {
		if n := e.fx.Queries(name, dns.TypeA); n != 0 {
			t.Errorf("%s asked", name)
		}
	}
	// Domain lists are not asked about addresses, nor address lists about domains.
	if n := e.fx.Queries("spam.example.zen.test", dns.TypeA); n != 0 {
		t.Error("an IP list was asked about a domain")
	}
}

// A list that never answers counts as not listing, is reported, and does
// not hold the check past its Timeout.
func TestTimeout(t *testing.T) {
	z := listZone(t) + (&zoneBuilder{t: t}).testPoints("slow.test").ip("192.0.2.1", "slow.test", "127.0.0.2").String()
	cfg := listConfig
	cfg.Sites = append(cfg.Sites[:len(cfg.Sites):len(cfg.Sites)], "slow.test*10")
	cfg.Timeout = 300 * time.Millisecond
	e := setup(t, z, cfg, resolver.Config{})
	e.c.Start()
	e.fx.SetFault(rev(t, "192.0.2.1")+"slow.test", zonedns.Fault{Drop: true})
	e.fx.SetFault(rev(t, "192.0.2.1")+"bl.test", zonedns.Fault{Rcode: dns.RcodeServerFailure})

	before := runtime.NumGoroutine()
	start := time.Now()
	v := e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.1"))
	took := time.Since(start)
	if took < cfg.Timeout || took > cfg.Timeout+500*time.Millisecond {
		t.Errorf("CheckIP took %v with a %v timeout", took, cfg.Timeout)
	}
	if v.Elapsed < cfg.Timeout || v.Elapsed > took {
		t.Errorf("Elapsed %v, took %v", v.Elapsed, took)
	}
	if v.Score != 3 || !v.Listed {
		t.Errorf("score %g listed %v: want zen.test's 3 alone", v.Score, v.Listed)
	}
	want := []string{"bl.test: server misbehaving: SERVFAIL", "slow.test: timeout"}
	if got := zoneErrors(v); !reflect.DeepEqual(got, want) {
		t.Errorf("errors %q, want %q", got, want)
	}
	if e.log.count("dnsbl zone error", "zone=slow.test", "why=timeout") != 1 {
		t.Errorf("log:\n%s", e.log)
	}
	settles(t, before)

	// The caller's own deadline counts too, and so does giving up.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	v = e.c.CheckIP(ctx, netip.MustParseAddr("192.0.2.1"))
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("CheckIP took %v with a 50ms context", took)
	}
	if got := zoneErrors(v); !slices.Contains(got, "slow.test: timeout") {
		t.Errorf("errors %q", got)
	}
	ctx, cancel = context.WithCancel(t.Context())
	cancel()
	v = e.c.CheckIP(ctx, netip.MustParseAddr("192.0.2.99"))
	if len(v.Errors) == 0 || v.Errors[0].Reason != "canceled" {
		t.Errorf("cancelled check: errors %q", zoneErrors(v))
	}
	settles(t, before)
}

// settles waits for the goroutine count to come back to before: whatever a
// check started must end soon after it.
func settles(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The resolver caches: checking the same client again asks nothing upstream.
func TestCached(t *testing.T) {
	e := setup(t, listZone(t), listConfig, resolver.Config{})
	e.c.Start()
	for _, ip := range []string{"192.0.2.1", "192.0.2.3"} {
		first := e.c.CheckIP(t.Context(), netip.MustParseAddr(ip))
		n := e.fx.TotalQueries()
		second := e.c.CheckIP(t.Context(), netip.MustParseAddr(ip))
		if m := e.fx.TotalQueries(); m != n {
			t.Errorf("%s: second check sent %d queries", ip, m-n)
		}
		first.Elapsed, second.Elapsed = 0, 0
		if !reflect.DeepEqual(first, second) {
			t.Errorf("%s: %+v then %+v", ip, first, second)
		}
	}
	if n := e.fx.Queries(rev(t, "192.0.2.1")+"zen.test", dns.TypeA); n != 1 {
		t.Errorf("zen.test A asked %d times", n)
	}
	if n := e.fx.Queries(rev(t, "192.0.2.1")+"zen.test", dns.TypeTXT); n != 1 {
		t.Errorf("zen.test TXT asked %d times", n)
	}
}

// Error answers are logged once a minute per zone, not once per query.
func TestWarningsRateLimited(t *testing.T) {
	e := setup(t, listZone(t), listConfig, resolver.Config{})
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	e.c.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	for range 5 {
		e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.4"))
		e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.8"))
	}
	if n := e.log.count("dnsbl zone error", "zone=zen.test"); n != 1 {
		t.Errorf("%d warnings for zen.test:\n%s", n, e.log)
	}
	if n := e.log.count("dnsbl zone error", "zone=wl.test", "127.0.0.255"); n != 1 {
		t.Errorf("%d warnings for wl.test:\n%s", n, e.log)
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	e.c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.4"))
	if n := e.log.count("dnsbl zone error", "zone=zen.test", "suppressed=4"); n != 1 {
		t.Errorf("no second warning with the count left out:\n%s", e.log)
	}
}

func TestNew(t *testing.T) {
	r, err := resolver.New(resolver.Config{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg Config
		err string
	}{
		{Config{Sites: []string{"zen.test=127.0.0.[2..300]*3"}}, `dnsbl: sites: bad filter octet "300" in zen.test=127.0.0.[2..300]*3`},
		{Config{Sites: []string{"ok.test, bad..test"}}, `dnsbl: sites: bad list domain "bad..test"`},
		{Config{DomainSites: []string{"dbl.test*x"}}, `dnsbl: domain sites: bad weight "x"`},
		{Config{Threshold: -1}, "negative threshold"},
		{Config{AllowlistThreshold: 1}, "must be negative"},
		{Config{Timeout: -1}, "negative timeout"},
		{Config{SelfTestInterval: -1}, "negative self-test interval"},
		{Config{ReplyMap: map[string]string{"k.zen.test": "zen spamhaus"}}, `reply map name "zen spamhaus"`},
	} {
		_, err := New(c.cfg, r, nil)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("New(%+v) error %v, want %q", c.cfg, err, c.err)
		}
	}
	if _, err := New(Config{}, nil, nil); err == nil {
		t.Error("New without a resolver")
	}

	// Sites may come one per entry or several to an entry, as in main.cf.
	c, err := New(Config{Sites: []string{"a.test*2 b.test,a.test=127.0.0.3", " c.test "}}, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, z := range c.ipZones {
		for _, p := range z.patterns {
			got = append(got, p.String())
		}
	}
	if want := []string{"a.test*2", "a.test=127.0.0.3", "b.test", "c.test"}; !reflect.DeepEqual(got, want) {
		t.Errorf("zones %q, want %q", got, want)
	}
	if len(c.ipZones) != 3 || c.threshold != 1 || c.timeout != 2*time.Second {
		t.Errorf("%d zones, threshold %g, timeout %v", len(c.ipZones), c.threshold, c.timeout)
	}
	c.Close()
	c.Start() // after Close: does nothing
	c.Close()
}

func TestFirstTXT(t *testing.T) {
	txt := func(ss ...string) *resolver.Answer {
		return &resolver.Answer{RRs: []dns.RR{
			&dns.CNAME{Hdr: dns.RR_Header{Rrtype: dns.TypeCNAME}, Target: "x."},
			&dns.TXT{Hdr: dns.RR_Header{Rrtype: dns.TypeTXT}, Txt: ss},
			&dns.TXT{Hdr: dns.RR_Header{Rrtype: dns.TypeTXT}, Txt: []string{"second record"}},
		}}
	}
	for _, c := range []struct {
		ans  *resolver.Answer
		want string
	}{
		{nil, ""},
		{&resolver.Answer{}, ""},
		{txt("a", "b"), "ab"},
		{txt("raw\r\nQUIT\x00ü"), "raw??QUIT???"},
		{txt(strings.Repeat("é", 150)), strings.Repeat("?", 200)},
	} {
		if got := firstTXT(c.ans); got != c.want {
			t.Errorf("firstTXT = %q, want %q", got, c.want)
		}
	}
}

// stuckResolver never answers until released, whatever the context says.
type stuckResolver struct{ release chan struct{} }

func (s stuckResolver) Query(ctx context.Context, name string, qtype uint16) (*resolver.Answer, error) {
	<-s.release
	return &resolver.Answer{Rcode: dns.RcodeNameError}, nil
}

// Even a Resolver that ignores its context cannot hold a check past Timeout.
func TestStuckResolver(t *testing.T) {
	before := runtime.NumGoroutine()
	r := stuckResolver{make(chan struct{})}
	c, err := New(Config{Sites: []string{"a.test", "b.test"}, Timeout: 50 * time.Millisecond}, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v := c.CheckIP(t.Context(), netip.MustParseAddr("192.0.2.1"))
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("CheckIP took %v", d)
	}
	if got, want := zoneErrors(v), []string{"a.test: timeout", "b.test: timeout"}; !reflect.DeepEqual(got, want) {
		t.Errorf("errors %q, want %q", got, want)
	}
	close(r.release) // the lookups end and their goroutines with them
	settles(t, before)
}
