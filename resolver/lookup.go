package resolver

import (
	"context"
	"net"
	"strings"

	"github.com/miekg/dns"
)

// The Lookup methods mirror net.Resolver, so the resolver plugs into
// blitiri.com.ar/go/spf (spf.DNSResolver) and go-msgauth. A name with
// no records of the type, or no name at all, is a *net.DNSError with
// IsNotFound set, as net.Resolver reports it and SPF's void-lookup
// count expects. Cached results come back without allocating; the
// slices are shared and must not be modified.

// LookupIP returns the addresses of host: network "ip4" asks for A
// records, "ip6" for AAAA, "ip" for both at once.
func (r *Resolver) LookupIP(ctx context.Context, network, host string) ([]net.IP, error) {
	if ip := parseLiteral(host); ip != nil {
		return literal(network, host, ip)
	}
	var e *entry
	var err error
	switch network {
	case "ip":
		e, err = r.lookupBoth(ctx, host)
	case "ip4":
		e, err = r.lookup(ctx, host, dns.TypeA)
	case "ip6":
		e, err = r.lookup(ctx, host, dns.TypeAAAA)
	default:
		return nil, &net.DNSError{Err: "unknown network " + network, Name: host}
	}
	if err != nil {
		return nil, err
	}
	if e.notFound {
		return nil, notFound(host, e.server)
	}
	return e.ips, nil
}

// parseLiteral returns host as an IP if it is one. Names are screened
// out first because a failed net.ParseIP allocates its error, and
// cache hits must not allocate.
func parseLiteral(host string) net.IP {
	if strings.Trim(host, "0123456789.") != "" && !strings.Contains(host, ":") {
		return nil
	}
	return net.ParseIP(host)
}

func literal(network, host string, ip net.IP) ([]net.IP, error) {
	is4 := ip.To4() != nil
	if network == "ip4" && !is4 || network == "ip6" && is4 {
		return nil, notFound(host, "")
	}
	return []net.IP{ip}, nil
}

// LookupIPAddr returns the IPv4 and IPv6 addresses of host.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if ip := parseLiteral(host); ip != nil {
		return []net.IPAddr{{IP: ip}}, nil
	}
	e, err := r.lookupBoth(ctx, host)
	if err != nil {
		return nil, err
	}
	if e.notFound {
		return nil, notFound(host, e.server)
	}
	return e.addrs, nil
}

// lookupBoth asks for A and AAAA in parallel and caches the merged
// result under its own key, so that a hit needs no merging.
func (r *Resolver) lookupBoth(ctx context.Context, host string) (*entry, error) {
	k := makeKey(host, typeIP)
	if e, ok := r.cached(k); ok {
		r.hits.Add(2) // both questions answered from the cache
		return e, nil
	}
	type result struct {
		e   *entry
		err error
	}
	six := make(chan result, 1)
	go func() {
		e, err := r.lookup(ctx, host, dns.TypeAAAA)
		six <- result{e, err}
	}()
	a, errA := r.lookup(ctx, host, dns.TypeA)
	aaaa := <-six
	switch {
	case errA == nil && aaaa.err == nil:
		e := mergeIP(a, aaaa.e)
		if r.cache != nil {
			r.cache.Add(k, e)
		}
		return e, nil
	// One family failed: what the other found is still worth having,
	// as net.Resolver does, but it is not cached as the whole answer.
	case errA == nil && !a.notFound:
		return a, nil
	case aaaa.err == nil && !aaaa.e.notFound:
		return aaaa.e, nil
	case errA != nil:
		return nil, errA
	default:
		return nil, aaaa.err
	}
}

// LookupTXT returns the TXT records of name, the strings of each
// record joined as net.LookupTXT does.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	return r.lookupStrings(ctx, name, name, dns.TypeTXT)
}

// LookupTXTFunc adapts LookupTXT to go-msgauth's option types
// (dkim.VerifyOptions.LookupTXT, dmarc.LookupOptions.LookupTXT),
// which carry no context.
func (r *Resolver) LookupTXTFunc(ctx context.Context) func(string) ([]string, error) {
	return func(name string) ([]string, error) { return r.LookupTXT(ctx, name) }
}

// LookupMX returns the MX records of name sorted by preference, hosts
// fully qualified.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	e, err := r.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	if e.notFound {
		return nil, notFound(name, e.server)
	}
	return e.mxs, nil
}

// LookupAddr returns the PTR names of the IP address addr, fully
// qualified. Building the reverse name allocates, even on a hit.
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	names, err := r.lookupStrings(ctx, rev, addr, dns.TypePTR)
	if de, ok := err.(*net.DNSError); ok {
		de.Name = addr // a fresh copy: see withName
	}
	return names, err
}

func (r *Resolver) lookupStrings(ctx context.Context, qname, name string, qtype uint16) ([]string, error) {
	e, err := r.lookup(ctx, qname, qtype)
	if err != nil {
		return nil, err
	}
	if e.notFound {
		return nil, notFound(name, e.server)
	}
	return e.strs, nil
}
