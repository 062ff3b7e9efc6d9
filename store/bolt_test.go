package store

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The helper process: the test binary re-executed with helperEnv set to a
// role, the standard way to test what happens to another process.
const (
	helperEnv     = "MXGUARD_STORE_HELPER"
	helperPathEnv = "MXGUARD_STORE_HELPER_PATH"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "writer":
		helperWriter(os.Getenv(helperPathEnv))
	case "open-as-nobody":
		helperOpenAsNobody(os.Getenv(helperPathEnv))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper role")
		os.Exit(2)
	}
}

// helperWriter writes keys as fast as it can, from several goroutines,
// and prints each key once its write has returned, until it is killed.
func helperWriter(path string) {
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	out := make(chan string, 64)
	for g := range 4 {
		go func() {
			for i := 0; ; i++ {
				k := fmt.Sprintf("k:%d:%d:%d", os.Getpid(), g, i)
				if err := s.Set(context.Background(), k, []byte(strconv.Itoa(i)), time.Hour); err != nil {
					out <- "error " + err.Error()
					return
				}
				if _, err := s.Incr(context.Background(), "count", 1, 0); err != nil {
					out <- "error " + err.Error()
					return
				}
				out <- "ok " + k + " " + strconv.Itoa(i)
			}
		}()
	}
	w := bufio.NewWriter(os.Stdout)
	for line := range out {
		w.WriteString(line + "\n")
		if len(out) == 0 {
			w.Flush()
		}
	}
}

func helperOpenAsNobody(path string) {
	if err := syscall.Setgid(65534); err != nil {
		fmt.Println("setgid:", err)
		os.Exit(1)
	}
	if err := syscall.Setuid(65534); err != nil {
		fmt.Println("setuid:", err)
		os.Exit(1)
	}
	s, err := OpenBolt(path, BoltOptions{})
	if err == nil {
		s.Close()
		fmt.Println("opened")
		os.Exit(0)
	}
	fmt.Println(err)
	os.Exit(0)
}

// TestBoltKill9 kills a writing process with SIGKILL, three times over the
// same file: every write it had been told was done is there after, and
// the file passes bbolt's consistency check.
func TestBoltKill9(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	acked := map[string]string{}
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=writer", helperPathEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		killer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() }) // a stuck helper fails, not hangs
		sc := bufio.NewScanner(stdout)
		n := 0
		want := 300 + 200*round
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if f[0] != "ok" {
				t.Fatalf("helper: %s", sc.Text())
			}
			acked[f[1]] = f[2]
			if n++; n == want {
				cmd.Process.Signal(syscall.SIGKILL) // mid-writes: the helper never stops on its own
				break
			}
		}
		go func() { cmd.Wait(); close(done) }()
		<-done
		killer.Stop()
		if n < want {
			t.Fatalf("round %d: helper stopped after %d writes", round, n)
		}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: helper ended with %v, not SIGKILL", round, cmd.ProcessState)
		}

		s, err := OpenBolt(path, BoltOptions{})
		if err != nil {
			t.Fatalf("round %d: reopening after kill -9: %v", round, err)
		}
		for k, v := range acked {
			if got := mustGet(t, s, k); got != v {
				t.Fatalf("round %d: %s = %q, want %q", round, k, got, v)
			}
		}
		count, _ := strconv.Atoi(mustGet(t, s, "count"))
		if count < len(acked) {
			t.Fatalf("round %d: count = %d, fewer than the %d acknowledged writes", round, count, len(acked))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				t.Errorf("round %d: bbolt check: %v", round, err)
			}
			return nil
		})
		db.Close()
		t.Logf("round %d: %d writes acknowledged in all, count %d", round, len(acked), count)
	}
}

