package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// impl opens one implementation for a test; advance moves its time on
// (the fake clock for Memory and Bolt, real time for Redis).
type impl struct {
	name string
	open func(t *testing.T) (s Store, advance func(time.Duration))
}

func impls() []impl {
	return []impl{
		{"memory", func(t *testing.T) (Store, func(time.Duration)) {
			c := newFakeClock()
			s := NewMemory(c.Now)
			t.Cleanup(func() { s.Close() })
			return s, c.Advance
		}},
		{"bolt", func(t *testing.T) (Store, func(time.Duration)) {
			c := newFakeClock()
			s, err := OpenBolt(filepath.Join(t.TempDir(), "state.db"), BoltOptions{Now: c.Now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s, c.Advance
		}},
		{"redis", func(t *testing.T) (Store, func(time.Duration)) {
			srv := redistest.Start(t)
			s, err := OpenRedis(RedisOptions{Addr: srv.Addr, Prefix: "mxguard:test:", WriteTimeout: 2 * time.Second, ReadTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s, time.Sleep
		}},
	}
}

// forEach runs test against every implementation.
func forEach(t *testing.T, test func(t *testing.T, s Store, advance func(time.Duration))) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			s, advance := im.open(t)
			test(t, s, advance)
		})
	}
}

func mustGet(t *testing.T, s Store, key string) string {
	t.Helper()
	v, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return string(v)
}

func wantMissing(t *testing.T, s Store, key string) {
	t.Helper()
	if v, err := s.Get(context.Background(), key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(%q) = %q, %v; want ErrNotFound", key, v, err)
	}
}

func TestSetGetDelete(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		wantMissing(t, s, "a")
		for _, tc := range []struct{ key, value string }{
			{"a", "1"},
			{"a", "overwritten"},
			{"empty", ""},
			{"bin", "\x00\xff\r\n*?[]"},
			{"key with spaces/and:colons*", "x"},
		} {
			if err := s.Set(ctx, tc.key, []byte(tc.value), 0); err != nil {
				t.Fatalf("Set(%q): %v", tc.key, err)
			}
			if got := mustGet(t, s, tc.key); got != tc.value {
				t.Errorf("Get(%q) = %q, want %q", tc.key, got, tc.value)
			}
		}
		if err := s.Delete(ctx, "a", "empty", "never-there"); err != nil {
			t.Fatal(err)
		}
		wantMissing(t, s, "a")
		wantMissing(t, s, "empty")
		if got := mustGet(t, s, "bin"); got != "\x00\xff\r\n*?[]" {
			t.Errorf("bin = %q after deleting others", got)
		}
		if err := s.Delete(ctx); err != nil {
			t.Errorf("Delete of nothing: %v", err)
		}
	})
}

func TestValuesNotShared(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		v := []byte("abc")
		s.Set(ctx, "k", v, 0)
		v[0] = 'X'
		got, _ := s.Get(ctx, "k")
		if string(got) != "abc" {
			t.Fatalf("stored value changed with the caller's slice: %q", got)
		}
		got[1] = 'Y'
		if again := mustGet(t, s, "k"); again != "abc" {
			t.Fatalf("stored value changed with the returned slice: %q", again)
		}
	})
}

func TestEmptyKey(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		if _, err := s.Get(ctx, ""); !errors.Is(err, ErrEmptyKey) {
			t.Errorf("Get: %v", err)
		}
		if err := s.Set(ctx, "", nil, 0); !errors.Is(err, ErrEmptyKey) {
			t.Errorf("Set: %v", err)
		}
		if _, err := s.Incr(ctx, "", 1, 0); !errors.Is(err, ErrEmptyKey) {
			t.Errorf("Incr: %v", err)
		}
		if _, err := s.Update(ctx, "", TTL(0, func([]byte, bool) ([]byte, error) { return nil, nil })); !errors.Is(err, ErrEmptyKey) {
			t.Errorf("Update: %v", err)
		}
	})
}

