package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// IPResolver is the part of the resolver the HELO check uses.
type IPResolver interface {
	// LookupIP looks up A ("ip4") or AAAA ("ip6") records.
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
}

// HELO checks a client's HELO/EHLO argument: that it is a valid name or
// address literal (RFC 5321 §4.1.1.1, §4.1.3), and that it does not lie
// (RFC 2505 §2.6: claiming to be us, or an address that is not the client's).
type HELO struct {
	Hostname     string              // ours, lower case
	LocalDomains map[string]bool     // ours, lower case
	OwnIPs       map[netip.Addr]bool // ours
	// Resolver, when set, enables the forward DNS test: the name's A or
	// AAAA records (the client's family) must include the client.
	Resolver   IPResolver
	DNSTimeout time.Duration // default 5s
}

// Literal reports whether helo is written as an address literal.
func Literal(helo string) bool { return strings.HasPrefix(helo, "[") }

// Classify judges a HELO argument's syntax alone. It returns "" for a valid
// name or literal, else the outcome ("helo.bare_ip", ...) and a reason. For a
// valid literal, addr is its address.
func Classify(helo string) (outcome, reason string, addr netip.Addr) {
	h := strings.TrimSpace(helo)
	if h == "" {
		return "helo.empty", "HELO has no argument", addr
	}
	if Literal(h) {
		a, why := parseLiteral(h)
		if why != "" {
			return "helo.bad_literal", fmt.Sprintf("HELO %s is not a valid address literal: %s", h, why), addr
		}
		return "", "", a
	}
	name := strings.TrimSuffix(h, ".")
	if a, err := netip.ParseAddr(strings.TrimPrefix(strings.TrimPrefix(name, "IPv6:"), "ipv6:")); err == nil {
		return "helo.bare_ip", fmt.Sprintf("HELO %s is an IP address without brackets", h), a.Unmap()
	}
	lower := strings.ToLower(name)
	switch lower {
	case "localhost", "localhost.localdomain", "localhost6", "localhost6.localdomain6":
		return "helo.localhost", fmt.Sprintf("HELO %s is a name for the local machine", h), addr
	}
	if why := hostnameSyntax(lower); why != "" {
		return "helo.bad_syntax", fmt.Sprintf("HELO %s is not a valid hostname: %s", h, why), addr
	}
	if !strings.Contains(lower, ".") {
		return "helo.no_dot", fmt.Sprintf("HELO %s is not a fully-qualified domain name", h), addr
	}
	return "", "", addr
}

// parseLiteral reads "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3).
func parseLiteral(h string) (netip.Addr, string) {
	if !strings.HasSuffix(h, "]") || len(h) < 3 {
		return netip.Addr{}, "no closing bracket"
	}
	inner := h[1 : len(h)-1]
	if tag, rest, ok := strings.Cut(inner, ":"); ok && !strings.Contains(tag, ".") {
		if !strings.EqualFold(tag, "IPv6") {
			return netip.Addr{}, fmt.Sprintf("unknown address tag %q", tag)
		}
		a, err := netip.ParseAddr(rest)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return netip.Addr{}, "not an IPv6 address"
		}
		return a.Unmap(), ""
	}
	a, err := netip.ParseAddr(inner)
	if err != nil || !a.Is4() {
		return netip.Addr{}, "not an IPv4 address (IPv6 needs the IPv6: tag)"
	}
	return a, ""
}

// hostnameSyntax returns why name (lower case, no trailing dot) is not a
// valid host name (RFC 1123 §2.1, RFC 3696 §2), or "".
func hostnameSyntax(name string) string {
	if len(name) > 253 {
		return "longer than 253 characters"
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return "empty label"
		case len(l) > 63:
			return "label longer than 63 characters"
		case l[0] == '-' || l[len(l)-1] == '-':
			return fmt.Sprintf("label %q begins or ends with a hyphen", l)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			case c == '_':
				return "underscore in a host name"
			case c >= 0x80:
				return "non-ASCII characters (IDNs go in A-label form, xn--)"
			default:
				return fmt.Sprintf("character %q not allowed", c)
			}
		}
	}
	if tld := labels[len(labels)-1]; len(labels) > 1 && strings.Trim(tld, "0123456789") == "" {
		return "all-numeric top-level domain"
	}
	return ""
}

