package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// LocalOptions tune a Local limiter. The zero value is the default.
type LocalOptions struct {
	// MaxKeys bounds the buckets held (default 100000). Past it, buckets
	// that have filled up again are forgotten first (forgetting a full
	// bucket changes nothing); if that is not enough, arbitrary buckets
	// go, which forgives their clients.
	MaxKeys int
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// Local is a Limiter in process memory, for a single instance. It is
// sharded so that concurrent sessions rarely wait for each other.
type Local struct {
	now      func() time.Time
	perShard int
	seed     maphash.Seed
	shards   [localShards]localShard
}

const localShards = 64

type localShard struct {
	mu sync.Mutex
	m  map[string]*bucket
}

type bucket struct {
	tokens float64
	last   int64 // Unix nanoseconds of the last refill
	full   int64 // when the bucket will be full again
}

// NewLocal returns an empty Local limiter.
func NewLocal(opts LocalOptions) *Local {
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = 100_000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Local{
		now:      opts.Now,
		perShard: max(1, opts.MaxKeys/localShards),
		seed:     maphash.MakeSeed(),
	}
	for i := range l.shards {
		l.shards[i].m = make(map[string]*bucket)
	}
	return l
}

// Allow implements Limiter. It never fails.
func (l *Local) Allow(ctx context.Context, key string, lim Limit, n int) (Result, error) {
	if err := lim.Valid(); err != nil {
		return Result{Allowed: true}, err
	}
	now := l.now().UnixNano()
	sh := &l.shards[maphash.String(l.seed, key)%localShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b, ok := sh.m[key]
	if !ok {
		b = &bucket{tokens: float64(lim.Burst), last: now}
	}
	tokens, last, r := take(lim, b.tokens, b.last, now, n)
	if !ok && tokens >= float64(lim.Burst) {
		return r, nil // still full: nothing worth keeping
	}
	b.tokens, b.last = tokens, last
	b.full = now + int64((float64(lim.Burst)-tokens)/lim.perNano())
	if !ok {
		if len(sh.m) >= l.perShard {
			sh.evict(now, l.perShard)
		}
		sh.m[key] = b
	}
	return r, nil
}

// evict makes room in a full shard: buckets that are full again go first,
// then arbitrary ones down to 90% of the bound.
func (sh *localShard) evict(now int64, bound int) {
	for k, b := range sh.m {
		if b.full <= now {
			delete(sh.m, k)
		}
	}
	target := bound * 9 / 10
	for k := range sh.m {
		if len(sh.m) <= target {
			break
		}
		delete(sh.m, k)
	}
}

// Len returns the number of buckets held.
func (l *Local) Len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
