package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Records: small structs kept as JSON, for state such as reputation that
// is read and changed as a whole. A stored value that does not decode (a
// record of an older shape, damage) reads as no record: state is kept on a
// best-effort basis and starts over rather than failing a session.

// GetJSON reads the record under key into a T; found is false when there
// is none (or it does not decode). Errors are the store's.
func GetJSON[T any](ctx context.Context, s Store, key string) (rec T, found bool, err error) {
	v, err := s.Get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, err
	}
	if json.Unmarshal(v, &rec) != nil {
		var zero T
		return zero, false, nil
	}
	return rec, true, nil
}

// JSON makes an UpdateFunc that decodes the current record into a T (the
// zero T, found false, when there is none), lets fn change it and returns
// its time to live, and encodes it back. Use it with Store.Update, or
// Async.Update for a write the session does not wait for. fn may be called
// more than once, each time with a freshly decoded record.
func JSON[T any](fn func(rec *T, found bool) (time.Duration, error)) UpdateFunc {
	return func(old []byte, found bool) ([]byte, time.Duration, error) {
		var rec T
		if found && json.Unmarshal(old, &rec) != nil {
			rec, found = *new(T), false
		}
		ttl, err := fn(&rec, found)
		if err != nil {
			return nil, 0, err
		}
		v, err := json.Marshal(&rec)
		if err != nil {
			return nil, 0, fmt.Errorf("store: encoding record: %w", err)
		}
		return v, ttl, nil
	}
}

// UpdateJSON atomically changes the record under key with fn (see JSON)
// and returns the record stored.
func UpdateJSON[T any](ctx context.Context, s Store, key string, fn func(rec *T, found bool) (time.Duration, error)) (T, error) {
	var rec T
	v, err := s.Update(ctx, key, JSON(fn))
	if err != nil {
		return rec, err
	}
	err = json.Unmarshal(v, &rec)
	return rec, err
}
