package ratelimit

import "context"

// Fallback is a Limiter that asks Primary (Redis, shared by the fleet) and,
// when Primary fails, Secondary (Local): while Redis is down each instance
// still enforces the limit on its own, instead of not at all. The
// Secondary's answer is returned as is; Primary's trouble shows in its
// store's Health and log.
type Fallback struct {
	Primary, Secondary Limiter
}

// Allow implements Limiter.
func (f Fallback) Allow(ctx context.Context, key string, lim Limit, n int) (Result, error) {
	r, err := f.Primary.Allow(ctx, key, lim, n)
	if err == nil {
		return r, nil
	}
	return f.Secondary.Allow(ctx, key, lim, n)
}
