// Package ratelimit counts events against token-bucket limits: so many per
// period, with a burst. It knows nothing of SMTP; callers name their keys
// ("conn:192.0.2.1", "msg:198.51.100.0/24", "from:example.org").
//
// A limit is written like rspamd's bucket rate, "COUNT / PERIOD": "10 / 1m"
// lets 10 events through at once and then one every 6 seconds (the bucket
// holds 10 tokens and gets 10 back per minute). A burst different from the
// count is added with ", burst N": "10 / 1m, burst 30" lets a quiet client
// send 30 at once, then 10 a minute. Periods are Go durations with a "d"
// for days: 30s, 1m, 1h, 1d, 1h30m; a bare unit means one of it ("10 / m").
//
// Two Limiters: Local counts in process memory, for one instance; Redis
// counts in Redis with a Lua script, so that every instance sharing the
// server enforces one limit together. Fallback{Redis, Local} uses the
// local count while Redis is down. AllowAll takes several buckets at once
// (one round trip on Redis).
package ratelimit

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Limiter takes n tokens from key's bucket under limit lim. The limit is
// given with each call, not fixed per key, so that one Limiter serves every
// kind of limit and a reloaded configuration applies at once; callers
// keep a key's limit the same from call to call.
//
// n = 0 takes nothing and reports whether one token is there. An n larger
// than the burst never passes.
//
// On error (the shared store is down) Allow returns Allowed true: rate
// limits fail open, and the caller decides whether to log or count that.
type Limiter interface {
	Allow(ctx context.Context, key string, lim Limit, n int) (Result, error)
}

// Result is the outcome of Allow.
type Result struct {
	Allowed bool
	// Remaining is how many whole tokens are left after this call.
	Remaining int
	// RetryAfter is, when not Allowed, how long until n tokens are back
	// (0 when n is more than the burst: never).
	RetryAfter time.Duration
}

// Limit is a token bucket: it holds Burst tokens and gets Count back every
// Per.
type Limit struct {
	Count int
	Per   time.Duration
	Burst int
}

// String writes l in the syntax ParseLimit reads.
func (l Limit) String() string {
	s := strconv.Itoa(l.Count) + " / " + formatPeriod(l.Per)
	if l.Burst != l.Count {
		s += ", burst " + strconv.Itoa(l.Burst)
	}
	return s
}

// perNano is the refill rate in tokens per nanosecond.
func (l Limit) perNano() float64 { return float64(l.Count) / float64(l.Per) }

// Valid reports whether l can be used: a positive count, period and burst.
func (l Limit) Valid() error {
	switch {
	case l.Count < 1:
		return fmt.Errorf("ratelimit: count %d: must be 1 or more", l.Count)
	case l.Per <= 0:
		return fmt.Errorf("ratelimit: period %v: must be positive", l.Per)
	case l.Burst < 1:
		return fmt.Errorf("ratelimit: burst %d: must be 1 or more", l.Burst)
	}
	return nil
}

func formatPeriod(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	s := d.String() // 1h30m0s
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

const syntaxHint = `want "COUNT / PERIOD" with an optional ", burst N", e.g. "10 / 1m" or "10 / 1m, burst 30"`

// ParseLimit reads "COUNT / PERIOD" with an optional ", burst N" before or
// after it. Errors name the part that is wrong and say what is wanted; the
// caller adds where the text came from.
func ParseLimit(s string) (Limit, error) {
	var l Limit
	var rate, burst bool
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		switch {
		case part == "":
			return Limit{}, fmt.Errorf("rate limit %q: empty part; %s", s, syntaxHint)
		case strings.HasPrefix(part, "burst"):
			if burst {
				return Limit{}, fmt.Errorf("rate limit %q: burst given twice", s)
			}
			burst = true
			n, err := parseCount(strings.TrimSpace(strings.TrimPrefix(part, "burst")))
			if err != nil {
				return Limit{}, fmt.Errorf("rate limit %q: burst: %v", s, err)
			}
			l.Burst = n
		case strings.Contains(part, "/"):
			if rate {
				return Limit{}, fmt.Errorf("rate limit %q: two rates; %s", s, syntaxHint)
			}
			rate = true
			c, p, _ := strings.Cut(part, "/")
			n, err := parseCount(strings.TrimSpace(c))
			if err != nil {
				return Limit{}, fmt.Errorf("rate limit %q: count: %v", s, err)
			}
			d, err := parsePeriod(strings.TrimSpace(p))
			if err != nil {
				return Limit{}, fmt.Errorf("rate limit %q: period: %v", s, err)
			}
			l.Count, l.Per = n, d
		default:
			return Limit{}, fmt.Errorf("rate limit %q: %q is neither a rate nor a burst; %s", s, part, syntaxHint)
		}
	}
	if !rate {
		return Limit{}, fmt.Errorf("rate limit %q: no rate; %s", s, syntaxHint)
	}
	if !burst {
		l.Burst = l.Count
	}
	return l, nil
}

func parseCount(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%q is not a whole number of 1 or more", s)
	}
	return n, nil
}

// parsePeriod reads a Go duration, with d for days and a bare unit for one
// of it.
func parsePeriod(s string) (time.Duration, error) {
	bad := fmt.Errorf("%q is not a period: want a number and a unit s, m, h or d, e.g. 30s, 1m, 1h, 1d", s)
	if s == "" {
		return 0, bad
	}
	if s == "s" || s == "m" || s == "h" || s == "d" {
		s = "1" + s
	}
	var d time.Duration
	if days, rest, ok := strings.Cut(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > math.MaxInt32 {
			return 0, bad
		}
		d = time.Duration(n) * 24 * time.Hour
		s = rest
		if s == "" {
			s = "0s"
		}
	}
	rest, err := time.ParseDuration(s)
	if err != nil || rest < 0 {
		return 0, bad
	}
	d += rest
	if d <= 0 {
		return 0, fmt.Errorf("%q: the period must be longer than zero", s)
	}
	return d, nil
}

// take runs the token bucket: tokens and last (nanoseconds) are the
// bucket's state, now the time. It returns the new state and the result.
// Redis runs the same arithmetic in Lua (in milliseconds).
func take(lim Limit, tokens float64, last, now int64, n int) (float64, int64, Result) {
	burst := float64(lim.Burst)
	if now > last {
		tokens += float64(now-last) * lim.perNano()
		last = now
	}
	tokens = min(tokens, burst)
	var r Result
	if n > 0 && float64(n) <= tokens {
		tokens -= float64(n)
		r.Allowed = true
	} else if n == 0 {
		r.Allowed = tokens >= 1
	} else if n <= lim.Burst {
		r.RetryAfter = time.Duration(math.Ceil((float64(n) - tokens) / lim.perNano()))
	}
	r.Remaining = int(math.Floor(tokens + 1e-9))
	return tokens, last, r
}
