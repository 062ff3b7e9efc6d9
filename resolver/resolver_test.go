package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testsrv"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/zonedns"
)

const testZone = `
$ORIGIN example.test.
$TTL 300
@        IN SOA ns hostmaster 1 3600 600 86400 60 ; negative TTL min(300, 60)
www      IN A    192.0.2.1
www      IN A    192.0.2.2
www      IN AAAA 2001:db8::1
v4only   IN A    192.0.2.3
v6only   IN AAAA 2001:db8::6
@        IN MX   20 mx2
@        IN MX   10 mx1
@        IN TXT  "v=spf1 " "-all"
@        IN TXT  "other"
alias    IN CNAME www
short 5  IN A 192.0.2.5
long 86400 IN A 192.0.2.6
zero 0   IN A 192.0.2.7

$ORIGIN 2.0.192.in-addr.arpa.
@ IN SOA ns.example.test. hm.example.test. 1 3600 600 86400 60
1 IN PTR www.example.test.

$ORIGIN neg.test.
@ 30 IN SOA ns hm 1 1 1 1 600 ; negative TTL min(30, 600)
there IN A 192.0.2.8

; outside any zone: negative answers carry no SOA
listed.bl.test. 300 IN A 127.0.0.2
`

// clock is a settable time source, so expiry tests need no sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// setup starts a fixture with zone and a resolver using it (unless
// cfg names servers) on a fake clock.
func setup(t testing.TB, zone string, cfg Config) (*Resolver, *zonedns.Server, *clock) {
	t.Helper()
	fx := testsrv.DNS(t, zone)
	if cfg.Servers == nil {
		cfg.Servers = []string{fx.Addr()}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r.now = clk.now
	return r, fx, clk
}

func TestLookups(t *testing.T) {
	r, fx, _ := setup(t, testZone, Config{})
	rev6, _ := dns.ReverseAddr("2001:db8::1")
	if err := fx.AddRR("8.b.d.0.1.0.0.2.ip6.arpa. 300 IN SOA ns.example.test. hm.example.test. 1 1 1 1 60"); err != nil {
		t.Fatal(err)
	}
	if err := fx.AddRR(rev6 + " 300 IN PTR www6.example.test."); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ips := func(network, host string) func() ([]string, error) {
		return func() ([]string, error) {
			v, err := r.LookupIP(ctx, network, host)
			return strs(v), err
		}
	}
	for _, c := range []struct {
		what string
		do   func() ([]string, error)
		want []string
	}{
		{"ip4", ips("ip4", "www.example.test"), []string{"192.0.2.1", "192.0.2.2"}},
		{"ip6", ips("ip6", "www.example.test."), []string{"2001:db8::1"}},
		{"ip", ips("ip", "www.example.test"), []string{"192.0.2.1", "192.0.2.2", "2001:db8::1"}},
		{"ip v4 only", ips("ip", "v4only.example.test"), []string{"192.0.2.3"}},
		{"ip v6 only", ips("ip", "v6only.example.test"), []string{"2001:db8::6"}},
		{"ip via CNAME", ips("ip4", "alias.example.test"), []string{"192.0.2.1", "192.0.2.2"}},
		{"ip literal", ips("ip", "192.0.2.99"), []string{"192.0.2.99"}},
		{"IPAddr", func() ([]string, error) {
			v, err := r.LookupIPAddr(ctx, "www.example.test")
			var s []string
			for _, a := range v {
				s = append(s, a.String())
			}
			return s, err
		}, []string{"192.0.2.1", "192.0.2.2", "2001:db8::1"}},
		{"TXT", func() ([]string, error) { return r.LookupTXT(ctx, "example.test") }, []string{"v=spf1 -all", "other"}},
		{"TXTFunc", func() ([]string, error) { return r.LookupTXTFunc(ctx)("example.test") }, []string{"v=spf1 -all", "other"}},
		{"MX", func() ([]string, error) {
			v, err := r.LookupMX(ctx, "example.test")
			var s []string
			for _, mx := range v {
				s = append(s, fmt.Sprint(mx.Pref, " ", mx.Host))
			}
			return s, err
		}, []string{"10 mx1.example.test.", "20 mx2.example.test."}},
		{"PTR v4", func() ([]string, error) { return r.LookupAddr(ctx, "192.0.2.1") }, []string{"www.example.test."}},
		{"PTR v6", func() ([]string, error) { return r.LookupAddr(ctx, "2001:db8::1") }, []string{"www6.example.test."}},
	} {
		for pass := range 2 { // the second from the cache
			got, err := c.do()
			if err != nil || !slices.Equal(got, c.want) {
				t.Errorf("%s (pass %d) = %q, %v; want %q", c.what, pass, got, err, c.want)
			}
		}
	}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"www.example.test", dns.TypeA},
		{"www.example.test", dns.TypeAAAA},
		{"example.test", dns.TypeTXT},
		{"example.test", dns.TypeMX},
		{"1.2.0.192.in-addr.arpa", dns.TypePTR},
	} {
		if n := fx.Queries(q.name, q.qtype); n != 1 {
			t.Errorf("%s %s reached the server %d times, want 1", q.name, dns.TypeToString[q.qtype], n)
		}
	}
}

