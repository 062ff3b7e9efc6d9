package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrLocked is returned (wrapped) by OpenBolt when another process holds
// the file: a running mxguard, when `mxguard check-config` looks at it.
var ErrLocked = errors.New("locked by another process")

// BoltOptions tune a Bolt store. The zero value is the default.
type BoltOptions struct {
	// SweepInterval is how often expired keys are removed from the file
	// (they are invisible as soon as they expire). Default 10 minutes; a
	// negative value disables the sweeper.
	SweepInterval time.Duration

	// LockTimeout is how long Open waits for the file's lock, held by
	// another process using the same file. Default 2 seconds.
	LockTimeout time.Duration

	// WriteTimeout bounds how long a write waits for its commit (a
	// stuck disk); the write may still be committed after. Default 5s.
	WriteTimeout time.Duration

	// NoSync skips fsync after each commit. Writes are then safe against
	// a crash of mxguard (kill -9) but not against a crash of the machine,
	// where the file may be corrupted. Off by default.
	NoSync bool

	// SkipCheck skips the consistency check of the whole file at Open
	// (it reads every page: 0.13s for a file of 1 million keys, 250 MB,
	// in the page cache; more from a cold disk).
	SkipCheck bool

	// Now is the clock for expiry (default time.Now); tests move it.
	Now func() time.Time

	// Logger receives the sweeper's messages (default slog.Default()).
	Logger *slog.Logger
}

// Bolt is a Store in one file, with go.etcd.io/bbolt. Reads run
// concurrently; writes go through one goroutine that commits whatever has
// queued up in one transaction (group commit), so that concurrent writers
// share an fsync and a lone writer does not wait for company.
//
// Each value is stored with its expiry: 8 bytes of Unix nanoseconds (0:
// never), big-endian, then the payload.
type Bolt struct {
	db   *bolt.DB
	path string
	opts BoltOptions

	reqs   chan *boltReq
	quit   chan struct{} // closed by Close
	done   chan struct{} // closed when the writer and sweeper have stopped
	closed atomic.Bool
	once   sync.Once

	commits atomic.Uint64 // write transactions (each an fsync unless NoSync)

	mu      sync.Mutex
	lastErr error // the last failed commit, for Health
}

var (
	bucketKV   = []byte("kv")
	bucketMeta = []byte("meta")
	keyFormat  = []byte("format")
)

const (
	boltFormat    = "mxguard-store-1"
	boltMaxBatch  = 256    // requests per transaction
	boltSweepStep = 10_000 // entries examined per sweep transaction
	boltScanStep  = 1000   // entries read per Scan transaction
	boltHeader    = 8      // expiry prefix of every value
)

// OpenBolt opens the state file at path, creating it (and its directory,
// mode 0750) if it does not exist. A file that is not a valid store, is
// truncated or corrupt, cannot be read, or stays locked by another process
// for opts.LockTimeout is an error naming the file: the whole file is
// checked here (unless opts.SkipCheck), so that damage is found at start
// rather than by a panic in a session later.
//
// bbolt allows one process per file: while mxguard runs, another process
// (an admin command) cannot open it, and gets the "locked" error.
func OpenBolt(path string, opts BoltOptions) (s *Bolt, err error) {
	if opts.SweepInterval == 0 {
		opts.SweepInterval = 10 * time.Minute
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	fail := func(format string, a ...any) (*Bolt, error) {
		return nil, fmt.Errorf("state file %s: "+format, append([]any{path}, a...)...)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fail("creating its directory: %w", err)
	}
	var size int64
	if fi, err := os.Stat(path); err == nil {
		if fi.IsDir() {
			return fail("not a regular file: a directory")
		}
		if !fi.Mode().IsRegular() {
			return fail("not a regular file (%s)", fi.Mode().Type())
		}
		size = fi.Size()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fail("%w", err)
	}
	db, err := openBoltDB(path, opts)
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fail("%w (another mxguard using the same file?): still locked after %v", ErrLocked, opts.LockTimeout)
	case errors.Is(err, fs.ErrPermission) || errors.Is(err, fs.ErrNotExist):
		return fail("%w", err)
	case err != nil && size == 0:
		return fail("%w", err)
	case err != nil:
		return fail("not a valid bbolt database: %w", err)
	}
	if err := checkBolt(db, opts.SkipCheck); err != nil {
		db.Close()
		return fail("not a valid bbolt database: %w", err)
	}
	if err := initBolt(db); err != nil {
		db.Close()
		return fail("%w", err)
	}
	s = &Bolt{
		db:   db,
		path: path,
		opts: opts,
		reqs: make(chan *boltReq, boltMaxBatch),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.writer() }()
	if opts.SweepInterval > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); s.sweeper() }()
	}
	go func() { wg.Wait(); close(s.done) }()
	return s, nil
}

