// Package message holds a client's message while mxguard judges it: the
// spool that keeps the bytes (in memory, or in a temporary file once they
// outgrow a limit) and the header parsing and rewriting the DATA stage
// needs. The proxy reads the whole message before relaying it, so that
// checks on the content can still refuse it.
package message

import (
	"errors"
	"io"
	"os"
	"runtime"
	"sync"
)

// Spool keeps one message. It fills once (ReadFrom, Write) and is then read
// as often as needed (Reader). It is not safe for concurrent writes;
// readers from Reader may run concurrently once writing is over.
type Spool struct {
	memLimit int64
	dir      string

	mem  chunks   // the message while it fits in memLimit
	f    *os.File // the message once it did not; mem is then nil
	name string   // f's path, until it is removed
	size int64

	err    error // the first write error; the spool is unusable after it
	closed bool
}

// ErrClosed is returned by a Spool used after Close.
var ErrClosed = errors.New("message: spool closed")

// NewSpool returns an empty spool that keeps up to memLimit bytes in
// memory and moves the message to a temporary file in dir ("" means
// os.TempDir()) as soon as it is larger.
func NewSpool(memLimit int64, dir string) *Spool {
	return &Spool{memLimit: max(memLimit, 0), dir: dir}
}

// copyBufSize is the chunk ReadFrom reads at a time; large enough that a
// 1 MB message takes few system calls once it goes to disk.
const copyBufSize = 32 << 10

// ReadFrom appends everything r has to the spool. On error, what was read
// so far stays in the spool (Close still cleans up).
func (s *Spool) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		m, rerr := r.Read(buf)
		if m > 0 {
			if _, err := s.Write(buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// Write appends p to the spool, so that a Spool can be the target of
// io.Copy or one side of an io.MultiWriter.
func (s *Spool) Write(p []byte) (int, error) {
	switch {
	case s.closed:
		return 0, ErrClosed
	case s.err != nil:
		return 0, s.err
	}
	if s.f == nil && s.size+int64(len(p)) <= s.memLimit {
		s.appendMem(p)
		return len(p), nil
	}
	if s.f == nil {
		if err := s.spill(); err != nil {
			s.err = err
			return 0, err
		}
	}
	n, err := s.f.Write(p)
	s.size += int64(n)
	if err != nil {
		s.err = err
	}
	return n, err
}

// spill moves the message from memory to a new temporary file.
func (s *Spool) spill() error {
	f, err := os.CreateTemp(s.dir, "mxguard-msg-*")
	if err != nil {
		return err
	}
	s.f, s.name = f, f.Name()
	// Where an open file can lose its name, it does so at once: then no
	// copy of someone's mail outlives the process, even after a crash or
	// kill -9. (Windows cannot; there Close removes it.)
	if runtime.GOOS != "windows" && os.Remove(s.name) == nil {
		s.name = ""
	}
	for _, c := range s.mem {
		if _, err := f.Write(c); err != nil {
			return err
		}
	}
	s.mem.release()
	s.mem = nil
	return nil
}

// chunkSize is the unit of memory a spool grows by. Fixed chunks, unlike
// one growing slice, are never copied as the message grows, and a large
// message needs no large contiguous allocation.
const chunkSize = 32 << 10

// chunks is a message in memory: every chunk but the last is full.
type chunks [][]byte

// Full-size chunks and ReadFrom's buffers are reused: a busy server would
// otherwise allocate (and zero, and collect) 64 KB for every small message.
// This is why no reader of a spool may be used after Close.
var (
	chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}
	bufPool   = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}
)

func newChunk(size int64) []byte {
	if size == chunkSize {
		return (*chunkPool.Get().(*[]byte))[:0]
	}
	return make([]byte, 0, size)
}

// release gives full-size chunks back to the pool.
func (c chunks) release() {
	for i, b := range c {
		if cap(b) == chunkSize {
			b = b[:0]
			chunkPool.Put(&b)
		}
		c[i] = nil
	}
}

// appendMem adds p, which fits in memLimit, to the chunks. A spool with
// a limit under chunkSize allocates no more than its limit.
func (s *Spool) appendMem(p []byte) {
	for len(p) > 0 {
		n := len(s.mem)
		if n == 0 || len(s.mem[n-1]) == cap(s.mem[n-1]) {
			s.mem = append(s.mem, newChunk(min(chunkSize, s.memLimit-s.size)))
			n++
		}
		c := s.mem[n-1]
		k := copy(c[len(c):cap(c)], p)
		s.mem[n-1] = c[:len(c)+k]
		p = p[k:]
		s.size += int64(k)
	}
}

func (c chunks) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("message: negative offset")
	}
	n := 0
	for n < len(p) {
		i, j := off/chunkSize, off%chunkSize
		if i >= int64(len(c)) || j >= int64(len(c[i])) {
			return n, io.EOF
		}
		k := copy(p[n:], c[i][j:])
		n += k
		off += int64(k)
	}
	return n, nil
}

// Size returns how many bytes the spool holds.
func (s *Spool) Size() int64 { return s.size }

// InMemory reports whether the message is still held in memory.
func (s *Spool) InMemory() bool { return s.f == nil }

// Reader returns a new reader over the whole message, positioned at its
// start. Each call gives an independent reader (io.ReadSeeker and
// io.ReaderAt), so the message can be read several times: once for DKIM,
// once to relay it. Readers made before Close must not be used after it
// (its memory is reused); readers made after fail.
func (s *Spool) Reader() *io.SectionReader {
	var ra io.ReaderAt = s.mem
	switch {
	case s.closed:
		ra = closedReaderAt{}
	case s.f != nil:
		ra = s.f
	}
	return io.NewSectionReader(ra, 0, s.size)
}

type closedReaderAt struct{}

func (closedReaderAt) ReadAt([]byte, int64) (int, error) { return 0, ErrClosed }

// Close releases the memory and removes the temporary file, whatever
// state the spool is in. It may be called more than once.
func (s *Spool) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.mem.release()
	s.mem = nil
	var err error
	if s.f != nil {
		err = s.f.Close()
	}
	if s.name != "" {
		if rerr := os.Remove(s.name); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		s.name = ""
	}
	return err
}