func strs[T fmt.Stringer](v []T) []string {
	var s []string
	for _, x := range v {
		s = append(s, x.String())
	}
	return s
}

func TestNotFound(t *testing.T) {
	r, fx, _ := setup(t, testZone, Config{})
	ctx := t.Context()
	for _, c := range []struct {
		what, name string
		do         func(name string) error
	}{
		{"ip4 NXDOMAIN", "nope.example.test", func(n string) error { _, err := r.LookupIP(ctx, "ip4", n); return err }},
		{"ip4 NODATA", "v6only.example.test", func(n string) error { _, err := r.LookupIP(ctx, "ip4", n); return err }},
		{"ip6 NODATA", "v4only.example.test", func(n string) error { _, err := r.LookupIP(ctx, "ip6", n); return err }},
		{"ip NXDOMAIN", "nope.example.test", func(n string) error { _, err := r.LookupIP(ctx, "ip", n); return err }},
		{"IPAddr NODATA", "mx1.example.test", func(n string) error { _, err := r.LookupIPAddr(ctx, n); return err }},
		{"TXT NODATA", "www.example.test", func(n string) error { _, err := r.LookupTXT(ctx, n); return err }},
		{"TXT NXDOMAIN no SOA", "other.bl.test", func(n string) error { _, err := r.LookupTXT(ctx, n); return err }},
		{"MX NXDOMAIN", "Nope.Example.Test.", func(n string) error { _, err := r.LookupMX(ctx, n); return err }},
		{"PTR NXDOMAIN", "192.0.2.9", func(n string) error { _, err := r.LookupAddr(ctx, n); return err }},
		{"invalid name", "a..b", func(n string) error { _, err := r.LookupTXT(ctx, n); return err }},
	} {
		for pass := range 2 { // fresh, then from the negative cache
			err := c.do(c.name)
			de, ok := err.(*net.DNSError)
			if !ok || !de.IsNotFound || de.Temporary() || de.Name != c.name {
				t.Errorf("%s (pass %d): got %#v, want a not-found *net.DNSError for %q", c.what, pass, err, c.name)
				continue
			}
			if c.name != "a..b" && de.Server != fx.Addr() {
				t.Errorf("%s: Server %q, want %q", c.what, de.Server, fx.Addr())
			}
		}
	}
	if n := fx.Queries("a..b", dns.TypeTXT); n != 0 {
		t.Errorf("an invalid name went upstream %d times", n)
	}

	// Query reports negative answers as answers.
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"nope.example.test", dns.TypeA, dns.RcodeNameError},
		{"www.example.test", dns.TypeMX, dns.RcodeSuccess},
	} {
		a, err := r.Query(ctx, c.name, c.qtype)
		if err != nil || a.Rcode != c.rcode || len(a.RRs) != 0 {
			t.Errorf("Query(%s) = %+v, %v; want rcode %d and no RRs", c.name, a, err, c.rcode)
		}
	}
}

