package decisionlog

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rec is a log line at second sec of a minute, with a session id naming it.
func rec(sec int, id string) string {
	return fmt.Sprintf(`{"time":"2026-11-23T15:00:%02dZ","msg":"session","session":%q}`+"\n", sec, id)
}

func ids(t *testing.T, scs []*Scanner) string {
	t.Helper()
	var got []string
	if err := Merge(scs, func(r Record) error { got = append(got, r.Session); return nil }); err != nil {
		t.Fatal(err)
	}
	return strings.Join(got, " ")
}

func TestMerge(t *testing.T) {
	cases := []struct {
		name  string
		files []string
		want  string
	}{
		{"one", []string{rec(1, "a") + rec(2, "b")}, "a b"},
		{"rotated, newest first", []string{rec(5, "e") + rec(6, "f"), rec(3, "c") + rec(4, "d"), rec(1, "a") + rec(2, "b")}, "a b c d e f"},
		{"rotated, mixed", []string{rec(3, "c") + rec(4, "d"), rec(5, "e"), rec(1, "a") + rec(2, "b")}, "a b c d e"},
		{"interleaved (two machines)", []string{rec(1, "a") + rec(3, "c") + rec(5, "e"), rec(2, "b") + rec(4, "d")}, "a b c d e"},
		{"ties go to the earlier file", []string{rec(1, "x1") + rec(2, "x2"), rec(1, "y1") + rec(2, "y2")}, "x1 y1 x2 y2"},
		{"a file's own order is kept", []string{rec(2, "b") + rec(1, "a"), rec(3, "c")}, "b a c"},
		{"empty and junk files", []string{"", "junk\n", rec(1, "a")}, "a"},
		{"no files", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var scs []*Scanner
			for _, f := range c.files {
				scs = append(scs, NewScanner(strings.NewReader(f)))
			}
			if got := ids(t, scs); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestMergeStopsOnError(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := Merge([]*Scanner{NewScanner(strings.NewReader(rec(1, "a") + rec(2, "b")))}, func(Record) error { n++; return stop })
	if err != stop || n != 1 {
		t.Errorf("err %v after %d records", err, n)
	}
}

func gz(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Gzip is recognised by its magic bytes, not the file's name.
func TestOpen(t *testing.T) {
	plain := rec(1, "a") + rec(2, "b")
	packed := gz(t, plain)
	cases := []struct {
		name    string
		data    []byte
		want    string
		wantErr string
	}{
		{"mxguard.log", []byte(plain), "a b", ""},
		{"mxguard.log.2.gz", packed, "a b", ""},
		{"gzipped without .gz", packed, "a b", ""},
		{"plain named .gz", []byte(plain), "a b", ""},
		{"two gzip streams.gz", append(gz(t, rec(1, "a")), gz(t, rec(2, "b"))...), "a b", ""},
		{"empty", nil, "", ""},
		{"cut short.gz", packed[:len(packed)-10], "", "unexpected EOF"},
		{"bad gzip header", []byte{0x1f, 0x8b, 0, 0}, "", "gunzip"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name)
			os.WriteFile(p, c.data, 0o644)
			r, err := Open(p)
			if err != nil {
				if c.wantErr == "" || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("open: %v", err)
				}
				return
			}
			defer r.Close()
			s := NewScanner(r)
			var got []string
			for s.Scan() {
				got = append(got, s.Record().Session)
			}
			if err := s.Err(); (err != nil) != (c.wantErr != "") || err != nil && !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("err %v, want %q", err, c.wantErr)
			}
			if c.wantErr == "" && strings.Join(got, " ") != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
	if _, err := Open(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestSummarySeenAndRefusal(t *testing.T) {
	recs, _ := readSample(t)
	s := NewSummary()
	for _, r := range recs {
		s.Seen(r)
		if r.Rule == "dnsbl" {
			s.Refusal(r)
		}
	}
	if s.Sessions != 1 || s.Relayed != 1 || s.Refused != 1 || s.Would != 0 || s.ByRule["dnsbl"] != 1 || len(s.ByRule) != 1 {
		t.Errorf("summary %+v", s)
	}
}
