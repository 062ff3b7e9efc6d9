// Package resolver is the caching DNS stub resolver every mxguard
// check goes through. It asks the configured upstream servers, caches
// answers for their TTL (and negative answers per RFC 2308) in a
// bounded LRU, and sends each question upstream only once however
// many callers ask it at the same time.
//
// Errors are *net.DNSError, never wrapped, because the SPF and DKIM
// libraries classify them with plain type assertions.
//
// Returned slices and Answers are shared with the cache and with
// other callers: they must not be modified.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
)

// Config configures a Resolver. Zero values mean the defaults.
type Config struct {
	Servers     []string      // "ip:port" upstreams, tried in order; empty: /etc/resolv.conf
	Timeout     time.Duration // per query attempt (default 2s)
	Attempts    int           // tries per server before moving on (default 2)
	CacheSize   int           // entries (default 10000); negative: no cache
	MinTTL      time.Duration // lower clamp for cached TTLs (default 30s)
	MaxTTL      time.Duration // upper clamp for cached TTLs (default 1h)
	NegativeTTL time.Duration // negative answers without SOA (default 60s), capped by MaxTTL
}

// Answer is the cached reply to one question. NXDOMAIN and NODATA
// are answers too (Rcode and an empty or CNAME-only RRs tell them).
type Answer struct {
	Name    string        // the question name, lower case, fully qualified
	Rcode   int           // dns.RcodeSuccess or dns.RcodeNameError
	RRs     []dns.RR      // answer section; shared and read-only
	TTL     time.Duration // clamped TTL it was cached for
	Expires time.Time
}

// Stats are running counters since New.
type Stats struct {
	Hits     uint64 // questions answered from the cache
	Misses   uint64 // questions not in the cache (or expired)
	Upstream uint64 // messages sent upstream, retries and TCP included
	Errors   uint64 // questions that failed: timeouts, SERVFAIL, network errors
}

// Resolver is a caching DNS resolver, safe for concurrent use.
type Resolver struct {
	servers  []string
	timeout  time.Duration
	attempts int
	minTTL   time.Duration
	maxTTL   time.Duration
	negTTL   time.Duration
	udp, tcp *dns.Client

	cache *lru.Cache[key, *entry] // nil when caching is off
	now   func() time.Time        // replaced by tests to expire entries without sleeping

	mu     sync.Mutex    // guards flight
	flight map[key]*call // questions upstream now, see shared

	hits, misses, upstream, errs atomic.Uint64
}

// key is a struct, not a formatted string, so a cache hit does not
// allocate. name is lower case without the trailing dot, so that
// "example.com" and "Example.com." share an entry; trimming the dot
// is free, and only a name with upper case costs an allocation.
type key struct {
	name  string
	qtype uint16
}

// typeIP is the pseudo type under which LookupIP("ip") caches A and
// AAAA merged. Query refuses it.
const typeIP = dns.TypeNone

// ednsSize is the UDP payload size we advertise, the DNS Flag Day
// 2020 value: large enough for most answers, small enough not to be
// fragmented. Bigger answers come truncated and are retried over TCP.
const ednsSize = 1232

// resolvConfPath is a variable so tests can point it at a fixture.
var resolvConfPath = "/etc/resolv.conf"

