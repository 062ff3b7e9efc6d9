package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/decisionlog"
)

// logCounts are what genLog wrote.
type logCounts struct{ lines, sessions, relayed, refused, would, bytes int }

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n *int
}

func (c countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	*c.n += n
	return n, err
}

// genLog writes lines first to first+n-1 of a decision log with a line
// every step from start, like a busy mxguard's: relayed messages,
// sessions, refusals by three rules and log-mode refusals, from 5000
// client addresses.
func genLog(w io.Writer, first, n int, start time.Time, step time.Duration) logCounts {
	c := logCounts{lines: n}
	bw := bufio.NewWriterSize(countWriter{w, &c.bytes}, 64<<10)
	defer bw.Flush()
	rules := []string{"helo.localhost", "dnsbl", "pregreet"}
	for i := first; i < first+n; i++ {
		t := start.Add(time.Duration(i) * step).UTC().Format(time.RFC3339Nano)
		client := fmt.Sprintf("10.0.%d.%d:%d", i/250%20, i%250+1, 1024+i%60000)
		id := fmt.Sprintf("S%010d", i)
		switch i % 5 {
		case 0:
			c.relayed++
			fmt.Fprintf(bw, `{"time":%q,"level":"INFO","msg":"relayed","session":%q,"client":%q,"helo":"mail.sender.example","from":"alice@sender.example","rcpt":["bob@demo.example"],"size":4096,"action":"accept","score":-2,"reply":"250 2.0.0 Ok: queued as %s"}`+"\n", t, id, client, id)
		case 1, 4:
			c.sessions++
			fmt.Fprintf(bw, `{"time":%q,"level":"INFO","msg":"session","session":%q,"client":%q,"helo":["mail.sender.example"],"trusted":false,"tls":false,"accepted":1,"refused":0,"rcpts":1,"score":-2,"checks":[{"check":"helo","outcome":"helo.pass","reason":"HELO mail.sender.example resolves to the client"}],"elapsed":2.014,"last_reply":"250 2.0.0 Ok"}`+"\n", t, id, client)
		case 2:
			c.refused++
			fmt.Fprintf(bw, `{"time":%q,"level":"INFO","msg":"refused","session":%q,"client":%q,"stage":"rcpt","action":"reject","rule":%q,"reason":"HELO localhost is a name for the local machine","score":0,"reply":"550 5.5.2 Helo command rejected (helo.localhost)","helo":"localhost","from":"alice@sender.example","rcpt":"bob@demo.example","checks":[{"check":"helo","outcome":"helo.localhost","reason":"HELO localhost is a name for the local machine"}],"elapsed":2.006}`+"\n", t, id, client, rules[i/5%3])
		case 3:
			c.would++
			fmt.Fprintf(bw, `{"time":%q,"level":"INFO","msg":"would refuse","session":%q,"client":%q,"stage":"mail","action":"reject","rule":"deny.new-blocklist","reason":"sender is on deny list new-blocklist","score":0,"reply":"550 5.7.1 Access denied (deny.new-blocklist)","mode":"log","from":"x@cheap-pills.test"}`+"\n", t, id, client)
		}
	}
	return c
}

