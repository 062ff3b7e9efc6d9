package zonedns

import (
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const testZone = `
$ORIGIN example.test.
$TTL 300
@        IN SOA ns hostmaster 1 3600 600 86400 60
@        IN NS  ns
ns       IN A   192.0.2.53
www      IN A   192.0.2.1
www      IN AAAA 2001:db8::1
@        IN MX  10 mx1
@        IN MX  20 mx2.other.test.
mx1  60  IN A   192.0.2.25
@        IN TXT "v=spf1 " "ip4:192.0.2.0/24 -all" ; two strings
alias    IN CNAME www
gone     IN CNAME nothere
away     IN CNAME www.elsewhere.test.
x._dmarc IN TXT "v=DMARC1; p=none"
loop1    IN CNAME loop2
loop2    IN CNAME loop1

$ORIGIN 2.0.192.in-addr.arpa.
@        IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 120
1        IN PTR www.example.test.

; a record outside every zone: served, but its negatives carry no SOA
2.0.0.127.bl.test. 300 IN A 127.0.0.2
`

func exchange(t *testing.T, net, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: net, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query %v: %v", net, m.Question, err)
	}
	return r
}

func question(name string, qtype uint16) *dns.Msg {
	return new(dns.Msg).SetQuestion(name, qtype)
}

// rdata renders the answer section without owner and TTL, for comparing.
func rdata(rrs []dns.RR) string {
	var s []string
	for _, rr := range rrs {
		f := strings.SplitN(rr.String(), "\t", 4)
		s = append(s, f[len(f)-1])
	}
	return strings.Join(s, " | ")
}

func TestAnswers(t *testing.T) {
	s := testStart(t, testZone)
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
		want  string // rdata of the answer section
		soa   string // owner of the SOA in authority, "" for none
	}{
		{"www.example.test.", dns.TypeA, dns.RcodeSuccess, "A\t192.0.2.1", ""},
		{"www.example.test.", dns.TypeAAAA, dns.RcodeSuccess, "AAAA\t2001:db8::1", ""},
		{"WWW.Example.TEST.", dns.TypeA, dns.RcodeSuccess, "A\t192.0.2.1", ""},
		{"example.test.", dns.TypeTXT, dns.RcodeSuccess, `TXT	"v=spf1 " "ip4:192.0.2.0/24 -all"`, ""},
		{"example.test.", dns.TypeMX, dns.RcodeSuccess, "MX\t10 mx1.example.test. | MX\t20 mx2.other.test.", ""},
		{"1.2.0.192.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, "PTR\twww.example.test.", ""},
		{"alias.example.test.", dns.TypeA, dns.RcodeSuccess, "CNAME\twww.example.test. | A\t192.0.2.1", ""},
		{"alias.example.test.", dns.TypeCNAME, dns.RcodeSuccess, "CNAME\twww.example.test.", ""},
		{"alias.example.test.", dns.TypeMX, dns.RcodeSuccess, "CNAME\twww.example.test.", "example.test."},
		{"gone.example.test.", dns.TypeA, dns.RcodeNameError, "CNAME\tnothere.example.test.", "example.test."},
		{"away.example.test.", dns.TypeA, dns.RcodeSuccess, "CNAME\twww.elsewhere.test.", ""},
		{"loop1.example.test.", dns.TypeA, dns.RcodeServerFailure, "", ""},
		{"www.example.test.", dns.TypeMX, dns.RcodeSuccess, "", "example.test."},     // NODATA
		{"_dmarc.example.test.", dns.TypeTXT, dns.RcodeSuccess, "", "example.test."}, // empty non-terminal
		{"nope.example.test.", dns.TypeA, dns.RcodeNameError, "", "example.test."},   // NXDOMAIN
		{"9.2.0.192.in-addr.arpa.", dns.TypePTR, dns.RcodeNameError, "", "2.0.192.in-addr.arpa."},
		{"2.0.0.127.bl.test.", dns.TypeA, dns.RcodeSuccess, "A\t127.0.0.2", ""},
		{"3.0.0.127.bl.test.", dns.TypeA, dns.RcodeNameError, "", ""},
	} {
		r := exchange(t, "udp", s.Addr(), question(c.name, c.qtype))
		what := c.name + " " + dns.TypeToString[c.qtype]
		if r.Rcode != c.rcode {
			t.Errorf("%s: rcode %s, want %s", what, dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
		}
		if !r.Authoritative {
			t.Errorf("%s: AA not set", what)
		}
		if got := rdata(r.Answer); got != c.want {
			t.Errorf("%s: answer %q, want %q", what, got, c.want)
		}
		var soa string
		for _, rr := range r.Ns {
			if rr.Header().Rrtype == dns.TypeSOA {
				soa = rr.Header().Name
			}
		}
		if soa != c.soa {
			t.Errorf("%s: SOA in authority %q, want %q", what, soa, c.soa)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ zone, want string }{
		{"x.test. 300 IN A 999.1.1.1", "line: 1:"},
		{"$ORIGIN a.test.\n\nwww IN A 192.0.2.1\nwww IN MX ten mx\n", "line: 4:"},
		{"www IN A 192.0.2.1", "line: 1:"}, // relative name without $ORIGIN
	} {
		_, err := New(c.zone)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%q) = %v, want error with %q", c.zone, err, c.want)
		}
	}
}

