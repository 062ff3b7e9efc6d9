package dnsbl

import (
	"net/netip"
	"strings"
)

// maxName is the longest query name (RFC 1035 §2.3.4, without the root's
// dot); the scratch buffers below hold it plus a trailing dot.
const maxName = 253

// appendReversed appends ip's DNSxL label form and a dot: the octets reversed
// for IPv4 ("4.3.2.1."), the 32 nibbles reversed for IPv6 (RFC 5782 §2.4),
// the same as dns.ReverseAddr without its in-addr.arpa/ip6.arpa suffix.
// An IPv4-mapped IPv6 address keeps its IPv6 form; callers that want the
// IPv4 one unmap it first.
func appendReversed(b []byte, ip netip.Addr) []byte {
	const hex = "0123456789abcdef"
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			b = appendUint8(b, a[i])
			b = append(b, '.')
		}
		return b
	}
	a := ip.As16()
	for i := 15; i >= 0; i-- {
		b = append(b, hex[a[i]&0xf], '.', hex[a[i]>>4], '.')
	}
	return b
}

func appendUint8(b []byte, n uint8) []byte {
	if n >= 100 {
		b = append(b, '0'+n/100)
	}
	if n >= 10 {
		b = append(b, '0'+n/10%10)
	}
	return append(b, '0'+n%10)
}

// queryName returns prefix + zone + ".", or "" when that is longer than a
// DNS name may be (a long sender domain under a long zone).
func queryName(b []byte, prefix []byte, zone string) string {
	if len(prefix)+len(zone) > maxName {
		return ""
	}
	b = append(b[:0], prefix...)
	b = append(b, zone...)
	b = append(b, '.')
	return string(b)
}

// normalDomain turns a sender or HELO domain into the form RHSBLs list:
// lower case, no trailing dot. It returns "" for what cannot be looked up:
// empty, an address literal or bare IP, a single label, anything that is not
// an ASCII host name (RHSBLs list A-labels; SMTPUTF8 U-labels would need
// converting first).
func normalDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
	if d == "" || strings.HasPrefix(d, "[") || !strings.Contains(d, ".") {
		return ""
	}
	if _, err := netip.ParseAddr(d); err == nil {
		return ""
	}
	if domainSyntax(d) != "" {
		return ""
	}
	return d
}
