package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/mxguard/mxguard/admin"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/decisionlog"
	"github.com/mxguard/mxguard/internal/sdnotify"
	"github.com/mxguard/mxguard/metrics"
	"github.com/mxguard/mxguard/proxy"
	"github.com/mxguard/mxguard/reputation"
	"github.com/mxguard/mxguard/resolver"
	"github.com/mxguard/mxguard/state"
)

const defaultConfig = config.DefaultPath

func serveFlags(fs *flag.FlagSet) runner {
	path := fs.String("config", defaultConfig, "configuration file")
	return noArgs("serve", func(_, stderr io.Writer) int { return serve(*path, stderr) })
}

func checkConfigFlags(fs *flag.FlagSet) runner {
	path := fs.String("config", defaultConfig, "configuration file")
	return noArgs("check-config", func(stdout, stderr io.Writer) int { return checkConfig(*path, stdout, stderr) })
}

// serve runs mxguard until SIGTERM or SIGINT. SIGHUP re-reads the config:
// a bad one is logged and the running one stays in force.
func serve(path string, stderr io.Writer) int {
	// Signals are caught from the start: a SIGHUP sent while starting must
	// not kill the process.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	out, err := openLog(cfg.Log.Path, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "mxguard: log: %v\n", err)
		return 1
	}
	defer out.Close()
	level := new(slog.LevelVar)
	level.Set(logLevel(cfg.Log.Level))
	// The decision log goes to its file and, for the admin page, into a
	// ring of the recent sessions.
	recent := decisionlog.NewRecent(cfg.Admin.RecentSessions)
	logger := slog.New(recent.Handler(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level})))
	m := metrics.New(versionString())

	res, err := newResolver(cfg)
	if err != nil {
		fmt.Fprintln(stderr, cfg.Errorf([]string{"dns"}, "%v", err))
		return 1
	}
	st, err := state.Open(cfg, state.Options{Logger: logger})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer st.Close() // after the server: its last writes are applied
	m.SetStoreUp(st.Healthy)
	ctl, err := state.ServeControl(cfg.State.ControlSocket, st, logger)
	if err != nil {
		fmt.Fprintln(stderr, cfg.Errorf([]string{"state", "control_socket"}, "state: %v", err))
		return 1
	}
	defer ctl.Close()
	shared := proxy.Shared{Resolver: res, Memory: newMemory(cfg, st), Metrics: m, State: st}
	rt, err := proxy.NewRuntime(cfg, shared, logger)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	rt.Start()
	srv := proxy.New(rt, logger)
	watch(m, srv, res)
	adm, err := admin.Start(admin.Options{
		Listen: cfg.Admin.Listen, AllowRemote: cfg.Admin.AllowRemote, AuthFile: cfg.Admin.AuthFile,
		Recent: recent, Registry: m.Registry(), Log: logger,
		// Ready when a configuration is loaded and the backend answers.
		Ready: func(ctx context.Context) error { return admin.ProbeSMTP(ctx, srv.Runtime().Cfg.Backend.Address) },
	})
	if err != nil {
		fmt.Fprintln(stderr, cfg.Errorf([]string{"admin"}, "admin: %v", err))
		return 1
	}
	defer adm.Close()
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintf(stderr, "mxguard: %v\n", err)
		return 1
	}
	m.ConfigLoaded()
	logger.Info("started", "version", versionString(), "config", path, "hostname", cfg.Hostname,
		"backend", cfg.Backend.Address, "client_identity", string(cfg.Backend.ClientIdentity))
	sd := sdnotify.New(func(err error) { logger.Warn("telling systemd failed", "err", err.Error()) })
	sd.Ready("listening on " + strings.Join(cfg.Listen.Addresses, ", "))

	for sig := range sigs {
		if sig == syscall.SIGHUP {
			sd.Reloading("reloading " + path)
			out.Reopen() // after logrotate
			cur := srv.Runtime()
			next, err := reload(path, cur, logger)
			m.ConfigReloaded(err == nil)
			if err != nil {
				logger.Error("reload failed, keeping the running config", "config", path, "err", err.Error())
				sd.Ready("reload failed, still running the previous config: " + err.Error())
				continue
			}
			level.Set(logLevel(next.Cfg.Log.Level))
			next.Start()
			srv.Reload(next)
			if r, ok := next.Shared.Resolver.(*resolver.Resolver); ok {
				watch(m, srv, r)
			}
			cur.Close() // its sessions in flight go on
			logger.Info("reloaded", "config", path)
			sd.Ready("reloaded " + path)
			continue
		}
		sd.Stopping("stopping on " + sig.String())
		logger.Info("stopping", "signal", sig.String(), "timeout", cfg.Limits.ShutdownTimeout.D().String())
		ctx, cancel := context.WithTimeout(context.Background(), srv.Runtime().Cfg.Limits.ShutdownTimeout.D())
		err := srv.Shutdown(ctx)
		cancel()
		if err != nil {
			logger.Warn("stopped", "err", err.Error())
			return 1
		}
		logger.Info("stopped")
		return 0
	}
	return 0
}

