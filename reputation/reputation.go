// Package reputation is mxguard's memory of client addresses: which passed
// the greeting test recently (postscreen's temporary allowlist), and how
// their mail has fared. Counts decay with a half-life, so an address's past
// fades instead of feeding on itself (rspamd retired its ip_score for lack of
// decay). It is bounded by an LRU and kept in memory only.
package reputation

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/mxguard/mxguard/checks"
)

// Config sets the memory's size and pace.
type Config struct {
	Size      int           // addresses remembered (default 100000)
	HalfLife  time.Duration // counts halve in this time (default 7 days)
	MinEvents float64       // decayed events before an address has a reputation (default 5)
	BadRatio  float64       // share of refused events that makes it bad (default 0.9)
	GoodRatio float64       // share of accepted events that makes it good (default 0.9)
}

// Store remembers addresses. It is safe for concurrent use.
type Store struct {
	cfg Config
	lru *lru.Cache[netip.Addr, *record]
	now func() time.Time // tests move time
}

type record struct {
	mu        sync.Mutex
	passes    []pass  // connection tests passed, until when
	good, bad float64 // decayed counts as of at
	at        time.Time
}

type pass struct {
	test  checks.Name
	until time.Time
}

// New returns an empty store.
func New(cfg Config) *Store {
	if cfg.Size <= 0 {
		cfg.Size = 100000
	}
	if cfg.HalfLife <= 0 {
		cfg.HalfLife = 7 * 24 * time.Hour
	}
	if cfg.MinEvents <= 0 {
		cfg.MinEvents = 5
	}
	if cfg.BadRatio <= 0 {
		cfg.BadRatio = 0.9
	}
	if cfg.GoodRatio <= 0 {
		cfg.GoodRatio = 0.9
	}
	c, _ := lru.New[netip.Addr, *record](cfg.Size)
	return &Store{cfg: cfg, lru: c, now: time.Now}
}

// key keeps an IPv6 client's /64 together: one host rotates through it.
func key(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

func (s *Store) get(ip netip.Addr, create bool) *record {
	k := key(ip)
	if r, ok := s.lru.Get(k); ok {
		return r
	}
	if !create {
		return nil
	}
	r := &record{}
	if prev, ok, _ := s.lru.PeekOrAdd(k, r); ok {
		return prev
	}
	return r
}

// Passed reports whether ip passed test and the pass has not expired.
func (s *Store) Passed(ip netip.Addr, test checks.Name) bool {
	r := s.get(ip, false)
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.passes {
		if p.test == test {
			return s.now().Before(p.until)
		}
	}
	return false
}

// Pass remembers that ip passed test, for ttl (0: not at all).
func (s *Store) Pass(ip netip.Addr, test checks.Name, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	r := s.get(ip, true)
	until := s.now().Add(ttl)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.passes {
		if r.passes[i].test == test {
			r.passes[i].until = until
			return
		}
	}
	r.passes = append(r.passes, pass{test, until})
}

// Fail forgets ip's pass of test: a client that talked early waits again.
func (s *Store) Fail(ip netip.Addr, test checks.Name) {
	r := s.get(ip, false)
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.passes = slices.DeleteFunc(r.passes, func(p pass) bool { return p.test == test })
}

// Record adds a connection's results: messages the backend accepted, and
// refusals mxguard gave.
func (s *Store) Record(ip netip.Addr, accepted int, refusals []checks.Name) {
	refused := len(refusals)
	if accepted == 0 && refused == 0 {
		return
	}
	r := s.get(ip, true)
	r.mu.Lock()
	defer r.mu.Unlock()
	s.decay(r)
	r.good += float64(accepted)
	r.bad += float64(refused)
}

// decay brings r's counts to now.
func (s *Store) decay(r *record) {
	now := s.now()
	if !r.at.IsZero() {
		f := math.Exp2(-float64(now.Sub(r.at)) / float64(s.cfg.HalfLife))
		r.good *= f
		r.bad *= f
	}
	r.at = now
}

// Check returns reputation.bad or reputation.good when ip has enough history
// to say, else false.
func (s *Store) Check(ip netip.Addr) (checks.Result, bool) {
	r := s.get(ip, false)
	if r == nil {
		return checks.Result{}, false
	}
	r.mu.Lock()
	s.decay(r)
	good, bad := r.good, r.bad
	r.mu.Unlock()
	total := good + bad
	if total < s.cfg.MinEvents {
		return checks.Result{}, false
	}
	evidence := fmt.Sprintf("accepted %.1f refused %.1f (decayed, half-life %s)", good, bad, s.cfg.HalfLife)
	switch {
	case bad/total >= s.cfg.BadRatio:
		return checks.Result{Check: Name, Outcome: "reputation.bad",
			Reason: fmt.Sprintf("%s: %.0f%% of its recent mail was refused", ip, 100*bad/total), Evidence: evidence}, true
	case good/total >= s.cfg.GoodRatio:
		return checks.Result{Check: Name, Outcome: "reputation.good",
			Reason: fmt.Sprintf("%s: %.0f%% of its recent mail was accepted", ip, 100*good/total), Evidence: evidence}, true
	}
	return checks.Result{}, false
}

// Len is the number of addresses remembered.
func (s *Store) Len() int { return s.lru.Len() }