// rotatedLogs writes n lines as logrotate with delaycompress leaves them:
// mxguard.log.3.gz and .2.gz (35% each, oldest), mxguard.log.1 (20%),
// mxguard.log (10%), and returns the names newest first.
func rotatedLogs(t testing.TB, dir string, n int, start time.Time, step time.Duration) ([]string, logCounts) {
	t.Helper()
	var total logCounts
	parts := []struct {
		name  string
		share int
		gzip  bool
	}{{"mxguard.log.3.gz", 35, true}, {"mxguard.log.2.gz", 35, true}, {"mxguard.log.1", 20, false}, {"mxguard.log", 10, false}}
	var names []string
	done := 0
	for i, p := range parts {
		k := n * p.share / 100
		if i == len(parts)-1 {
			k = n - done
		}
		name := filepath.Join(dir, p.name)
		f, err := os.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		var w io.Writer = f
		var zw *gzip.Writer
		if p.gzip {
			zw, _ = gzip.NewWriterLevel(f, gzip.BestSpeed)
			w = zw
		}
		c := genLog(w, done, k, start, step)
		total.bytes += c.bytes
		if zw != nil {
			zw.Close()
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		total.lines += c.lines
		total.sessions += c.sessions
		total.relayed += c.relayed
		total.refused += c.refused
		total.would += c.would
		done += k
		names = append([]string{name}, names...)
	}
	return names, total
}

// Rotated logs, plain and gzipped, given newest first, come out oldest
// first; a gzipped file is recognised without its .gz.
func TestLogRotated(t *testing.T) {
	dir := t.TempDir()
	names, c := rotatedLogs(t, dir, 100, time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC), time.Minute)
	renamed := filepath.Join(dir, "old-log")
	if err := os.Rename(names[3], renamed); err != nil { // mxguard.log.3.gz
		t.Fatal(err)
	}
	names[3] = renamed
	var out, errb bytes.Buffer
	if code := run(append([]string{"log", "-all", "-json"}, names...), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var last time.Time
	n := 0
	if _, err := decisionlog.Read(&out, func(r decisionlog.Record) error {
		if r.Time.Before(last) {
			t.Errorf("record %d at %s after one at %s", n, r.Time, last)
		}
		last = r.Time
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != c.lines {
		t.Errorf("%d records, want %d", n, c.lines)
	}
	out.Reset()
	if code := run(append([]string{"log", "-summary", "-rule", "dnsbl"}, names...), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	want := fmt.Sprintf("sessions %d, messages relayed %d, refusals 7, would-refuse (log mode) 0", c.sessions, c.relayed)
	if !strings.Contains(out.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, out.String())
	}
}

// Standard input: "-", or no file when log.path is "-"; gzipped or not.
func TestLogStdin(t *testing.T) {
	sample := mustRead(t, "../../testdata/log/sample.log")
	var packed bytes.Buffer
	zw := gzip.NewWriter(&packed)
	zw.Write(sample)
	zw.Close()
	dir := t.TempDir()
	empty, cfg := filepath.Join(dir, "empty.log"), filepath.Join(dir, "mxguard.toml")
	os.WriteFile(empty, nil, 0o644)
	os.WriteFile(cfg, []byte("hostname = \"mx.example.com\"\n[log]\npath = \"-\"\n"), 0o644)
	cases := []struct {
		name  string
		files []string
		in    []byte
	}{
		{"dash", []string{"-"}, sample},
		{"dash gzipped", []string{"-"}, packed.Bytes()},
		{"log.path -", nil, sample},
		{"dash among files", []string{empty, "-"}, sample},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			o := logOptions{path: cfg, files: c.files, stdin: bytes.NewReader(c.in)}
			if code := logCmd(o, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			if n := strings.Count(out.String(), "\n"); n != 5 {
				t.Errorf("%d lines:\n%s", n, out.String())
			}
		})
	}
	var errb bytes.Buffer
	if code := logCmd(logOptions{files: []string{"-", "-"}, stdin: strings.NewReader("")}, io.Discard, &errb); code != 2 {
		t.Errorf("- twice: exit %d %s", code, errb.String())
	}
}

// -since and -until take a duration ago or an RFC 3339 time.
func TestLogTimeWindow(t *testing.T) {
	// sample.log's refusals are at 15:38:46, :48, :49, :50 (log mode) and :51.
	const sample = "../../testdata/log/sample.log"
	recent := filepath.Join(t.TempDir(), "recent.log")
	f, _ := os.Create(recent)
	genLog(f, 0, 20, time.Now().Add(-200*time.Minute), 10*time.Minute) // refusals at -180m, -170m, -130m, -120m, -80m, -70m, -30m, -20m
	f.Close()
	cases := []struct {
		args  []string
		lines int
	}{
		{[]string{"-since", "2026-11-23T15:38:49Z", sample}, 3},
		{[]string{"-until", "2026-11-23T15:38:49Z", sample}, 2},
		{[]string{"-since", "2026-11-23T15:38:48Z", "-until", "2026-11-23T15:38:50.5Z", sample}, 3},
		{[]string{"-since", "2026-11-23T16:38:49+01:00", sample}, 3},
		{[]string{"-since", "100m", recent}, 4},
		{[]string{"-until", "100m", recent}, 4},
		{[]string{"-since", "150m", "-until", "1h", recent}, 4},
		{[]string{"-since", "1h", sample}, 0},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		if code := run(append([]string{"log"}, c.args...), &out, &errb); code != 0 {
			t.Errorf("%v: exit %d: %s", c.args, code, errb.String())
			continue
		}
		if n := strings.Count(out.String(), "\n"); n != c.lines {
			t.Errorf("%v: %d lines, want %d:\n%s", c.args, n, c.lines, out.String())
		}
	}
	for _, args := range [][]string{{"-since", "yesterday"}, {"-until", "-5m"}, {"-since", "1h", "-until", "2h"}, {"-client", "nowhere"}} {
		var errb bytes.Buffer
		if code := run(append(append([]string{"log"}, args...), sample), io.Discard, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", args, code, errb.String())
		}
	}
}

// The totals count every record read whatever the filter; -since and
// -until bound what is read.
func TestLogSummaryTotals(t *testing.T) {
	const sample = "../../testdata/log/sample.log"
	cases := []struct {
		args []string
		want string
	}{
		{nil, "sessions 1, messages relayed 1, refusals 4, would-refuse (log mode) 1"},
		{[]string{"-all"}, "sessions 1, messages relayed 1, refusals 4, would-refuse (log mode) 1"},
		{[]string{"-client", "203.0.113.0/24"}, "sessions 1, messages relayed 1, refusals 1, would-refuse (log mode) 0"},
		{[]string{"-would"}, "sessions 1, messages relayed 1, refusals 0, would-refuse (log mode) 1"},
		{[]string{"-since", "2026-11-23T15:38:46Z"}, "sessions 0, messages relayed 0, refusals 4, would-refuse (log mode) 1"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		args := append(append([]string{"log", "-summary"}, c.args...), sample)
		if code := run(args, &out, &errb); code != 0 || !strings.Contains(out.String(), c.want) {
			t.Errorf("%v: exit %d, want %q:\n%s%s", c.args, code, c.want, out.String(), errb.String())
		}
	}
}

// A file cut short is read up to the cut, then reported: exit 1.
func TestLogTruncatedGzip(t *testing.T) {
	var packed bytes.Buffer
	zw := gzip.NewWriter(&packed)
	genLog(zw, 0, 2000, time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC), time.Second)
	zw.Close()
	p := filepath.Join(t.TempDir(), "mxguard.log.2.gz")
	os.WriteFile(p, packed.Bytes()[:packed.Len()/2], 0o644)
	var out, errb bytes.Buffer
	code := run([]string{"log", p}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), p+": unexpected EOF") || out.Len() == 0 {
		t.Errorf("exit %d, %d bytes out, stderr %q", code, out.Len(), errb.String())
	}
}

// TestLogHelperProcess is `mxguard` for TestLogMemory: it runs the
// arguments after "--" when MXGUARD_LOG_HELPER is set.
func TestLogHelperProcess(t *testing.T) {
	if os.Getenv("MXGUARD_LOG_HELPER") == "" {
		t.Skip("run by TestLogMemory")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(run(args, os.Stdout, os.Stderr))
}

// logMaxRSS runs `mxguard log ARGS` in a process of its own and returns
// its peak resident memory in bytes, its standard output and how long it
// took.
func logMaxRSS(t *testing.T, args ...string) (int64, string, time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestLogHelperProcess$", "--", "log"}, args...)...)
	cmd.Env = append(os.Environ(), "MXGUARD_LOG_HELPER=1", "GOGC=100", "GOMEMLIMIT=off")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if args[0] == "-all" {
		cmd.Stdout = io.Discard
	}
	began := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("mxguard log %v: %v: %s", args, err, errb.String())
	}
	return cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10, out.String(), time.Since(began)
}

// mxguard log streams: its memory does not grow with the log. Ten times
// the lines must not take more than a few MB more. MXGUARD_LOG_LINES sets
// the larger size (docs/reliability.md has the figures for 1,000,000).
func TestLogMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and reads 100,000 log lines")
	}
	big := 100_000
	if s := os.Getenv("MXGUARD_LOG_LINES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1000 {
			t.Fatalf("MXGUARD_LOG_LINES=%q", s)
		}
		big = n
	}
	start := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	type run struct {
		lines        int
		summary, all int64
	}
	var runs []run
	for _, n := range []int{big / 10, big} {
		dir := t.TempDir()
		names, c := rotatedLogs(t, dir, n, start, 50*time.Millisecond)
		var size int64
		for _, name := range names {
			fi, _ := os.Stat(name)
			size += fi.Size()
		}
		rss, out, took := logMaxRSS(t, append([]string{"-summary"}, names...)...)
		want := fmt.Sprintf("sessions %d, messages relayed %d, refusals %d, would-refuse (log mode) %d", c.sessions, c.relayed, c.refused, c.would)
		if !strings.Contains(out, want) {
			t.Fatalf("%d lines: summary lacks %q:\n%s", n, want, out)
		}
		rssAll, _, tookAll := logMaxRSS(t, append([]string{"-all"}, names...)...)
		runs = append(runs, run{n, rss, rssAll})
		t.Logf("%d lines, %.0f MB (%.0f MB on disk, 70%% gzipped, in 4 files): max RSS %.1f MB for -summary (%.1fs), %.1f MB for -all (%.1fs)",
			n, float64(c.bytes)/1e6, float64(size)/1e6, float64(rss)/(1<<20), took.Seconds(), float64(rssAll)/(1<<20), tookAll.Seconds())
	}
	const slack = 8 << 20
	if runs[1].summary > runs[0].summary+slack || runs[1].all > runs[0].all+slack {
		t.Errorf("memory grows with the log: %+v", runs)
	}
}
