// Package store is mxguard's memory that lasts: a small key-value interface
// with per-key expiry, and three implementations of it.
//
//   - Bolt (OpenBolt) keeps the state in one file (go.etcd.io/bbolt) that
//     survives restarts and crashes; it is the default for one instance.
//   - Redis (OpenRedis) keeps it in a Redis server that a fleet of mxguard
//     instances shares. Keys get a per-site prefix. Calls fail fast with
//     ErrUnavailable while Redis is down or slow, and the store recovers by
//     itself when Redis is back.
//   - Memory (NewMemory) keeps it in process memory with an injectable
//     clock, for tests of code that uses a Store.
//
// The store knows nothing of SMTP: keys and values are opaque. Callers name
// their keys with a short prefix per kind ("grey:", "rep:", …) so that Scan
// can list one kind.
//
// Sessions must never wait on a slow write: they read (Get, bounded by a
// short timeout on Redis) and write through an Async writer, which queues
// writes, applies them in batches in the background and drops them when its
// queue is full. Update and Incr return a result and so are synchronous;
// use them where the answer matters (greylisting, rate limits) and accept
// their bounded wait, or queue them on Async where it does not.
//
// When a Store returns ErrUnavailable (Redis down), callers are expected to
// fail open: treat the client as unknown, skip greylisting, do not limit.
package store

import (
	"context"
	"errors"
	"time"
)

// Store is a key-value store with per-key expiry. Implementations are safe
// for concurrent use.
//
// A ttl of zero or less means the key does not expire. Expired keys are
// invisible to every method. Values passed in are not retained (they may be
// reused by the caller after the call); values returned belong to the
// caller.
type Store interface {
	// Get returns the value of key, or ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)

	// GetMany returns the values of keys, in order, nil where there is
	// none, in one read: one transaction (Bolt), one round trip (Redis).
	// A session reads what it needs at once (an address's and its
	// network's records). Get is GetMany of one key.
	GetMany(ctx context.Context, keys ...string) ([][]byte, error)

	// Set stores value under key, expiring after ttl (replacing any
	// earlier expiry).
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error

	// Delete removes keys; keys that do not exist are not an error.
	Delete(ctx context.Context, keys ...string) error

	// Update atomically replaces the value of key with what fn returns
	// given the current value (found is false when there is none), with
	// the expiry fn returns (so that a record's lifetime can follow its
	// state). It returns the value stored. If fn returns an error,
	// nothing is written and Update returns that error. fn may
	// be called more than once (when a concurrent writer got in first,
	// on Redis), so it must not have side effects, and it must not call
	// the store (Bolt and Memory hold their write lock while it runs).
	Update(ctx context.Context, key string, fn UpdateFunc) ([]byte, error)

	// Incr adds by to the integer stored under key (a missing key counts
	// as 0) and returns the new value. The value is stored as decimal
	// text. ttl applies only when Incr creates the key, so a counter
	// lives for a fixed window; later calls leave its expiry alone.
	Incr(ctx context.Context, key string, by int64, ttl time.Duration) (int64, error)

	// Scan calls fn for every live key that starts with prefix, in no
	// particular order, until fn returns an error (which Scan returns).
	// It is meant for admin commands, not for sessions. fn may use the
	// store; keys written during a Scan may or may not be seen.
	Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error

	// Apply performs ops in order, as one transaction (Bolt), one
	// pipeline (Redis) or under one lock (Memory). It is not atomic on
	// Redis: after an error, some ops may have been applied. Async uses
	// it to write in batches.
	Apply(ctx context.Context, ops []Op) error

	// Health returns nil when the store is usable, and otherwise why not
	// (an error wrapping ErrUnavailable or ErrClosed), for metrics and
	// health checks. It does no I/O.
	Health() error

	// Close releases the store. Calls after Close return ErrClosed.
	Close() error
}

// UpdateFunc computes a key's new value and time to live from its current
// value; see Store.Update. old is nil and found false when the key does
// not exist. A ttl of zero or less means no expiry.
type UpdateFunc func(old []byte, found bool) (value []byte, ttl time.Duration, err error)

// TTL wraps a function that computes only the value into an UpdateFunc
// giving every value the same time to live.
func TTL(ttl time.Duration, fn func(old []byte, found bool) ([]byte, error)) UpdateFunc {
	return func(old []byte, found bool) ([]byte, time.Duration, error) {
		v, err := fn(old, found)
		return v, ttl, err
	}
}

// OpKind says what an Op does.
type OpKind uint8

// The kinds of Op.
const (
	OpSet    OpKind = iota + 1 // Set(Key, Value, TTL)
	OpDelete                   // Delete(Key)
	OpIncr                     // Incr(Key, By, TTL), result discarded
)

// Op is one write for Apply.
type Op struct {
	Kind  OpKind
	Key   string
	Value []byte        // OpSet
	By    int64         // OpIncr
	TTL   time.Duration // OpSet, OpIncr
}

var (
	// ErrNotFound is returned by Get for a key that does not exist or
	// has expired.
	ErrNotFound = errors.New("store: key not found")

	// ErrUnavailable is returned (wrapped) while the store cannot be
	// reached: Redis down, slow or refusing. Callers fail open.
	ErrUnavailable = errors.New("state store unavailable")

	// ErrClosed is returned by calls on a closed store.
	ErrClosed = errors.New("store: closed")

	// ErrEmptyKey is returned for an empty key.
	ErrEmptyKey = errors.New("store: empty key")
)

// first is Get from GetMany of one key: a missing value is ErrNotFound.
func first(vs [][]byte, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	if vs[0] == nil {
		return nil, ErrNotFound
	}
	return vs[0], nil
}
