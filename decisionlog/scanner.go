package decisionlog

import (
	"bufio"
	"io"
)

// Scanner reads records one at a time, skipping (and counting) lines that
// are not records. It holds one line at a time, so memory stays flat
// however long the log is.
type Scanner struct {
	br  *bufio.Reader
	rec Record
	st  Stats
	err error
}

// NewScanner reads records from r.
func NewScanner(r io.Reader) *Scanner {
	return &Scanner{br: bufio.NewReaderSize(r, 64<<10)}
}

// Scan advances to the next record; false at the end or on a read error
// (see Err).
func (s *Scanner) Scan() bool {
	for s.err == nil {
		line, err := readLine(s.br)
		if err != nil {
			s.err = err
		}
		if len(line) == 0 {
			continue
		}
		s.st.Lines++
		rec, perr := Parse(line)
		if perr != nil {
			s.st.Bad++
			continue
		}
		s.st.Records++
		s.rec = rec
		return true
	}
	return false
}

// Record is the record Scan found.
func (s *Scanner) Record() Record { return s.rec }

// Stats counts the lines read so far.
func (s *Scanner) Stats() Stats { return s.st }

// Err is the read error that ended the scan, nil at a clean end.
func (s *Scanner) Err() error {
	if s.err == io.EOF {
		return nil
	}
	return s.err
}

// Merge calls fn for the records of every scanner in time order, for
// rotated logs given in any order (mxguard.log.2.gz mxguard.log.1
// mxguard.log) and logs of several machines: the next record is always
// the earliest of the scanners' next ones, ties going to the earlier
// scanner, and each scanner's own order is kept. It holds one record per
// scanner. fn's error stops it and is returned; a scanner's read error ends
// that scanner only (see its Err).
func Merge(scs []*Scanner, fn func(Record) error) error {
	live := make([]*Scanner, 0, len(scs))
	for _, s := range scs {
		if s.Scan() {
			live = append(live, s)
		}
	}
	for len(live) > 0 {
		next := 0
		for i, s := range live[1:] {
			if s.rec.Time.Before(live[next].rec.Time) {
				next = i + 1
			}
		}
		s := live[next]
		if err := fn(s.rec); err != nil {
			return err
		}
		if !s.Scan() {
			live = append(live[:next], live[next+1:]...)
		}
	}
	return nil
}
