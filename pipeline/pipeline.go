// Package pipeline runs mxguard's checks at each stage of an SMTP session
// and asks the rules what to do. It knows what a session has said (client,
// HELO, envelope, message) but not how it was said: the proxy does the SMTP,
// and `mxguard test` drives the same pipeline with a described session.
//
//	connect → greeting → HELO → MAIL → RCPT… → DATA
//	  each stage: lists and checks → results → rules.Decide → Decision
package pipeline

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/dnsbl"
	"github.com/mxguard/mxguard/reputation"
	"github.com/mxguard/mxguard/resolver"
	"github.com/mxguard/mxguard/rules"
)

// Resolver is the one caching resolver every check asks.
type Resolver interface {
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	Query(ctx context.Context, name string, qtype uint16) (*resolver.Answer, error)
}

// Pipeline is the checks and rules built from one configuration, shared by
// every session started under it.
type Pipeline struct {
	Hostname   string
	Policy     *rules.Policy
	HELO       *checks.HELO
	Spoof      *checks.Spoof
	DNSBL      *dnsbl.Checker // nil: no lists
	SPF        *checks.SPF    // nil: off
	DKIM       *checks.DKIM   // nil: off
	DMARC      *checks.DMARC  // nil: off
	Reputation *reputation.Store
	Resolver   Resolver // nil: no DNS at all (check-config)

	trusted    []netip.Prefix
	dnsTimeout time.Duration
	headers    config.Headers
}

// New builds the pipeline of cfg around the shared resolver and memory.
// Either may be nil.
func New(cfg *config.Config, res Resolver, rep *reputation.Store, log *slog.Logger) (*Pipeline, error) {
	policy, err := rules.Load(cfg)
	if err != nil {
		return nil, err
	}
	local := make(map[string]bool, len(cfg.LocalDomains))
	for _, d := range cfg.LocalDomains {
		local[d] = true
	}
	p := &Pipeline{
		Hostname:   cfg.Hostname,
		Policy:     policy,
		Spoof:      &checks.Spoof{LocalDomains: local},
		Reputation: rep,
		Resolver:   res,
		dnsTimeout: cfg.DNS.Timeout.D() * time.Duration(max(cfg.DNS.Attempts, 1)),
		headers:    cfg.Headers,
	}
	p.HELO = &checks.HELO{
		Hostname:     cfg.Hostname,
		LocalDomains: local,
		OwnIPs:       ownIPs(cfg),
		DNSTimeout:   p.dnsTimeout,
	}
	for _, n := range cfg.TrustedNetworks {
		p.trusted = append(p.trusted, n.Prefix)
	}
	if res == nil {
		return p, nil
	}
	if cfg.HELO.ForwardDNS {
		p.HELO.Resolver = res
	}
	if len(cfg.DNSBL.Sites) > 0 || len(cfg.DNSBL.DomainSites) > 0 {
		p.DNSBL, err = dnsbl.New(dnsbl.Config{
			Sites:              cfg.DNSBL.Sites,
			DomainSites:        cfg.DNSBL.DomainSites,
			Threshold:          cfg.DNSBL.Threshold,
			AllowlistThreshold: cfg.DNSBL.AllowlistThreshold,
			Timeout:            cfg.DNSBL.Timeout.D(),
			SelfTestInterval:   cfg.DNSBL.SelfTestInterval.D(),
			ReplyMap:           cfg.DNSBL.ReplyMap,
			IPv6:               cfg.DNSBL.IPv6,
		}, res, log)
		if err != nil {
			return nil, cfg.Errorf([]string{"dnsbl", "sites"}, "%v", err)
		}
	}
	if cfg.SPF.Enabled {
		p.SPF = &checks.SPF{Resolver: res, Timeout: cfg.SPF.Timeout.D()}
	}
	if cfg.DKIM.Enabled {
		p.DKIM = &checks.DKIM{Resolver: res, MaxSignatures: cfg.DKIM.MaxSignatures, Timeout: cfg.DKIM.Timeout.D()}
	}
	if cfg.DMARC.Enabled {
		p.DMARC = &checks.DMARC{Resolver: res, Timeout: cfg.DMARC.Timeout.D()}
	}
	return p, nil
}

// Start begins the background work (the DNS lists' self-test).
func (p *Pipeline) Start() {
	if p.DNSBL != nil {
		p.DNSBL.Start()
	}
}

// Close stops it. Sessions still running under p may go on using it.
func (p *Pipeline) Close() {
	if p.DNSBL != nil {
		p.DNSBL.Close()
	}
}

// Trusted reports whether a client is in trusted_networks.
func (p *Pipeline) Trusted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, n := range p.trusted {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// ownIPs are the addresses a HELO literal must not claim: the configured
// ones, the listeners' and the machine's.
func ownIPs(cfg *config.Config) map[netip.Addr]bool {
	own := map[netip.Addr]bool{}
	for _, a := range cfg.OwnIPs {
		own[a] = true
	}
	for _, l := range cfg.Listen.Addresses {
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
