package dnsbl

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/resolver"
)

var loopback8 = netip.MustParsePrefix("127.0.0.0/8")

// Lists answer some failures with an A record instead of an rcode. Counting
// those as listings rejected all mail for people using Spamhaus through a
// public resolver (Haraka#3106, mox#354 and others), so they are errors.
var errorCodes = map[netip.Addr]string{
	netip.MustParseAddr("127.255.255.252"): "typing error in the list name (Spamhaus)",
	netip.MustParseAddr("127.255.255.254"): "query through a public or open resolver (Spamhaus)",
	netip.MustParseAddr("127.255.255.255"): "over the query limit (Spamhaus)",
	// dnswl.org's "over limit". No list uses .255 as a listing code, so
	// it is refused from any zone, including keyed names in a reply map.
	netip.MustParseAddr("127.0.0.255"): "over the query limit (dnswl.org)",
}

// spamhausErrors is the block Spamhaus keeps for error codes; codes it may
// add there are errors too.
var spamhausErrors = netip.MustParsePrefix("127.255.255.0/24")

// badAnswer says why an answer from a list must not count as a listing, or
// returns "".
func badAnswer(a netip.Addr) string {
	if why, ok := errorCodes[a]; ok {
		return "error code " + a.String() + ": " + why
	}
	if spamhausErrors.Contains(a) {
		return "error code " + a.String()
	}
	if !loopback8.Contains(a) {
		return "answer " + a.String() + " outside 127.0.0.0/8"
	}
	return ""
}

// addrs returns the A records of an answer, or why they must not be used.
// NXDOMAIN and NODATA give neither. One bad record spoils the whole answer:
// a list that answers with an error code or a web server's address (an
// expired list domain, parked with a wildcard) says nothing about the client.
func addrs(ans *resolver.Answer) ([]netip.Addr, string) {
	if ans == nil || ans.Rcode != dns.RcodeSuccess {
		return nil, ""
	}
	var out []netip.Addr
	for _, rr := range ans.RRs {
		a, ok := rr.(*dns.A)
		if !ok {
			continue // CNAMEs on the way
		}
		ip, ok := netip.AddrFromSlice(a.A)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if why := badAnswer(ip); why != "" {
			return nil, why
		}
		out = append(out, ip)
	}
	return out, ""
}

// maxTXT bounds the reason kept from a list's TXT record.
const maxTXT = 200

// firstTXT returns the first TXT record of an answer, its strings joined,
// cut to maxTXT bytes. The text ends up in logs and perhaps in an SMTP reply,
// where a CR or LF from a list must never land: miekg/dns already gives
// unprintable bytes as \DDD escapes, and anything but printable ASCII that
// another Resolver lets through is replaced.
func firstTXT(ans *resolver.Answer) string {
	if ans == nil {
		return ""
	}
	for _, rr := range ans.RRs {
		t, ok := rr.(*dns.TXT)
		if !ok {
			continue
		}
		s := strings.Join(t.Txt, "")
		if len(s) > maxTXT {
			s = s[:maxTXT]
		}
		if strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r > '~' }) < 0 {
			return s // the usual case: no copy
		}
		b := []byte(s)
		for i, c := range b {
			if c < ' ' || c > '~' {
				b[i] = '?'
			}
		}
		return string(b)
	}
	return ""
}

// errReason is the short form of a lookup error for ZoneError.Reason.
func errReason(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		if de.IsTimeout {
			return "timeout"
		}
		return de.Err // "server misbehaving: SERVFAIL", ...
	}
	return err.Error()
}
