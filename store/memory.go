package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Memory is a Store in process memory, for tests of code that uses a Store
// (and for a throwaway instance). Expired keys are dropped when read and
// swept now and then as keys are written.
type Memory struct {
	now func() time.Time

	mu     sync.Mutex
	m      map[string]memEntry
	writes int // since the last sweep
	closed bool
}

type memEntry struct {
	value   []byte
	expires time.Time // zero: never
}

// memSweepEvery is how many writes pass between sweeps of expired keys.
const memSweepEvery = 4096

// NewMemory returns an empty Memory store reading the time from now (nil:
// time.Now), so that tests can move time forward.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now, m: make(map[string]memEntry)}
}

func (s *Memory) expiry(ttl time.Duration) time.Time {
	if ttl <= 0 {
		return time.Time{}
	}
	return s.now().Add(ttl)
}

// live returns key's entry if it exists and has not expired. s.mu is held.
func (s *Memory) live(key string, now time.Time) (memEntry, bool) {
	e, ok := s.m[key]
	if !ok {
		return e, false
	}
	if !e.expires.IsZero() && !now.Before(e.expires) {
		delete(s.m, key)
		return e, false
	}
	return e, true
}

func (s *Memory) check(key string) error {
	if s.closed {
		return ErrClosed
	}
	if key == "" {
		return ErrEmptyKey
	}
	return nil
}

// wrote counts a write and sweeps expired keys every so often. s.mu is held.
func (s *Memory) wrote() {
	s.writes++
	if s.writes < memSweepEvery {
		return
	}
	s.writes = 0
	now := s.now()
	for k := range s.m {
		s.live(k, now)
	}
}

// Get implements Store.
func (s *Memory) Get(ctx context.Context, key string) ([]byte, error) {
	return first(s.GetMany(ctx, key))
}

// GetMany implements Store.
func (s *Memory) GetMany(ctx context.Context, keys ...string) ([][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]byte, len(keys))
	now := s.now()
	for i, k := range keys {
		if err := s.check(k); err != nil {
			return nil, err
		}
		if e, ok := s.live(k, now); ok {
			out[i] = append([]byte{}, e.value...) // not nil: found
		}
	}
	return out, nil
}

// Set implements Store.
func (s *Memory) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set(key, value, ttl)
}

func (s *Memory) set(key string, value []byte, ttl time.Duration) error {
	if err := s.check(key); err != nil {
		return err
	}
	s.m[key] = memEntry{value: append([]byte{}, value...), expires: s.expiry(ttl)}
	s.wrote()
	return nil
}

// Delete implements Store.
func (s *Memory) Delete(ctx context.Context, keys ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	for _, k := range keys {
		delete(s.m, k)
	}
	return nil
}

// Update implements Store.
func (s *Memory) Update(ctx context.Context, key string, fn UpdateFunc) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(key); err != nil {
		return nil, err
	}
	e, found := s.live(key, s.now())
	var old []byte
	if found {
		old = slices.Clone(e.value)
	}
	v, ttl, err := fn(old, found)
	if err != nil {
		return nil, err
	}
	s.set(key, v, ttl)
	return slices.Clone(v), nil
}

// Incr implements Store.
func (s *Memory) Incr(ctx context.Context, key string, by int64, ttl time.Duration) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.incr(key, by, ttl)
}

func (s *Memory) incr(key string, by int64, ttl time.Duration) (int64, error) {
	if err := s.check(key); err != nil {
		return 0, err
	}
	e, found := s.live(key, s.now())
	n, err := addInt(e.value, found, by)
	if err != nil {
		return 0, fmt.Errorf("store: incr %q: %w", key, err)
	}
	if !found {
		e.expires = s.expiry(ttl)
	}
	s.m[key] = memEntry{value: strconv.AppendInt(nil, n, 10), expires: e.expires}
	s.wrote()
	return n, nil
}

// addInt parses the decimal counter old (0 when not found) and adds by.
func addInt(old []byte, found bool, by int64) (int64, error) {
	if !found {
		return by, nil
	}
	n, err := strconv.ParseInt(string(old), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("value is not an integer")
	}
	return n + by, nil
}

// Scan implements Store. Keys come in sorted order.
func (s *Memory) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
	type kv struct {
		k string
		v []byte
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	now := s.now()
	var all []kv
	for k := range s.m {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if e, ok := s.live(k, now); ok {
			all = append(all, kv{k, slices.Clone(e.value)})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b kv) int { return strings.Compare(a.k, b.k) })
	for _, e := range all {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(e.k, e.v); err != nil {
			return err
		}
	}
	return nil
}

// Apply implements Store.
func (s *Memory) Apply(ctx context.Context, ops []Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	for _, op := range ops {
		var err error
		switch op.Kind {
		case OpSet:
			err = s.set(op.Key, op.Value, op.TTL)
		case OpDelete:
			delete(s.m, op.Key)
		case OpIncr:
			_, err = s.incr(op.Key, op.By, op.TTL)
		default:
			err = fmt.Errorf("store: unknown op kind %d", op.Kind)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Len returns the number of keys held, expired or not.
func (s *Memory) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Health implements Store.
func (s *Memory) Health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// Close implements Store.
func (s *Memory) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.m = nil
	return nil
}
