package message

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

// dirEntries lists what is left in a spool directory.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSpoolBoundary(t *testing.T) {
	const limit = 100
	msg := bytes.Repeat([]byte("0123456789"), 30) // 300 bytes
	cases := []struct {
		size     int
		inMemory bool
	}{
		{0, true},
		{1, true},
		{limit - 1, true},
		{limit, true},
		{limit + 1, false},
		{3 * limit, false},
	}
	for _, c := range cases {
		dir := t.TempDir()
		s := NewSpool(limit, dir)
		// One byte at a time too, so that the spill happens in the middle
		// of a ReadFrom and not only on a chunk boundary.
		for _, r := range []io.Reader{bytes.NewReader(msg[:c.size]), iotest.OneByteReader(bytes.NewReader(msg[:c.size]))} {
			s.Close()
			s = NewSpool(limit, dir)
			n, err := s.ReadFrom(r)
			if err != nil || n != int64(c.size) || s.Size() != int64(c.size) {
				t.Fatalf("size %d: ReadFrom = %d, %v; Size %d", c.size, n, err, s.Size())
			}
			if s.InMemory() != c.inMemory {
				t.Errorf("size %d: InMemory = %v, want %v", c.size, s.InMemory(), c.inMemory)
			}
			// Read it three times, each way.
			for range 3 {
				if got := readAll(t, s.Reader()); !bytes.Equal(got, msg[:c.size]) {
					t.Fatalf("size %d: read back %d bytes, differ", c.size, len(got))
				}
			}
			if c.size > 10 {
				r := s.Reader()
				if _, err := r.Seek(10, io.SeekStart); err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, r); !bytes.Equal(got, msg[10:c.size]) {
					t.Errorf("size %d: read after Seek differs", c.size)
				}
				b := make([]byte, 5)
				if _, err := s.Reader().ReadAt(b, 3); err != nil || string(b) != "34567" {
					t.Errorf("size %d: ReadAt = %q, %v", c.size, b, err)
				}
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("size %d: Close: %v", c.size, err)
		}
		if left := dirEntries(t, dir); len(left) != 0 {
			t.Errorf("size %d: left behind %v", c.size, left)
		}
	}
}

// failAfter yields n bytes, then an error: a client that drops the
// connection in the middle of DATA.
type failAfter struct {
	r io.Reader
}

var errCut = errors.New("connection reset")

func (f *failAfter) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errCut
	}
	return n, err
}

func TestSpoolCleanup(t *testing.T) {
	dir := t.TempDir()
	s := NewSpool(10, dir)
	n, err := s.ReadFrom(&failAfter{strings.NewReader(strings.Repeat("x", 1000))})
	if !errors.Is(err, errCut) || n != 1000 {
		t.Fatalf("ReadFrom = %d, %v", n, err)
	}
	if s.InMemory() {
		t.Fatal("1000 bytes still in memory with a limit of 10")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if left := dirEntries(t, dir); len(left) != 0 {
		t.Errorf("left behind %v", left)
	}
	if _, err := io.ReadAll(s.Reader()); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: %v", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
}

// A reader taken before Close fails afterwards instead of reading a
// reused file descriptor.
func TestSpoolReaderAfterClose(t *testing.T) {
	s := NewSpool(1, t.TempDir())
	if _, err := s.ReadFrom(strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	r := s.Reader()
	s.Close()
	if _, err := io.ReadAll(r); err == nil {
		t.Error("reader over a closed spool still reads")
	}
}

// A spool whose directory cannot take a file reports the error, keeps
// failing, and still closes cleanly.
func TestSpoolNoDir(t *testing.T) {
	s := NewSpool(4, t.TempDir()+"/missing")
	_, err := s.ReadFrom(strings.NewReader("more than four"))
	if err == nil {
		t.Fatal("spilling into a missing directory worked")
	}
	if _, err2 := s.Write([]byte("x")); err2 == nil {
		t.Error("write after a failed spill worked")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// Write and ReadFrom append to each other: the spool can sit behind
// io.MultiWriter while DKIM reads the same stream.
func TestSpoolWrite(t *testing.T) {
	dir := t.TempDir()
	s := NewSpool(8, dir)
	defer s.Close()
	io.WriteString(s, "head ")
	s.ReadFrom(strings.NewReader("and a longer body"))
	io.WriteString(s, "!")
	if got := string(readAll(t, s.Reader())); got != "head and a longer body!" {
		t.Errorf("got %q", got)
	}
}

func BenchmarkSpool(b *testing.B) {
	msg := bytes.Repeat([]byte("x"), 1<<20)
	for _, limit := range []int64{2 << 20, 64 << 10} {
		name := "memory"
		if limit < int64(len(msg)) {
			name = "file"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				s := NewSpool(limit, dir)
				s.ReadFrom(bytes.NewReader(msg))
				io.Copy(io.Discard, s.Reader())
				s.Close()
			}
		})
	}
}

// A message of several memory chunks reads back whole and in pieces that
// straddle chunk boundaries.
func TestSpoolChunks(t *testing.T) {
	msg := make([]byte, 3*chunkSize+17)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	s := NewSpool(int64(len(msg)), t.TempDir())
	defer s.Close()
	if _, err := s.ReadFrom(iotest.HalfReader(bytes.NewReader(msg))); err != nil {
		t.Fatal(err)
	}
	if !s.InMemory() {
		t.Fatal("spilled at the limit")
	}
	if err := iotest.TestReader(s.Reader(), msg); err != nil {
		t.Error(err)
	}
	for _, off := range []int{0, chunkSize - 1, chunkSize, 2*chunkSize - 3, len(msg) - 5} {
		b := make([]byte, chunkSize+10)
		n, err := s.Reader().ReadAt(b, int64(off))
		want := msg[off:min(off+len(b), len(msg))]
		if !bytes.Equal(b[:n], want) || (n < len(b)) != (err == io.EOF) {
			t.Errorf("ReadAt(%d): %d bytes, %v", off, n, err)
		}
	}
}