func TestEDNS0(t *testing.T) {
	s := testStart(t, testZone)
	if r := exchange(t, "udp", s.Addr(), question("www.example.test.", dns.TypeA)); r.IsEdns0() != nil {
		t.Error("reply to a plain query has OPT")
	}
	if r := exchange(t, "udp", s.Addr(), question("www.example.test.", dns.TypeA).SetEdns0(1232, false)); r.IsEdns0() == nil {
		t.Error("reply to an EDNS0 query has no OPT")
	}
}

func TestTruncation(t *testing.T) {
	zone := "$ORIGIN big.test.\n@ 300 IN SOA ns hm 1 1 1 1 1\n"
	for range 20 {
		zone += `@ 300 IN TXT "` + strings.Repeat("x", 100) + "\"\n"
	}
	s := testStart(t, zone)
	for _, c := range []struct {
		net   string
		edns  uint16
		tc    bool
		wantN int // -1: fewer than 20
	}{
		{"udp", 0, true, -1},
		{"udp", 1232, true, -1},
		{"udp", 4096, false, 20},
		{"tcp", 0, false, 20},
	} {
		m := question("big.test.", dns.TypeTXT)
		if c.edns != 0 {
			m.SetEdns0(c.edns, false)
		}
		r := exchange(t, c.net, s.Addr(), m)
		n := len(r.Answer)
		if r.Truncated != c.tc || (c.wantN >= 0 && n != c.wantN) || (c.wantN < 0 && n >= 20) {
			t.Errorf("%s edns %d: TC=%v with %d answers, want TC=%v, %d", c.net, c.edns, r.Truncated, n, c.tc, c.wantN)
		}
	}
}

func TestFaults(t *testing.T) {
	s := testStart(t, testZone)
	const name = "www.example.test."

	s.SetFault("WWW.example.test", Fault{Rcode: dns.RcodeServerFailure})
	if r := exchange(t, "udp", s.Addr(), question(name, dns.TypeA)); r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Errorf("Rcode fault: got %s with %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	s.SetFault(name, Fault{Rcode: dns.RcodeRefused})
	if r := exchange(t, "tcp", s.Addr(), question(name, dns.TypeA)); r.Rcode != dns.RcodeRefused {
		t.Errorf("Rcode fault over TCP: got %s", dns.RcodeToString[r.Rcode])
	}
	// Other names are unaffected.
	if r := exchange(t, "udp", s.Addr(), question("mx1.example.test.", dns.TypeA)); r.Rcode != dns.RcodeSuccess {
		t.Errorf("unfaulted name: got %s", dns.RcodeToString[r.Rcode])
	}

	s.SetFault(name, Fault{Truncate: true})
	if r := exchange(t, "udp", s.Addr(), question(name, dns.TypeA)); !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("Truncate fault over UDP: TC=%v, %d answers", r.Truncated, len(r.Answer))
	}
	if r := exchange(t, "tcp", s.Addr(), question(name, dns.TypeA)); r.Truncated || len(r.Answer) != 1 {
		t.Errorf("Truncate fault over TCP: TC=%v, %d answers", r.Truncated, len(r.Answer))
	}

	s.SetFault(name, Fault{Drop: true})
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	_, _, err := c.Exchange(question(name, dns.TypeA), s.Addr())
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("Drop fault: got %v, want a timeout", err)
	}

	s.ClearFault("WWW.example.TEST") // FQDN or not, any case
	if r := exchange(t, "udp", s.Addr(), question(name, dns.TypeA)); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("after ClearFault: %s with %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
}