// openBoltDB opens the file, turning a panic on a mangled file (or a
// memory fault on a pointer that leads out of it) into an error.
func openBoltDB(path string, opts BoltOptions) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("damaged: %v", r)
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.LockTimeout,
		NoSync:       opts.NoSync,
		FreelistType: bolt.FreelistMapType,
	})
}

// checkBolt verifies that the file holds every page its meta page claims
// (a truncated file would fault when those pages are read) and, unless
// skipped, reads every key and value, then runs bbolt's consistency check.
// The reading walk comes first and turns memory faults into errors: bbolt's
// check runs on a goroutine of its own, where a fault on a damaged page
// would kill the process.
func checkBolt(db *bolt.DB, skipTree bool) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged: %v", r)
		}
	}()
	fi, err := os.Stat(db.Path())
	if err != nil {
		return err
	}
	return db.View(func(tx *bolt.Tx) error {
		if tx.Size() > fi.Size() {
			return fmt.Errorf("truncated: %d bytes, the database needs %d", fi.Size(), tx.Size())
		}
		if skipTree {
			return nil
		}
		if err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walkBucket(b) }); err != nil {
			return err
		}
		var first error
		for err := range tx.Check() { // drain it: Check's goroutine sends them all
			if first == nil {
				first = err
			}
		}
		return first
	})
}

// walkBucket touches the first and last byte of every key and value of b
// and its sub-buckets, so that a pointer out of the file faults here.
func walkBucket(b *bolt.Bucket) error {
	var sink byte
	touch := func(p []byte) {
		if len(p) > 0 {
			sink ^= p[0] ^ p[len(p)-1]
		}
	}
	err := b.ForEach(func(k, v []byte) error {
		touch(k)
		touch(v)
		if v == nil {
			if sub := b.Bucket(k); sub != nil {
				return walkBucket(sub)
			}
		}
		return nil
	})
	_ = sink
	return err
}

// initBolt creates the buckets of a new file and checks the format of an
// existing one.
func initBolt(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch f := meta.Get(keyFormat); {
		case f == nil:
			if tx.Bucket(bucketKV) != nil {
				return fmt.Errorf("not an mxguard state file (no format mark)")
			}
			if err := meta.Put(keyFormat, []byte(boltFormat)); err != nil {
				return err
			}
		case string(f) != boltFormat:
			return fmt.Errorf("unknown format %q (want %q): written by another version of mxguard?", f, boltFormat)
		}
		_, err = tx.CreateBucketIfNotExists(bucketKV)
		return err
	})
}

// Path returns the file's path.
func (s *Bolt) Path() string { return s.path }

// encodeBolt prefixes value with its expiry.
func encodeBolt(value []byte, expires int64) []byte {
	b := make([]byte, boltHeader+len(value))
	putUint64(b, uint64(expires))
	copy(b[boltHeader:], value)
	return b
}

// decodeBolt splits a stored value; live is false when it has expired (or
// is too short to be one of ours).
func decodeBolt(b []byte, now int64) (value []byte, expires int64, live bool) {
	if len(b) < boltHeader {
		return nil, 0, false
	}
	expires = int64(getUint64(b))
	if expires != 0 && expires <= now {
		return nil, expires, false
	}
	return b[boltHeader:], expires, true
}

func putUint64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

