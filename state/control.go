package state

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The control socket: while mxguard runs, the bolt file is locked, so
// `mxguard state` asks the running mxguard over a unix socket (mode 0660,
// in its runtime directory) to run the command on its store. It is plain
// HTTP: GET /state/show?target=…, /state/top?n=…, POST /state/forget.

// Control is the control socket's server.
type Control struct {
	srv  *http.Server
	path string
}

// ServeControl listens on the unix socket at path for the admin commands.
// An empty path is off (a nil Control). A stale socket file left by a
// crash is replaced; one a running mxguard answers on is an error.
func ServeControl(path string, s *State, log *slog.Logger) (*Control, error) {
	if path == "" {
		return nil, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another mxguard is answering on it", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	os.Chmod(path, 0o660)
	mux := http.NewServeMux()
	run := func(op string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
			defer cancel()
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if err := s.Run(ctx, op, r.FormValue("target"), atoi(r.FormValue("n")), w); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintln(w, err)
			}
		}
	}
	mux.HandleFunc("GET /state/show", run("show"))
	mux.HandleFunc("GET /state/top", run("top"))
	mux.HandleFunc("POST /state/forget", run("forget"))
	c := &Control{path: path, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("control socket stopped", "path", path, "err", err.Error())
		}
	}()
	return c, nil
}

// Close stops the control socket and removes it.
func (c *Control) Close() error {
	if c == nil {
		return nil
	}
	err := c.srv.Close()
	os.Remove(c.path)
	return err
}

// Run runs an admin command on the store: show TARGET, forget TARGET, top
// with n.
func (s *State) Run(ctx context.Context, op, target string, n int, w io.Writer) error {
	switch op {
	case "top":
		return s.Top(ctx, max(n, 1), w)
	case "show", "forget":
		t, err := ParseTarget(target)
		if err != nil {
			return err
		}
		if op == "show" {
			s.Flush() // what sessions have queued is shown too
			return s.Show(ctx, t, w)
		}
		return s.Forget(ctx, t, w)
	}
	return fmt.Errorf("unknown state command %q: want show, forget or top", op)
}

// Ask runs an admin command in the mxguard answering on the control socket
// at path. ok is false when none answers there (then the caller opens the
// store itself).
func Ask(path, op, target string, n int, w io.Writer) (ok bool, err error) {
	if path == "" {
		return false, nil
	}
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	q := url.Values{"target": {target}, "n": {strconv.Itoa(n)}}.Encode()
	method := http.MethodGet
	if op == "forget" {
		method = http.MethodPost
	}
	req, _ := http.NewRequest(method, "http://mxguard/state/"+op+"?"+q, nil)
	resp, err := client.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return false, nil // nobody there
		}
		return true, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return true, errors.New(string(b))
	}
	_, err = io.Copy(w, resp.Body)
	return true, err
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
