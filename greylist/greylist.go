// Package greylist is postgrey's greylisting on a store.Store: the first
// attempt to deliver from a client network, sender and recipient (a
// triplet) is deferred; a retry after the delay and within the retry
// window passes, and so does every later attempt until the triplet has not
// been seen for the max age. A client network whose triplets passed N
// times (at most one counted per hour) is auto-allowed.
//
// It knows nothing of SMTP: the caller turns a Decision into a reply (451
// 4.7.1 when Defer), a header (X-Greylist: delayed N seconds, for Passed)
// or an outcome for its rules, and decides who is exempt (SPF pass, good
// reputation, allow lists) before asking.
//
// When the store fails (Redis down), Check returns the error and no
// decision; the caller is expected to fail open and accept, since deferring
// every sender while the store is away would hold up all mail.
//
// Records are small text values: a triplet is "first,last" and an
// auto-allow counter "count,last", in Unix seconds, so that an admin can
// read them. Their keys are Prefix+"t:"+net+"/"+sender+"/"+recipient and
// Prefix+"a:"+net, e.g. "grey:t:192.0.2.0/24/bounce-#@example.org/bob@example.net".
package greylist

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/store"
)

// Config tunes greylisting. Zero durations and masks take the defaults;
// AutoAllow 0 turns auto-allowing off (DefaultConfig has it on).
type Config struct {
	// Delay is how long a triplet is deferred (default 5 minutes).
	Delay time.Duration
	// RetryWindow is how long after the first attempt a retry still
	// counts (default 2 days); after it the triplet starts over.
	RetryWindow time.Duration
	// MaxAge is how long a passed triplet, or an auto-allow counter, is
	// kept after it was last seen (default 35 days).
	MaxAge time.Duration
	// AutoAllow is how many passed triplets (at most one an hour) make a
	// client network allowed; 0 disables it.
	AutoAllow int
	// IPv4Mask and IPv6Mask group clients into networks (default /24
	// and /64): big senders retry from another address of the same pool.
	IPv4Mask, IPv6Mask int
	// Prefix starts every key (default "grey:").
	Prefix string
}

// DefaultConfig returns postgrey's defaults.
func DefaultConfig() Config {
	return Config{
		Delay:       5 * time.Minute,
		RetryWindow: 48 * time.Hour,
		MaxAge:      35 * 24 * time.Hour,
		AutoAllow:   5,
		IPv4Mask:    24,
		IPv6Mask:    64,
		Prefix:      "grey:",
	}
}

// autoAllowEvery is how often one client network's passes may count
// towards auto-allowing, as in postgrey.
const autoAllowEvery = time.Hour

// refreshEvery is how often a known triplet's last-seen time is written:
// its max age counts from there, so an hour more or less does not matter.
const refreshEvery = time.Hour

// Verdict is what greylisting says of one attempt.
type Verdict int

// The verdicts. First and Early defer; the others accept.
const (
	// First: the triplet is new (or its retry window had passed): defer.
	First Verdict = iota + 1
	// Early: a retry before the delay is over: defer.
	Early
	// Passed: the first retry after the delay: accept, and say how long
	// the message was delayed.
	Passed
	// Known: the triplet passed before: accept.
	Known
	// Allowed: the client network is auto-allowed: accept.
	Allowed
)

var verdictNames = [...]string{First: "first", Early: "early", Passed: "passed", Known: "known", Allowed: "allowed"}

