// Package reputation is mxguard's memory of clients, kept in the state
// store so that it lasts across restarts and, on Redis, is shared by a
// fleet: per address and per network (/24, /64), when it was first and last
// seen, its connections, the messages accepted and the refusals by check,
// and counts of good and bad that decay with a half-life (so an address's
// past fades instead of feeding on itself: rspamd retired its ip_score for
// lack of decay). The address's record also holds the connection tests it
// passed and until when (postscreen's cache).
//
// Reads happen once per connection, at connect, within the store's read
// timeout; a store that cannot answer makes the client unknown. Writes go
// through the store's asynchronous writer: a session never waits for one.
package reputation

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/store"
)

// Config sets the memory's pace.
type Config struct {
	HalfLife  time.Duration // counts halve in this time (default 7 days)
	Retention time.Duration // a client not seen this long is forgotten (default 35 days)
	MinEvents float64       // decayed events before an address has a reputation (default 5)
	BadRatio  float64       // share of refused events that makes it bad (default 0.9)
	GoodRatio float64       // share of accepted events that makes it good (default 0.9)
	Now       func() time.Time
}

// Memory is the memory of clients on a store. It implements
// checks.Memory.
type Memory struct {
	cfg   Config
	st    store.Store
	async *store.Async
}

// Key prefixes: an address's record, and a network's.
const (
	IPPrefix  = "ip:"
	NetPrefix = "net:"
)

