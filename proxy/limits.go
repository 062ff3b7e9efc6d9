package proxy

import (
	"net/netip"
	"sync"
)

// limiter counts open connections, in all and per client address.
type limiter struct {
	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
}

func newLimiter() *limiter { return &limiter{perIP: map[netip.Addr]int{}} }

// acquire takes a slot for ip, or says which limit is full.
func (l *limiter) acquire(ip netip.Addr, maxTotal, maxPerIP int) (ok bool, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= maxTotal {
		return false, "too many connections"
	}
	if l.perIP[ip] >= maxPerIP {
		return false, "too many connections from your address"
	}
	l.total++
	l.perIP[ip]++
	return true, ""
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
}

func (l *limiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
