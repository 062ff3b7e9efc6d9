package dnsbl

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Site is one list entry in postscreen's syntax, domain[=filter][*weight]:
//
//	zen.spamhaus.org=127.0.0.[2..11]*3
//	list.dnswl.org=127.0.[0..255].[1..3]*-5
//	bl.mailspike.net=127.0.0.[2;10..14]*2
//
// Without a filter any answer that is not an error code counts. The weight
// is an integer, negative for allowlists, 1 when not given.
type Site struct {
	Domain string // lower case, without the trailing dot
	Weight int
	filter []octetSet // nil, or one set per octet of an IPv4 answer
}

// octetSet is one octet of a filter: the numbers and ranges as written,
// kept in order so that String gives back what the admin wrote.
type octetSet []span

type span struct{ lo, hi uint8 }

func (o octetSet) has(b uint8) bool {
	for _, s := range o {
		if s.lo <= b && b <= s.hi {
			return true
		}
	}
	return false
}

// ParseSite parses one entry. The errors quote the entry, so that the config
// layer only has to add where it came from.
func ParseSite(s string) (Site, error) {
	s = strings.TrimSpace(s)
	site := Site{Weight: 1}
	rest := s
	if i := strings.IndexByte(rest, '*'); i >= 0 {
		w, err := strconv.Atoi(rest[i+1:])
		if err != nil {
			return Site{}, fmt.Errorf("bad weight %q in %s: want an integer", rest[i+1:], s)
		}
		site.Weight = w
		rest = rest[:i]
	}
	domain, filter, hasFilter := strings.Cut(rest, "=")
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == "" {
		return Site{}, fmt.Errorf("no list domain in %q", s)
	}
	if why := domainSyntax(domain); why != "" {
		return Site{}, fmt.Errorf("bad list domain %q in %s: %s", domain, s, why)
	}
	site.Domain = domain
	if hasFilter {
		f, err := parseFilter(filter)
		if err != nil {
			return Site{}, fmt.Errorf("%v in %s", err, s)
		}
		site.filter = f
	}
	return site, nil
}

// parseFilter reads d.d.d.d where each d is a number or a bracketed list of
// ";"-separated numbers and n..m ranges. Dots inside brackets belong to
// ranges, so it scans rather than splits.
func parseFilter(f string) ([]octetSet, error) {
	if f == "" {
		return nil, errors.New("empty filter")
	}
	var octets []octetSet
	rest := f
	for {
		var part string
		if strings.HasPrefix(rest, "[") {
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("unclosed [ in filter %q", f)
			}
			part, rest = rest[1:end], rest[end+1:]
			if part == "" {
				return nil, fmt.Errorf("empty [] in filter %q", f)
			}
		} else {
			end := strings.IndexByte(rest, '.')
			if end < 0 {
				end = len(rest)
			}
			part, rest = rest[:end], rest[end:]
		}
		set, err := parseOctet(part)
		if err != nil {
			return nil, err
		}
		octets = append(octets, set)
		if rest == "" {
			break
		}
		if rest[0] != '.' {
			return nil, fmt.Errorf("bad filter %q: want \".\" after octet %d", f, len(octets))
		}
		rest = rest[1:]
	}
	if len(octets) != 4 {
		return nil, fmt.Errorf("bad filter %q: want 4 octets, not %d", f, len(octets))
	}
	return octets, nil
}

func parseOctet(s string) (octetSet, error) {
	var set octetSet
	for elem := range strings.SplitSeq(s, ";") {
		lo, hi, isRange := strings.Cut(elem, "..")
		l, err := parseByte(lo)
		if err != nil {
			return nil, err
		}
		h := l
		if isRange {
			if h, err = parseByte(hi); err != nil {
				return nil, err
			}
			if l > h {
				return nil, fmt.Errorf("bad filter range %q: %d is above %d", elem, l, h)
			}
		}
		set = append(set, span{l, h})
	}
	return set, nil
}

func parseByte(s string) (uint8, error) {
	// Digits only: Atoi would take "+5" and "-0".
	if s == "" || len(s) > 3 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("bad filter octet %q", s)
	}
	n, _ := strconv.Atoi(s)
	if n > 255 {
		return 0, fmt.Errorf("bad filter octet %q", s)
	}
	return uint8(n), nil
}

// domainSyntax returns why d is not a usable list domain, or "". Labels are
// letters, digits, "-" and "_" (some lists use underscores in keyed names).
func domainSyntax(d string) string {
	if len(d) > 253 {
		return "longer than 253 characters"
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" {
			return "empty label"
		}
		if len(label) > 63 {
			return "label longer than 63 characters"
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Sprintf("bad character %q", c)
			}
		}
	}
	return ""
}

// HasFilter reports whether the site has an =filter.
func (s Site) HasFilter() bool { return s.filter != nil }

// Match reports whether one answer from the list matches the site's filter.
// The caller has already set error codes aside: without a filter, any answer
// matches.
func (s Site) Match(a netip.Addr) bool {
	if s.filter == nil {
		return true
	}
	if !a.Is4() {
		return false
	}
	b := a.As4()
	for i, set := range s.filter {
		if !set.has(b[i]) {
			return false
		}
	}
	return true
}

// String prints the site back in the syntax ParseSite reads. A bracket
// holding a single number prints as the bare number, and the default weight
// is left out.
func (s Site) String() string {
	var b strings.Builder
	b.WriteString(s.Domain)
	if s.filter != nil {
		b.WriteByte('=')
		for i, set := range s.filter {
			if i > 0 {
				b.WriteByte('.')
			}
			if len(set) == 1 && set[0].lo == set[0].hi {
				b.WriteString(strconv.Itoa(int(set[0].lo)))
				continue
			}
			b.WriteByte('[')
			for j, sp := range set {
				if j > 0 {
					b.WriteByte(';')
				}
				b.WriteString(strconv.Itoa(int(sp.lo)))
				if sp.hi != sp.lo {
					b.WriteString("..")
					b.WriteString(strconv.Itoa(int(sp.hi)))
				}
			}
			b.WriteByte(']')
		}
	}
	if s.Weight != 1 {
		b.WriteByte('*')
		b.WriteString(strconv.Itoa(s.Weight))
	}
	return b.String()
}
