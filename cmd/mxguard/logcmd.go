package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/decisionlog"
)

// logFlags sets up `mxguard log`: it reads decision logs (plain or gzipped,
// several in time order, or standard input) and shows what mxguard refused
// and why: one terse line per record, or a summary. With no file it reads
// the config's log.path (standard input when that is "-").
func logFlags(fs *flag.FlagSet) runner {
	o := logOptions{stdin: os.Stdin}
	fs.StringVar(&o.path, "config", defaultConfig, "configuration `file` (for log.path when no file is given)")
	fs.BoolVar(&o.all, "all", false, "every record, not only refusals")
	fs.BoolVar(&o.would, "would", false, "only what rules in log mode would have refused")
	fs.StringVar(&o.client, "client", "", "client `address` or CIDR")
	fs.StringVar(&o.rule, "rule", "", "the deciding rule, a `pattern`: helo.*, dnsbl*, deny.partners")
	fs.StringVar(&o.stage, "stage", "", "the `stage` of the refusal: connect, helo, mail, rcpt or data")
	fs.StringVar(&o.text, "text", "", "`text` in the HELO, sender or recipients")
	fs.StringVar(&o.session, "session", "", "one session `id`")
	fs.Var(&o.since, "since", "only records from this `time` on: a duration ago (2h, 30m) or an RFC 3339 time (2026-11-23T15:00:00Z)")
	fs.Var(&o.until, "until", "only records before this `time`: a duration ago (1h) or an RFC 3339 time")
	fs.BoolVar(&o.summary, "summary", false, "counts instead of lines: sessions and relayed messages read, refusals by rule, stage and client")
	fs.BoolVar(&o.asJSON, "json", false, "print the matching records as JSON lines")
	return func(files []string, stdout, stderr io.Writer) int {
		o.files = files
		return logCmd(o, stdout, stderr)
	}
}

// logOptions are log's flags and arguments.
type logOptions struct {
	path, client, rule, stage, text, session string
	all, would, summary, asJSON              bool
	since, until                             timeFlag
	files                                    []string
	stdin                                    io.Reader
}

// timeFlag is -since or -until: a duration ago or a point in time.
type timeFlag struct {
	ago time.Duration
	at  time.Time
}

func (t *timeFlag) Set(s string) error {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		*t = timeFlag{ago: d}
		return nil
	}
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("want a duration ago (2h) or an RFC 3339 time (2026-11-23T15:00:00Z)")
	}
	*t = timeFlag{at: at}
	return nil
}

func (t *timeFlag) String() string {
	switch {
	case t == nil:
		return ""
	case !t.at.IsZero():
		return t.at.Format(time.RFC3339Nano)
	case t.ago > 0:
		return t.ago.String()
	}
	return ""
}

// time is the point the flag names, zero when it was not given.
func (t timeFlag) time(now time.Time) time.Time {
	if t.ago > 0 {
		return now.Add(-t.ago)
	}
	return t.at
}

func logCmd(o logOptions, stdout, stderr io.Writer) int {
	f, code := o.filter(stderr)
	if code != 0 {
		return code
	}
	scanners, names, closeAll, code := o.open(stderr)
	if code != 0 {
		return code
	}
	defer closeAll()
	out := bufio.NewWriterSize(stdout, 64<<10)

	// The time window bounds what is read; the other filters select the
	// lines shown and the refusals counted.
	window := decisionlog.Filter{Since: f.Since, Until: f.Until}
	sum := decisionlog.NewSummary()
	enc := json.NewEncoder(out)
	err := decisionlog.Merge(scanners, func(r decisionlog.Record) error {
		if !window.Match(r) {
			return nil
		}
		if o.summary {
			sum.Seen(r)
		}
		if !f.Match(r) {
			return nil
		}
		switch {
		case o.summary:
			sum.Refusal(r)
		case o.asJSON:
			return enc.Encode(r)
		default:
			_, err := fmt.Fprintln(out, decisionlog.Line(r))
			return err
		}
		return nil
	})
	if err == nil && o.summary {
		sum.Write(out, 20)
	}
	if err == nil {
		err = out.Flush()
	}
	if err != nil {
		fmt.Fprintf(stderr, "mxguard log: %v\n", err)
		return 1
	}
	status, bad := 0, 0
	for i, s := range scanners {
		bad += s.Stats().Bad
		if err := s.Err(); err != nil {
			fmt.Fprintf(stderr, "mxguard log: %s: %v (the records before it were read)\n", names[i], err)
			status = 1
		}
	}
	if bad > 0 {
		fmt.Fprintf(stderr, "mxguard log: skipped %d lines that are not decision log records\n", bad)
	}
	return status
}

// filter turns the flags into a filter; a bad flag value is exit status 2.
func (o logOptions) filter(stderr io.Writer) (decisionlog.Filter, int) {
	f := decisionlog.Filter{Rule: o.rule, Stage: o.stage, Text: o.text, Session: o.session}
	switch {
	case o.would:
		f.Msgs = []string{"would refuse"}
	case !o.all:
		f.Msgs = []string{"refused", "would refuse"}
	}
	if o.client != "" {
		p, err := netip.ParsePrefix(o.client)
		if err != nil {
			a, aerr := netip.ParseAddr(o.client)
			if aerr != nil {
				fmt.Fprintf(stderr, "mxguard log: -client %q is not an address or CIDR\n", o.client)
				return f, 2
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		f.Client = p
	}
	now := time.Now()
	f.Since, f.Until = o.since.time(now), o.until.time(now)
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		fmt.Fprintf(stderr, "mxguard log: -since %s is not before -until %s\n", &o.since, &o.until)
		return f, 2
	}
	return f, 0
}

// open opens the logs to read: the files named, or log.path. "-" is
// standard input. Gzipped logs are recognised by their first bytes.
func (o logOptions) open(stderr io.Writer) (scanners []*decisionlog.Scanner, names []string, closeAll func(), code int) {
	names = o.files
	if len(names) == 0 {
		cfg, err := config.Load(o.path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return nil, nil, nil, 1
		}
		names = []string{cfg.Log.Path}
	}
	var closers []io.Closer
	closeAll = func() {
		for _, c := range closers {
			c.Close()
		}
	}
	stdinUsed := false
	for _, name := range names {
		var r io.Reader
		if name == "-" {
			if stdinUsed {
				closeAll()
				fmt.Fprintln(stderr, "mxguard log: standard input (-) given twice")
				return nil, nil, nil, 2
			}
			stdinUsed = true
			in, err := decisionlog.Decompress(o.stdin)
			if err != nil {
				closeAll()
				fmt.Fprintf(stderr, "mxguard log: standard input: %v\n", err)
				return nil, nil, nil, 1
			}
			r = in
		} else {
			rc, err := decisionlog.Open(name)
			if err != nil {
				closeAll()
				fmt.Fprintf(stderr, "mxguard log: %v\n", err)
				return nil, nil, nil, 1
			}
			closers = append(closers, rc)
			r = rc
		}
		scanners = append(scanners, decisionlog.NewScanner(r))
	}
	return scanners, names, closeAll, 0
}
