package proxy

import (
	"bytes"
	"io"
)

// nulFilter reads a message and counts its NUL bytes; with remove set it
// drops them. It sits after go-smtp's end-of-data handling, so removing a
// NUL can never make "\r\n\x00.\r\n" the end of the message here; toward the
// backend the line is dot-stuffed like any other (a backend that drops NULs
// before looking for the end of data must never see one).
type nulFilter struct {
	r      io.Reader
	remove bool
	n      int
}

func (f *nulFilter) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if k := bytes.Count(p[:n], []byte{0}); k > 0 {
		f.n += k
		if f.remove {
			n = copy(p, bytes.ReplaceAll(p[:n], []byte{0}, nil))
		}
	}
	return n, err
}
