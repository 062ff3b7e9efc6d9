package state

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mxguard/mxguard/greylist"
	"github.com/mxguard/mxguard/reputation"
	"github.com/mxguard/mxguard/store"
)

// The admin commands: what is remembered of an address, a network or a
// sender domain, forgetting it, and the worst and best clients. They work
// on any store; `mxguard state` runs them in the running mxguard (through
// its control socket) or, when none runs, on the store directly.

// greyPrefix is greylist's key prefix (its default).
var greyPrefix = greylist.DefaultConfig().Prefix

func (s *State) memory() *reputation.Memory {
	return reputation.New(s.Store, s.Async, reputation.Config{Now: s.Now})
}

// Target is what an admin command is about.
type Target struct {
	IP     netip.Addr
	Net    netip.Prefix
	Domain string
}

// ParseTarget reads an address, a CIDR or a domain.
func ParseTarget(s string) (Target, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return Target{IP: a.Unmap()}, nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return Target{Net: p.Masked()}, nil
	}
	d := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(s, "@"), "."))
	if d == "" || strings.ContainsAny(d, " /@:") {
		return Target{}, fmt.Errorf("%q is not an address, a CIDR or a domain", s)
	}
	return Target{Domain: d}, nil
}

// Show writes what is remembered of t.
func (s *State) Show(ctx context.Context, t Target, w io.Writer) error {
	m := s.memory()
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	defer tw.Flush()
	found := 0
	record := func(key string, r reputation.Record) {
		found++
		fmt.Fprintf(tw, "%s\tscore %+.1f\tconnections %d\taccepted %d\trefused %s\tfirst %s\tlast %s\n", key, m.Score(r),
			r.Conns, r.Accepted, refusedString(r.Refused), stamp(r.First), stamp(r.Last))
		for _, test := range sortedKeys(r.Passes) {
			state := "passed, until " + stamp(r.Passes[test])
			if !s.Now().Before(r.Passes[test]) {
				state = "pass expired " + stamp(r.Passes[test])
			}
			fmt.Fprintf(tw, "  %s\t%s\n", test, state)
		}
	}
	grey := func(key string, v []byte) error {
		found++
		fmt.Fprintf(tw, "%s\t%s\n", key, greyString(v))
		return nil
	}
	switch {
	case t.IP.IsValid():
		if r, err := m.Lookup(ctx, reputation.IPKey(t.IP)); err == nil {
			record(reputation.IPKey(t.IP), r)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		n := reputation.NetOf(t.IP)
		if r, err := m.Lookup(ctx, reputation.NetKey(n)); err == nil {
			record(reputation.NetKey(n), r)
		}
		if err := s.greyOf(ctx, t.IP, grey); err != nil {
			return err
		}
	case t.Net.IsValid():
		for _, prefix := range []string{reputation.IPPrefix, reputation.NetPrefix} {
			err := m.Each(ctx, prefix, func(key string, r reputation.Record) error {
				if within(key, t.Net) {
					record(key, r)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
	default:
		err := s.Store.Scan(ctx, greyPrefix+"t:", func(key string, v []byte) error {
			if strings.Contains(key, "@"+t.Domain+"/") {
				return grey(key, v)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if found == 0 {
		fmt.Fprintln(tw, "nothing remembered")
	}
	return nil
}

// greyOf lists an address's network's greylisting records.
func (s *State) greyOf(ctx context.Context, ip netip.Addr, fn func(key string, v []byte) error) error {
	g, err := greylist.New(s.Store, greylist.DefaultConfig())
	if err != nil {
		return err
	}
	if v, err := s.Store.Get(ctx, g.AllowKey(ip)); err == nil {
		fn(g.AllowKey(ip), v)
	}
	return s.Store.Scan(ctx, greyPrefix+"t:"+g.Network(ip).String()+"/", fn)
}

// Forget deletes what is remembered of an address, or of every address and
// network within a CIDR (their records, passes and greylisting), and says
// how many records went.
func (s *State) Forget(ctx context.Context, t Target, w io.Writer) error {
	var keys []string
	switch {
	case t.IP.IsValid():
		keys = append(keys, reputation.IPKey(t.IP))
	case t.Net.IsValid():
		for _, prefix := range []string{reputation.IPPrefix, reputation.NetPrefix, greyPrefix + "t:", greyPrefix + "a:"} {
			err := s.Store.Scan(ctx, prefix, func(key string, _ []byte) error {
				if within(key, t.Net) {
					keys = append(keys, key)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
	default:
		return errors.New("forget takes an address or a CIDR")
	}
	s.Flush() // what sessions queued goes first: then it is forgotten too
	if err := s.Store.Delete(ctx, keys...); err != nil {
		return err
	}
	fmt.Fprintf(w, "forgot %d records\n", len(keys))
	return nil
}

// Top writes the n worst and the n best addresses by score.
func (s *State) Top(ctx context.Context, n int, w io.Writer) error {
	m := s.memory()
	type entry struct {
		key   string
		score float64
		r     reputation.Record
	}
	var all []entry
	err := m.Each(ctx, reputation.IPPrefix, func(key string, r reputation.Record) error {
		all = append(all, entry{key, m.Score(r), r})
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(all, func(a, b entry) int { return cmp.Or(cmp.Compare(a.score, b.score), strings.Compare(a.key, b.key)) })
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	defer tw.Flush()
	show := func(title string, es []entry) {
		fmt.Fprintf(tw, "%s\n", title)
		for _, e := range es {
			fmt.Fprintf(tw, "  %s\tscore %+.1f\tconnections %d\taccepted %d\trefused %s\tlast %s\n", strings.TrimPrefix(e.key, reputation.IPPrefix),
				e.score, e.r.Conns, e.r.Accepted, refusedString(e.r.Refused), stamp(e.r.Last))
		}
	}
	k := min(n, len(all))
	show(fmt.Sprintf("worst %d of %d addresses", k, len(all)), all[:k])
	best := slices.Clone(all[len(all)-k:])
	slices.Reverse(best)
	show(fmt.Sprintf("best %d", k), best)
	return nil
}

// within reports whether a record's key ("ip:192.0.2.1", "net:192.0.2.0/24",
// "grey:t:192.0.2.0/24/…", "grey:a:192.0.2.0/24") is about an address or
// network inside p.
func within(key string, p netip.Prefix) bool {
	rest := key[strings.IndexByte(key, ':')+1:]
	if strings.HasPrefix(key, greyPrefix) {
		rest = rest[strings.IndexByte(rest, ':')+1:]
	}
	if a, err := netip.ParseAddr(rest); err == nil {
		return p.Contains(a)
	}
	if i := strings.IndexByte(rest, '/'); i > 0 {
		end := i + 1
		for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
			end++
		}
		if n, err := netip.ParsePrefix(rest[:end]); err == nil {
			return p.Bits() <= n.Bits() && p.Contains(n.Addr())
		}
	}
	return false
}

func refusedString(m map[string]int64) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, ",")
}

// greyString renders a greylisting record: "first,last" Unix seconds (a
// triplet) or "count,last" (an auto-allow counter).
func greyString(v []byte) string {
	a, b, ok := strings.Cut(string(v), ",")
	if !ok {
		return string(v)
	}
	var x, y int64
	fmt.Sscan(a, &x)
	fmt.Sscan(b, &y)
	if x > 1e9 {
		return fmt.Sprintf("first %s, last %s", stamp(time.Unix(x, 0)), stamp(time.Unix(y, 0)))
	}
	return fmt.Sprintf("%d passes, last %s", x, stamp(time.Unix(y, 0)))
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
