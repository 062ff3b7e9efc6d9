package main

import (
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

// logCmd reads decision logs and shows what mxguard refused and why: one
// terse line per record, or a summary. With no file it reads the config's
// log.path (or standard input when that is "-").
func logFlags(fs *flag.FlagSet) runner {
	path := fs.String("config", defaultConfig, "configuration file (for log.path when no file is given)")
	all := fs.Bool("all", false, "every record, not only refusals")
	would := fs.Bool("would", false, "only what rules in log mode would have refused")
	client := fs.String("client", "", "client address or CIDR")
	rule := fs.String("rule", "", "rule, a pattern: helo.*, dnsbl*, deny.partners")
	stage := fs.String("stage", "", "connect, helo, mail, rcpt or data")
	text := fs.String("text", "", "text in the HELO, sender or recipients")
	session := fs.String("session", "", "one session id")
	since := fs.Duration("since", 0, "only the last DURATION (e.g. 2h)")
	summary := fs.Bool("summary", false, "counts by rule, stage and client instead of lines")
	asJSON := fs.Bool("json", false, "print the matching records as JSON lines")
	return func(files []string, stdout, stderr io.Writer) int {
		return logCmd(logOptions{path: *path, all: *all, would: *would, client: *client, rule: *rule, stage: *stage,
			text: *text, session: *session, since: *since, summary: *summary, asJSON: *asJSON, files: files}, stdout, stderr)
	}
}

// logOptions are log's flags and arguments.
type logOptions struct {
	path, client, rule, stage, text, session string
	all, would, summary, asJSON              bool
	since                                    time.Duration
	files                                    []string
}

func logCmd(o logOptions, stdout, stderr io.Writer) int {
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
				return 1
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		f.Client = p
	}
	if o.since > 0 {
		f.Since = time.Now().Add(-o.since)
	}

	files := o.files
	if len(files) == 0 {
		cfg, err := config.Load(o.path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		files = []string{cfg.Log.Path}
	}
	sum := decisionlog.NewSummary()
	enc := json.NewEncoder(stdout)
	var bad int
	for _, name := range files {
		var in io.Reader = os.Stdin
		if name != "-" {
			fh, err := os.Open(name)
			if err != nil {
				fmt.Fprintf(stderr, "mxguard log: %v\n", err)
				return 1
			}
			defer fh.Close()
			in = fh
		}
		st, err := decisionlog.Read(in, func(r decisionlog.Record) error {
			if !f.Match(r) {
				return nil
			}
			switch {
			case o.summary:
				sum.Add(r)
			case o.asJSON:
				return enc.Encode(r)
			default:
				_, err := fmt.Fprintln(stdout, decisionlog.Line(r))
				return err
			}
			return nil
		})
		if err != nil {
			fmt.Fprintf(stderr, "mxguard log: %s: %v\n", name, err)
			return 1
		}
		bad += st.Bad
	}
	if o.summary {
		sum.Write(stdout, 20)
	}
	if bad > 0 {
		fmt.Fprintf(stderr, "mxguard log: skipped %d lines that are not decision log records\n", bad)
	}
	return 0
}
