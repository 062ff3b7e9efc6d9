package proxy

import (
	"net/netip"
	"sync"
	"time"

	"github.com/mxguard/mxguard/config"
)

// limiter counts open connections — in all, per client address and per
// client network (/24, /64) — and new connections per address per minute
// (Postfix anvil's connection rate).
type limiter struct {
	mu     sync.Mutex
	total  int
	perIP  map[netip.Addr]int
	perNet map[netip.Prefix]int
	rate   map[netip.Addr]*bucket
	swept  time.Time
	now    func() time.Time
}

// bucket counts an address's new connections in the current minute and
// the one before (a sliding window, anvil-style).
type bucket struct {
	start     time.Time // of the current minute
	cur, prev int
}

func newLimiter() *limiter {
	return &limiter{perIP: map[netip.Addr]int{}, perNet: map[netip.Prefix]int{}, rate: map[netip.Addr]*bucket{}, now: time.Now}
}

// netOf is the network a client address counts in: its /24 or /64.
func netOf(ip netip.Addr) netip.Prefix {
	bits := 24
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// Why a connection is refused.
const (
	limitFull  = "too many connections"
	limitIP    = "too many connections from your address"
	limitNet   = "too many connections from your network"
	limitRate  = "too many connections from your address per minute"
	limitSlots = "too many connections, and none idle to shed"
)

// acquire takes a slot for ip, or says which limit is full. full reports
// that only the total was: a slot may be freed by shedding.
func (l *limiter) acquire(ip netip.Addr, lim *config.Limits) (ok, full bool, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim.ConnectionRatePerIP > 0 && l.overRate(ip, lim.ConnectionRatePerIP) {
		return false, false, limitRate
	}
	n := netOf(ip)
	switch {
	case l.perIP[ip] >= lim.MaxConnectionsPerIP:
		return false, false, limitIP
	case l.perNet[n] >= lim.MaxConnectionsPerNet:
		return false, false, limitNet
	case l.total >= lim.MaxConnections:
		return false, true, limitFull
	}
	l.take(ip, n)
	return true, false, ""
}

// force takes a slot whatever the total: one being freed by shedding.
func (l *limiter) force(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.take(ip, netOf(ip))
}

func (l *limiter) take(ip netip.Addr, n netip.Prefix) {
	l.total++
	l.perIP[ip]++
	l.perNet[n]++
}

// overRate counts a new connection from ip and reports whether it is over
// perMinute: the current minute's count plus the part of the last
// minute's that the sliding window still covers.
func (l *limiter) overRate(ip netip.Addr, perMinute int) bool {
	now := l.now()
	if now.Sub(l.swept) > time.Minute {
		for a, b := range l.rate { // addresses silent for two minutes are forgotten
			if now.Sub(b.start) >= 2*time.Minute {
				delete(l.rate, a)
			}
		}
		l.swept = now
	}
	b := l.rate[ip]
	if b == nil {
		b = &bucket{start: now}
		l.rate[ip] = b
	}
	for now.Sub(b.start) >= time.Minute {
		b.start, b.prev, b.cur = b.start.Add(time.Minute), b.cur, 0
		if now.Sub(b.start) >= time.Minute {
			b.start, b.prev = now, 0
		}
	}
	left := 1 - float64(now.Sub(b.start))/float64(time.Minute)
	if float64(b.cur)+float64(b.prev)*left >= float64(perMinute) {
		return true
	}
	b.cur++
	return false
}

func (l *limiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.perIP[ip] - 1; n > 0 {
		l.perIP[ip] = n
	} else {
		delete(l.perIP, ip)
	}
	p := netOf(ip)
	if n := l.perNet[p] - 1; n > 0 {
		l.perNet[p] = n
	} else {
		delete(l.perNet, p)
	}
}

func (l *limiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
