package config

import (
	"net"
	"net/netip"
)

// LocalDomainSet returns local_domains as a set (lower case, as validated).
func (c *Config) LocalDomainSet() map[string]bool {
	set := make(map[string]bool, len(c.LocalDomains))
	for _, d := range c.LocalDomains {
		set[d] = true
	}
	return set
}

// OwnAddresses are the addresses a HELO literal must not claim: own_ips,
// the listeners' and the machine's.
func (c *Config) OwnAddresses() map[netip.Addr]bool {
	own := map[netip.Addr]bool{}
	for _, a := range c.OwnIPs {
		own[a] = true
	}
	for _, l := range c.Listen.Addresses {
		host, _, _ := net.SplitHostPort(l)
		if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
			own[a.Unmap()] = true
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					own[ip.Unmap()] = true
				}
			}
		}
	}
	return own
}

// Trusted reports whether ip is in trusted_networks.
func (c *Config) Trusted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, n := range c.TrustedNetworks {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}
