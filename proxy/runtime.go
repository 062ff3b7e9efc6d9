package proxy

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/metrics"
	"github.com/mxguard/mxguard/pipeline"
	"github.com/mxguard/mxguard/proxy/backend"
	"github.com/mxguard/mxguard/state"
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
	Resolver checks.Resolver  // nil: no DNS-based checks
	Memory   checks.Memory    // nil: no memory of clients
	Metrics  *metrics.Metrics // nil: none recorded
	State    *state.State     // nil: no state store (no greylisting; rate limits in process)
	Now      func() time.Time // nil: time.Now; tests move it
}

// methods maps the validated client_identity to the backend's method.
var methods = map[config.Identity]backend.Method{
	config.IdentityNone:    backend.MethodNone,
	config.IdentityXCLIENT: backend.MethodXCLIENT,
	config.IdentityProxyV1: backend.MethodProxyV1,
	config.IdentityProxyV2: backend.MethodProxyV2,
}

// NewRuntime builds the pipeline and the backend settings from cfg, which
// config has validated. Call Start before serving with it and Close when it
// is replaced.
func NewRuntime(cfg *config.Config, sh Shared, log *slog.Logger) (*Runtime, error) {
	env := checks.Env{Resolver: sh.Resolver, Memory: sh.Memory, Log: log, Metrics: sh.Metrics, Now: sh.Now}
	if sh.State != nil {
		env.Store, env.Limiter = sh.State.Store, sh.State.Limiter
	}
	p, err := pipeline.New(cfg, env)
	if err != nil {
		return nil, err
	}
	rt := &Runtime{
		Cfg:      cfg,
		Pipeline: p,
		Shared:   sh,
		Backend: backend.Options{
			Addr:           cfg.Backend.Address,
			Method:         methods[cfg.Backend.ClientIdentity],
			LocalName:      cfg.Hostname,
			DialTimeout:    cfg.Backend.DialTimeout.D(),
			CommandTimeout: cfg.Backend.CommandTimeout.D(),
			DataTimeout:    cfg.Backend.DataTimeout.D(),
		},
	}
	cert, err := cfg.TLS.Certificate()
	if err != nil {
		return nil, cfg.Errorf([]string{"tls", "cert_file"}, "tls: %v", err)
	}
	if cert != nil {
		rt.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	}
	return rt, nil
}

// Start begins the runtime's background work (the DNS lists' self-test).
func (rt *Runtime) Start() { rt.Pipeline.Start() }

// Close stops it; sessions still running under rt go on.
func (rt *Runtime) Close() { rt.Pipeline.Close() }