func TestDelayDoesNotBlock(t *testing.T) {
	s := testStart(t, testZone)
	const delay = 300 * time.Millisecond
	s.SetFault("www.example.test", Fault{Delay: delay})

	start := time.Now()
	slow := make(chan *dns.Msg, 1)
	go func() {
		c := &dns.Client{Timeout: 5 * time.Second}
		r, _, _ := c.Exchange(question("www.example.test.", dns.TypeA), s.Addr())
		slow <- r
	}()
	waitFor(t, func() bool { return s.Queries("www.example.test", dns.TypeA) == 1 })

	// While the delayed answer is pending, others are answered.
	exchange(t, "udp", s.Addr(), question("mx1.example.test.", dns.TypeA))
	select {
	case <-slow:
		t.Fatal("delayed answer came before an undelayed one")
	default:
	}
	r := <-slow
	if r == nil || len(r.Answer) != 1 {
		t.Fatalf("delayed answer: %v", r)
	}
	if d := time.Since(start); d < delay {
		t.Errorf("delayed answer after %v, want at least %v", d, delay)
	}
}

// Close must not wait for delayed or dropped answers, and must leave
// no goroutine behind.
func TestCloseReleasesPending(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := New(testZone)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	s.SetFault("www.example.test", Fault{Delay: time.Hour})
	s.SetFault("mx1.example.test", Fault{Drop: true})

	// Raw sockets, so no client goroutine waits for the answers.
	for _, network := range []string{"udp", "tcp"} {
		for _, name := range []string{"www.example.test.", "mx1.example.test."} {
			conn, err := dns.Dial(network, s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := conn.WriteMsg(question(name, dns.TypeA)); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, func() bool { return s.TotalQueries() == 4 })

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked by a delayed answer")
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Start("127.0.0.1:0"); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func TestCounters(t *testing.T) {
	s := testStart(t, testZone)
	exchange(t, "udp", s.Addr(), question("www.example.test.", dns.TypeA))
	exchange(t, "tcp", s.Addr(), question("WWW.example.test.", dns.TypeA))
	exchange(t, "udp", s.Addr(), question("www.example.test.", dns.TypeAAAA))
	exchange(t, "udp", s.Addr(), question("nope.example.test.", dns.TypeA))

	for _, c := range []struct {
		name  string
		qtype uint16
		want  int
	}{
		{"www.example.test", dns.TypeA, 2},
		{"Www.Example.Test.", dns.TypeA, 2},
		{"www.example.test.", dns.TypeAAAA, 1},
		{"www.example.test.", dns.TypeMX, 0},
		{"nope.example.test.", dns.TypeA, 1},
	} {
		if got := s.Queries(c.name, c.qtype); got != c.want {
			t.Errorf("Queries(%s, %s) = %d, want %d", c.name, dns.TypeToString[c.qtype], got, c.want)
		}
	}
	if got := s.TotalQueries(); got != 4 {
		t.Errorf("TotalQueries = %d, want 4", got)
	}
	s.ResetCounters()
	if s.TotalQueries() != 0 || s.Queries("www.example.test", dns.TypeA) != 0 {
		t.Error("ResetCounters left counts")
	}
}

func TestChangeData(t *testing.T) {
	s := testStart(t, testZone)
	get := func(name string, qtype uint16) string {
		return rdata(exchange(t, "udp", s.Addr(), question(name, qtype)).Answer)
	}

	if err := s.AddRR("new.example.test. 60 IN A 192.0.2.9"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddRR("new.example.test. 60 IN A 192.0.2.9"); err != nil { // duplicate: ignored
		t.Fatal(err)
	}
	if got := get("new.example.test.", dns.TypeA); got != "A\t192.0.2.9" {
		t.Errorf("after AddRR: %q", got)
	}
	s.RemoveRR("WWW.example.test", dns.TypeA)
	if got := get("www.example.test.", dns.TypeA); got != "" {
		t.Errorf("after RemoveRR: %q", got)
	}
	if got := get("www.example.test.", dns.TypeAAAA); got != "AAAA\t2001:db8::1" {
		t.Errorf("RemoveRR removed another type: %q", got)
	}
	if err := s.AddRR("bad. IN A 1.2.3"); err == nil {
		t.Error("AddRR accepted a bad record")
	}

	if err := s.SetZone("$ORIGIN example.test.\n@ IN SOA ns hm 2 1 1 1 1\nwww 5 IN A 192.0.2.77\n"); err != nil {
		t.Fatal(err)
	}
	if got := get("www.example.test.", dns.TypeA); got != "A\t192.0.2.77" {
		t.Errorf("after SetZone: %q", got)
	}
	if err := s.SetZone("www.example.test. IN A nonsense"); err == nil {
		t.Error("SetZone accepted a bad zone")
	}
	if got := get("www.example.test.", dns.TypeA); got != "A\t192.0.2.77" {
		t.Errorf("a failed SetZone changed the data: %q", got)
	}
}

// waitFor polls cond; the fixture offers no channel for "a query
// arrived", and counters are the observable effect.
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