func TestExpiry(t *testing.T) {
	const ttl = 300 * time.Millisecond
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		s.Set(ctx, "short", []byte("v"), ttl)
		s.Set(ctx, "refreshed", []byte("v"), ttl)
		s.Set(ctx, "forever", []byte("v"), 0)
		s.Set(ctx, "long", []byte("v"), time.Hour)
		if _, err := s.Incr(ctx, "counter", 1, ttl); err != nil {
			t.Fatal(err)
		}
		mustGet(t, s, "short")

		advance(ttl / 2)
		s.Set(ctx, "refreshed", []byte("v2"), ttl) // a Set sets a new expiry
		if n, err := s.Incr(ctx, "counter", 1, ttl); err != nil || n != 2 {
			t.Fatalf("Incr = %d, %v; want 2", n, err) // and an Incr does not
		}
		advance(ttl/2 + 100*time.Millisecond)

		wantMissing(t, s, "short")
		wantMissing(t, s, "counter")
		if got := mustGet(t, s, "refreshed"); got != "v2" {
			t.Errorf("refreshed = %q", got)
		}
		mustGet(t, s, "forever")
		mustGet(t, s, "long")

		var seen []string
		s.Scan(ctx, "", func(k string, v []byte) error { seen = append(seen, k); return nil })
		slices.Sort(seen)
		if want := []string{"forever", "long", "refreshed"}; !slices.Equal(seen, want) {
			t.Errorf("Scan after expiry = %q, want %q", seen, want)
		}
		v, err := s.Update(ctx, "short", func(old []byte, found bool) ([]byte, time.Duration, error) {
			if found {
				t.Errorf("Update found expired value %q", old)
			}
			return []byte("new"), ttl, nil
		})
		if err != nil || string(v) != "new" {
			t.Errorf("Update of expired = %q, %v", v, err)
		}
		if n, err := s.Incr(ctx, "counter", 5, ttl); err != nil || n != 5 {
			t.Errorf("Incr of expired counter = %d, %v; want 5", n, err)
		}
	})
}

func TestUpdate(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		appendX := func(old []byte, found bool) ([]byte, error) {
			if !found && old != nil {
				t.Errorf("not found but old = %q", old)
			}
			return append(old, 'x'), nil
		}
		for i, want := range []string{"x", "xx", "xxx"} {
			v, err := s.Update(ctx, "k", TTL(time.Hour, appendX))
			if err != nil || string(v) != want {
				t.Fatalf("Update #%d = %q, %v; want %q", i, v, err, want)
			}
		}
		boom := errors.New("boom")
		v, err := s.Update(ctx, "k", TTL(time.Hour, func([]byte, bool) ([]byte, error) { return []byte("never"), boom }))
		if !errors.Is(err, boom) || v != nil {
			t.Fatalf("Update with failing fn = %q, %v; want nil, boom", v, err)
		}
		if got := mustGet(t, s, "k"); got != "xxx" {
			t.Fatalf("after failed Update: %q", got)
		}
		if err := s.Health(); err != nil {
			t.Fatalf("Health after an UpdateFunc error: %v", err)
		}
		// fn may change the slice it is given.
		inPlace := func(old []byte, found bool) ([]byte, error) {
			old[0] = 'y'
			return old, nil
		}
		if v, err := s.Update(ctx, "k", TTL(time.Hour, inPlace)); err != nil || string(v) != "yxx" {
			t.Fatalf("Update changing old in place = %q, %v", v, err)
		}
	})
}

// TestUpdateTTL: the expiry is what fn returns, decided from the value.
func TestUpdateTTL(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		// A record that lives briefly while new and for long once seen
		// twice, as a greylisting triplet does.
		fn := func(old []byte, found bool) ([]byte, time.Duration, error) {
			if !found {
				return []byte("new"), 300 * time.Millisecond, nil
			}
			return []byte("seen"), time.Hour, nil
		}
		s.Update(ctx, "brief", fn)
		s.Update(ctx, "kept", fn)
		s.Update(ctx, "kept", fn)
		advance(400 * time.Millisecond)
		wantMissing(t, s, "brief")
		if got := mustGet(t, s, "kept"); got != "seen" {
			t.Errorf("kept = %q", got)
		}
	})
}

