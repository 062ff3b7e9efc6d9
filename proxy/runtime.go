package proxy

import (
	"crypto/tls"
	"log/slog"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/pipeline"
	"github.com/mxguard/mxguard/proxy/backend"
	"github.com/mxguard/mxguard/reputation"
)

// Runtime is everything built from one configuration. Sessions keep the
// Runtime they started under, so a reload never changes the rules of a
// session in flight.
type Runtime struct {
	Cfg      *config.Config
	Pipeline *pipeline.Pipeline
	Backend  backend.Options
	TLS      *tls.Config // nil: no STARTTLS
	Shared   Shared
}

// Shared is what outlives a reload: the DNS cache and the memory of
// clients. A reload builds a new Runtime around the same Shared.
type Shared struct {
	Resolver   pipeline.Resolver // nil: no DNS-based checks
	Reputation *reputation.Store // nil: no memory
}

// NewRuntime builds the pipeline and the backend settings from cfg. Call
// Start before serving with it and Close when it is replaced.
func NewRuntime(cfg *config.Config, sh Shared, log *slog.Logger) (*Runtime, error) {
	p, err := pipeline.New(cfg, sh.Resolver, sh.Reputation, log)
	if err != nil {
		return nil, err
	}
	method, err := backend.ParseMethod(string(cfg.Backend.ClientIdentity))
	if err != nil {
		return nil, cfg.Errorf([]string{"backend", "client_identity"}, "%v", err)
	}
	rt := &Runtime{
		Cfg:      cfg,
		Pipeline: p,
		Shared:   sh,
		Backend: backend.Options{
			Addr:           cfg.Backend.Address,
			Method:         method,
			LocalName:      cfg.Hostname,
			DialTimeout:    cfg.Backend.DialTimeout.D(),
			CommandTimeout: cfg.Backend.CommandTimeout.D(),
			DataTimeout:    cfg.Backend.DataTimeout.D(),
		},
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

// Start begins the runtime's background work (the DNS lists' self-test).
func (rt *Runtime) Start() { rt.Pipeline.Start() }

// Close stops it; sessions still running under rt go on.
func (rt *Runtime) Close() { rt.Pipeline.Close() }
