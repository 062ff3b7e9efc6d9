package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/proxy/backend"
	"github.com/mxguard/mxguard/reputation"
	"github.com/mxguard/mxguard/rules"
)

// Runtime is everything built from one configuration. Sessions keep the
// Runtime they started under, so a reload never changes the rules of a
// session in flight.
type Runtime struct {
	Cfg     *config.Config
	Policy  *rules.Policy
	HELO    *checks.HELO
	Spoof   *checks.Spoof
	Backend backend.Options
	TLS     *tls.Config // nil: no STARTTLS
	// Resolver serves every DNS question; nil disables DNS-based checks.
	Resolver Resolver
	// Reputation remembers client addresses; nil forgets everything.
	Reputation *reputation.Store

	trusted []netip.Prefix
}

// Resolver is what the proxy asks DNS.
type Resolver interface {
	checks.IPResolver
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Shared is what outlives a reload: the DNS cache and the memory of
// clients. A reload builds a new Runtime around the same Shared.
type Shared struct {
	Resolver   Resolver
	Reputation *reputation.Store
}

// NewRuntime builds the checks and the decision policy from cfg.
func NewRuntime(cfg *config.Config, sh Shared) (*Runtime, error) {
	res := sh.Resolver
	policy, err := rules.New(cfg)
	if err != nil {
		return nil, err
	}
	method, err := backend.ParseMethod(string(cfg.Backend.ClientIdentity))
	if err != nil {
		return nil, cfg.Errorf([]string{"backend", "client_identity"}, "%v", err)
	}
	rt := &Runtime{
		Cfg:        cfg,
		Policy:     policy,
		Resolver:   res,
		Reputation: sh.Reputation,
		Backend: backend.Options{
			Addr:           cfg.Backend.Address,
			Method:         method,
			LocalName:      cfg.Hostname,
			DialTimeout:    cfg.Backend.DialTimeout.D(),
			CommandTimeout: cfg.Backend.CommandTimeout.D(),
			DataTimeout:    cfg.Backend.DataTimeout.D(),
		},
	}
	local := make(map[string]bool, len(cfg.LocalDomains))
	for _, d := range cfg.LocalDomains {
		local[d] = true
	}
	rt.HELO = &checks.HELO{
		Hostname:     cfg.Hostname,
		LocalDomains: local,
		OwnIPs:       ownIPs(cfg),
		DNSTimeout:   cfg.DNS.Timeout.D() * 2,
	}
	if cfg.HELO.ForwardDNS && res != nil {
		rt.HELO.Resolver = res
	}
	rt.Spoof = &checks.Spoof{LocalDomains: local}
	for _, p := range cfg.TrustedNetworks {
		rt.trusted = append(rt.trusted, p.Prefix)
	}
	if cfg.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, cfg.Errorf([]string{"tls", "cert_file"}, "tls: %v", err)
		}
		rt.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return rt, nil
}

// Trusted reports whether a client is in trusted_networks.
func (rt *Runtime) Trusted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range rt.trusted {
		if p.Contains(ip) {
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

func (rt *Runtime) String() string { return fmt.Sprintf("runtime(%s)", rt.Cfg.Path) }
