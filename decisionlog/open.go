package decisionlog

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
)

// Decompress returns r's content, gunzipped when it starts with gzip's
// magic bytes, whatever the file is called (logrotate's "compress", a log
// piped through gzip). Concatenated gzip streams are read as one.
func Decompress(r io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		return gzip.NewReader(br)
	}
	return br, nil
}

// Open opens a log file for reading, gunzipped if need be.
func Open(name string) (io.ReadCloser, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	r, err := Decompress(f)
	if err != nil {
		f.Close()
		return nil, &os.PathError{Op: "gunzip", Path: name, Err: err}
	}
	return struct {
		io.Reader
		io.Closer
	}{r, f}, nil
}
