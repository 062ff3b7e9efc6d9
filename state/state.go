// Package state opens the store mxguard keeps what it learns of clients in
// (reputation, connection-test passes, greylisting, shared rate limits), as
// the configuration says: a bolt file, Redis, or process memory. It is the
// one place that knows which; everything above asks a store.Store.
package state

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/ratelimit"
	"github.com/mxguard/mxguard/store"
)

// State is the opened store, the writer that keeps sessions from waiting
// on it, and the rate limiter that goes with it.
type State struct {
	Store store.Store
	// Async applies writes in the background, bounded: a session never
	// waits for a write.
	Async *store.Async
	// Limiter counts rate limits: in process memory for one instance, in
	// Redis for a fleet.
	Limiter ratelimit.Limiter
	// Shared: the store is shared with other instances (Redis).
	Shared bool
	// Now is the clock the store's users go by.
	Now func() time.Time
}

// Options tune Open for tests.
type Options struct {
	Now    func() time.Time // default time.Now
	Logger *slog.Logger
}

// Open opens the store cfg names. A bolt file that is corrupt, unreadable
// or locked by another process is a clear error here, naming the file.
func Open(cfg *config.Config, o Options) (*State, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c := cfg.State
	s := &State{Now: o.Now}
	switch c.Store {
	case config.StoreRedis:
		r, err := store.OpenRedis(store.RedisOptions{
			Addr: c.RedisAddress, Username: c.RedisUsername, Password: c.RedisPassword, DB: c.RedisDB,
			Prefix: c.Prefix, ReadTimeout: c.ReadTimeout.D(), Logger: o.Logger,
		})
		if err != nil {
			return nil, cfg.Errorf([]string{"state", "redis_address"}, "state: %v", err)
		}
		// Counted in Redis, so a fleet enforces one limit; while Redis is
		// down, each instance counts for itself rather than not at all.
		s.Store, s.Shared = r, true
		s.Limiter = ratelimit.Fallback{Primary: ratelimit.NewRedis(r), Secondary: ratelimit.NewLocal(ratelimit.LocalOptions{Now: o.Now})}
	case config.StoreMemory:
		s.Store = store.NewMemory(o.Now)
	default:
		b, err := store.OpenBolt(c.File, store.BoltOptions{Now: o.Now, Logger: o.Logger})
		if err != nil {
			return nil, cfg.Errorf([]string{"state", "file"}, "state: %v", err)
		}
		s.Store = b
	}
	if s.Limiter == nil {
		s.Limiter = ratelimit.NewLocal(ratelimit.LocalOptions{Now: o.Now})
	}
	s.Async = store.NewAsync(s.Store, c.WriteQueue)
	return s, nil
}

// Close applies the writes still queued and closes the store.
func (s *State) Close() error {
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(s.Async.Close(ctx), s.Store.Close())
}

// Flush waits until the writes queued so far are applied (tests, and
// `mxguard state` before it reads).
func (s *State) Flush() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.Async.Flush(ctx)
}

// Healthy reports whether the store answers, for metrics.
func (s *State) Healthy() bool { return s.Store.Health() == nil }

// String names the store for log lines.
func (s *State) String() string {
	switch st := s.Store.(type) {
	case *store.Redis:
		return fmt.Sprintf("redis %s (prefix %q)", st.Options().Addr, st.Options().Prefix)
	case *store.Bolt:
		return "bolt " + st.Path()
	}
	return "memory"
}

// Check looks at the store cfg names without changing it, for `mxguard
// check-config`: a bolt file that exists is opened and checked (a corrupt
// or unreadable one is an error naming it; one locked by a running mxguard
// is in use, not broken); a file that does not exist yet will be created
// at first start, and is not created here (check-config may run as root,
// and the file must belong to the user mxguard runs as). Redis is not
// dialled. It returns a note for the admin.
func Check(cfg *config.Config) (string, error) {
	c := cfg.State
	switch c.Store {
	case config.StoreRedis:
		return fmt.Sprintf("state: redis at %s, keys prefixed %q (not dialled)", c.RedisAddress, c.Prefix), nil
	case config.StoreMemory:
		return "state: in memory, forgotten when mxguard stops", nil
	}
	if _, err := os.Stat(c.File); errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("state: %s does not exist yet; it is created at first start", c.File), nil
	}
	b, err := store.OpenBolt(c.File, store.BoltOptions{SweepInterval: -1, LockTimeout: time.Second})
	switch {
	case errors.Is(err, store.ErrLocked):
		return fmt.Sprintf("state: %s is in use by a running mxguard (not checked)", c.File), nil
	case err != nil:
		return "", cfg.Errorf([]string{"state", "file"}, "state: %v", err)
	}
	b.Close()
	return fmt.Sprintf("state: %s checked", c.File), nil
}
