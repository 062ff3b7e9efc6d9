package checks

import (
	"context"
	"iter"
	"log/slog"
	"net"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/metrics"
	"github.com/mxguard/mxguard/ratelimit"
	"github.com/mxguard/mxguard/resolver"
	"github.com/mxguard/mxguard/store"
)

// Name names a check. Each check has one typed constant; it is the Check of
// the check's results, the word an allow list skips it with, and its label
// in logs and metrics.
type Name string

// Stage is a point in an SMTP session where checks run, in session order.
type Stage uint8

const (
	// AtConnect: the greeting wait is over (or skipped). Work a check
	// starts in Start runs during the wait and is collected here.
	AtConnect Stage = iota
	// AtCommand: one command line, before the SMTP parser sees it
	// (postscreen's after-greeting tests).
	AtCommand
	// AtHELO: a HELO/EHLO name not checked before on this connection.
	AtHELO
	// AtMail: MAIL FROM, the start of a transaction.
	AtMail
	// AtRcpt: one RCPT TO.
	AtRcpt
	// AtData: the whole message, before the backend sees any of it.
	AtData
	numStages
)

var stageNames = [numStages]string{"connect", "command", "helo", "mail", "rcpt", "data"}

func (s Stage) String() string {
	if s < numStages {
		return stageNames[s]
	}
	return "stage?"
}

// Check is one unit of filtering. Run observes the session at one of the
// stages the check registered for and reports what it saw; it never writes
// to the client and never decides what to do (the rules do). Run is called
// from the session's goroutine, one stage at a time.
type Check interface {
	Run(ctx context.Context, at Stage, s *Session) []Result
}

// Starter is a check that begins work when a client connects, before the
// greeting wait (DNS look-ups): Start must not block. Its Run at AtConnect
// collects the work.
type Starter interface {
	Start(s *Session)
}

// Closer is a check with background work of its own (the DNS lists'
// self-test): Open starts it with the runtime, Close stops it.
type Closer interface {
	Open()
	Close()
}

// Spec registers a check: its name, where it runs, what it can report, and
// how it is built from the configuration.
type Spec struct {
	Name   Name
	Stages []Stage
	// Outcomes are the outcome names the check reports, as rule files
	// write them: "helo.bare_ip", or a family "dnsbl.*" for names made at
	// run time. A rule naming anything else is a configuration error.
	Outcomes []string
	// Greeting marks a greeting test: it needs the banner held for
	// listen.greet_delay, and runs only when the client was made to wait.
	Greeting bool
	// Test marks a connection test, as postscreen has them: a client that
	// fails one (the check reports anything) loses every pass it had, and
	// takes every test again next time.
	Test bool
	// Passes, when set, makes the check a connection test whose pass is
	// remembered (postscreen's cache): a client that passed it within
	// the TTL the function returns skips it. 0 disables remembering.
	Passes func(cfg *config.Config) time.Duration
	// New builds the check from its block of the configuration, validated
	// once, here; an error names the file and line (env.Config.Errorf).
	// A nil Check with a nil error means the configuration turns it off.
	New func(env *Env) (Check, error)
}

// Runs reports whether the check runs at stage at.
func (s *Spec) Runs(at Stage) bool {
	for _, x := range s.Stages {
		if x == at {
			return true
		}
	}
	return false
}

// Env is what a check may be built from.
type Env struct {
	Config *config.Config
	// Resolver is the one caching resolver; nil when there is no DNS at
	// all (check-config), and then checks that need it build anyway
	// (to validate their block) or turn themselves off.
	Resolver Resolver
	Log      *slog.Logger
	// Memory is the memory of clients; nil for none.
	Memory Memory
	// Metrics records what the check counts (DNS list hits); nil records
	// nothing.
	Metrics *metrics.Metrics
	// Store is the state store (greylisting); nil for none: checks that
	// need one turn themselves off.
	Store store.Store
	// Limiter counts rate limits, in process or shared; nil for none.
	Limiter ratelimit.Limiter
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// Lists is a check that consults DNS lists and knows their health (the
// self-test), for the metrics.
type Lists interface {
	ListHealth() iter.Seq2[string, bool]
}

// Resolver is the caching resolver, as the checks use it.
type Resolver interface {
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	Query(ctx context.Context, name string, qtype uint16) (*resolver.Answer, error)
}
