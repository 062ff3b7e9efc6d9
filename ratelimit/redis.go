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
// instance using the same server and prefix. Each Allow is one Lua script
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

// bucketScript: KEYS[1] the bucket; ARGV burst, rate in tokens per
// millisecond, n. Returns {allowed, tokens, retry_ms}. The arithmetic is
// take's.
var bucketScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 't', 'l')
local tokens = tonumber(v[1])
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
  redis.call('HSET', KEYS[1], 't', tostring(tokens), 'l', tostring(last))
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1000)
end
return {allowed, tostring(tokens), retry}
`)

// Allow implements Limiter.
func (r *Redis) Allow(ctx context.Context, key string, lim Limit, n int) (Result, error) {
	if err := lim.Valid(); err != nil {
		return Result{Allowed: true}, err
	}
	perMs := lim.perNano() * float64(time.Millisecond)
	res, err := r.s.Eval(ctx, bucketScript, []string{"rl:" + key},
		lim.Burst, strconv.FormatFloat(perMs, 'g', -1, 64), n)
	if err != nil {
		return Result{Allowed: true}, err
	}
	vals, ok := res.([]any)
	if !ok || len(vals) != 3 {
		return Result{Allowed: true}, fmt.Errorf("ratelimit: unexpected answer from Redis: %v", res)
	}
	allowed, _ := vals[0].(int64)
	tokensText, _ := vals[1].(string)
	retry, _ := vals[2].(int64)
	tokens, err := strconv.ParseFloat(tokensText, 64)
	if err != nil {
		return Result{Allowed: true}, fmt.Errorf("ratelimit: unexpected token count from Redis: %q", tokensText)
	}
	return Result{
		Allowed:    allowed == 1,
		Remaining:  int(tokens + 1e-9),
		RetryAfter: time.Duration(retry) * time.Millisecond,
	}, nil
}