func TestBadInput(t *testing.T) {
	r, fx, _ := setup(t, testZone, Config{})
	ctx := t.Context()
	for _, c := range []struct {
		what string
		err  error
	}{
		{"LookupAddr bad IP", second(r.LookupAddr(ctx, "not-an-ip"))},
		{"LookupIP bad network", second(r.LookupIP(ctx, "tcp", "www.example.test"))},
		{"Query type 0", second(r.Query(ctx, "www.example.test", 0))},
	} {
		de, ok := c.err.(*net.DNSError)
		if !ok || de.Temporary() || de.IsNotFound {
			t.Errorf("%s: got %#v, want a permanent *net.DNSError", c.what, c.err)
		}
	}
	if n := fx.TotalQueries(); n != 0 {
		t.Errorf("bad input caused %d upstream queries", n)
	}
}

func second[T any](_ T, err error) error { return err }

func TestTTLExpiry(t *testing.T) {
	r, fx, clk := setup(t, testZone, Config{MinTTL: time.Second})
	ctx := t.Context()
	for _, c := range []struct {
		advance time.Duration
		queries int
	}{
		{0, 1},
		{299 * time.Second, 1}, // within the 300s TTL: cached
		{time.Second, 2},       // expired: asked again
		{time.Second, 2},       // and cached again
	} {
		clk.advance(c.advance)
		a, err := r.Query(ctx, "www.example.test", dns.TypeA)
		if err != nil || len(a.RRs) != 2 {
			t.Fatalf("Query: %v, %v", a, err)
		}
		if n := fx.Queries("www.example.test", dns.TypeA); n != c.queries {
			t.Errorf("after +%v: %d upstream queries, want %d", c.advance, n, c.queries)
		}
	}
	if s := r.Stats(); s != (Stats{Hits: 2, Misses: 2, Upstream: 2}) {
		t.Errorf("Stats = %+v", s)
	}
}

func TestTTLClamp(t *testing.T) {
	for _, c := range []struct {
		name  string
		qtype uint16
		cfg   Config
		want  time.Duration
	}{
		{"www.example.test", dns.TypeA, Config{}, 300 * time.Second},
		{"short.example.test", dns.TypeA, Config{MinTTL: 30 * time.Second}, 30 * time.Second},
		{"zero.example.test", dns.TypeA, Config{MinTTL: time.Second}, time.Second},
		{"long.example.test", dns.TypeA, Config{MaxTTL: time.Hour}, time.Hour},
		{"alias.example.test", dns.TypeA, Config{MinTTL: time.Second}, 300 * time.Second},
		// negative answers: min(SOA TTL, MINIMUM), clamped
		{"nope.example.test", dns.TypeA, Config{MinTTL: time.Second}, 60 * time.Second},
		{"www.example.test", dns.TypeMX, Config{MinTTL: time.Second}, 60 * time.Second},
		{"nope.neg.test", dns.TypeA, Config{MinTTL: time.Second}, 30 * time.Second},
		{"nope.neg.test", dns.TypeA, Config{MinTTL: 45 * time.Second}, 45 * time.Second},
		{"nope.example.test", dns.TypeA, Config{MinTTL: time.Second, MaxTTL: 10 * time.Second}, 10 * time.Second},
		// no SOA: NegativeTTL, capped by MaxTTL
		{"other.bl.test", dns.TypeA, Config{}, 60 * time.Second},
		{"other.bl.test", dns.TypeA, Config{NegativeTTL: 5 * time.Second}, 5 * time.Second},
		{"other.bl.test", dns.TypeA, Config{NegativeTTL: 2 * time.Hour}, time.Hour},
	} {
		r, _, clk := setup(t, testZone, c.cfg)
		a, err := r.Query(t.Context(), c.name, c.qtype)
		if err != nil {
			t.Fatal(err)
		}
		if a.TTL != c.want || !a.Expires.Equal(clk.now().Add(c.want)) {
			t.Errorf("%s %s with %+v: TTL %v expires %v, want %v", c.name, dns.TypeToString[c.qtype], c.cfg, a.TTL, a.Expires, c.want)
		}
	}
}