// TestUpdateAtomic has N goroutines increment one counter through Update:
// the result must be exactly N.
func TestUpdateAtomic(t *testing.T) {
	const workers, each = 16, 8
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		inc := func(old []byte, found bool) ([]byte, error) {
			n := 0
			if found {
				var err error
				if n, err = strconv.Atoi(string(old)); err != nil {
					return nil, err
				}
			}
			return strconv.AppendInt(nil, int64(n+1), 10), nil
		}
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if _, err := s.Update(ctx, "counter", TTL(0, inc)); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if got, want := mustGet(t, s, "counter"), strconv.Itoa(workers*each); got != want {
			t.Fatalf("counter = %s, want %s", got, want)
		}
	})
}

func TestIncr(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		for _, tc := range []struct {
			by, want int64
		}{{1, 1}, {1, 2}, {10, 12}, {-20, -8}, {0, -8}} {
			n, err := s.Incr(ctx, "n", tc.by, time.Hour)
			if err != nil || n != tc.want {
				t.Fatalf("Incr(%d) = %d, %v; want %d", tc.by, n, err, tc.want)
			}
		}
		if got := mustGet(t, s, "n"); got != "-8" {
			t.Errorf("Get of a counter = %q, want decimal -8", got)
		}
		s.Set(ctx, "text", []byte("not a number"), 0)
		if n, err := s.Incr(ctx, "text", 1, 0); err == nil {
			t.Errorf("Incr of text = %d, nil; want an error", n)
		}
		if err := s.Health(); err != nil {
			t.Errorf("Health after a bad Incr: %v", err)
		}
	})
}

// TestIncrConcurrent: Incr is atomic too.
func TestIncrConcurrent(t *testing.T) {
	const workers, each = 16, 25
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if _, err := s.Incr(context.Background(), "c", 1, time.Hour); err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		if got := mustGet(t, s, "c"); got != strconv.Itoa(workers*each) {
			t.Fatalf("c = %s, want %d", got, workers*each)
		}
	})
}

func TestScan(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		keys := []string{"grey:a", "grey:b", "grey", "greylist", "rep:1.2.3.4", "g*y:x", "g*y:y", "gray:z"}
		for _, k := range keys {
			s.Set(ctx, k, []byte("v-"+k), 0)
		}
		var ops []Op
		for i := range 2500 { // more than one page on every store
			ops = append(ops, Op{Kind: OpSet, Key: fmt.Sprintf("many:%05d", i), Value: []byte{byte(i)}, TTL: time.Hour})
		}
		if err := s.Apply(ctx, ops); err != nil {
			t.Fatal(err)
		}
		scan := func(prefix string) []string {
			var got []string
			err := s.Scan(ctx, prefix, func(k string, v []byte) error {
				if !strings.HasPrefix(k, "many:") && string(v) != "v-"+k {
					t.Errorf("Scan: %q = %q", k, v)
				}
				got = append(got, k)
				return nil
			})
			if err != nil {
				t.Fatalf("Scan(%q): %v", prefix, err)
			}
			slices.Sort(got)
			return got
		}
		for _, tc := range []struct {
			prefix string
			want   []string
		}{
			{"grey:", []string{"grey:a", "grey:b"}},
			{"grey", []string{"grey", "grey:a", "grey:b", "greylist"}},
			{"g*y:", []string{"g*y:x", "g*y:y"}}, // a glob character is literal
			{"rep:", []string{"rep:1.2.3.4"}},
			{"none:", nil},
		} {
			if got := scan(tc.prefix); !slices.Equal(got, tc.want) {
				t.Errorf("Scan(%q) = %q, want %q", tc.prefix, got, tc.want)
			}
		}
		if n := len(scan("many:")); n != 2500 {
			t.Errorf("Scan(many:) found %d keys, want 2500", n)
		}
		if n := len(scan("")); n != 2500+len(keys) {
			t.Errorf("Scan(\"\") found %d keys, want %d", n, 2500+len(keys))
		}

		stop := errors.New("stop")
		calls := 0
		err := s.Scan(ctx, "many:", func(string, []byte) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("Scan with fn failing: %v after %d calls; want stop after 1", err, calls)
		}

		// fn may write to the store (the admin "forget" command does).
		err = s.Scan(ctx, "grey:", func(k string, _ []byte) error { return s.Delete(ctx, k) })
		if err != nil {
			t.Fatalf("Scan deleting: %v", err)
		}
		if got := scan("grey:"); len(got) != 0 {
			t.Errorf("after deleting in Scan: %q", got)
		}
	})
}

