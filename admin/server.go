package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Server is a running admin listener.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// The http.Server's limits: the listener serves small pages to a few
// admins and a scraper; a slow or idle client is cut off.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	closeTimeout      = 5 * time.Second
)

// Start checks the options, listens on opts.Listen and serves in the
// background until Close. With opts.Listen empty the listener is off: it
// returns a nil *Server, whose methods do nothing.
func Start(opts Options) (*Server, error) {
	if opts.Listen == "" {
		return nil, nil
	}
	if err := checkListen(opts.Listen, opts.AllowRemote); err != nil {
		return nil, err
	}
	h, err := New(opts)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if err := checkBound(ln.Addr(), opts.AllowRemote); err != nil {
		ln.Close()
		return nil, err
	}
	errLog := slog.New(slog.DiscardHandler)
	if opts.Log != nil {
		errLog = opts.Log
	}
	s := &Server{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(errLog.With("listener", "admin").Handler(), slog.LevelWarn),
		},
		ln:   ln,
		done: make(chan error, 1),
	}
	if opts.AllowRemote && opts.AuthFile == "" && !ln.Addr().(*net.TCPAddr).IP.IsLoopback() {
		errLog.Warn("the admin listener is open to the network without authentication", "listen", s.Addr())
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr returns the address listened on ("" for a nil Server): with port 0
// in Options.Listen, the port the system chose.
func (s *Server) Addr() string {
	if s == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL returns the listener's base URL, "http://127.0.0.1:9025/".
func (s *Server) URL() string {
	if s == nil {
		return ""
	}
	return "http://" + s.Addr() + "/"
}

// Close stops the listener: requests in progress get a few seconds to
// finish. It returns once the server has stopped.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