func TestNegativeCaching(t *testing.T) {
	for _, c := range []struct {
		name  string
		qtype uint16
		ttl   time.Duration
	}{
		{"nope.example.test", dns.TypeA, 60 * time.Second},  // NXDOMAIN, SOA MINIMUM
		{"www.example.test", dns.TypeTXT, 60 * time.Second}, // NODATA
		{"nope.neg.test", dns.TypeTXT, 30 * time.Second},    // SOA TTL below MINIMUM
		{"other.bl.test", dns.TypeA, 45 * time.Second},      // no SOA: NegativeTTL
		{"there.neg.test", dns.TypeAAAA, 30 * time.Second},  // NODATA
		{"NOPE.example.test.", dns.TypeA, 60 * time.Second}, // any spelling
	} {
		r, fx, clk := setup(t, testZone, Config{MinTTL: time.Second, NegativeTTL: 45 * time.Second})
		for _, step := range []struct {
			advance time.Duration
			queries int
		}{
			{0, 1},
			{c.ttl - time.Second, 1},
			{time.Second, 2},
		} {
			clk.advance(step.advance)
			a, err := r.Query(t.Context(), c.name, c.qtype)
			if err != nil || len(a.RRs) != 0 {
				t.Fatalf("%s: %v, %v", c.name, a, err)
			}
			if n := fx.Queries(c.name, c.qtype); n != step.queries {
				t.Errorf("%s %s: %d upstream queries at +%v, want %d", c.name, dns.TypeToString[c.qtype], n, step.advance, step.queries)
			}
		}
	}
}

func TestTruncatedRetriesOverTCP(t *testing.T) {
	zone := "$ORIGIN big.test.\n@ 300 IN SOA ns hm 1 1 1 1 1\nsmall 300 IN TXT hello\n"
	var want []string
	for i := range 20 {
		s := fmt.Sprintf("%02d%s", i, strings.Repeat("x", 198))
		want = append(want, s)
		zone += fmt.Sprintf("@ 300 IN TXT %q\n", s)
	}
	r, fx, _ := setup(t, zone, Config{})
	got, err := r.LookupTXT(t.Context(), "big.test")
	slices.Sort(got)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("LookupTXT = %d strings, %v; want all 20", len(got), err)
	}
	if n := fx.Queries("big.test", dns.TypeTXT); n != 2 {
		t.Errorf("%d queries, want 2 (UDP, then TCP)", n)
	}

	// A server that always truncates over UDP.
	fx.SetFault("small.big.test", zonedns.Fault{Truncate: true})
	got, err = r.LookupTXT(t.Context(), "small.big.test")
	if err != nil || !slices.Equal(got, []string{"hello"}) {
		t.Errorf("LookupTXT = %q, %v", got, err)
	}
	if s := r.Stats(); s.Upstream != 4 {
		t.Errorf("Stats.Upstream = %d, want 4", s.Upstream)
	}
}

func TestTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	r, fx, _ := setup(t, testZone, Config{Timeout: timeout, Attempts: 2})
	fx.SetFault("www.example.test", zonedns.Fault{Drop: true})
	for pass := range 2 { // timeouts are not cached
		start := time.Now()
		_, err := r.LookupIP(t.Context(), "ip4", "www.example.test")
		d := time.Since(start)
		de, ok := err.(*net.DNSError)
		if !ok || !de.IsTimeout || !de.Temporary() || de.IsNotFound || de.Server != fx.Addr() {
			t.Errorf("pass %d: got %#v, want a timeout *net.DNSError", pass, err)
		}
		if d < 2*timeout || d > 2*timeout+time.Second {
			t.Errorf("pass %d: failed after %v, want about %v (2 attempts)", pass, d, 2*timeout)
		}
	}
	if n := fx.Queries("www.example.test", dns.TypeA); n != 4 {
		t.Errorf("%d upstream queries, want 4", n)
	}
	if s := r.Stats(); s.Errors != 2 {
		t.Errorf("Stats.Errors = %d, want 2", s.Errors)
	}
}

// The caller's deadline bounds the whole lookup, whatever the
// per-attempt timeout.
func TestCallerDeadline(t *testing.T) {
	r, fx, _ := setup(t, testZone, Config{Timeout: 10 * time.Second})
	fx.SetFault("www.example.test", zonedns.Fault{Drop: true})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.LookupTXT(ctx, "www.example.test")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("returned after %v", d)
	}
	de, ok := err.(*net.DNSError)
	if !ok || !de.IsTimeout || !de.Temporary() || !errors.Is(err, context.DeadlineExceeded) || de.Name != "www.example.test" {
		t.Errorf("got %#v, want a timeout *net.DNSError wrapping DeadlineExceeded", err)
	}
}

