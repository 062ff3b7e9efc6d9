package reputation

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/store"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }

// memory is a Memory on an in-memory store with a clock the test moves;
// its writes are flushed before each read.
type memory struct {
	*Memory
	async *store.Async
	clock *clock
}

func newMemory(t *testing.T, cfg Config) *memory {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	st := store.NewMemory(c.now)
	async := store.NewAsync(st, 0)
	t.Cleanup(func() { async.Close(context.Background()) })
	cfg.Now = c.now
	return &memory{New(st, async, cfg), async, c}
}

func (m *memory) recall(ip netip.Addr) checks.Recollection {
	m.async.Flush(context.Background())
	return m.Recall(context.Background(), ip)
}

var ip = netip.MustParseAddr("192.0.2.1")

func TestPasses(t *testing.T) {
	m := newMemory(t, Config{})
	if m.recall(ip).Passed[checks.PregreetName] {
		t.Fatal("unknown address passed")
	}
	m.Pass(ip, checks.PregreetName, time.Hour)
	m.Pass(ip, checks.NonSMTPName, 3*time.Hour)
	if r := m.recall(netip.MustParseAddr("::ffff:192.0.2.1")); !r.Passed[checks.PregreetName] || !r.Passed[checks.NonSMTPName] {
		t.Fatalf("passes not remembered: %v", r.Passed)
	}
	if m.recall(netip.MustParseAddr("192.0.2.2")).Passed[checks.PregreetName] {
		t.Fatal("another address passed")
	}
	m.clock.add(59 * time.Minute)
	if !m.recall(ip).Passed[checks.PregreetName] {
		t.Fatal("pass forgotten early")
	}
	m.clock.add(2 * time.Minute)
	if r := m.recall(ip); r.Passed[checks.PregreetName] || !r.Passed[checks.NonSMTPName] {
		t.Fatalf("after an hour: %v, want only the 3-hour pass", r.Passed)
	}
	m.Fail(ip, checks.NonSMTPName)
	if m.recall(ip).Passed[checks.NonSMTPName] {
		t.Fatal("a failed test kept its pass")
	}
	m.Pass(ip, checks.PregreetName, 0)
	if m.recall(ip).Passed[checks.PregreetName] {
		t.Fatal("a pass with a TTL of 0 was remembered")
	}
}

// refusals makes n refusals by one check.
func refusals(n int) []checks.Name {
	r := make([]checks.Name, n)
	for i := range r {
		r[i] = checks.HELOName
	}
	return r
}

func outcomes(r checks.Recollection) map[string]bool {
	o := map[string]bool{}
	for _, res := range r.Results {
		o[res.Outcome] = true
	}
	return o
}

func TestReputation(t *testing.T) {
	m := newMemory(t, Config{HalfLife: 24 * time.Hour})
	if r := m.recall(ip); len(r.Results) != 0 {
		t.Fatalf("unknown address has a reputation: %v", r.Results)
	}
	m.Record(ip, 0, refusals(3))
	if r := m.recall(ip); len(r.Results) != 0 {
		t.Fatalf("reputation from too few events: %v", r.Results)
	}
	m.Record(ip, 0, refusals(3))
	if o := outcomes(m.recall(ip)); !o["reputation.bad"] || !o["reputation.net_bad"] {
		t.Fatalf("got %v", o)
	}
	// Its neighbour in the /24 shares the network's name, not its own.
	if o := outcomes(m.recall(netip.MustParseAddr("192.0.2.77"))); o["reputation.bad"] || !o["reputation.net_bad"] {
		t.Errorf("neighbour: %v", o)
	}
	// A week later the past has faded below MinEvents.
	m.clock.add(7 * 24 * time.Hour)
	if r := m.recall(ip); len(r.Results) != 0 {
		t.Fatalf("reputation did not decay: %v", r.Results)
	}
	// Mostly good mail makes a good name; a mix makes none.
	good := netip.MustParseAddr("198.51.100.9")
	m.Record(good, 20, refusals(1))
	if o := outcomes(m.recall(good)); !o["reputation.good"] {
		t.Errorf("got %v", o)
	}
	m.Record(good, 0, refusals(10))
	if o := outcomes(m.recall(good)); o["reputation.good"] || o["reputation.bad"] {
		t.Errorf("mixed history gave %v", o)
	}
	r, err := m.Lookup(context.Background(), IPKey(good))
	if err != nil || r.Conns != 2 || r.Accepted != 20 || r.Refused["helo"] != 11 || r.First.IsZero() {
		t.Errorf("record %+v, %v", r, err)
	}
}

// Records expire after the retention, unless a pass outlives it.
func TestRetention(t *testing.T) {
	m := newMemory(t, Config{Retention: 24 * time.Hour})
	m.Record(ip, 1, nil)
	m.async.Flush(context.Background())
	m.clock.add(25 * time.Hour)
	if _, err := m.Lookup(context.Background(), IPKey(ip)); err == nil {
		t.Error("record outlived its retention")
	}
}

func BenchmarkRecall(b *testing.B) {
	st := store.NewMemory(nil)
	async := store.NewAsync(st, 0)
	defer async.Close(context.Background())
	m := New(st, async, Config{})
	m.Pass(ip, checks.PregreetName, time.Hour)
	m.Record(ip, 5, nil)
	async.Flush(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		m.Recall(context.Background(), ip)
	}
}
