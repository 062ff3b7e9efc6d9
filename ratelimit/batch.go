package ratelimit

import "context"

// Request is one bucket of an AllowAll: n tokens from key's bucket under lim.
type Request struct {
	Key string
	Lim Limit
	N   int
}

// BatchLimiter is a Limiter that takes several buckets in one call: on
// Redis one script, one round trip, where a session's stage has up to
// three buckets (address, network, sender domain).
type BatchLimiter interface {
	Limiter
	AllowAll(ctx context.Context, reqs []Request) (int, Result, error)
}

// AllowAll takes from each request's bucket in order and stops at the
// first that refuses, leaving the later ones untouched: it returns that
// one's index and Result, or -1 and the last Result when every bucket
// allowed. A bucket whose Allow fails counts as allowing (limits fail
// open); the error is returned along with the outcome.
func AllowAll(ctx context.Context, l Limiter, reqs []Request) (int, Result, error) {
	if b, ok := l.(BatchLimiter); ok {
		return b.AllowAll(ctx, reqs)
	}
	return allowEach(ctx, l, reqs)
}

func allowEach(ctx context.Context, l Limiter, reqs []Request) (int, Result, error) {
	last, lastErr := Result{Allowed: true}, error(nil)
	for i, q := range reqs {
		r, err := l.Allow(ctx, q.Key, q.Lim, q.N)
		if err != nil {
			lastErr = err
			continue
		}
		if !r.Allowed {
			return i, r, lastErr
		}
		last = r
	}
	return -1, last, lastErr
}

// AllowAll implements BatchLimiter: Primary's answer, or when it fails,
// Secondary's.
func (f Fallback) AllowAll(ctx context.Context, reqs []Request) (int, Result, error) {
	i, r, err := AllowAll(ctx, f.Primary, reqs)
	if err == nil {
		return i, r, nil
	}
	return AllowAll(ctx, f.Secondary, reqs)
}
