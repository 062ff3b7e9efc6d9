package store

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
	bolt "go.etcd.io/bbolt"
)

// gatedStore is a Memory whose writes wait for gate, or fail with err.
type gatedStore struct {
	*Memory
	gate chan struct{}
	err  error
}

func (g *gatedStore) Apply(ctx context.Context, ops []Op) error {
	<-g.gate
	if g.err != nil {
		return g.err
	}
	return g.Memory.Apply(ctx, ops)
}

func (g *gatedStore) Update(ctx context.Context, key string, fn UpdateFunc) ([]byte, error) {
	<-g.gate
	if g.err != nil {
		return nil, g.err
	}
	return g.Memory.Update(ctx, key, fn)
}

func flush(t *testing.T, a *Async) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestAsyncOrder(t *testing.T) {
	m := NewMemory(nil)
	a := NewAsync(m, 100)
	defer a.Close(context.Background())
	appendS := func(old []byte, _ bool) ([]byte, error) { return append(old, 's'), nil }
	a.Set("k", []byte("v"), 0)
	a.Update("k", TTL(0, appendS))
	a.Incr("n", 2, 0)
	a.Update("k", TTL(0, appendS))
	a.Delete("gone", "n")
	a.Incr("n", 5, 0)
	a.Set("gone", []byte("x"), time.Nanosecond)
	a.Delete("gone")
	flush(t, a)
	if got := mustGet(t, m, "k"); got != "vss" {
		t.Errorf("k = %q, want vss", got)
	}
	if got := mustGet(t, m, "n"); got != "5" {
		t.Errorf("n = %q, want 5", got)
	}
	wantMissing(t, m, "gone")
	if st := a.Stats(); st.Applied != 9 || st.Dropped != 0 || st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestAsyncNeverBlocks: with the store stuck, writes return at once; past
// the queue's size they are dropped and counted.
func TestAsyncNeverBlocks(t *testing.T) {
	g := &gatedStore{Memory: NewMemory(nil), gate: make(chan struct{})}
	a := NewAsync(g, 10)
	start := time.Now()
	queued := 0
	for i := range 100 {
		if a.Set("k"+strconv.Itoa(i), []byte("v"), 0) {
			queued++
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("100 writes to a stuck store took %v", took)
	}
	// The writer holds one batch (up to the whole queue) while stuck.
	if st := a.Stats(); st.Dropped == 0 || st.Dropped != uint64(100-queued) {
		t.Errorf("stats %+v after %d queued", st, queued)
	}
	close(g.gate)
	flush(t, a)
	if st := a.Stats(); st.Applied != uint64(queued) {
		t.Errorf("stats %+v, want %d applied", st, queued)
	}
	a.Close(context.Background())
	if a.Set("late", nil, 0) {
		t.Error("Set after Close queued")
	}
}

func TestAsyncFailures(t *testing.T) {
	g := &gatedStore{Memory: NewMemory(nil), gate: make(chan struct{}), err: fmt.Errorf("%w: test", ErrUnavailable)}
	close(g.gate)
	a := NewAsync(g, 100)
	defer a.Close(context.Background())
	a.Set("a", nil, 0)
	a.Incr("b", 1, 0)
	a.Update("c", TTL(0, func([]byte, bool) ([]byte, error) { return nil, nil }))
	flush(t, a)
	if st := a.Stats(); st.Failed != 3 || st.Applied != 0 {
		t.Errorf("stats %+v, want 3 failed", st)
	}
}

func TestAsyncCloseDrains(t *testing.T) {
	m := NewMemory(nil)
	a := NewAsync(m, 1000)
	for range 500 {
		a.Incr("n", 1, 0)
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, m, "n"); got != "500" {
		t.Errorf("n = %s after Close, want 500", got)
	}
	if err := a.Flush(context.Background()); err == nil {
		t.Error("Flush after Close: no error")
	}
}

// TestAsyncRedis: batches reach Redis; with Redis down, writes neither
// block nor pile up, and are counted as failed.
func TestAsyncRedis(t *testing.T) {
	srv := redistest.Start(t)
	s := openTestRedis(t, srv.Addr, &logRecorder{})
	a := NewAsync(s, 10_000)
	defer a.Close(context.Background())
	for i := range 5000 {
		a.Set(fmt.Sprintf("k%d", i), []byte("v"), time.Minute)
		a.Incr("n", 1, time.Minute)
	}
	flush(t, a)
	if got := mustGet(t, s, "n"); got != "5000" {
		t.Errorf("n = %s", got)
	}
	if got := mustGet(t, s, "k4999"); got != "v" {
		t.Errorf("k4999 = %s", got)
	}

	srv.Stop()
	start := time.Now()
	for range 5000 {
		a.Set("k", []byte("v"), time.Minute)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("5000 writes with Redis down took %v", took)
	}
	flush(t, a)
	if st := a.Stats(); st.Failed == 0 || st.Failed+st.Dropped != 5000 {
		t.Errorf("stats with Redis down: %+v", st)
	}
	t.Logf("stats: %+v", a.Stats())
}

// TestAsyncBolt: on a Bolt file, queued writes of every kind land in order,
// a failing or panicking update is skipped and counted without stopping
// its batch, and a burst of updates shares transactions (fsyncs) instead
// of taking one each.
func TestAsyncBolt(t *testing.T) {
	s, err := OpenBolt(t.TempDir()+"/state.db", BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := NewAsync(s, 2000)
	defer a.Close(context.Background())

	appendS := func(old []byte, _ bool) ([]byte, error) { return append(old, 's'), nil }
	a.Set("k", []byte("v"), 0)
	a.Update("k", TTL(0, appendS))
	a.Incr("n", 2, 0)
	a.Update("k", TTL(0, func([]byte, bool) ([]byte, error) { return nil, fmt.Errorf("no") }))
	a.Update("k", TTL(0, func([]byte, bool) ([]byte, error) { panic("update panics") }))
	a.Incr("k", 1, 0) // "vs" is not a number
	a.Update("k", TTL(0, appendS))
	a.Delete("gone", "n")
	a.Incr("n", 5, 0)
	a.Set("gone", []byte("x"), time.Nanosecond)
	flush(t, a)
	if got := mustGet(t, s, "k"); got != "vss" {
		t.Errorf("k = %q, want vss", got)
	}
	if got := mustGet(t, s, "n"); got != "5" {
		t.Errorf("n = %q, want 5", got)
	}
	wantMissing(t, s, "gone")
	if st := a.Stats(); st.Applied != 8 || st.Failed != 3 || st.Dropped != 0 {
		t.Errorf("stats %+v, want 8 applied, 3 failed", st)
	}

	// Hold the writer in a transaction while 1000 updates queue up.
	gate, held := make(chan struct{}), make(chan struct{})
	go s.write(context.Background(), func(*bolt.Bucket) error { close(held); <-gate; return nil })
	<-held
	before := s.commits.Load()
	for i := range 1000 {
		a.Update("u"+strconv.Itoa(i%10), TTL(0, appendS))
	}
	close(gate)
	flush(t, a)
	if got := mustGet(t, s, "u3"); len(got) != 100 {
		t.Errorf("u3 has %d updates, want 100", len(got))
	}
	// The held transaction, a first batch taken while the others were still
	// being queued, then batches of up to 256: a handful, not 1000.
	if n := s.commits.Load() - before; n > 10 {
		t.Errorf("1000 queued updates took %d transactions", n)
	}

	// A trickle (one write a millisecond, as sessions end under load)
	// waits for company too: the 20 writes take a few commits, not 20.
	before = s.commits.Load()
	for i := range 20 {
		a.Set("t"+strconv.Itoa(i), []byte("x"), 0)
		time.Sleep(time.Millisecond)
	}
	flush(t, a)
	if n := s.commits.Load() - before; n > 5 {
		t.Errorf("20 writes a millisecond apart took %d transactions", n)
	}
}