// watch points the metrics read at scrape time at the server and resolver.
func watch(m *metrics.Metrics, srv *proxy.Server, res *resolver.Resolver) {
	m.SetOpenConnections(srv.Open)
	m.SetStress(srv.Stressed)
	m.SetDNSCache(func() (uint64, uint64) { st := res.Stats(); return st.Hits, st.Misses })
}

// reload builds a runtime from the file at path. The DNS cache and the
// memory of clients are kept when their settings did not change. Settings
// that need a restart are logged.
func reload(path string, cur *proxy.Runtime, logger *slog.Logger) (*proxy.Runtime, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	shared := cur.Shared
	if !sameDNS(cfg.DNS, cur.Cfg.DNS) {
		res, err := newResolver(cfg)
		if err != nil {
			return nil, cfg.Errorf([]string{"dns"}, "%v", err)
		}
		shared.Resolver = res
	}
	if cfg.Reputation != cur.Cfg.Reputation {
		shared.Memory = newMemory(cfg, shared.State) // the same store, read by the new settings
	}
	if cfg.State != cur.Cfg.State {
		logger.Warn("state settings changed: restart mxguard to apply")
		cfg.State = cur.Cfg.State
	}
	rt, err := proxy.NewRuntime(cfg, shared, logger)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(cfg.Listen.Addresses, cur.Cfg.Listen.Addresses) {
		logger.Warn("listen.addresses changed: restart mxguard to apply")
	}
	return rt, nil
}

// newMemory is the memory of clients on the state store.
func newMemory(cfg *config.Config, st *state.State) *reputation.Memory {
	return reputation.New(st.Store, st.Async, reputation.Config{
		HalfLife: cfg.Reputation.HalfLife.D(), Retention: cfg.Reputation.Retention.D(), Now: st.Now,
	})
}

func sameDNS(a, b config.DNS) bool {
	return slices.Equal(a.Resolvers, b.Resolvers) && a.Timeout == b.Timeout && a.Attempts == b.Attempts &&
		a.CacheSize == b.CacheSize && a.MinTTL == b.MinTTL && a.MaxTTL == b.MaxTTL
}

func newResolver(cfg *config.Config) (*resolver.Resolver, error) {
	return resolver.New(resolver.Config{
		Servers:   cfg.DNS.Resolvers,
		Timeout:   cfg.DNS.Timeout.D(),
		Attempts:  cfg.DNS.Attempts,
		CacheSize: cfg.DNS.CacheSize,
		MinTTL:    cfg.DNS.MinTTL.D(),
		MaxTTL:    cfg.DNS.MaxTTL.D(),
	})
}

func checkConfig(path string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(path)
	if err == nil {
		_, err = proxy.NewRuntime(cfg, proxy.Shared{}, nil) // the rules, lists and TLS are checked here
	}
	note := ""
	if err == nil {
		note, err = state.Check(cfg)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	b, err := cfg.Encode()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "# %s: OK; %s. The effective configuration, defaults included:\n", path, note)
	stdout.Write(b)
	return 0
}

func logLevel(l config.Level) slog.Level {
	switch l {
	case config.LevelDebug:
		return slog.LevelDebug
	case config.LevelWarn:
		return slog.LevelWarn
	case config.LevelError:
		return slog.LevelError
	}
	return slog.LevelInfo
}
