package resolver

import (
	"net"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// entry is what the cache holds for one question: the answer plus the
// forms the Lookup methods return, converted once so that hits hand
// out shared slices instead of allocating.
type entry struct {
	ans      *Answer // nil for the merged A+AAAA entry
	server   string  // upstream that answered, for errors
	notFound bool    // NXDOMAIN or NODATA
	expires  time.Time

	ips   []net.IP     // A, AAAA, merged
	addrs []net.IPAddr // merged
	strs  []string     // TXT (strings of each RR joined), PTR
	mxs   []*net.MX    // sorted by preference
}

func (r *Resolver) newEntry(fqdn string, qtype uint16, msg *dns.Msg, server string) *entry {
	e := &entry{server: server}
	positive := msg.Rcode == dns.RcodeSuccess && hasType(msg.Answer, qtype)
	var ttl time.Duration
	if positive {
		ttl = r.clamp(minTTL(msg.Answer))
	} else {
		e.notFound = true
		ttl = r.negativeTTL(msg.Ns)
	}
	now := r.now()
	e.expires = now.Add(ttl)
	e.ans = &Answer{Name: fqdn, Rcode: msg.Rcode, RRs: msg.Answer, TTL: ttl, Expires: e.expires}
	if !positive {
		return e
	}

	for _, rr := range msg.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			if qtype == dns.TypeA {
				e.ips = append(e.ips, rr.A)
			}
		case *dns.AAAA:
			if qtype == dns.TypeAAAA {
				e.ips = append(e.ips, rr.AAAA)
			}
		case *dns.TXT:
			if qtype == dns.TypeTXT {
				e.strs = append(e.strs, strings.Join(rr.Txt, ""))
			}
		case *dns.PTR:
			if qtype == dns.TypePTR {
				e.strs = append(e.strs, rr.Ptr)
			}
		case *dns.MX:
			if qtype == dns.TypeMX {
				e.mxs = append(e.mxs, &net.MX{Host: rr.Mx, Pref: rr.Preference})
			}
		}
	}
	slices.SortStableFunc(e.mxs, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	return e
}

// hasType reports whether the answer holds data of the asked type, not
// only CNAMEs leading elsewhere (which a recursive server would have
// followed: a CNAME-only answer means NODATA at the target).
func hasType(rrs []dns.RR, qtype uint16) bool {
	for _, rr := range rrs {
		if t := rr.Header().Rrtype; t == qtype || qtype == dns.TypeANY {
			return true
		}
	}
	return false
}

func minTTL(rrs []dns.RR) time.Duration {
	m := rrs[0].Header().Ttl
	for _, rr := range rrs[1:] {
		m = min(m, rr.Header().Ttl)
	}
	return time.Duration(m) * time.Second
}

func (r *Resolver) clamp(ttl time.Duration) time.Duration {
	return min(max(ttl, r.minTTL), r.maxTTL)
}

// negativeTTL is the RFC 2308 §5 lifetime of a negative answer: the
// smaller of the SOA's own TTL and its MINIMUM field.
func (r *Resolver) negativeTTL(authority []dns.RR) time.Duration {
	for _, rr := range authority {
		if soa, ok := rr.(*dns.SOA); ok {
			return r.clamp(time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second)
		}
	}
	return r.negTTL
}

// mergeIP builds the LookupIP("ip") entry from the A and AAAA ones. It
// lives as long as the shorter of the two.
func mergeIP(a, aaaa *entry) *entry {
	e := &entry{
		server:   a.server,
		notFound: a.notFound && aaaa.notFound,
		expires:  a.expires,
		ips:      a.ips,
	}
	if aaaa.expires.Before(e.expires) {
		e.expires = aaaa.expires
	}
	if len(aaaa.ips) > 0 {
		e.ips = append(slices.Clip(a.ips), aaaa.ips...)
	}
	e.addrs = make([]net.IPAddr, len(e.ips))
	for i, ip := range e.ips {
		e.addrs[i] = net.IPAddr{IP: ip}
	}
	return e
}
