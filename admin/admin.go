// Package admin is mxguard's admin HTTP listener: Prometheus metrics at
// /metrics, a readiness check at /healthz, and a read-only page of recent
// decisions at / (one session's full story at /session/<id>), plain
// server-rendered HTML without JavaScript.
//
// It is off unless an address is configured, refuses a non-loopback
// address unless AllowRemote is set, and can ask for HTTP basic auth from
// an htpasswd-style file of bcrypt hashes. Everything on the page that a
// client wrote (HELO, addresses, reasons quoting them, replies) is escaped
// by html/template, and a strict Content-Security-Policy forbids scripts.
package admin

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mxguard/mxguard/decisionlog"
)

// Options configure the admin listener.
type Options struct {
	// Listen is the address to listen on, host:port; "" turns the
	// listener off (Start returns a nil *Server).
	Listen string
	// AllowRemote permits an address that is not loopback.
	AllowRemote bool
	// AuthFile, if set, holds "user:bcrypt-hash" lines (htpasswd -B);
	// every route but /healthz then asks for HTTP basic auth.
	AuthFile string
	// Recent is the ring the page shows; nil shows an empty page.
	Recent *decisionlog.Recent
	// Registry is gathered for /metrics; nil serves 404 there.
	Registry prometheus.Gatherer
	// Ready reports whether mxguard can take mail (the config is loaded,
	// the backend answers); its error is the reason shown with a 503.
	// Nil is always ready. Its result is kept for ReadyTTL.
	Ready func(context.Context) error
	// ReadyTTL is how long a Ready result is reused (default 2s), so a
	// load balancer's polling does not reach the backend each time.
	ReadyTTL time.Duration
	// Log receives the HTTP server's own errors; nil discards them.
	Log *slog.Logger
}

// DefaultReadyTTL is Options.ReadyTTL's default.
const DefaultReadyTTL = 2 * time.Second

// New returns the admin handler: all routes, auth and headers. It reads
// the auth file; a missing or malformed one is an error.
func New(opts Options) (http.Handler, error) {
	var users *userFile
	if opts.AuthFile != "" {
		var err error
		if users, err = loadUsers(opts.AuthFile); err != nil {
			return nil, err
		}
	}
	ttl := opts.ReadyTTL
	if ttl <= 0 {
		ttl = DefaultReadyTTL
	}
	mux := http.NewServeMux()
	p := &pages{recent: opts.Recent}
	mux.HandleFunc("GET /{$}", p.index)
	mux.HandleFunc("GET /session/{id}", p.session)
	mux.Handle("GET /healthz", &health{ready: opts.Ready, ttl: ttl, now: time.Now})
	if opts.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{}))
	}
	var h http.Handler = mux
	if users != nil {
		h = users.require(h, "/healthz")
	}
	return secure(h), nil
}

// secure adds the headers every response carries and refuses every method
// but GET and HEAD: the listener is read-only.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "read-only: GET and HEAD only", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}