func TestApply(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		s.Set(ctx, "gone", []byte("x"), 0)
		err := s.Apply(ctx, []Op{
			{Kind: OpSet, Key: "a", Value: []byte("1"), TTL: time.Hour},
			{Kind: OpIncr, Key: "n", By: 2, TTL: time.Hour},
			{Kind: OpIncr, Key: "n", By: 3, TTL: time.Hour},
			{Kind: OpDelete, Key: "gone"},
			{Kind: OpSet, Key: "a", Value: []byte("2")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, s, "a"); got != "2" {
			t.Errorf("a = %q", got)
		}
		if got := mustGet(t, s, "n"); got != "5" {
			t.Errorf("n = %q", got)
		}
		wantMissing(t, s, "gone")
		if err := s.Apply(ctx, nil); err != nil {
			t.Errorf("Apply(nil): %v", err)
		}
		if err := s.Apply(ctx, []Op{{Kind: 99, Key: "x"}}); err == nil {
			t.Errorf("Apply of an unknown kind: no error")
		}
	})
}

func TestClosed(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		if err := s.Health(); err != nil {
			t.Fatalf("Health: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		s.Close() // twice is fine
		if _, err := s.Get(ctx, "k"); !errors.Is(err, ErrClosed) {
			t.Errorf("Get after Close: %v", err)
		}
		if err := s.Set(ctx, "k", nil, 0); !errors.Is(err, ErrClosed) {
			t.Errorf("Set after Close: %v", err)
		}
		if err := s.Health(); !errors.Is(err, ErrClosed) {
			t.Errorf("Health after Close: %v", err)
		}
	})
}

func TestGetMany(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		s.Set(ctx, "a", []byte("1"), 0)
		s.Set(ctx, "empty", nil, 0)
		s.Set(ctx, "short", []byte("x"), 200*time.Millisecond)
		s.Incr(ctx, "n", 7, 0)
		got, err := s.GetMany(ctx, "a", "missing", "empty", "short", "n", "a")
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"1", "<nil>", "", "x", "7", "1"}
		for i, w := range want {
			g := "<nil>"
			if got[i] != nil {
				g = string(got[i])
			}
			if g != w {
				t.Errorf("value %d = %q, want %q (all %q)", i, g, w, got)
			}
		}
		got[0][0] = 'X' // the caller's copy
		if v := mustGet(t, s, "a"); v != "1" {
			t.Errorf("a = %q after changing GetMany's copy", v)
		}
		advance(300 * time.Millisecond)
		if got, err := s.GetMany(ctx, "short", "a"); err != nil || got[0] != nil || string(got[1]) != "1" {
			t.Errorf("after expiry: %q, %v", got, err)
		}
		if got, err := s.GetMany(ctx); err != nil || len(got) != 0 {
			t.Errorf("no keys: %q, %v", got, err)
		}
		if _, err := s.GetMany(ctx, "a", ""); !errors.Is(err, ErrEmptyKey) {
			t.Errorf("empty key: %v", err)
		}
	})
}
