package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// RedisOptions configure a Redis store. Only Addr matters to most sites;
// the zero value of the rest is the default.
type RedisOptions struct {
	// Addr is the server's host:port (default 127.0.0.1:6379).
	Addr string
	// Username and Password authenticate with AUTH when set (Username
	// for a Redis 6 ACL user; without it, the default user).
	Username string
	Password string
	// DB is the database number (SELECT).
	DB int
	// Prefix is prepended to every key, so that sites sharing a server
	// do not mix, e.g. "mxguard:mx.example.org:". Keys given to and
	// returned by the store are without it.
	Prefix string

	// ReadTimeout bounds a Get, and scripts whose answer a session waits
	// for (Eval). Default 100ms.
	ReadTimeout time.Duration
	// WriteTimeout bounds Set, Delete, Update, Incr, Apply and each step
	// of Scan, and dialling. Default 500ms.
	WriteTimeout time.Duration
	// RetryInterval is how often a store that found Redis unavailable
	// tries it again in the background (calls fail at once meanwhile).
	// Default 1s.
	RetryInterval time.Duration
	// PoolSize is the most connections open at once (default: go-redis's,
	// 10 per CPU).
	PoolSize int

	// Logger receives the "state store unavailable" and "state store
	// recovered" messages (default slog.Default()).
	Logger *slog.Logger
}

// Redis is a Store on a Redis server (4.0 or later; tested with 7.0, as in
// Debian 12), shared by every mxguard instance using the same server and
// prefix.
//
// Values are Redis strings with PEXPIRE for their TTL. Update is optimistic:
// it reads the value, computes the new one, and writes it with a Lua
// compare-and-set, retrying while another writer got in first. Incr is
// INCRBY (with PEXPIRE when it creates the key) in one script.
//
// Failures are contained by a circuit breaker. A call that fails for want
// of Redis (refused, reset, timed out) marks the store down: it logs "state
// store unavailable" once at Warn, and every call returns an error wrapping
// ErrUnavailable at once, without touching the network, while a background
// probe PINGs Redis every RetryInterval. When Redis answers, the store logs
// "state store recovered" once at Info and calls go through again. Errors
// that Redis itself returns (a wrong type, a script error) do not trip the
// breaker. A caller's own cancelled context is returned as is.
type Redis struct {
	c    *redis.Client
	opts RedisOptions
	log  *slog.Logger

	down   atomic.Bool
	mu     sync.Mutex
	cause  error     // why it is down
	since  time.Time // when it went down
	quit   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
	once   sync.Once
}

var setRedisLogger sync.Once

// OpenRedis returns a store on the Redis server of opts. It fails only on
// bad options: a server that does not answer at first makes a store that
// is down (Health says why) and that recovers when the server comes.
func OpenRedis(opts RedisOptions) (*Redis, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	// go-redis logs every failed dial on stderr; the breaker says it once.
	setRedisLogger.Do(func() { redis.SetLogger(debugLogger{}) })
	s := &Redis{
		c: redis.NewClient(&redis.Options{
			Addr:     opts.Addr,
			Username: opts.Username,
			Password: opts.Password,
			DB:       opts.DB,
			Protocol: 2,
			// Every call has a context deadline (ContextTimeoutEnabled);
			// the socket timeouts are a backstop.
			ContextTimeoutEnabled: true,
			DialTimeout:           opts.WriteTimeout,
			ReadTimeout:           opts.WriteTimeout,
			WriteTimeout:          opts.WriteTimeout,
			PoolTimeout:           opts.WriteTimeout,
			PoolSize:              opts.PoolSize,
			MaxRetries:            -1, // the breaker decides, not a retry loop
			DialerRetries:         1,
			DisableIdentity:       true,
			MaintNotificationsConfig: &maintnotifications.Config{
				Mode: maintnotifications.ModeDisabled,
			},
		}),
		opts: opts,
		log:  opts.Logger.With("store", "redis", "addr", opts.Addr),
		quit: make(chan struct{}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.WriteTimeout)
	defer cancel()
	if err := s.c.Ping(ctx).Err(); err != nil {
		s.trip(err)
	}
	return s, nil
}

// withDefaults checks o and fills in the defaults.
func (o RedisOptions) withDefaults() (RedisOptions, error) {
	opts := o
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:6379"
	}
	if _, _, err := net.SplitHostPort(opts.Addr); err != nil {
		return o, fmt.Errorf("redis address %q: %w", opts.Addr, err)
	}
	if opts.DB < 0 {
		return o, fmt.Errorf("redis database %d: must be 0 or more", opts.DB)
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 100 * time.Millisecond
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 500 * time.Millisecond
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return opts, nil
}

// debugLogger sends go-redis's own messages to slog at Debug.
type debugLogger struct{}

func (debugLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().Log(ctx, slog.LevelDebug, strings.TrimSpace(fmt.Sprintf(format, v...)), "component", "go-redis")
}

// Key returns key with the store's prefix, as it is named in Redis.
func (s *Redis) Key(key string) string { return s.opts.Prefix + key }

// Client returns the go-redis client. Calls made on it bypass the circuit
// breaker and the key prefix.
func (s *Redis) Client() *redis.Client { return s.c }

// Options returns the options in force (with defaults filled in).
func (s *Redis) Options() RedisOptions { return s.opts }

// do runs fn under the breaker with a deadline of timeout.
func (s *Redis) do(ctx context.Context, timeout time.Duration, fn func(ctx context.Context) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if s.down.Load() {
		return s.Health()
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err := fn(cctx)
	cancel()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound), errors.Is(err, errConflict), errors.As(err, new(*fnError)):
		return err
	case ctx.Err() != nil:
		return ctx.Err() // the caller gave up, not Redis
	case isReplyError(err):
		return fmt.Errorf("redis: %w", err)
	case s.closed.Load():
		return ErrClosed
	}
	s.trip(err)
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// isReplyError reports whether err is an error reply from Redis about
// this one call (the server works), rather than a failure to reach it or
// to use it at all. Replies saying the server cannot serve now (loading,
// a read-only replica) or will not serve us (authentication, ACL, a bad
// database number) count as failures: they hold for every call, and the
// breaker logs them once.
func isReplyError(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	for _, p := range unusable {
		if redis.HasErrorPrefix(err, p) {
			return false
		}
	}
	return true
}

var unusable = []string{
	"LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "MISCONF",
	"NOAUTH", "WRONGPASS", "NOPERM", "invalid password", "AUTH", "Client sent AUTH", "DB index is out of range",
}

// trip marks the store down (logging once) and starts the probe.
func (s *Redis) trip(cause error) {
	s.mu.Lock()
	s.cause = cause
	s.mu.Unlock()
	if !s.down.CompareAndSwap(false, true) {
		return
	}
	s.mu.Lock()
	s.since = time.Now()
	s.mu.Unlock()
	s.log.Warn("state store unavailable", "err", cause, "retry_every", s.opts.RetryInterval)
	s.wg.Add(1)
	go s.probe()
}

// probe PINGs Redis every RetryInterval until it answers or Close.
func (s *Redis) probe() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.RetryInterval)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.WriteTimeout)
		err := s.c.Ping(ctx).Err()
		cancel()
		if err != nil {
			s.mu.Lock()
			s.cause = err
			s.mu.Unlock()
			continue
		}
		s.mu.Lock()
		down := time.Since(s.since)
		s.cause = nil
		s.mu.Unlock()
		s.down.Store(false)
		s.log.Info("state store recovered", "down_for", down.Round(time.Millisecond))
		return
	}
}