// Check judges helo as sent by client. It returns one result: helo.pass or
// the first thing wrong.
func (h *HELO) Check(ctx context.Context, helo string, client netip.Addr) Result {
	client = client.Unmap()
	res := func(outcome, reason, evidence string) Result {
		return Result{Check: HELOName, Outcome: outcome, Reason: reason, Evidence: evidence}
	}
	outcome, reason, lit := Classify(helo)
	if outcome != "" {
		return res(outcome, reason, "")
	}
	if !client.IsValid() {
		// A load balancer named no client: nothing to compare with.
		if lit.IsValid() && h.OwnIPs[lit] {
			return res("helo.claims_us", fmt.Sprintf("HELO %s is our own address", helo), "")
		}
		if !lit.IsValid() {
			if name := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(helo), ".")); name == h.Hostname || h.LocalDomains[name] {
				return res("helo.claims_us", fmt.Sprintf("HELO %s is our own name", helo), "")
			}
		}
		return res("helo.pass", fmt.Sprintf("HELO %s is valid; the client's address is unknown, so it is not compared", helo), "")
	}
	if lit.IsValid() {
		switch {
		case lit == client:
			return res("helo.pass", fmt.Sprintf("HELO %s is the client's address", helo), "")
		case h.OwnIPs[lit]:
			return res("helo.claims_us", fmt.Sprintf("HELO %s is our own address", helo), "")
		default:
			return res("helo.literal_mismatch", fmt.Sprintf("HELO %s is not the client's address %s", helo, client), "")
		}
	}
	name := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(helo), "."))
	if name == h.Hostname {
		return res("helo.claims_us", fmt.Sprintf("HELO %s is our own hostname", helo), "")
	}
	if h.LocalDomains[name] {
		return res("helo.claims_us", fmt.Sprintf("HELO %s is one of our domains", helo), "")
	}
	if h.Resolver == nil {
		return res("helo.pass", fmt.Sprintf("HELO %s is a valid name", helo), "")
	}
	return h.forward(ctx, helo, name, client)
}

// forward wants the client's address among the name's records of the
// client's own family: a v4 client must be in the A records.
func (h *HELO) forward(ctx context.Context, helo, name string, client netip.Addr) Result {
	network, rtype := "ip4", "A"
	if client.Is6() {
		network, rtype = "ip6", "AAAA"
	}
	timeout := h.DNSTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ips, err := h.Resolver.LookupIP(ctx, network, name+".")
	r := Result{Check: HELOName}
	var dnsErr *net.DNSError
	switch {
	case err != nil && errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		r.Outcome = "helo.unresolvable"
		r.Reason = fmt.Sprintf("HELO %s has no %s record", helo, rtype)
		r.Evidence = dnsErr.Error()
	case err != nil:
		r.Outcome = "helo.dns_temp"
		r.Reason = fmt.Sprintf("HELO %s: %s lookup failed", helo, rtype)
		r.Evidence = err.Error()
	default:
		addrs := make([]string, 0, len(ips))
		for _, ip := range ips {
			if a, ok := netip.AddrFromSlice(ip); ok && a.Unmap() == client {
				r.Outcome = "helo.pass"
				r.Reason = fmt.Sprintf("HELO %s resolves to the client %s", helo, client)
				return r
			}
			addrs = append(addrs, ip.String())
		}
		r.Outcome = "helo.forward_mismatch"
		r.Reason = fmt.Sprintf("HELO %s does not resolve to the client %s", helo, client)
		r.Evidence = fmt.Sprintf("%s %s", rtype, strings.Join(addrs, " "))
	}
	return r
}

// HELOName names the HELO check.
const HELOName Name = "helo"

// HELOSpec registers the HELO check: RFC 5321 syntax and RFC 2505 honesty
// of every new HELO/EHLO name.
var HELOSpec = Spec{
	Name:   HELOName,
	Stages: []Stage{AtHELO},
	Outcomes: []string{"helo.pass", "helo.empty", "helo.no_dot", "helo.localhost", "helo.bare_ip", "helo.bad_syntax",
		"helo.bad_literal", "helo.claims_us", "helo.literal_mismatch", "helo.unresolvable", "helo.forward_mismatch",
		"helo.dns_temp"},
	New: func(env *Env) (Check, error) {
		cfg := env.Config
		h := &HELO{
			Hostname:     cfg.Hostname,
			LocalDomains: cfg.LocalDomainSet(),
			OwnIPs:       cfg.OwnAddresses(),
			DNSTimeout:   cfg.DNS.Timeout.D() * time.Duration(max(cfg.DNS.Attempts, 1)),
		}
		if cfg.HELO.ForwardDNS && env.Resolver != nil {
			h.Resolver = env.Resolver
		}
		return h, nil
	},
}

// Run checks the newest name.
func (h *HELO) Run(ctx context.Context, _ Stage, s *Session) []Result {
	return []Result{h.Check(ctx, s.HELO, s.Client.Addr())}
}
