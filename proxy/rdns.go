package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"
)

// The client's verified reverse DNS name (forward-confirmed: the PTR name's
// A/AAAA records include the client). It is looked up while the greeting
// waits, and used for XCLIENT NAME= and the Received header.

// tempUnavail is XCLIENT's word for a name lookup that failed for now.
const tempUnavail = "[TEMPUNAVAIL]"

// startRDNS begins the lookup; name() waits for it.
func (st *connState) startRDNS(res Resolver, timeout time.Duration) {
	st.rdnsDone = make(chan struct{})
	if res == nil {
		close(st.rdnsDone)
		return
	}
	go func() {
		defer close(st.rdnsDone)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		name := verifiedName(ctx, res, st.client.Addr())
		st.mu.Lock()
		st.rdns = name
		st.mu.Unlock()
	}()
}

// reverseName returns the verified name, "" if there is none, or
// "[TEMPUNAVAIL]".
func (st *connState) reverseName() string {
	if st.rdnsDone != nil {
		<-st.rdnsDone // bounded by the lookup's own timeout
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.rdns
}

func verifiedName(ctx context.Context, res Resolver, ip netip.Addr) string {
	names, err := res.LookupAddr(ctx, ip.String())
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return ""
		}
		return tempUnavail
	}
	network := "ip4"
	if ip.Is6() {
		network = "ip6"
	}
	temp := false
	for i, name := range names {
		if i == 10 { // a PTR set this large is not a mail server's
			break
		}
		ips, err := res.LookupIP(ctx, network, name)
		if err != nil {
			var de *net.DNSError
			temp = temp || !(errors.As(err, &de) && de.IsNotFound)
			continue
		}
		for _, a := range ips {
			if b, ok := netip.AddrFromSlice(a); ok && b.Unmap() == ip {
				return strings.ToLower(strings.TrimSuffix(name, "."))
			}
		}
	}
	if temp {
		return tempUnavail
	}
	return ""
}
