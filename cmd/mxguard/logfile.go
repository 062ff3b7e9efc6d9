package main

import (
	"io"
	"os"
	"sync"
)

// logFile is the decision log's destination; Reopen lets logrotate move the
// file away (SIGHUP).
type logFile struct {
	mu   sync.Mutex
	path string
	w    io.Writer
	f    *os.File
}

func openLog(path string, fallback io.Writer) (*logFile, error) {
	if path == "-" {
		return &logFile{path: path, w: os.Stdout}, nil
	}
	l := &logFile{path: path}
	return l, l.Reopen()
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Reopen opens the path again, keeping the old file if that fails.
func (l *logFile) Reopen() error {
	if l.path == "-" {
		return nil
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f, l.w = f, f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		return l.f.Close()
	}
	return nil
}