// New returns the memory on st, writing through async.
func New(st store.Store, async *store.Async, cfg Config) *Memory {
	if cfg.HalfLife <= 0 {
		cfg.HalfLife = 7 * 24 * time.Hour
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 35 * 24 * time.Hour
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Memory{cfg: cfg, st: st, async: async}
}

// Record is what is remembered of an address or a network.
type Record struct {
	First    time.Time        `json:"first"`
	Last     time.Time        `json:"last"`
	Conns    int64            `json:"connections"`
	Accepted int64            `json:"accepted"`
	Refused  map[string]int64 `json:"refused,omitempty"` // by check
	// Good and Bad are the accepted and refused counts, decayed with the
	// half-life as of At.
	Good float64   `json:"good"`
	Bad  float64   `json:"bad"`
	At   time.Time `json:"at"`
	// Passes are the connection tests the address passed, and until when.
	Passes map[string]time.Time `json:"passes,omitempty"`
}

// NetOf is the network an address is counted in: its /24 or /64.
func NetOf(ip netip.Addr) netip.Prefix {
	bits := 24
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Unmap().Prefix(bits)
	return p
}

// IPKey and NetKey are the store keys of an address's and a network's
// records.
func IPKey(ip netip.Addr) string    { return IPPrefix + ip.Unmap().String() }
func NetKey(n netip.Prefix) string  { return NetPrefix + n.String() }
func netKeyOf(ip netip.Addr) string { return NetKey(NetOf(ip)) }

// decay brings r's counts to now.
func (m *Memory) decay(r *Record, now time.Time) {
	if !r.At.IsZero() {
		f := math.Exp2(-float64(now.Sub(r.At)) / float64(m.cfg.HalfLife))
		r.Good *= f
		r.Bad *= f
	}
	r.At = now
}

// Score is the record's decayed good minus bad, as of now: above zero for
// an address whose mail is mostly accepted.
func (m *Memory) Score(r Record) float64 {
	m.decay(&r, m.cfg.Now())
	return r.Good - r.Bad
}

func decode(b []byte) (Record, error) {
	var r Record
	err := json.Unmarshal(b, &r)
	return r, err
}

// decodeFound decodes a record GetMany found; absent (nil), unreadable or
// unavailable are all "none".
func decodeFound(b []byte) (Record, bool) {
	if b == nil {
		return Record{}, false
	}
	r, err := decode(b)
	return r, err == nil
}

// Recall reads what is remembered of ip: the tests it passed, and its
// reputation and its network's as results for the rules.
func (m *Memory) Recall(ctx context.Context, ip netip.Addr) checks.Recollection {
	var rec checks.Recollection
	if !ip.IsValid() {
		return rec
	}
	now := m.cfg.Now()
	// Both records in one read (one round trip on Redis).
	var ipRec, netRec []byte
	if vs, err := m.st.GetMany(ctx, IPKey(ip), netKeyOf(ip)); err == nil {
		ipRec, netRec = vs[0], vs[1]
	}
	if r, ok := decodeFound(ipRec); ok {
		for test, until := range r.Passes {
			if now.Before(until) {
				if rec.Passed == nil {
					rec.Passed = map[checks.Name]bool{}
				}
				rec.Passed[checks.Name(test)] = true
			}
		}
		if res, ok := m.judge(r, ip.String(), "reputation"); ok {
			rec.Results = append(rec.Results, res)
		}
	}
	if r, ok := decodeFound(netRec); ok {
		if res, ok := m.judge(r, NetOf(ip).String(), "reputation.net"); ok {
			rec.Results = append(rec.Results, res)
		}
	}
	return rec
}

// judge says what a record's decayed history makes of its owner: outcome
// <family>_good or <family>_bad… written as reputation.good/bad for an
// address and reputation.net_good/net_bad for a network.
func (m *Memory) judge(r Record, who, family string) (checks.Result, bool) {
	m.decay(&r, m.cfg.Now())
	total := r.Good + r.Bad
	if total < m.cfg.MinEvents {
		return checks.Result{}, false
	}
	outcome := func(what string) string {
		if family == "reputation.net" {
			return "reputation.net_" + what
		}
		return "reputation." + what
	}
	evidence := fmt.Sprintf("accepted %.1f refused %.1f (decayed, half-life %s); first seen %s",
		r.Good, r.Bad, m.cfg.HalfLife, r.First.UTC().Format(time.RFC3339))
	switch {
	case r.Bad/total >= m.cfg.BadRatio:
		return checks.Result{Check: Name, Outcome: outcome("bad"),
			Reason: fmt.Sprintf("%s: %.0f%% of its recent mail was refused", who, 100*r.Bad/total), Evidence: evidence}, true
	case r.Good/total >= m.cfg.GoodRatio:
		return checks.Result{Check: Name, Outcome: outcome("good"),
			Reason: fmt.Sprintf("%s: %.0f%% of its recent mail was accepted", who, 100*r.Good/total), Evidence: evidence}, true
	}
	return checks.Result{}, false
}

// update queues a read-modify-write of one record.
func (m *Memory) update(key string, fn func(r *Record, now time.Time) time.Duration) {
	m.async.Update(key, func(old []byte, found bool) ([]byte, time.Duration, error) {
		var r Record
		if found {
			if err := json.Unmarshal(old, &r); err != nil {
				r = Record{} // a damaged record starts over
			}
		}
		now := m.cfg.Now()
		ttl := fn(&r, now)
		b, err := json.Marshal(r)
		return b, ttl, err
	})
}

// Pass remembers that ip passed test, for ttl.
func (m *Memory) Pass(ip netip.Addr, test checks.Name, ttl time.Duration) {
	if ttl <= 0 || !ip.IsValid() {
		return
	}
	m.update(IPKey(ip), func(r *Record, now time.Time) time.Duration {
		if r.Passes == nil {
			r.Passes = map[string]time.Time{}
		}
		r.Passes[string(test)] = now.Add(ttl)
		return m.ttl(r, now)
	})
}

// Fail forgets ip's pass of test.
func (m *Memory) Fail(ip netip.Addr, test checks.Name) {
	if !ip.IsValid() {
		return
	}
	m.update(IPKey(ip), func(r *Record, now time.Time) time.Duration {
		delete(r.Passes, string(test))
		return m.ttl(r, now)
	})
}

// Record adds a finished connection: messages the backend accepted, and
// refusals mxguard gave (by the check behind each).
func (m *Memory) Record(ip netip.Addr, accepted int, refusals []checks.Name) {
	if !ip.IsValid() {
		return
	}
	add := func(r *Record, now time.Time) time.Duration {
		if r.First.IsZero() {
			r.First = now
		}
		r.Last = now
		r.Conns++
		r.Accepted += int64(accepted)
		for _, c := range refusals {
			if r.Refused == nil {
				r.Refused = map[string]int64{}
			}
			name := string(c)
			if name == "" {
				name = "other"
			}
			r.Refused[name]++
		}
		m.decay(r, now)
		r.Good += float64(accepted)
		r.Bad += float64(len(refusals))
		return m.ttl(r, now)
	}
	m.update(IPKey(ip), add)
	m.update(netKeyOf(ip), add)
}

// ttl keeps a record for the retention after it was last seen, or until
// its last pass expires, whichever is later.
func (m *Memory) ttl(r *Record, now time.Time) time.Duration {
	ttl := m.cfg.Retention
	for _, until := range r.Passes {
		ttl = max(ttl, until.Sub(now))
	}
	return ttl
}

// Lookup returns the record under key (IPKey or NetKey), for `mxguard
// state show`.
func (m *Memory) Lookup(ctx context.Context, key string) (Record, error) {
	b, err := m.st.Get(ctx, key)
	if err != nil {
		return Record{}, err
	}
	return decode(b)
}

// Each calls fn for every record of a kind (IPPrefix or NetPrefix), for
// `mxguard state top` and `forget`.
func (m *Memory) Each(ctx context.Context, prefix string, fn func(key string, r Record) error) error {
	return m.st.Scan(ctx, prefix, func(key string, v []byte) error {
		r, err := decode(v)
		if err != nil {
			return nil // a damaged record is skipped
		}
		return fn(key, r)
	})
}

var _ checks.Memory = (*Memory)(nil)