// New checks cfg, fills in defaults and returns a Resolver.
func New(cfg Config) (*Resolver, error) {
	servers := cfg.Servers
	if len(servers) == 0 {
		cc, err := dns.ClientConfigFromFile(resolvConfPath)
		if err != nil {
			return nil, fmt.Errorf("resolver: no servers configured and %v", err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if len(servers) == 0 {
			return nil, fmt.Errorf("resolver: no servers configured and none in %s", resolvConfPath)
		}
	}
	r := &Resolver{
		timeout:  orDefault(cfg.Timeout, 2*time.Second),
		attempts: orDefault(cfg.Attempts, 2),
		minTTL:   orDefault(cfg.MinTTL, 30*time.Second),
		maxTTL:   orDefault(cfg.MaxTTL, time.Hour),
		negTTL:   orDefault(cfg.NegativeTTL, 60*time.Second),
		now:      time.Now,
		flight:   make(map[key]*call),
	}
	for _, s := range servers {
		addr, err := serverAddr(s)
		if err != nil {
			return nil, err
		}
		r.servers = append(r.servers, addr)
	}
	switch {
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("resolver: negative Timeout %v", cfg.Timeout)
	case cfg.Attempts < 0:
		return nil, fmt.Errorf("resolver: negative Attempts %d", cfg.Attempts)
	case cfg.MinTTL < 0 || cfg.MaxTTL < 0 || cfg.NegativeTTL < 0:
		return nil, errors.New("resolver: negative TTL setting")
	case r.minTTL > r.maxTTL:
		return nil, fmt.Errorf("resolver: MinTTL %v above MaxTTL %v", r.minTTL, r.maxTTL)
	}
	r.negTTL = min(r.negTTL, r.maxTTL)

	if cfg.CacheSize >= 0 {
		c, err := lru.New[key, *entry](orDefault(cfg.CacheSize, 10000))
		if err != nil {
			return nil, fmt.Errorf("resolver: %v", err)
		}
		r.cache = c
	}
	r.udp = &dns.Client{Net: "udp", UDPSize: ednsSize, Timeout: r.timeout}
	r.tcp = &dns.Client{Net: "tcp", Timeout: r.timeout}
	return r, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// serverAddr checks an upstream address; a bare IP gets port 53.
func serverAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if _, perr := netip.ParseAddr(s); perr == nil {
			return net.JoinHostPort(s, "53"), nil
		}
		return "", fmt.Errorf("resolver: bad server address %q: want ip:port", s)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return "", fmt.Errorf("resolver: bad server address %q: %q is not an IP address", s, host)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", fmt.Errorf("resolver: bad server address %q: bad port %q", s, port)
	}
	return s, nil
}

// Stats returns the counters.
func (r *Resolver) Stats() Stats {
	return Stats{
		Hits:     r.hits.Load(),
		Misses:   r.misses.Load(),
		Upstream: r.upstream.Load(),
		Errors:   r.errs.Load(),
	}
}

// Query returns the answer to one question. NXDOMAIN and NODATA are
// answers, not errors; errors are timeouts, SERVFAIL, REFUSED and the
// like, as *net.DNSError. A cached answer costs no allocation.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	if qtype == typeIP {
		return nil, &net.DNSError{Err: "bad query type", Name: name}
	}
	e, err := r.lookup(ctx, name, qtype)
	if err != nil {
		return nil, err
	}
	return e.ans, nil
}

func makeKey(name string, qtype uint16) key {
	// ToLower returns its argument, without allocating, when there
	// is nothing to change.
	return key{strings.ToLower(strings.TrimSuffix(name, ".")), qtype}
}

// cached returns the live cache entry for k, if any. An expired entry
// is a miss; the fresh answer will replace it.
func (r *Resolver) cached(k key) (*entry, bool) {
	if r.cache == nil {
		return nil, false
	}
	e, ok := r.cache.Get(k)
	if !ok || !r.now().Before(e.expires) {
		return nil, false
	}
	return e, true
}

// lookup answers one question from the cache or upstream. Errors are
// fresh *net.DNSError values naming name as the caller gave it.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) (*entry, error) {
	k := makeKey(name, qtype)
	if e, ok := r.cached(k); ok {
		r.hits.Add(1)
		return e, nil
	}
	r.misses.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, ctxError(name, err)
	}
	if _, ok := dns.IsDomainName(k.name + "."); !ok {
		// As net.Resolver does for names that cannot exist.
		return nil, &net.DNSError{Err: errNoSuchHost, Name: name, IsNotFound: true}
	}
	e, err := r.shared(ctx, k)
	if err != nil {
		return nil, withName(err, name)
	}
	return e, nil
}

// resolve asks upstream and caches the result. It runs once per key
// at a time (see shared), with a context no single caller can cancel.
func (r *Resolver) resolve(ctx context.Context, k key) (*entry, error) {
	fqdn := k.name + "."
	msg, server, err := r.exchange(ctx, fqdn, k.qtype)
	if err != nil {
		if ctx.Err() == nil { // not merely abandoned by every caller
			r.errs.Add(1)
		}
		// SERVFAIL, timeouts and network errors are not cached.
		// RFC 2308 §7 would allow up to 5 minutes, but mxguard turns
		// them into 4xx replies and the sender retries later anyway;
		// caching would only stretch a short upstream hiccup, and
		// concurrent askers already share this one attempt.
		return nil, err
	}
	e := r.newEntry(fqdn, k.qtype, msg, server)
	if r.cache != nil {
		r.cache.Add(k, e)
	}
	return e, nil
}
