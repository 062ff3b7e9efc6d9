package store

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// logRecorder is a slog.Handler that keeps the messages logged.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Level.String()+" "+r.Message)
	return nil
}

func (h *logRecorder) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

func (h *logRecorder) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.msgs)
}

const (
	testReadTimeout  = 100 * time.Millisecond
	testWriteTimeout = 300 * time.Millisecond
	testRetry        = 200 * time.Millisecond
)

func openTestRedis(t *testing.T, addr string, log *logRecorder) *Redis {
	t.Helper()
	s, err := OpenRedis(RedisOptions{
		Addr:          addr,
		Prefix:        "mxguard:test:",
		ReadTimeout:   testReadTimeout,
		WriteTimeout:  testWriteTimeout,
		RetryInterval: testRetry,
		Logger:        slog.New(log),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitRecovered waits up to 5s for the store to answer again.
func waitRecovered(t *testing.T, s *Redis) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		_, err := s.Get(context.Background(), "probe")
		if errors.Is(err, ErrNotFound) {
			return time.Since(start)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("not recovered 5s after Redis came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// callsFailFast makes every kind of call while Redis is unusable: each
// must return ErrUnavailable within its timeout, and, once the store knows,
// at once.
func callsFailFast(t *testing.T, s *Redis) {
	t.Helper()
	ctx := context.Background()
	calls := []struct {
		name  string
		limit time.Duration
		call  func() error
	}{
		{"Get", testReadTimeout, func() error { _, err := s.Get(ctx, "k"); return err }},
		{"Set", testWriteTimeout, func() error { return s.Set(ctx, "k", []byte("v"), time.Minute) }},
		{"Delete", testWriteTimeout, func() error { return s.Delete(ctx, "k") }},
		{"Incr", testWriteTimeout, func() error { _, err := s.Incr(ctx, "n", 1, time.Minute); return err }},
		{"Update", testWriteTimeout, func() error {
			_, err := s.Update(ctx, "k", TTL(time.Minute, func([]byte, bool) ([]byte, error) { return []byte("v"), nil }))
			return err
		}},
		{"Apply", testWriteTimeout, func() error { return s.Apply(ctx, []Op{{Kind: OpSet, Key: "k"}}) }},
		{"Scan", testWriteTimeout, func() error { return s.Scan(ctx, "", func(string, []byte) error { return nil }) }},
		{"Eval", testReadTimeout, func() error { _, err := s.Eval(ctx, redis.NewScript("return 1"), nil); return err }},
	}
	const slack = 200 * time.Millisecond // the race detector and a busy machine
	var fast time.Duration
	for round := range 50 {
		for _, c := range calls {
			start := time.Now()
			err := c.call()
			took := time.Since(start)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("round %d: %s = %v, want ErrUnavailable", round, c.name, err)
			}
			if took > c.limit+slack {
				t.Errorf("round %d: %s took %v, more than its timeout %v", round, c.name, took, c.limit)
			}
			if round > 0 {
				fast = max(fast, took)
			}
		}
	}
	if fast > testReadTimeout/2 { // in practice well under a millisecond
		t.Errorf("with the store known down, the slowest call took %v; want it immediate", fast)
	}
	t.Logf("while down: slowest call after the first round %v", fast)
}

// TestRedisDown kills Redis mid-run: calls fail fast with ErrUnavailable,
// "unavailable" is logged once, and the store recovers by itself when
// Redis is back, logging that once too.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	log := &logRecorder{}
	s := openTestRedis(t, srv.Addr, log)
	ctx := context.Background()
	if err := s.Set(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Health(); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	callsFailFast(t, s)
	if err := s.Health(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Health while down = %v", err)
	}
	time.Sleep(3 * testRetry) // the probe fails a few times meanwhile
	if n := log.count("WARN state store unavailable"); n != 1 {
		t.Errorf("logged unavailable %d times, want once: %q", n, log.all())
	}

	srv.Restart()
	took := waitRecovered(t, s)
	t.Logf("recovered %v after Redis restarted", took)
	if err := s.Health(); err != nil {
		t.Errorf("Health after recovery = %v", err)
	}
	if err := s.Set(ctx, "k", []byte("again"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Incr(ctx, "n", 1, time.Minute); err != nil || n != 1 { // the script cache is empty again
		t.Fatalf("Incr after restart = %d, %v", n, err)
	}
	if n := log.count("INFO state store recovered"); n != 1 {
		t.Errorf("logged recovered %d times, want once: %q", n, log.all())
	}
	if n := log.count("WARN state store unavailable"); n != 1 {
		t.Errorf("logged unavailable %d times in all: %q", n, log.all())
	}

	// A second outage is logged again, once.
	srv.Stop()
	s.Get(ctx, "k")
	s.Get(ctx, "k")
	srv.Restart()
	waitRecovered(t, s)
	if n := log.count("WARN state store unavailable"); n != 2 {
		t.Errorf("after two outages, logged unavailable %d times: %q", n, log.all())
	}
}

// TestRedisSlow pauses Redis (CLIENT PAUSE): a read gives up after the
// read timeout, the store is marked down, and it recovers when the pause
// ends.
func TestRedisSlow(t *testing.T) {
	srv := redistest.Start(t)
	log := &logRecorder{}
	s := openTestRedis(t, srv.Addr, log)
	ctx := context.Background()
	s.Set(ctx, "k", []byte("v"), time.Minute)

	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "1500", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	callsFailFast(t, s)
	if n := log.count("WARN state store unavailable"); n != 1 {
		t.Errorf("logged unavailable %d times, want once: %q", n, log.all())
	}
	took := waitRecovered(t, s)
	t.Logf("recovered %v after the pause began", time.Since(paused))
	_ = took
	if got := mustGet(t, s, "k"); got != "v" {
		t.Errorf("k = %q after the pause", got)
	}
}

// TestRedisDownAtOpen: a server that is not there yet is no error at
// open; the store is down, and comes up with the server.
func TestRedisDownAtOpen(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop()
	log := &logRecorder{}
	start := time.Now()
	s := openTestRedis(t, srv.Addr, log)
	if took := time.Since(start); took > testWriteTimeout+400*time.Millisecond {
		t.Errorf("OpenRedis took %v with Redis down", took)
	}
	if err := s.Health(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Health = %v", err)
	}
	if _, err := s.Get(context.Background(), "k"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get = %v", err)
	}
	srv.Restart()
	waitRecovered(t, s)
	if log.count("WARN state store unavailable") != 1 || log.count("INFO state store recovered") != 1 {
		t.Errorf("log: %q", log.all())
	}
}

// TestRedisCallerCancel: a caller's own cancelled context is not Redis's
// fault.
func TestRedisCallerCancel(t *testing.T) {
	srv := redistest.Start(t)
	s := openTestRedis(t, srv.Addr, &logRecorder{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Get(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context = %v", err)
	}
	if err := s.Health(); err != nil {
		t.Errorf("Health = %v", err)
	}
}

func TestRedisOptions(t *testing.T) {
	for _, tc := range []struct {
		opts RedisOptions
		want string // error, or the address in force
	}{
		{RedisOptions{}, "127.0.0.1:6379"},
		{RedisOptions{Addr: "[::1]:6380"}, "[::1]:6380"},
		{RedisOptions{Addr: "localhost"}, `redis address "localhost": address localhost: missing port in address`},
		{RedisOptions{Addr: "127.0.0.1:6379", DB: -1}, "redis database -1: must be 0 or more"},
	} {
		o, err := tc.opts.withDefaults()
		got := o.Addr
		if err != nil {
			got = err.Error()
		} else if o.ReadTimeout != 100*time.Millisecond || o.WriteTimeout != 500*time.Millisecond || o.RetryInterval != time.Second || o.Logger == nil {
			t.Errorf("defaults of %+v: %+v", tc.opts, o)
		}
		if got != tc.want {
			t.Errorf("withDefaults(%+v) = %q, want %q", tc.opts, got, tc.want)
		}
	}
	if _, err := OpenRedis(RedisOptions{Addr: "nonsense"}); err == nil {
		t.Error("OpenRedis with a bad address: no error")
	}
}

// TestRedisPrefix: two sites on one server do not see each other's keys.
func TestRedisPrefix(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	open := func(prefix string) *Redis {
		s, err := OpenRedis(RedisOptions{Addr: srv.Addr, Prefix: prefix, Logger: slog.New(&logRecorder{})})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open("mxguard:a.example:"), open("mxguard:b.example:")
	a.Set(ctx, "grey:k", []byte("A"), time.Minute)
	b.Set(ctx, "grey:k", []byte("B"), time.Minute)
	if got := mustGet(t, a, "grey:k"); got != "A" {
		t.Errorf("a sees %q", got)
	}
	var keys []string
	a.Scan(ctx, "", func(k string, _ []byte) error { keys = append(keys, k); return nil })
	if !slices.Equal(keys, []string{"grey:k"}) {
		t.Errorf("a's Scan = %q", keys)
	}
	raw, err := a.Client().Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(raw)
	if want := []string{"mxguard:a.example:grey:k", "mxguard:b.example:grey:k"}; !slices.Equal(raw, want) {
		t.Errorf("keys in Redis = %q, want %q", raw, want)
	}
	if ttl := a.Client().PTTL(ctx, "mxguard:a.example:grey:k").Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("PTTL = %v", ttl)
	}
	res, err := a.Eval(ctx, redis.NewScript(`return redis.call('GET', KEYS[1])`), []string{"grey:k"})
	if err != nil || res != "A" {
		t.Errorf("Eval = %v, %v", res, err)
	}
}

// TestRedisAuth: the right password works; a wrong or missing one makes
// the store unavailable, logged once with Redis's reason.
func TestRedisAuth(t *testing.T) {
	srv := redistest.Start(t, "--requirepass", "secret")
	ctx := context.Background()
	for _, tc := range []struct {
		name, password string
		ok             bool
		log            string
	}{
		{"right", "secret", true, ""},
		{"wrong", "guess", false, "WRONGPASS"},
		{"missing", "", false, "NOAUTH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf strings.Builder
			var mu sync.Mutex
			s, err := OpenRedis(RedisOptions{Addr: srv.Addr, Password: tc.password, RetryInterval: time.Hour,
				Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for range 3 {
				err = s.Set(ctx, "k", []byte("v"), time.Minute)
			}
			if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Set = %v", err)
			}
			mu.Lock()
			logged := buf.String()
			mu.Unlock()
			if n := strings.Count(logged, "state store unavailable"); tc.ok && n != 0 || !tc.ok && (n != 1 || !strings.Contains(logged, tc.log)) {
				t.Errorf("log: %s", logged)
			}
		})
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