func TestBoltPersists(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "var", "lib", "mxguard")
	path := filepath.Join(dir, "state.db")
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o750 {
		t.Errorf("created directory has mode %o, want 750", perm)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v, %v; want mode 600", fi.Mode(), err)
	}
	s.Set(ctx, "kept", []byte("yes"), time.Hour)
	s.Set(ctx, "brief", []byte("no"), time.Millisecond)
	s.Close()
	time.Sleep(5 * time.Millisecond)

	s, err = OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := mustGet(t, s, "kept"); got != "yes" {
		t.Errorf("kept = %q", got)
	}
	wantMissing(t, s, "brief")
}

// TestBoltBadFiles: whatever is wrong with the file, OpenBolt says so,
// naming it, and nothing panics.
func TestBoltBadFiles(t *testing.T) {
	garbage := make([]byte, 64<<10)
	rand.Read(garbage)

	// A real store with some data, to truncate.
	good := filepath.Join(t.TempDir(), "good.db")
	s, err := OpenBolt(good, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ops []Op
	for i := range 5000 {
		ops = append(ops, Op{Kind: OpSet, Key: fmt.Sprintf("rep:%d", i), Value: make([]byte, 100)})
	}
	if err := s.Apply(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
	s.Close()
	full, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}

	// A bbolt file that is someone else's.
	foreign := filepath.Join(t.TempDir(), "foreign.db")
	db, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("kv"))
		return err
	})
	db.Close()
	foreignData, _ := os.ReadFile(foreign)

	for _, tc := range []struct {
		name  string
		setup func(path string)
		want  string
	}{
		{"garbage", func(p string) { os.WriteFile(p, garbage, 0o600) }, "not a valid bbolt database"},
		{"short garbage", func(p string) { os.WriteFile(p, []byte("hello, I am not a database\n"), 0o600) }, "not a valid bbolt database"},
		{"truncated to half", func(p string) { os.WriteFile(p, full[:len(full)/2], 0o600) }, "not a valid bbolt database"},
		{"truncated to 3 pages", func(p string) { os.WriteFile(p, full[:3*4096], 0o600) }, "not a valid bbolt database"},
		{"text file", func(p string) { os.WriteFile(p, []byte(strings.Repeat("state\n", 5000)), 0o600) }, "not a valid bbolt database"},
		{"directory", func(p string) { os.Mkdir(p, 0o700) }, "not a regular file"},
		{"foreign bbolt", func(p string) { os.WriteFile(p, foreignData, 0o600) }, "not an mxguard state file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			tc.setup(path)
			s, err := OpenBolt(path, BoltOptions{})
			if err == nil {
				s.Close()
				t.Fatal("opened without error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "state file "+path+": ") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q; want it to start with %q and contain %q", msg, "state file "+path+": ", tc.want)
			}
			t.Log(msg)
		})
	}

	// Damage in the pages themselves, past the header, is caught by the
	// check at open rather than by a panic in a session later.
	for _, tc := range []struct {
		name  string
		flags uint16 // page type to damage
	}{
		{"leaf pages", 0x02},
		{"branch pages", 0x01},
		{"freelist", 0x10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			corrupt := append([]byte{}, full...)
			n := 0
			for off := 2 * 4096; off+4096 <= len(corrupt); off += 4096 {
				if flags := uint16(corrupt[off+8]) | uint16(corrupt[off+9])<<8; flags == tc.flags {
					copy(corrupt[off+16:off+16+256], garbage[(n*256)%(len(garbage)-256):])
					n++
				}
			}
			if n == 0 {
				t.Fatalf("no page of type %#x in the file", tc.flags)
			}
			path := filepath.Join(t.TempDir(), "state.db")
			os.WriteFile(path, corrupt, 0o600)
			s, err := OpenBolt(path, BoltOptions{})
			if err == nil {
				s.Close()
				t.Fatalf("%d damaged pages: opened without error", n)
			}
			if !strings.Contains(err.Error(), "not a valid bbolt database") {
				t.Errorf("error %q", err)
			}
			t.Log(err)
		})
	}
}

