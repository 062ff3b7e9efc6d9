package store

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
)

// benchStores opens each store for a benchmark: Memory, Bolt (fsync on
// every commit, the default) and a Redis on loopback.
func benchStores(b *testing.B) []struct {
	name string
	open func(b *testing.B) Store
} {
	return []struct {
		name string
		open func(b *testing.B) Store
	}{
		{"memory", func(b *testing.B) Store { return NewMemory(nil) }},
		{"bolt", func(b *testing.B) Store {
			s, err := OpenBolt(filepath.Join(b.TempDir(), "state.db"), BoltOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
		{"redis", func(b *testing.B) Store {
			srv := redistest.Start(b)
			s, err := OpenRedis(RedisOptions{Addr: srv.Addr, Prefix: "mxguard:bench:", ReadTimeout: time.Second, WriteTimeout: time.Second,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
	}
}

const benchKeys = 10_000

func benchKey(i int64) string {
	i %= benchKeys
	return "rep:198.51." + strconv.FormatInt(i/256, 10) + "." + strconv.FormatInt(i%256, 10)
}

// fill writes benchKeys records of 64 bytes.
func fill(b *testing.B, s Store) {
	var ops []Op
	for i := range int64(benchKeys) {
		ops = append(ops, Op{Kind: OpSet, Key: benchKey(i), Value: make([]byte, 64), TTL: time.Hour})
	}
	if err := s.Apply(context.Background(), ops); err != nil {
		b.Fatal(err)
	}
}

// parallel runs op from 16 goroutines per CPU, as concurrent sessions do.
func parallel(b *testing.B, op func(i int64) error) {
	var n atomic.Int64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(n.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkGet(b *testing.B) {
	for _, st := range benchStores(b) {
		b.Run(st.name, func(b *testing.B) {
			s := st.open(b)
			fill(b, s)
			parallel(b, func(i int64) error { _, err := s.Get(context.Background(), benchKey(i)); return err })
		})
	}
}

func BenchmarkSet(b *testing.B) {
	for _, st := range benchStores(b) {
		b.Run(st.name, func(b *testing.B) {
			s := st.open(b)
			v := make([]byte, 64)
			parallel(b, func(i int64) error { return s.Set(context.Background(), benchKey(i), v, time.Hour) })
		})
	}
}

// BenchmarkUpdate is a reputation-style read-modify-write of a 64-byte
// record, on keys spread like client addresses.
func BenchmarkUpdate(b *testing.B) {
	fn := TTL(time.Hour, func(old []byte, found bool) ([]byte, error) {
		if !found {
			old = make([]byte, 64)
		}
		old[0]++
		return old, nil
	})
	for _, st := range benchStores(b) {
		b.Run(st.name, func(b *testing.B) {
			s := st.open(b)
			fill(b, s)
			parallel(b, func(i int64) error { _, err := s.Update(context.Background(), benchKey(i), fn); return err })
		})
	}
}

func BenchmarkIncr(b *testing.B) {
	for _, st := range benchStores(b) {
		b.Run(st.name, func(b *testing.B) {
			s := st.open(b)
			parallel(b, func(i int64) error {
				_, err := s.Incr(context.Background(), "count:"+benchKey(i), 1, time.Hour)
				return err
			})
		})
	}
}

// BenchmarkAsyncSet is the cost to a session of a queued write, and the
// rate the writer sustains (the time includes the final Flush).
func BenchmarkAsyncSet(b *testing.B) {
	for _, st := range benchStores(b) {
		b.Run(st.name, func(b *testing.B) {
			s := st.open(b)
			a := NewAsync(s, 1<<16)
			defer a.Close(context.Background())
			v := make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range int64(b.N) {
				for !a.Set(benchKey(i), v, time.Hour) {
					a.Flush(context.Background()) // queue full: let it drain, and count only what was written
				}
			}
			a.Flush(context.Background())
			b.StopTimer()
			if st := a.Stats(); st.Failed > 0 {
				b.Fatalf("stats %+v", st)
			}
		})
	}
}

// BenchmarkLatency is one session's wait: a Get and an Update from a single
// goroutine, with nothing else going on.
func BenchmarkLatency(b *testing.B) {
	fn := TTL(time.Hour, func(old []byte, found bool) ([]byte, error) { return append(old[:0], 'x'), nil })
	for _, st := range benchStores(b) {
		b.Run(st.name+"/get", func(b *testing.B) {
			s := st.open(b)
			fill(b, s)
			b.ResetTimer()
			for i := range int64(b.N) {
				if _, err := s.Get(context.Background(), benchKey(i)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(st.name+"/update", func(b *testing.B) {
			s := st.open(b)
			b.ResetTimer()
			for i := range int64(b.N) {
				if _, err := s.Update(context.Background(), benchKey(i), fn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
