package zonedns

import (
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// maxChain bounds CNAME chasing so that a CNAME loop in the fixture
// data ends in SERVFAIL instead of spinning.
const maxChain = 8

// zoneData is an immutable index over the fixture records. Changes
// build a new one, so the handler can use it without holding a lock.
type zoneData struct {
	rrs   []dns.RR                       // in input order
	names map[string]map[uint16][]dns.RR // canonical owner → type → RRs
	soas  []*dns.SOA                     // one per zone apex
}

// parseZone reads RFC 1035 master-file text. Names must be absolute
// or made so by $ORIGIN; $INCLUDE is not allowed.
func parseZone(text string) ([]dns.RR, error) {
	zp := dns.NewZoneParser(strings.NewReader(text), "", "")
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		// The *dns.ParseError text carries "at line: L:C".
		return nil, fmt.Errorf("zonedns: %w", err)
	}
	return rrs, nil
}

func canonical(name string) string {
	return strings.ToLower(dns.Fqdn(name))
}

func newZoneData(rrs []dns.RR) *zoneData {
	z := &zoneData{rrs: rrs, names: make(map[string]map[uint16][]dns.RR)}
	for _, rr := range rrs {
		if soa, ok := rr.(*dns.SOA); ok {
			z.soas = append(z.soas, soa)
		}
	}
	for _, rr := range rrs {
		h := rr.Header()
		name := canonical(h.Name)
		set := z.node(name)
		set[h.Rrtype] = append(set[h.Rrtype], rr)

		// Names between the owner and its zone apex exist even
		// without records (empty non-terminals): they must get NODATA,
		// not NXDOMAIN, like "_dmarc.example.com" under
		// "x._dmarc.example.com".
		if apex := z.apex(name); apex != nil {
			top := canonical(apex.Hdr.Name)
			for n := parent(name); n != "" && dns.IsSubDomain(top, n); n = parent(n) {
				z.node(n)
			}
		}
	}
	return z
}

func (z *zoneData) node(name string) map[uint16][]dns.RR {
	set, ok := z.names[name]
	if !ok {
		set = make(map[uint16][]dns.RR)
		z.names[name] = set
	}
	return set
}

// parent returns the name with its first label removed, or "" for the root.
func parent(name string) string {
	off, end := dns.NextLabel(name, 0)
	if end {
		return ""
	}
	return name[off:]
}

// apex returns the SOA of the closest enclosing zone, or nil.
func (z *zoneData) apex(name string) *dns.SOA {
	var best *dns.SOA
	for _, soa := range z.soas {
		if dns.IsSubDomain(soa.Hdr.Name, name) &&
			(best == nil || dns.CountLabel(soa.Hdr.Name) > dns.CountLabel(best.Hdr.Name)) {
			best = soa
		}
	}
	return best
}

// authority returns the SOA to put in a negative answer for name.
// A name outside every fixture zone gets none; the resolver then uses
// its configured negative TTL.
func (z *zoneData) authority(name string) []dns.RR {
	if soa := z.apex(name); soa != nil {
		return []dns.RR{soa}
	}
	return nil
}

// answer builds the reply sections for a question. The returned slices
// are fresh, so the caller may truncate them; the RRs are shared and
// must not be modified.
func (z *zoneData) answer(qname string, qtype uint16) (rcode int, ans, ns []dns.RR) {
	name := canonical(qname)
	for range maxChain {
		set, ok := z.names[name]
		if !ok {
			if len(ans) > 0 && z.apex(name) == nil {
				// A CNAME leading out of the fixture: the client has
				// to follow it elsewhere, as with a real authority.
				return dns.RcodeSuccess, ans, nil
			}
			// RFC 6604: the rcode describes the last name in the chain.
			return dns.RcodeNameError, ans, z.authority(name)
		}
		if rrs := set[qtype]; len(rrs) > 0 {
			return dns.RcodeSuccess, append(ans, rrs...), nil
		}
		if c := set[dns.TypeCNAME]; len(c) > 0 && qtype != dns.TypeCNAME {
			ans = append(ans, c[0])
			name = canonical(c[0].(*dns.CNAME).Target)
			continue
		}
		return dns.RcodeSuccess, ans, z.authority(name) // NODATA
	}
	return dns.RcodeServerFailure, nil, nil
}