func TestBoltUnreadable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	var msg string
	if os.Geteuid() != 0 {
		os.Chmod(path, 0)
		s, err := OpenBolt(path, BoltOptions{})
		if err == nil {
			s.Close()
			t.Fatal("opened a file mode 000")
		}
		msg = err.Error()
	} else {
		// root reads anything: open it as nobody from a helper process.
		os.Chmod(dir, 0o755) // let nobody reach the file itself
		os.Chmod(filepath.Dir(dir), 0o755)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=open-as-nobody", helperPathEnv+"="+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper: %v: %s", err, out)
		}
		msg = strings.TrimSpace(string(out))
	}
	if !strings.HasPrefix(msg, "state file "+path+": ") || !strings.Contains(msg, "permission denied") {
		t.Fatalf("error %q; want the path and permission denied", msg)
	}
	t.Log(msg)
}

// TestBoltLocked: a second opener gets a clear error after LockTimeout,
// not a hang.
func TestBoltLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	s2, err := OpenBolt(path, BoltOptions{LockTimeout: 200 * time.Millisecond})
	took := time.Since(start)
	if err == nil {
		s2.Close()
		t.Fatal("opened a locked file")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked by another process") || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q", err)
	}
	if took > 2*time.Second {
		t.Errorf("took %v to give up", took)
	}
	t.Log(err)
}

func rawCount(t *testing.T, s *Bolt) int {
	t.Helper()
	n := 0
	s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketKV).Stats().KeyN
		return nil
	})
	return n
}

func TestBoltSweep(t *testing.T) {
	ctx := context.Background()
	c := newFakeClock()
	s, err := OpenBolt(filepath.Join(t.TempDir(), "state.db"), BoltOptions{Now: c.Now, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ops []Op
	for i := range 25_000 { // several sweep steps
		ttl := time.Minute
		if i%3 == 0 {
			ttl = time.Hour
		}
		ops = append(ops, Op{Kind: OpSet, Key: fmt.Sprintf("k%06d", i), Value: []byte("v"), TTL: ttl})
	}
	if err := s.Apply(ctx, ops); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(ctx); n != 0 || err != nil {
		t.Fatalf("Sweep before expiry = %d, %v", n, err)
	}
	c.Advance(2 * time.Minute)
	n, err := s.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := 25_000 - 8334; n != want {
		t.Errorf("Sweep removed %d, want %d", n, want)
	}
	if got := rawCount(t, s); got != 8334 {
		t.Errorf("%d keys left in the file, want 8334", got)
	}
}

// TestBoltSweeper: the background sweeper runs by itself and stops with
// Close.
func TestBoltSweeper(t *testing.T) {
	c := newFakeClock()
	s, err := OpenBolt(filepath.Join(t.TempDir(), "state.db"), BoltOptions{Now: c.Now, SweepInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.Set(context.Background(), "a", []byte("1"), time.Second)
	s.Set(context.Background(), "b", []byte("1"), 0)
	c.Advance(2 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for rawCount(t, s) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not remove the expired key")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %v", took)
	}
}

// TestBoltUpdatePanics: a panicking UpdateFunc fails its call, not the
// store.
func TestBoltUpdatePanics(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "state.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Update(context.Background(), "k", TTL(0, func([]byte, bool) ([]byte, error) { panic("oops") }))
	if err == nil || !strings.Contains(err.Error(), "oops") {
		t.Fatalf("Update = %v", err)
	}
	if err := s.Set(context.Background(), "k", []byte("v"), 0); err != nil {
		t.Fatalf("Set after a panicking update: %v", err)
	}
	if err := s.Health(); err != nil {
		t.Fatal(err)
	}
}

func TestBoltContext(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "state.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Set(ctx, "k", nil, 0); !errors.Is(err, context.Canceled) && err != nil {
		t.Errorf("Set with a cancelled context: %v", err)
	}
}