// Health implements Store.
func (s *Redis) Health() error {
	if s.closed.Load() {
		return ErrClosed
	}
	if !s.down.Load() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Errorf("%w: redis %s: %v", ErrUnavailable, s.opts.Addr, s.cause)
}

// Get implements Store, within ReadTimeout.
func (s *Redis) Get(ctx context.Context, key string) ([]byte, error) {
	return first(s.GetMany(ctx, key))
}

// GetMany implements Store: one MGET, within ReadTimeout.
func (s *Redis) GetMany(ctx context.Context, keys ...string) ([][]byte, error) {
	full := make([]string, len(keys))
	for i, k := range keys {
		if k == "" {
			return nil, ErrEmptyKey
		}
		full[i] = s.Key(k)
	}
	out := make([][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	err := s.do(ctx, s.opts.ReadTimeout, func(ctx context.Context) error {
		vals, err := s.c.MGet(ctx, full...).Result()
		if err != nil {
			return err
		}
		for i, v := range vals {
			if str, ok := v.(string); ok {
				out[i] = []byte(str)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Set implements Store.
func (s *Redis) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if key == "" {
		return ErrEmptyKey
	}
	return s.do(ctx, s.opts.WriteTimeout, func(ctx context.Context) error {
		return s.c.Set(ctx, s.Key(key), value, redisTTL(ttl)).Err()
	})
}

// redisTTL maps "no expiry" to go-redis's 0.
func redisTTL(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return 0
	}
	if ttl < time.Millisecond {
		return time.Millisecond
	}
	return ttl
}

// Delete implements Store.
func (s *Redis) Delete(ctx context.Context, keys ...string) error {
	full := make([]string, 0, len(keys))
	for _, k := range keys {
		if k != "" {
			full = append(full, s.Key(k))
		}
	}
	if len(full) == 0 {
		return nil
	}
	return s.do(ctx, s.opts.WriteTimeout, func(ctx context.Context) error {
		return s.c.Del(ctx, full...).Err()
	})
}

// casScript writes ARGV[3] (with PX ARGV[4] when positive) if the key
// still holds ARGV[2] (ARGV[1] = "1") or still does not exist (ARGV[1] =
// "0"). It returns 1 when it wrote.
var casScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
`)

// incrScript adds ARGV[1] to KEYS[1], setting PEXPIRE ARGV[2] (when
// positive) if it created the key.
var incrScript = redis.NewScript(`
local existed = redis.call('EXISTS', KEYS[1])
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 and tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return n
`)

var errConflict = errors.New("store: update conflict: the key kept changing under us")

// Update implements Store: optimistic compare-and-set, retried on conflict
// until WriteTimeout.
func (s *Redis) Update(ctx context.Context, key string, fn UpdateFunc) ([]byte, error) {
	if key == "" {
		return nil, ErrEmptyKey
	}
	full := s.Key(key)
	var out []byte
	err := s.do(ctx, s.opts.WriteTimeout, func(ctx context.Context) error {
		for attempt := 0; ; attempt++ {
			old, err := s.c.Get(ctx, full).Bytes()
			found := true
			if errors.Is(err, redis.Nil) {
				found, old, err = false, nil, nil
			}
			if err != nil {
				return err
			}
			// fn gets its own copy: old is also the value the
			// compare-and-set expects.
			v, ttl, err := fn(bytes.Clone(old), found)
			if err != nil {
				return &fnError{err}
			}
			flag := "0"
			if found {
				flag = "1"
			}
			ok, err := casScript.Run(ctx, s.c, []string{full}, flag, old, v, redisTTL(ttl).Milliseconds()).Int()
			if err != nil {
				return err
			}
			if ok == 1 {
				out = v
				return nil
			}
			// Someone else wrote first: back off a little, up to ~2ms.
			select {
			case <-ctx.Done():
				return errConflict
			case <-time.After(time.Duration(attempt%8+1) * 250 * time.Microsecond):
			}
		}
	})
	var fe *fnError
	if errors.As(err, &fe) {
		return nil, fe.err
	}
	return out, err
}

// fnError carries an UpdateFunc's error through the breaker untouched.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

// Incr implements Store.
func (s *Redis) Incr(ctx context.Context, key string, by int64, ttl time.Duration) (int64, error) {
	if key == "" {
		return 0, ErrEmptyKey
	}
	var n int64
	err := s.do(ctx, s.opts.WriteTimeout, func(ctx context.Context) error {
		var err error
		n, err = incrScript.Run(ctx, s.c, []string{s.Key(key)}, by, redisTTL(ttl).Milliseconds()).Int64()
		return err
	})
	return n, err
}

// Apply implements Store: one pipeline, not atomic.
func (s *Redis) Apply(ctx context.Context, ops []Op) error {
	for _, op := range ops {
		if op.Key == "" {
			return ErrEmptyKey
		}
		if op.Kind < OpSet || op.Kind > OpIncr {
			return fmt.Errorf("store: unknown op kind %d", op.Kind)
		}
	}
	if len(ops) == 0 {
		return nil
	}
	return s.do(ctx, s.opts.WriteTimeout, func(ctx context.Context) error {
		cmds, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, op := range ops {
				k := s.Key(op.Key)
				switch op.Kind {
				case OpSet:
					p.Set(ctx, k, op.Value, redisTTL(op.TTL))
				case OpDelete:
					p.Del(ctx, k)
				case OpIncr:
					// EVAL, not EVALSHA: a pipeline cannot reload
					// a script that a restarted Redis forgot.
					incrScript.Eval(ctx, p, []string{k}, op.By, redisTTL(op.TTL).Milliseconds())
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, c := range cmds {
			if err := c.Err(); err != nil {
				return err
			}
		}
		return nil
	})
}

// Scan implements Store with SCAN MATCH and MGET, each step within
// WriteTimeout.
func (s *Redis) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
	match := globEscape(s.Key(prefix)) + "*"
	var cursor uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var keys []string
		var vals []any
		err := s.do(ctx, s.opts.WriteTimeout, func(ctx context.Context) error {
			var err error
			keys, cursor, err = s.c.Scan(ctx, cursor, match, 1000).Result()
			if err != nil || len(keys) == 0 {
				return err
			}
			vals, err = s.c.MGet(ctx, keys...).Result()
			return err
		})
		if err != nil {
			return err
		}
		for i, k := range keys {
			v, ok := vals[i].(string)
			if !ok {
				continue // expired or deleted since SCAN
			}
			if err := fn(strings.TrimPrefix(k, s.opts.Prefix), []byte(v)); err != nil {
				return err
			}
		}
		if cursor == 0 {
			return nil
		}
	}
}

// globEscape escapes the glob characters of a SCAN MATCH pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Eval runs a Lua script with keys prefixed, under the breaker and within
// ReadTimeout (a session waits for its answer). Errors are as for the other
// calls: ErrUnavailable (wrapped) when Redis cannot be reached.
func (s *Redis) Eval(ctx context.Context, script *redis.Script, keys []string, args ...any) (any, error) {
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = s.Key(k)
	}
	var res any
	err := s.do(ctx, s.opts.ReadTimeout, func(ctx context.Context) error {
		var err error
		res, err = script.Run(ctx, s.c, full, args...).Result()
		return err
	})
	return res, err
}

// Close stops the probe and closes the connections.
func (s *Redis) Close() error {
	var err error
	s.once.Do(func() {
		s.closed.Store(true)
		close(s.quit)
		s.wg.Wait()
		err = s.c.Close()
	})
	return err
}

// String describes the store for logs.
func (s *Redis) String() string {
	return "redis " + s.opts.Addr + " db " + strconv.Itoa(s.opts.DB) + " prefix " + strconv.Quote(s.opts.Prefix)
}
