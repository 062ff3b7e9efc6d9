package proxy

import (
	"bytes"
	"io"
	"sync"
)

// message is a message read in full from the client.
type message struct {
	buf *bytes.Buffer
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readMessage reads the client's DATA (go-smtp has undone the dot-stuffing
// and enforces the size limit).
func readMessage(r io.Reader) (*message, error) {
	b := bufPool.Get().(*bytes.Buffer)
	b.Reset()
	if _, err := b.ReadFrom(r); err != nil {
		bufPool.Put(b)
		return nil, err
	}
	return &message{buf: b}, nil
}

func (m *message) reader() io.Reader { return bytes.NewReader(m.buf.Bytes()) }

func (m *message) size() int { return m.buf.Len() }

func (m *message) release() {
	if m.buf.Cap() <= 1<<20 { // do not keep huge buffers around
		bufPool.Put(m.buf)
	}
	m.buf = nil
}