func getUint64(b []byte) uint64 {
	var v uint64
	for i := 0; i < 8; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func (s *Bolt) expiry(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return s.opts.Now().Add(ttl).UnixNano()
}

func (s *Bolt) view(fn func(b *bolt.Bucket) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	err := s.db.View(func(tx *bolt.Tx) error { return fn(tx.Bucket(bucketKV)) })
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Get implements Store.
func (s *Bolt) Get(ctx context.Context, key string) ([]byte, error) {
	return first(s.GetMany(ctx, key))
}

// GetMany implements Store, in one read transaction.
func (s *Bolt) GetMany(ctx context.Context, keys ...string) ([][]byte, error) {
	for _, k := range keys {
		if k == "" {
			return nil, ErrEmptyKey
		}
	}
	out := make([][]byte, len(keys))
	err := s.view(func(b *bolt.Bucket) error {
		now := s.opts.Now().UnixNano()
		for i, k := range keys {
			if v, _, live := decodeBolt(b.Get([]byte(k)), now); live {
				out[i] = append([]byte{}, v...)
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
func (s *Bolt) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if key == "" {
		return ErrEmptyKey
	}
	v := encodeBolt(value, s.expiry(ttl))
	return s.write(ctx, func(b *bolt.Bucket) error { return b.Put([]byte(key), v) })
}

// Delete implements Store.
func (s *Bolt) Delete(ctx context.Context, keys ...string) error {
	return s.write(ctx, func(b *bolt.Bucket) error {
		for _, k := range keys {
			if k == "" {
				continue
			}
			if err := b.Delete([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Update implements Store. fn runs inside the write transaction.
func (s *Bolt) Update(ctx context.Context, key string, fn UpdateFunc) ([]byte, error) {
	if key == "" {
		return nil, ErrEmptyKey
	}
	var out []byte
	err := s.write(ctx, func(b *bolt.Bucket) (err error) {
		out, err = s.update(b, key, fn)
		return err
	})
	if err != nil {
		return nil, err // out may still be written, if the commit comes late
	}
	return out, nil
}

// update runs fn on key's value in b and stores what it returns; nothing
// is written when fn fails.
func (s *Bolt) update(b *bolt.Bucket, key string, fn UpdateFunc) ([]byte, error) {
	old, _, found := decodeBolt(b.Get([]byte(key)), s.opts.Now().UnixNano())
	if found {
		old = append([]byte{}, old...)
	} else {
		old = nil
	}
	v, ttl, err := fn(old, found)
	if err != nil {
		return nil, err
	}
	if err := b.Put([]byte(key), encodeBolt(v, s.expiry(ttl))); err != nil {
		return nil, err
	}
	return append([]byte{}, v...), nil
}

// Incr implements Store.
func (s *Bolt) Incr(ctx context.Context, key string, by int64, ttl time.Duration) (int64, error) {
	if key == "" {
		return 0, ErrEmptyKey
	}
	var n int64
	err := s.write(ctx, func(b *bolt.Bucket) (err error) {
		n, err = s.incr(b, key, by, ttl)
		return err
	})
	if err != nil {
		return 0, err // n may still be written, if the commit comes late
	}
	return n, nil
}

func (s *Bolt) incr(b *bolt.Bucket, key string, by int64, ttl time.Duration) (int64, error) {
	old, expires, found := decodeBolt(b.Get([]byte(key)), s.opts.Now().UnixNano())
	n, err := addInt(old, found, by)
	if err != nil {
		return 0, fmt.Errorf("store: incr %q: %w", key, err)
	}
	if !found {
		expires = s.expiry(ttl)
	}
	return n, b.Put([]byte(key), encodeBolt(fmt.Appendf(nil, "%d", n), expires))
}

// Apply implements Store: all ops in one transaction. An op that fails
// (an Incr on a value that is not a number) stops the batch, and those
// before it stay applied.
func (s *Bolt) Apply(ctx context.Context, ops []Op) error {
	return s.write(ctx, func(b *bolt.Bucket) error {
		for _, op := range ops {
			if err := s.apply(b, op); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *Bolt) apply(b *bolt.Bucket, op Op) error {
	if op.Key == "" {
		return ErrEmptyKey
	}
	switch op.Kind {
	case OpSet:
		return b.Put([]byte(op.Key), encodeBolt(op.Value, s.expiry(op.TTL)))
	case OpDelete:
		return b.Delete([]byte(op.Key))
	case OpIncr:
		_, err := s.incr(b, op.Key, op.By, op.TTL)
		return err
	}
	return fmt.Errorf("store: unknown op kind %d", op.Kind)
}

// writeBatch implements batchWriter: Async's writes, updates included, in
// order and in one transaction, so that a burst of them costs one fsync
// instead of one each. A write that fails (its UpdateFunc fails or
// panics, an Incr on text) is skipped and counted; the others go on,
// since none of them writes before failing.
func (s *Bolt) writeBatch(ctx context.Context, batch []asyncOp) (failed int, err error) {
	err = s.write(ctx, func(b *bolt.Bucket) error {
		for _, o := range batch {
			if s.tryAsync(b, o) != nil {
				failed++
			}
		}
		return nil
	})
	if err != nil {
		return len(batch), err
	}
	return failed, nil
}

func (s *Bolt) tryAsync(b *bolt.Bucket, o asyncOp) (err error) {
	if o.update == nil {
		return s.apply(b, o.op)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: panic in update: %v", p)
		}
	}()
	if o.op.Key == "" {
		return ErrEmptyKey
	}
	_, err = s.update(b, o.op.Key, o.update)
	return err
}

// Scan implements Store. Keys come in sorted order. It reads in short
// transactions, so fn may write to the store.
func (s *Bolt) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
	type kv struct {
		k string
		v []byte
	}
	from := []byte(prefix)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var page []kv
		var next []byte
		err := s.view(func(b *bolt.Bucket) error {
			now := s.opts.Now().UnixNano()
			c := b.Cursor()
			for k, v := c.Seek(from); k != nil; k, v = c.Next() {
				if len(k) < len(prefix) || string(k[:len(prefix)]) != prefix {
					return nil
				}
				if len(page) == boltScanStep {
					next = append([]byte{}, k...)
					return nil
				}
				if val, _, live := decodeBolt(v, now); live {
					page = append(page, kv{string(k), append([]byte{}, val...)})
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, e := range page {
			if err := fn(e.k, e.v); err != nil {
				return err
			}
		}
		if next == nil {
			return nil
		}
		from = next
	}
}

// Sweep removes expired keys from the file now, and returns how many it
// removed. The background sweeper calls it every SweepInterval.
func (s *Bolt) Sweep(ctx context.Context) (int, error) {
	total := 0
	var from []byte
	for {
		var next []byte
		removed := 0
		err := s.write(ctx, func(b *bolt.Bucket) error {
			now := s.opts.Now().UnixNano()
			c := b.Cursor()
			k, v := c.First()
			if from != nil {
				k, v = c.Seek(from)
			}
			for n := 0; k != nil; n++ {
				if n == boltSweepStep {
					next = append([]byte{}, k...)
					return nil
				}
				if _, _, live := decodeBolt(v, now); !live {
					kc := append([]byte{}, k...)
					if err := c.Delete(); err != nil {
						return err
					}
					removed++
					// After Delete, Next may skip a key: seek past
					// the deleted one instead.
					k, v = c.Seek(kc)
					continue
				}
				k, v = c.Next()
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total += removed
		if next == nil {
			return total, nil
		}
		from = next
	}
}

func (s *Bolt) sweeper() {
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-s.quit:
			case <-ctx.Done():
			}
			cancel()
		}()
		start := time.Now()
		n, err := s.Sweep(ctx)
		cancel()
		switch {
		case err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, context.Canceled):
			s.opts.Logger.Warn("state store sweep failed", "store", "bolt", "path", s.path, "err", err)
		case n > 0:
			s.opts.Logger.Debug("state store swept", "store", "bolt", "path", s.path, "removed", n, "took", time.Since(start))
		}
	}
}

// Health implements Store: nil unless the store is closed or its last
// commit failed.
func (s *Bolt) Health() error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr != nil {
		return fmt.Errorf("%w: state file %s: %v", ErrUnavailable, s.path, s.lastErr)
	}
	return nil
}

// Close stops the sweeper, finishes queued writes and closes the file.
func (s *Bolt) Close() error {
	var err error
	s.once.Do(func() {
		s.closed.Store(true)
		close(s.quit)
		<-s.done
		err = s.db.Close()
	})
	return err
}
