// Command smtpload is an SMTP load generator: it sends N messages over C
// concurrent connections to any SMTP server (mxguard, its backend, Postfix's
// smtp-sink) and reports messages/s, transaction latency percentiles, and the
// refusals and errors it met. In idle mode it opens K connections, reads
// their greetings and holds them, reporting how many were accepted and greeted.
//
//	smtpload -addr 127.0.0.1:2525 -n 5000 -c 20 -per-conn 1 -size 1024
//	smtpload -addr 127.0.0.1:2525 -n 5000 -c 20 -per-conn 20 -src 127.0.0.2,127.0.0.3 -json
//	smtpload -addr 127.0.0.1:2525 -idle 10000 -hold 30s -src 127.0.0.2,127.0.0.3
//
// The client is built to stay out of the way of what it measures: one
// goroutine per connection, the message built (and DKIM-signed) once,
// buffers reused, no allocation per command on the hot path.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"
)

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

// cli parses the flags, runs the load and prints the result. It returns the
// exit status: 0 when every message (or idle connection) got through, 1 when
// some were refused or failed, 2 on a usage or setup error.
func cli(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintf(stderr, "smtpload: %v\n", err)
		return 2
	}
	if cur, max, err := raiseNoFile(); err != nil {
		fmt.Fprintf(stderr, "smtpload: raising RLIMIT_NOFILE: %v\n", err)
	} else if cfg.Idle > 0 && uint64(cfg.Idle)+64 > cur {
		fmt.Fprintf(stderr, "smtpload: warning: RLIMIT_NOFILE is %d (hard %d), too low for %d idle connections\n",
			cur, max, cfg.Idle)
	}
	cfg.Progress = stderr
	res, err := run(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "smtpload: %v\n", err)
		return 2
	}
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "smtpload: %v\n", err)
			return 2
		}
	} else {
		res.WriteText(stdout)
	}
	if res.Refused > 0 || res.Errors > 0 {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("smtpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: smtpload -addr HOST:PORT [flags]\n\n"+
			"Load mode (default): send -n messages over -c concurrent connections.\n"+
			"Idle mode (-idle K): open K connections, read the greetings, hold them for -hold.\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "SMTP server `host:port`")
	fs.IntVar(&cfg.N, "n", cfg.N, "messages to send")
	fs.IntVar(&cfg.C, "c", cfg.C, "concurrent connections (idle mode: concurrent dials)")
	fs.IntVar(&cfg.PerConn, "per-conn", cfg.PerConn, "messages per connection (1 = a new connection for each; 0 = no limit)")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "message size in `bytes`, headers included")
	fs.StringVar(&cfg.Helo, "helo", cfg.Helo, "EHLO name")
	fs.StringVar(&cfg.From, "from", cfg.From, "MAIL FROM address")
	to := fs.String("to", strings.Join(cfg.To, ","), "RCPT TO addresses, comma-separated")
	src := fs.String("src", "", "local source `IPs` to dial from, comma-separated, used round-robin (e.g. 127.0.0.2,127.0.0.3)")
	fs.StringVar(&cfg.DKIMKey, "dkim-key", "", "sign messages with this PEM private key `file` (RSA or Ed25519)")
	fs.StringVar(&cfg.DKIMDomain, "dkim-domain", "", "DKIM signing domain (d=); default: the -from domain")
	fs.StringVar(&cfg.DKIMSelector, "dkim-selector", cfg.DKIMSelector, "DKIM selector (s=)")
	fs.BoolVar(&cfg.DKIMEach, "dkim-each", false, "sign every message on its own (its Message-ID signed too) instead of once for all; costs client CPU")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "limit on each connect, read and write")
	fs.BoolVar(&cfg.Pipelining, "pipelining", cfg.Pipelining, "send MAIL, RCPT and DATA in one go when the server offers PIPELINING")
	fs.IntVar(&cfg.Idle, "idle", 0, "idle mode: open `K` connections and hold them")
	fs.DurationVar(&cfg.Hold, "hold", cfg.Hold, "idle mode: how long to hold the connections once all are open")
	fs.BoolVar(&cfg.JSON, "json", false, "print the result as one JSON object")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg.To = splitList(*to)
	for _, s := range splitList(*src) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return cfg, fmt.Errorf("-src: bad address %q", s)
		}
		cfg.Src = append(cfg.Src, a)
	}
	return cfg, cfg.check()
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Config is one run's settings.
type Config struct {
	Addr       string
	N          int // messages
	C          int // concurrent connections
	PerConn    int // messages per connection; 0 = unlimited
	Size       int // bytes per message, headers included
	Helo       string
	From       string
	To         []string
	Src        []netip.Addr // local addresses to dial from, round-robin
	Timeout    time.Duration
	Pipelining bool

	DKIMKey      string // PEM file; "" = no signing
	DKIMDomain   string
	DKIMSelector string
	DKIMEach     bool // sign every message separately

	Idle int           // idle mode: connections to open
	Hold time.Duration // idle mode: how long to hold them

	JSON bool
	// Progress receives one-line notes while running (idle mode says when
	// it starts holding); nil = none.
	Progress io.Writer
}

// DefaultConfig returns the flag defaults.
func DefaultConfig() Config {
	return Config{
		Addr:         "127.0.0.1:25",
		N:            1000,
		C:            10,
		PerConn:      1,
		Size:         1024,
		Helo:         "mail.smtpload.example",
		From:         "load@smtpload.example",
		To:           []string{"postmaster@example.net"},
		Timeout:      30 * time.Second,
		Pipelining:   true,
		DKIMSelector: "smtpload",
		Hold:         10 * time.Second,
	}
}

func (c *Config) check() error {
	switch {
	case c.Addr == "":
		return fmt.Errorf("-addr is required")
	case c.Idle < 0:
		return fmt.Errorf("-idle must not be negative")
	case c.C < 1:
		return fmt.Errorf("-c must be at least 1")
	case c.Idle > 0:
		return nil
	case c.N < 1:
		return fmt.Errorf("-n must be at least 1")
	case c.PerConn < 0:
		return fmt.Errorf("-per-conn must not be negative")
	case c.Size < 0:
		return fmt.Errorf("-size must not be negative")
	case len(c.To) == 0:
		return fmt.Errorf("-to: at least one recipient is needed")
	case c.Timeout <= 0:
		return fmt.Errorf("-timeout must be positive")
	case c.DKIMKey == "" && c.DKIMEach:
		return fmt.Errorf("-dkim-each needs -dkim-key")
	}
	return nil
}
