package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/mxguard/mxguard/store"
	"github.com/redis/go-redis/v9"
)

// Redis is a Limiter whose buckets live in Redis, shared by every mxguard
// instance using the same server and prefix. Each Allow or AllowAll is one Lua script
// that refills and takes tokens atomically, with the time from Redis's own
// clock (TIME), so that instances whose clocks differ still agree. Buckets
// are hashes ("rl:" + key under the store's prefix) that expire once they
// would be full again.
//
// Calls go through the store's circuit breaker and read timeout: while
// Redis is down, Allow returns at once with Allowed true and an error
// wrapping store.ErrUnavailable.
type Redis struct {
	s *store.Redis
}

// NewRedis returns a Limiter on s.
func NewRedis(s *store.Redis) *Redis { return &Redis{s: s} }

// bucketScript: KEYS the buckets, in order; ARGV for each: burst, rate
// in tokens per millisecond, n. It takes from each in turn and stops at
// the first that refuses, leaving the later ones untouched. Returns
// {index of the refusing bucket from 1 (0: none), its tokens (or the
// last bucket's), retry_ms}. The arithmetic is take's.
var bucketScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens = 0
for i, key in ipairs(KEYS) do
  local burst = tonumber(ARGV[3 * i - 2])
  local rate = tonumber(ARGV[3 * i - 1])
  local n = tonumber(ARGV[3 * i])
  local v = redis.call('HMGET', key, 't', 'l')
  tokens = tonumber(v[1])
  local last = tonumber(v[2])
  local exists = tokens ~= nil and last ~= nil
  if not exists then
    tokens = burst
    last = now
  end
  if now > last then
    tokens = tokens + (now - last) * rate
    last = now
  end
  if tokens > burst then tokens = burst end
  local allowed = 0
  local retry = 0
  if n > 0 and n <= tokens then
    tokens = tokens - n
    allowed = 1
  elseif n == 0 then
    if tokens >= 1 then allowed = 1 end
  elseif n <= burst then
    retry = math.ceil((n - tokens) / rate)
  end
  if exists or tokens < burst then
    redis.call('HSET', key, 't', tostring(tokens), 'l', tostring(last))
    redis.call('PEXPIRE', key, math.ceil((burst - tokens) / rate) + 1000)
  end
  if allowed == 0 then
    return {i, tostring(tokens), retry}
  end
end
return {0, tostring(tokens), 0}
`)

// Allow implements Limiter.
func (r *Redis) Allow(ctx context.Context, key string, lim Limit, n int) (Result, error) {
	_, res, err := r.AllowAll(ctx, []Request{{Key: key, Lim: lim, N: n}})
	return res, err
}

// AllowAll implements BatchLimiter, in one script call.
func (r *Redis) AllowAll(ctx context.Context, reqs []Request) (int, Result, error) {
	if len(reqs) == 0 {
		return -1, Result{Allowed: true}, nil
	}
	keys := make([]string, len(reqs))
	args := make([]any, 0, 3*len(reqs))
	for i, q := range reqs {
		if err := q.Lim.Valid(); err != nil {
			return -1, Result{Allowed: true}, err
		}
		keys[i] = "rl:" + q.Key
		perMs := q.Lim.perNano() * float64(time.Millisecond)
		args = append(args, q.Lim.Burst, strconv.FormatFloat(perMs, 'g', -1, 64), q.N)
	}
	res, err := r.s.Eval(ctx, bucketScript, keys, args...)
	if err != nil {
		return -1, Result{Allowed: true}, err
	}
	vals, ok := res.([]any)
	if !ok || len(vals) != 3 {
		return -1, Result{Allowed: true}, fmt.Errorf("ratelimit: unexpected answer from Redis: %v", res)
	}
	refused, _ := vals[0].(int64)
	tokensText, _ := vals[1].(string)
	retry, _ := vals[2].(int64)
	tokens, err := strconv.ParseFloat(tokensText, 64)
	if err != nil || refused < 0 || refused > int64(len(reqs)) {
		return -1, Result{Allowed: true}, fmt.Errorf("ratelimit: unexpected answer from Redis: %v", vals)
	}
	return int(refused) - 1, Result{
		Allowed:    refused == 0,
		Remaining:  int(tokens + 1e-9),
		RetryAfter: time.Duration(retry) * time.Millisecond,
	}, nil
}
