package reputation

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/checks"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func store(cfg Config) (*Store, *clock) {
	s := New(cfg)
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s.now = c.now
	return s, c
}

var ip = netip.MustParseAddr("192.0.2.1")

func TestGreetingPass(t *testing.T) {
	s, c := store(Config{})
	if s.Passed(ip, checks.PregreetName) {
		t.Fatal("unknown address passed")
	}
	s.Pass(ip, checks.PregreetName, time.Hour)
	if !s.Passed(ip, checks.PregreetName) || !s.Passed(netip.MustParseAddr("::ffff:192.0.2.1"), checks.PregreetName) {
		t.Fatal("pass not remembered")
	}
	if s.Passed(netip.MustParseAddr("192.0.2.2"), checks.PregreetName) {
		t.Fatal("another address passed")
	}
	c.add(59 * time.Minute)
	if !s.Passed(ip, checks.PregreetName) {
		t.Fatal("pass forgotten early")
	}
	c.add(2 * time.Minute)
	if s.Passed(ip, checks.PregreetName) {
		t.Fatal("pass outlived its TTL")
	}
	s.Pass(ip, checks.PregreetName, time.Hour)
	s.Fail(ip, checks.PregreetName)
	if s.Passed(ip, checks.PregreetName) {
		t.Fatal("a failed greeting kept the pass")
	}
}

func TestGreetingPassOff(t *testing.T) {
	s, _ := store(Config{})
	s.Pass(ip, checks.PregreetName, 0)
	if s.Passed(ip, checks.PregreetName) {
		t.Fatal("pass remembered with a TTL of 0")
	}
}

func TestIPv6Prefix(t *testing.T) {
	s, _ := store(Config{})
	s.Pass(netip.MustParseAddr("2001:db8:1:2::1"), checks.PregreetName, time.Hour)
	if !s.Passed(netip.MustParseAddr("2001:db8:1:2:ffff::9"), checks.PregreetName) {
		t.Error("same /64 not remembered together")
	}
	if s.Passed(netip.MustParseAddr("2001:db8:1:3::1"), checks.PregreetName) {
		t.Error("another /64 shares the pass")
	}
}

func TestReputation(t *testing.T) {
	s, c := store(Config{HalfLife: 24 * time.Hour})
	if _, ok := s.Check(ip); ok {
		t.Fatal("unknown address has a reputation")
	}
	s.Record(ip, 0, refusals(3))
	if _, ok := s.Check(ip); ok {
		t.Fatal("reputation from too few events")
	}
	s.Record(ip, 0, refusals(3))
	r, ok := s.Check(ip)
	if !ok || r.Outcome != "reputation.bad" || r.Reason == "" {
		t.Fatalf("got %+v %v", r, ok)
	}
	// A week later the past has faded below MinEvents.
	c.add(7 * 24 * time.Hour)
	if r, ok := s.Check(ip); ok {
		t.Fatalf("reputation did not decay: %+v", r)
	}
	// Mostly good mail makes a good name; a mix makes none.
	good := netip.MustParseAddr("192.0.2.9")
	s.Record(good, 20, refusals(1))
	if r, _ := s.Check(good); r.Outcome != "reputation.good" {
		t.Errorf("got %+v", r)
	}
	s.Record(good, 0, refusals(10))
	if r, ok := s.Check(good); ok {
		t.Errorf("mixed history gave %+v", r)
	}
}

func TestBounded(t *testing.T) {
	s, _ := store(Config{Size: 100})
	for i := 0; i < 1000; i++ {
		s.Pass(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), checks.PregreetName, time.Hour)
	}
	if s.Len() != 100 {
		t.Errorf("%d entries, want 100", s.Len())
	}
}

func BenchmarkPassed(b *testing.B) {
	s := New(Config{})
	s.Pass(ip, checks.PregreetName, time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		s.Passed(ip, checks.PregreetName)
	}
}

// refusals makes n refusals, of no check in particular.
func refusals(n int) []checks.Name { return make([]checks.Name, n) }
