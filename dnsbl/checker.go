// Package dnsbl looks clients up in DNS block and allow lists (RFC 5782):
// DNSBLs and DNSWLs for the client's address, RHSBLs for its sender and HELO
// domains. It scores the answers the way postscreen does, so admins can copy
// their postscreen_dnsbl_sites, and it never lets a list's error answers or a
// broken list count as a listing.
package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/resolver"
)

// Config configures a Checker. Zero values mean the defaults, except as noted.
type Config struct {
	// Sites are the lists for the client's address, in postscreen's
	// domain[=filter][*weight] syntax (see Site); negative weights make
	// allowlists. An entry may hold several sites separated by commas or
	// spaces, as postscreen_dnsbl_sites does.
	Sites []string
	// DomainSites are the RHSBLs for sender and HELO domains, same syntax.
	DomainSites []string
	// Threshold: a score >= this lists the client (default 1).
	Threshold float64
	// AllowlistThreshold: a score <= this allowlists the client. It must
	// be negative to be on; 0 is off.
	AllowlistThreshold float64
	// Timeout bounds each check, all lists together (default 2s). A list
	// that has not answered by then counts as not listing the client and
	// is reported in Verdict.Errors.
	Timeout time.Duration
	// SelfTestInterval is how often Start's goroutine tests the lists
	// again (DefaultSelfTestInterval is what the config layer uses).
	// 0 tests only at Start, so a list found broken then stays off.
	SelfTestInterval time.Duration
	// ReplyMap maps a list zone as queried (one with a secret key, say) to
	// the name shown in replies, reasons and outcome names, so neither
	// rules nor logs carry the key.
	ReplyMap map[string]string
	// IPv6 queries IPv6 clients too, nibble-reversed (RFC 5782 §2.4).
	IPv6 bool
}

// DefaultSelfTestInterval is Haraka dns-list's periodic_checks default.
const DefaultSelfTestInterval = 30 * time.Minute

const defaultTimeout = 2 * time.Second

// Resolver is what the checker needs from resolver.Resolver. NXDOMAIN and
// NODATA are answers; errors are failures (timeouts, SERVFAIL, ...).
// Query must return once ctx is done.
type Resolver interface {
	Query(ctx context.Context, name string, qtype uint16) (*resolver.Answer, error)
}

// Checker looks up clients and domains in the configured lists. It is safe
// for concurrent use.
type Checker struct {
	ipZones     []*zone
	domainZones []*zone
	threshold   float64
	allow       float64
	timeout     time.Duration
	interval    time.Duration
	ipv6        bool
	r           Resolver
	log         *slog.Logger
	now         func() time.Time // the warning rate limit's clock; tests replace it

	mu      sync.Mutex // guards started and closed
	started bool
	closed  bool
	ctx     context.Context // cancelled by Close, to stop a self-test under way
	cancel  context.CancelFunc
	loop    sync.WaitGroup
}

// zone is one list domain with every pattern configured for it: postscreen
// asks each domain once and matches all its patterns against the answer.
type zone struct {
	name     string // as queried: lower case, no trailing dot
	display  string // ReplyMap name, or name
	patterns []Site
	domain   bool // an RHSBL: queried with domains, tested with test/invalid

	// broken[fam] is set while the family's self-test fails; CheckIP
	// and CheckDomain skip the zone meanwhile. Domain zones use famIPv4.
	broken [2]atomic.Bool

	warnAt atomic.Int64 // unix nanoseconds of the last rate-limited warning
	muted  atomic.Int64 // warnings left out since then
}

const (
	famIPv4 = iota
	famIPv6
)