func TestServerFailure(t *testing.T) {
	for _, rcode := range []int{dns.RcodeServerFailure, dns.RcodeRefused} {
		r, fx, _ := setup(t, testZone, Config{Attempts: 2})
		fx.SetFault("www.example.test", zonedns.Fault{Rcode: rcode})
		for pass := range 2 { // not cached
			_, err := r.Query(t.Context(), "www.example.test", dns.TypeA)
			de, ok := err.(*net.DNSError)
			if !ok || !de.Temporary() || de.IsTimeout || de.IsNotFound || de.Server != fx.Addr() {
				t.Errorf("%s pass %d: got %#v, want a temporary *net.DNSError", dns.RcodeToString[rcode], pass, err)
			}
		}
		// No retry at the same server, and no caching.
		if n := fx.Queries("www.example.test", dns.TypeA); n != 2 {
			t.Errorf("%s: %d upstream queries, want 2", dns.RcodeToString[rcode], n)
		}
		fx.ClearFault("www.example.test")
		if _, err := r.Query(t.Context(), "www.example.test", dns.TypeA); err != nil {
			t.Errorf("%s: after recovery: %v", dns.RcodeToString[rcode], err)
		}
	}
}

func TestFailover(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close() // nothing listens there now: "connection refused"

	good := testsrv.DNS(t, testZone)
	for _, c := range []struct {
		what     string
		fault    zonedns.Fault
		dead     bool
		firstGot int // queries the first server sees
	}{
		{"dead", zonedns.Fault{}, true, 0},
		{"timeout", zonedns.Fault{Drop: true}, false, 2},
		{"SERVFAIL", zonedns.Fault{Rcode: dns.RcodeServerFailure}, false, 1},
	} {
		first := testsrv.DNS(t, testZone)
		first.SetFault("www.example.test", c.fault)
		addr := first.Addr()
		if c.dead {
			addr = dead
		}
		good.ResetCounters()
		r, _, _ := setup(t, testZone, Config{Servers: []string{addr, good.Addr()}, Timeout: 100 * time.Millisecond, Attempts: 2})
		got, err := r.LookupIP(t.Context(), "ip4", "www.example.test")
		if err != nil || len(got) != 2 {
			t.Errorf("%s: got %v, %v", c.what, got, err)
		}
		if n := first.Queries("www.example.test", dns.TypeA); n != c.firstGot {
			t.Errorf("%s: first server got %d queries, want %d", c.what, n, c.firstGot)
		}
		if n := good.Queries("www.example.test", dns.TypeA); n != 1 {
			t.Errorf("%s: second server got %d queries, want 1", c.what, n)
		}
	}

	// When all fail, the error names the last server.
	first := testsrv.DNS(t, testZone)
	first.SetFault("www.example.test", zonedns.Fault{Rcode: dns.RcodeServerFailure})
	good.SetFault("www.example.test", zonedns.Fault{Drop: true})
	r, _, _ := setup(t, testZone, Config{Servers: []string{first.Addr(), good.Addr()}, Timeout: 50 * time.Millisecond})
	_, err = r.LookupIP(t.Context(), "ip4", "www.example.test")
	if de, ok := err.(*net.DNSError); !ok || !de.IsTimeout || de.Server != good.Addr() {
		t.Errorf("all failing: got %#v", err)
	}
}

func TestSingleflight(t *testing.T) {
	r, fx, _ := setup(t, testZone, Config{})
	// Keep the question in flight while the callers pile up.
	fx.SetFault("www.example.test", zonedns.Fault{Delay: 100 * time.Millisecond})
	const n = 100
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			ips, err := r.LookupIP(t.Context(), "ip4", "www.example.test")
			if err == nil && len(ips) != 2 {
				err = fmt.Errorf("got %v", ips)
			}
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if q := fx.Queries("www.example.test", dns.TypeA); q != 1 {
		t.Errorf("%d upstream queries for %d callers, want 1", q, n)
	}
	if s := r.Stats(); s.Upstream != 1 || s.Hits+s.Misses != n {
		t.Errorf("Stats = %+v", s)
	}
}

