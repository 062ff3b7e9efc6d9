package admin_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/mxguard/mxguard/admin"
	"github.com/mxguard/mxguard/decisionlog"
	"github.com/mxguard/mxguard/metrics"
)

// How mxguard serve wires the admin listener: the metrics, the ring of
// recent sessions behind the decision log's handler, and a readiness
// check that the backend answers.
func ExampleStart() {
	m := metrics.New("1.0.0")
	recent := decisionlog.NewRecent(1000) // [admin] recent_sessions
	logger := slog.New(recent.Handler(slog.NewJSONHandler(os.Stdout, nil)))
	backend := "127.0.0.1:10025"

	srv, err := admin.Start(admin.Options{
		Listen:   "127.0.0.1:9025",              // [admin] listen; "" = off (srv is nil, and Close a no-op)
		AuthFile: "/etc/mxguard/admin.htpasswd", // [admin] auth_file; "" = no auth
		Recent:   recent,
		Registry: m.Registry(),
		Ready: func(ctx context.Context) error {
			return admin.ProbeSMTP(ctx, backend) // and: is a configuration loaded?
		},
		Log: logger,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err) // a bad address or auth file: refuse to start
		return
	}
	defer srv.Close()
	m.ConfigLoaded()
	logger.Info("started", "admin", srv.URL())
}