// New parses cfg and returns a Checker. Call Start to run the self-tests.
// A nil log discards.
func New(cfg Config, r Resolver, log *slog.Logger) (*Checker, error) {
	if r == nil {
		return nil, errors.New("dnsbl: no resolver")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Checker{
		threshold: cfg.Threshold,
		allow:     cfg.AllowlistThreshold,
		timeout:   cfg.Timeout,
		interval:  cfg.SelfTestInterval,
		ipv6:      cfg.IPv6,
		r:         r,
		log:       log,
		now:       time.Now,
	}
	switch {
	case cfg.Threshold < 0:
		return nil, fmt.Errorf("dnsbl: negative threshold %g would list every client", cfg.Threshold)
	case cfg.AllowlistThreshold > 0:
		return nil, fmt.Errorf("dnsbl: allowlist threshold %g must be negative (or 0 for off)", cfg.AllowlistThreshold)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("dnsbl: negative timeout %v", cfg.Timeout)
	case cfg.SelfTestInterval < 0:
		return nil, fmt.Errorf("dnsbl: negative self-test interval %v", cfg.SelfTestInterval)
	}
	if c.threshold == 0 {
		c.threshold = 1
	}
	if c.timeout == 0 {
		c.timeout = defaultTimeout
	}
	display := make(map[string]string, len(cfg.ReplyMap))
	for k, v := range cfg.ReplyMap {
		k = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(k), "."))
		// Lower case like the zones: it becomes part of outcome names.
		v = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(v), "."))
		if why := domainSyntax(v); why != "" {
			return nil, fmt.Errorf("dnsbl: reply map name %q for %s: %s", v, k, why)
		}
		display[k] = v
	}
	var err error
	if c.ipZones, err = zones(cfg.Sites, false, display); err != nil {
		return nil, fmt.Errorf("dnsbl: sites: %w", err)
	}
	if c.domainZones, err = zones(cfg.DomainSites, true, display); err != nil {
		return nil, fmt.Errorf("dnsbl: domain sites: %w", err)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// zones parses the entries and groups the sites by domain, in the order the
// domains first appear.
func zones(entries []string, domain bool, display map[string]string) ([]*zone, error) {
	var zs []*zone
	byName := make(map[string]*zone)
	for _, e := range entries {
		for _, s := range strings.FieldsFunc(e, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
			site, err := ParseSite(s)
			if err != nil {
				return nil, err
			}
			z := byName[site.Domain]
			if z == nil {
				z = &zone{name: site.Domain, display: site.Domain, domain: domain}
				if d, ok := display[site.Domain]; ok {
					z.display = d
				}
				byName[site.Domain] = z
				zs = append(zs, z)
			}
			z.patterns = append(z.patterns, site)
		}
	}
	return zs, nil
}

// CheckIP looks the client up in every list at once and returns within the
// configured Timeout. Addresses no list would hold (loopback, private,
// link-local, multicast) are not looked up, and neither are IPv6 clients
// unless Config.IPv6 is set.
func (c *Checker) CheckIP(ctx context.Context, ip netip.Addr) *Verdict {
	start := time.Now()
	ip = ip.Unmap()
	v := &Verdict{ip: ip}
	if !ip.IsValid() || !ip.IsGlobalUnicast() || ip.IsPrivate() || (ip.Is6() && !c.ipv6) {
		return v
	}
	fam := famIPv4
	if ip.Is6() {
		fam = famIPv6
	}
	var buf [72]byte // 32 nibbles and their dots
	c.check(ctx, v, c.ipZones, fam, appendReversed(buf[:0], ip))
	v.Elapsed = time.Since(start)
	return v
}

// CheckDomain looks a domain up in the RHSBLs. role names it in reasons:
// "sender" or "helo". Names that cannot be listed (address literals, single
// labels, non-ASCII) are not looked up.
func (c *Checker) CheckDomain(ctx context.Context, domain, role string) *Verdict {
	start := time.Now()
	d := normalDomain(domain)
	v := &Verdict{domain: d, role: role}
	if d == "" || len(c.domainZones) == 0 {
		v.domain = domain
		return v
	}
	var buf [maxName + 1]byte
	c.check(ctx, v, c.domainZones, famIPv4, append(append(buf[:0], d...), '.'))
	v.Elapsed = time.Since(start)
	return v
}

// reply is what a zone's lookup goroutine reports: first the A answer, then,
// for a zone that listed, its TXT record in a second reply.
type reply struct {
	i      int // index into the zones being asked
	isTXT  bool
	addrs  []netip.Addr
	bad    string // why the answer is not usable
	err    error
	listed bool // some pattern matched, so a TXT reply follows
	txt    string

	waiting bool // check's own mark: asked, no reply yet
}

// check asks every healthy zone about prefix+zone and fills in v.
func (c *Checker) check(ctx context.Context, v *Verdict, zs []*zone, fam int, prefix []byte) {
	if len(zs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	// The goroutines report on a channel big enough for every reply, so
	// that none of them blocks when we stop listening at the deadline.
	ch := make(chan reply, 2*len(zs))
	got := make([]reply, len(zs))
	var nameBuf [maxName + 1]byte
	pending := 0
	for i, z := range zs {
		if z.broken[fam].Load() {
			continue
		}
		name := queryName(nameBuf[:0], prefix, z.name)
		if name == "" {
			continue
		}
		got[i].waiting = true
		pending++
		go c.ask(ctx, z, i, name, ch)
	}
	txts := 0
	collect := func(r reply) {
		if r.isTXT {
			got[r.i].txt = r.txt
			txts--
			return
		}
		got[r.i] = r // waiting no more
		pending--
		if r.listed {
			txts++
		}
	}
wait:
	for pending > 0 || txts > 0 {
		select {
		case r := <-ch:
			collect(r)
		case <-ctx.Done():
			// Take what has arrived meanwhile before giving up.
			for {
				select {
				case r := <-ch:
					collect(r)
				default:
					break wait
				}
			}
		}
	}

	for i, z := range zs {
		r := got[i]
		switch {
		case r.waiting: // no answer in time
			c.zoneError(v, z, ctx.Err(), "")
		case r.err != nil:
			c.zoneError(v, z, r.err, "")
		case r.bad != "":
			c.zoneError(v, z, nil, r.bad)
		case r.listed:
			for _, p := range z.patterns {
				m := matching(p, r.addrs)
				if m == nil {
					continue
				}
				v.Hits = append(v.Hits, Hit{Zone: z.name, Name: z.display, Answers: m, TXT: r.txt, Weight: float64(p.Weight)})
				v.Score += float64(p.Weight)
			}
		}
	}
	v.Listed = len(v.Hits) > 0 && v.Score >= c.threshold
	v.Allowlisted = c.allow < 0 && len(v.Hits) > 0 && v.Score <= c.allow
	if c.log.Enabled(ctx, slog.LevelDebug) {
		for i, z := range zs {
			c.log.Debug("dnsbl lookup", "zone", z.name, "subject", v.subject(), "answers", got[i].addrs,
				"txt", got[i].txt, "error", got[i].err, "bad", got[i].bad, "skipped", z.broken[fam].Load())
		}
	}
}

// ask looks one name up in one zone and reports on ch, twice if it listed.
func (c *Checker) ask(ctx context.Context, z *zone, i int, name string, ch chan<- reply) {
	ans, err := c.r.Query(ctx, name, dns.TypeA)
	if err != nil {
		ch <- reply{i: i, err: err}
		return
	}
	r := reply{i: i}
	r.addrs, r.bad = addrs(ans)
	if r.bad == "" {
		r.listed = z.matches(r.addrs)
	}
	ch <- r
	if !r.listed {
		return
	}
	// The reason is worth a log line, not the verdict: a TXT error
	// leaves it empty.
	txt, _ := c.r.Query(ctx, name, dns.TypeTXT)
	ch <- reply{i: i, isTXT: true, txt: firstTXT(txt)}
}

// matches reports whether any pattern matches any answer.
func (z *zone) matches(as []netip.Addr) bool {
	for _, p := range z.patterns {
		for _, a := range as {
			if p.Match(a) {
				return true
			}
		}
	}
	return false
}

// matching returns the answers the pattern matches, nil for none. When all
// match, it returns as (shared, read-only) without copying.
func matching(p Site, as []netip.Addr) []netip.Addr {
	n := 0
	for _, a := range as {
		if p.Match(a) {
			n++
		}
	}
	switch n {
	case 0:
		return nil
	case len(as):
		return as
	}
	m := make([]netip.Addr, 0, n)
	for _, a := range as {
		if p.Match(a) {
			m = append(m, a)
		}
	}
	return m
}

// zoneError records a zone that could not be used for this check and warns,
// at most once a minute per zone. A check the caller gave up on (the client
// left) is not the list's fault and is not warned about.
func (c *Checker) zoneError(v *Verdict, z *zone, err error, bad string) {
	ze := ZoneError{Zone: z.name, Name: z.display, Reason: bad, Err: err}
	if err != nil {
		ze.Reason = errReason(err)
	}
	v.Errors = append(v.Errors, ze)
	if errors.Is(err, context.Canceled) {
		return
	}
	if n, ok := z.mayWarn(c.now()); ok {
		c.log.Warn("dnsbl zone error", "zone", z.name, "subject", v.subject(), "why", ze.Reason, "suppressed", n)
	}
}

// mayWarn reports whether a warning about the zone may be logged now, and
// how many were left out since the last one.
func (z *zone) mayWarn(now time.Time) (int64, bool) {
	t := now.UnixNano()
	last := z.warnAt.Load()
	if (last != 0 && t-last < int64(time.Minute)) || !z.warnAt.CompareAndSwap(last, t) {
		z.muted.Add(1)
		return 0, false
	}
	return z.muted.Swap(0), true
}