// A caller that gives up returns at once; the others still get the
// answer from the same upstream query.
func TestCancelOneCaller(t *testing.T) {
	r, fx, _ := setup(t, testZone, Config{})
	const delay = 500 * time.Millisecond
	fx.SetFault("www.example.test", zonedns.Fault{Delay: delay})

	patient := make(chan error, 1)
	go func() {
		_, err := r.LookupIP(context.Background(), "ip4", "www.example.test")
		patient <- err
	}()
	waitFor(t, func() bool { return fx.Queries("www.example.test", dns.TypeA) == 1 })

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	start := time.Now()
	_, err := r.LookupIP(ctx, "ip4", "www.example.test")
	if !errors.Is(err, context.Canceled) || time.Since(start) >= delay {
		t.Errorf("cancelled caller: %v after %v", err, time.Since(start))
	}
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err = r.LookupIP(ctx, "ip4", "www.example.test")
	if de, ok := err.(*net.DNSError); !ok || !de.IsTimeout || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) >= delay {
		t.Errorf("caller with a deadline: %#v after %v", err, time.Since(start))
	}
	if err := <-patient; err != nil {
		t.Errorf("patient caller: %v", err)
	}
	if q := fx.Queries("www.example.test", dns.TypeA); q != 1 {
		t.Errorf("%d upstream queries, want 1", q)
	}
}

// When the last caller gives up, the upstream query stops too and no
// goroutine is left behind.
func TestCancelStopsQuery(t *testing.T) {
	r, fx, _ := setup(t, testZone, Config{Timeout: time.Minute})
	fx.SetFault("www.example.test", zonedns.Fault{Drop: true})
	before := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := r.LookupIP(ctx, "ip", "www.example.test")
		done <- err
	}()
	waitFor(t, func() bool {
		return fx.Queries("www.example.test", dns.TypeA) == 1 && fx.Queries("www.example.test", dns.TypeAAAA) == 1
	})
	cancel()
	err := <-done
	if de, ok := err.(*net.DNSError); !ok || !de.Temporary() || !errors.Is(err, context.Canceled) {
		t.Errorf("got %#v, want a temporary *net.DNSError wrapping Canceled", err)
	}
	// With a one-minute attempt timeout only cancellation can end
	// the query goroutines this soon.
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
	if s := r.Stats(); s.Errors != 0 {
		t.Errorf("abandoned queries counted as errors: %+v", s)
	}
	// A later caller starts afresh rather than joining the dead query.
	fx.ClearFault("www.example.test")
	if _, err := r.LookupIP(t.Context(), "ip", "www.example.test"); err != nil {
		t.Errorf("after cancel: %v", err)
	}
}

