package dnsbl

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// The RFC 5782 §5 test points: every list must list the first of each pair
// and must not list the second. A list that fails is wrongly configured,
// unreachable, or answering everything (an expired list domain with a
// wildcard; Spamhaus refusing a public resolver), and trusting it would
// either list every client or none.
var (
	testIPv4   = [2]netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}
	testIPv6   = [2]netip.Addr{netip.MustParseAddr("::ffff:127.0.0.2"), netip.MustParseAddr("::ffff:127.0.0.1")}
	testDomain = [2]string{"test", "invalid"}
)

// Start runs the self-test now, then every SelfTestInterval in one
// goroutine until Close. It returns once the first test is done, within
// about Timeout.
func (c *Checker) Start() {
	c.mu.Lock()
	if c.started || c.closed {
		c.mu.Unlock()
		return
	}
	c.started = true
	c.mu.Unlock()

	// Not under c.mu, so that Close can cut the test short.
	c.selfTest(c.ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.interval <= 0 {
		return
	}
	c.loop.Go(func() {
		t := time.NewTicker(c.interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				c.selfTest(c.ctx)
			case <-c.ctx.Done():
				return
			}
		}
	})
}

// Close stops the self-test goroutine and waits for it to end. Checks keep
// working with the zones' last known health.
func (c *Checker) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.loop.Wait()
}

// selfTest tests every zone at once and marks each family broken or healed.
func (c *Checker) selfTest(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, z := range c.ipZones {
		wg.Go(func() { c.testFamily(ctx, z, famIPv4) })
		if c.ipv6 {
			wg.Go(func() { c.testFamily(ctx, z, famIPv6) })
		}
	}
	for _, z := range c.domainZones {
		wg.Go(func() { c.testFamily(ctx, z, famIPv4) })
	}
	wg.Wait()
}

// testFamily asks both test points of a zone and records the result. It
// logs only changes, so a list that stays down is one line, not one per test.
func (c *Checker) testFamily(ctx context.Context, z *zone, fam int) {
	var names [2]string
	var buf [maxName + 1]byte
	for i := range names {
		var prefix []byte
		switch {
		case z.domain:
			prefix = []byte(testDomain[i] + ".")
		case fam == famIPv6:
			prefix = appendReversed(nil, testIPv6[i])
		default:
			prefix = appendReversed(nil, testIPv4[i])
		}
		names[i] = queryName(buf[:0], prefix, z.name)
	}
	var why [2]string
	var wg sync.WaitGroup
	for i := range names {
		wg.Go(func() { why[i] = c.probe(ctx, names[i], i == 0) })
	}
	wg.Wait()
	if errors.Is(ctx.Err(), context.Canceled) {
		return // cut short by Close: nothing to hold against the list
	}
	reason := why[0]
	if reason == "" {
		reason = why[1]
	}

	family := "ipv4"
	switch {
	case z.domain:
		family = "domain"
	case fam == famIPv6:
		family = "ipv6"
	}
	if reason != "" {
		if !z.broken[fam].Swap(true) {
			c.log.Warn("dnsbl zone broken", "zone", z.name, "family", family, "why", reason)
		}
		return
	}
	if z.broken[fam].Swap(false) {
		c.log.Info("dnsbl zone healed", "zone", z.name, "family", family)
	}
}

// probe asks one test point and says what is wrong with the answer, or "".
func (c *Checker) probe(ctx context.Context, name string, wantListed bool) string {
	if name == "" {
		return "zone name too long"
	}
	ans, err := c.r.Query(ctx, name, dns.TypeA)
	if err != nil {
		return "test point " + name + ": " + errReason(err)
	}
	as, bad := addrs(ans)
	switch {
	case bad != "":
		return "test point " + name + ": " + bad
	case wantListed && len(as) == 0:
		return "test point " + name + " is not listed"
	case !wantListed && len(as) > 0:
		return "test point " + name + " is listed as " + joinAddrs(as)
	}
	return ""
}