func (v Verdict) String() string {
	if v > 0 && int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// Decision is greylisting's answer for one attempt.
type Decision struct {
	Verdict Verdict
	// Wait is, for First and Early, how long until a retry passes.
	Wait time.Duration
	// Delayed is, for Passed, how long since the first attempt: the N of
	// "X-Greylist: delayed N seconds".
	Delayed time.Duration
	// Net is the client network the triplet is counted for.
	Net netip.Prefix
	// Key is the triplet's key in the store (empty for Allowed).
	Key string
}

// Defer reports whether the attempt is to be deferred.
func (d Decision) Defer() bool { return d.Verdict == First || d.Verdict == Early }

// Greylist decides on attempts, keeping its records in a store. It is safe
// for concurrent use.
type Greylist struct {
	st  store.Store
	cfg Config
}

// New returns a Greylist on st.
func New(st store.Store, cfg Config) (*Greylist, error) {
	def := DefaultConfig()
	if cfg.Delay == 0 {
		cfg.Delay = def.Delay
	}
	if cfg.RetryWindow == 0 {
		cfg.RetryWindow = def.RetryWindow
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = def.MaxAge
	}
	if cfg.IPv4Mask == 0 {
		cfg.IPv4Mask = def.IPv4Mask
	}
	if cfg.IPv6Mask == 0 {
		cfg.IPv6Mask = def.IPv6Mask
	}
	if cfg.Prefix == "" {
		cfg.Prefix = def.Prefix
	}
	switch {
	case cfg.Delay < 0 || cfg.RetryWindow < 0 || cfg.MaxAge < 0:
		return nil, errors.New("greylist: delay, retry window and max age must not be negative")
	case cfg.RetryWindow <= cfg.Delay:
		return nil, fmt.Errorf("greylist: the retry window (%v) must be longer than the delay (%v)", cfg.RetryWindow, cfg.Delay)
	case cfg.MaxAge < cfg.RetryWindow:
		return nil, fmt.Errorf("greylist: the max age (%v) must not be shorter than the retry window (%v)", cfg.MaxAge, cfg.RetryWindow)
	case cfg.AutoAllow < 0:
		return nil, fmt.Errorf("greylist: auto-allow count %d: must be 0 (off) or more", cfg.AutoAllow)
	case cfg.IPv4Mask < 1 || cfg.IPv4Mask > 32:
		return nil, fmt.Errorf("greylist: IPv4 mask /%d: want 1 to 32", cfg.IPv4Mask)
	case cfg.IPv6Mask < 1 || cfg.IPv6Mask > 128:
		return nil, fmt.Errorf("greylist: IPv6 mask /%d: want 1 to 128", cfg.IPv6Mask)
	}
	return &Greylist{st: st, cfg: cfg}, nil
}

// Config returns the configuration in force, with defaults filled in.
func (g *Greylist) Config() Config { return g.cfg }

// Network returns the network a client address is counted in.
func (g *Greylist) Network(client netip.Addr) netip.Prefix {
	client = client.Unmap().WithZone("")
	bits := g.cfg.IPv6Mask
	if client.Is4() {
		bits = g.cfg.IPv4Mask
	}
	p, _ := client.Prefix(bits)
	return p
}

// TripletKey returns the store key of a triplet.
func (g *Greylist) TripletKey(client netip.Addr, sender, rcpt string) string {
	return g.cfg.Prefix + "t:" + g.Network(client).String() + "/" + NormalizeSender(sender) + "/" + normalizeRcpt(rcpt)
}

// AllowKey returns the store key of a client network's auto-allow counter.
func (g *Greylist) AllowKey(client netip.Addr) string {
	return g.cfg.Prefix + "a:" + g.Network(client).String()
}

// Check decides on an attempt from client to deliver mail from sender to
// rcpt at time now, and records it. sender is the envelope sender ("" for
// the null sender), rcpt one recipient: a message to several recipients
// is checked once per recipient. A store failure is returned as is (it
// wraps store.ErrUnavailable when Redis is down) with no decision: fail
// open.
func (g *Greylist) Check(ctx context.Context, client netip.Addr, sender, rcpt string, now time.Time) (Decision, error) {
	if !client.IsValid() {
		return Decision{}, errors.New("greylist: no client address")
	}
	net := g.Network(client)
	d := Decision{Net: net, Key: g.TripletKey(client, sender, rcpt)}
	// The triplet and the network's auto-allow counter in one read (one
	// round trip on Redis).
	keys := []string{d.Key}
	if g.cfg.AutoAllow > 0 {
		keys = append(keys, g.AllowKey(client))
	}
	vs, err := g.st.GetMany(ctx, keys...)
	if err != nil {
		return Decision{}, err
	}
	if g.cfg.AutoAllow > 0 && g.autoAllowed(ctx, client, vs[1], now) {
		return Decision{Verdict: Allowed, Net: net}, nil
	}
	// A triplet that passed before and was seen within the hour needs no
	// write: the read decides it (most mail), and the store is spared a
	// commit per message.
	if first, last, ok := parsePair(vs[0]); ok && last-first >= secs(g.cfg.Delay) && now.Unix()-last < secs(refreshEvery) {
		d.Verdict = Known
		return d, nil
	}
	_, err = g.st.Update(ctx, d.Key, func(old []byte, found bool) ([]byte, time.Duration, error) {
		var ttl time.Duration
		d.Verdict, d.Wait, d.Delayed, ttl, old = g.decide(old, found, now)
		return old, ttl, nil
	})
	if err != nil {
		return Decision{}, err
	}
	if d.Verdict == Passed && g.cfg.AutoAllow > 0 {
		// Bookkeeping: a failure here only delays auto-allowing.
		g.countPass(ctx, client, now)
	}
	return d, nil
}

// decide is postgrey's logic for one triplet record: it returns the
// verdict, the wait or the delay, and the record to store with its TTL.
func (g *Greylist) decide(old []byte, found bool, now time.Time) (v Verdict, wait, delayed, ttl time.Duration, rec []byte) {
	t := now.Unix()
	first, last, ok := parsePair(old)
	if !found || !ok || t-last > secs(g.cfg.MaxAge) {
		first, last = t, t
	}
	passedBefore := last-first >= secs(g.cfg.Delay)
	if !passedBefore && t-first > secs(g.cfg.RetryWindow) {
		first = t // the first retry came too late: start over
	}
	left := secs(g.cfg.Delay) - (t - first)
	switch {
	case left > 0 && first == t:
		v, wait = First, time.Duration(left)*time.Second
	case left > 0:
		v, wait = Early, time.Duration(left)*time.Second
	case passedBefore:
		v = Known
	default:
		v, delayed = Passed, time.Duration(t-first)*time.Second
	}
	if left > 0 {
		ttl = time.Duration(first+secs(g.cfg.RetryWindow)-t+1) * time.Second
	} else {
		ttl = g.cfg.MaxAge
	}
	return v, wait, delayed, ttl, formatPair(first, t)
}

// autoAllowed reports whether client's network, whose counter is v (nil:
// none), has passed often enough, and notes (at most once an hour) that it
// was seen, to keep its counter alive.
func (g *Greylist) autoAllowed(ctx context.Context, client netip.Addr, v []byte, now time.Time) bool {
	count, last, ok := parsePair(v)
	if !ok || count < int64(g.cfg.AutoAllow) || now.Unix()-last > secs(g.cfg.MaxAge) {
		return false
	}
	if now.Unix() >= last+secs(autoAllowEvery) {
		g.countPass(ctx, client, now) // for statistics, as postgrey
	}
	return true
}

// countPass adds one to the network's counter unless it counted one in the
// last hour.
func (g *Greylist) countPass(ctx context.Context, client netip.Addr, now time.Time) {
	t := now.Unix()
	g.st.Update(ctx, g.AllowKey(client), func(old []byte, found bool) ([]byte, time.Duration, error) {
		count, last, ok := parsePair(old)
		switch {
		case !found || !ok || t-last > secs(g.cfg.MaxAge):
			count, last = 1, t
		case t >= last+secs(autoAllowEvery):
			count, last = count+1, t
		}
		return formatPair(count, last), g.cfg.MaxAge, nil
	})
}

func secs(d time.Duration) int64 { return int64(d / time.Second) }

func formatPair(a, b int64) []byte {
	return strconv.AppendInt(append(strconv.AppendInt(nil, a, 10), ','), b, 10)
}

func parsePair(v []byte) (a, b int64, ok bool) {
	x, y, found := strings.Cut(string(v), ",")
	if !found {
		return 0, 0, false
	}
	a, err1 := strconv.ParseInt(x, 10, 64)
	b, err2 := strconv.ParseInt(y, 10, 64)
	return a, b, err1 == nil && err2 == nil
}