func TestCacheBound(t *testing.T) {
	zone := "$ORIGIN n.test.\n@ 300 IN SOA ns hm 1 1 1 1 60\n"
	for i := range 5 {
		zone += fmt.Sprintf("h%d 300 IN A 192.0.2.%d\n", i, i)
	}
	r, fx, _ := setup(t, zone, Config{CacheSize: 3})
	for i := range 5 {
		if _, err := r.Query(t.Context(), fmt.Sprintf("h%d.n.test", i), dns.TypeA); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.cache.Len(); n != 3 {
		t.Errorf("cache holds %d entries, want 3", n)
	}
	for _, c := range []struct {
		name    string
		queries int
	}{
		{"h4.n.test", 1}, // recent: cached
		{"h0.n.test", 2}, // evicted: asked again
	} {
		r.Query(t.Context(), c.name, dns.TypeA)
		if n := fx.Queries(c.name, dns.TypeA); n != c.queries {
			t.Errorf("%s: %d upstream queries, want %d", c.name, n, c.queries)
		}
	}
}

func TestNoCache(t *testing.T) {
	r, fx, _ := setup(t, testZone, Config{CacheSize: -1})
	for range 3 {
		if _, err := r.LookupTXT(t.Context(), "example.test"); err != nil {
			t.Fatal(err)
		}
	}
	if n := fx.Queries("example.test", dns.TypeTXT); n != 3 {
		t.Errorf("%d upstream queries, want 3", n)
	}
}

func TestCacheHitsDoNotAllocate(t *testing.T) {
	r, _, _ := setup(t, testZone, Config{})
	ctx := t.Context()
	for _, c := range []struct {
		what string
		f    func() error
	}{
		{"Query", func() error { return second(r.Query(ctx, "www.example.test.", dns.TypeA)) }},
		{"Query without dot", func() error { return second(r.Query(ctx, "www.example.test", dns.TypeA)) }},
		{"Query NXDOMAIN", func() error { return second(r.Query(ctx, "nope.example.test.", dns.TypeA)) }},
		{"LookupIP ip4", func() error { return second(r.LookupIP(ctx, "ip4", "www.example.test")) }},
		{"LookupIP ip", func() error { return second(r.LookupIP(ctx, "ip", "www.example.test")) }},
		{"LookupIPAddr", func() error { return second(r.LookupIPAddr(ctx, "www.example.test")) }},
		{"LookupTXT", func() error { return second(r.LookupTXT(ctx, "example.test")) }},
		{"LookupMX", func() error { return second(r.LookupMX(ctx, "example.test")) }},
	} {
		if err := c.f(); err != nil { // fill the cache
			t.Fatalf("%s: %v", c.what, err)
		}
		if n := testing.AllocsPerRun(100, func() { c.f() }); n != 0 {
			t.Errorf("%s: %v allocations per cache hit, want 0", c.what, n)
		}
	}
}

func TestNew(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string // error substring; "" for success
	}{
		{Config{Servers: []string{"127.0.0.1:53"}}, ""},
		{Config{Servers: []string{"192.0.2.1"}}, ""},
		{Config{Servers: []string{"[::1]:5353"}}, ""},
		{Config{Servers: []string{"dns.example:53"}}, `bad server address "dns.example:53"`},
		{Config{Servers: []string{"127.0.0.1:0"}}, "bad port"},
		{Config{Servers: []string{"127.0.0.1:99999"}}, "bad port"},
		{Config{Servers: []string{"127.0.0.1:"}}, "bad port"},
		{Config{Servers: []string{"nonsense"}}, `bad server address "nonsense"`},
		{Config{Servers: []string{"127.0.0.1:53"}, Timeout: -1}, "Timeout"},
		{Config{Servers: []string{"127.0.0.1:53"}, Attempts: -1}, "Attempts"},
		{Config{Servers: []string{"127.0.0.1:53"}, MinTTL: 2 * time.Hour}, "MinTTL"},
		{Config{Servers: []string{"127.0.0.1:53"}, NegativeTTL: -time.Second}, "negative TTL"},
	} {
		_, err := New(c.cfg)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("New(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	old := resolvConfPath
	t.Cleanup(func() { resolvConfPath = old })

	resolvConfPath = dir + "/resolv.conf"
	if _, err := New(Config{}); err == nil {
		t.Error("New without servers or resolv.conf succeeded")
	}
	writeFile(t, resolvConfPath, "# nothing\n")
	if _, err := New(Config{}); err == nil {
		t.Error("New with an empty resolv.conf succeeded")
	}
	writeFile(t, resolvConfPath, "nameserver 192.0.2.53\nnameserver 2001:db8::53\n")
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"192.0.2.53:53", "[2001:db8::53]:53"}; !slices.Equal(r.servers, want) {
		t.Errorf("servers %q, want %q", r.servers, want)
	}
}

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond: the fixture's counters and the goroutine count
// are the only observable signs of what is under test.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func BenchmarkQueryCached(b *testing.B) {
	r, _, _ := setup(b, testZone, Config{})
	ctx := context.Background()
	if _, err := r.Query(ctx, "www.example.test.", dns.TypeA); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r.Query(ctx, "www.example.test.", dns.TypeA)
	}
}

func BenchmarkLookupIPCached(b *testing.B) {
	r, _, _ := setup(b, testZone, Config{})
	ctx := context.Background()
	if _, err := r.LookupIP(ctx, "ip", "www.example.test"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r.LookupIP(ctx, "ip", "www.example.test")
	}
}

func BenchmarkQueryCachedParallel(b *testing.B) {
	r, _, _ := setup(b, testZone, Config{})
	ctx := context.Background()
	if _, err := r.Query(ctx, "www.example.test.", dns.TypeA); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Query(ctx, "www.example.test.", dns.TypeA)
		}
	})
}
