// Package decisionlog reads mxguard's decision log (JSON lines) back: it
// parses records, filters them, and sums them up, for `mxguard log`.
// Lines it cannot read are counted and skipped, never fatal: a log may be
// cut mid-line by a crash or mixed with other output.
package decisionlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path"
	"strings"
	"time"

	"github.com/mxguard/mxguard/checks"
)

// MaxLine bounds one record; a longer line is skipped.
const MaxLine = 1 << 20

// Record is one line of the decision log. Fields a line does not have are
// zero.
type Record struct {
	Time    time.Time       `json:"time"`
	Level   string          `json:"level"`
	Msg     string          `json:"msg"`
	Session string          `json:"session"`
	Client  string          `json:"client"`
	Stage   string          `json:"stage"`
	Action  string          `json:"action"`
	Rule    string          `json:"rule"`
	Reason  string          `json:"reason"`
	Reply   string          `json:"reply"`
	Where   string          `json:"where"`
	Mode    string          `json:"mode"`
	Helo    json.RawMessage `json:"helo"` // a string on refusals, a list on session lines
	From    *string         `json:"from"`
	Rcpt    json.RawMessage `json:"rcpt"` // a string on refusals, a list on relayed lines
	Score   float64         `json:"score"`
	Checks  []checks.Result `json:"checks"`
	Elapsed float64         `json:"elapsed"`
}

// Parse reads one log line.
func Parse(line []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return Record{}, err
	}
	if r.Msg == "" {
		return Record{}, errors.New("not a decision log record: no msg")
	}
	return r, nil
}

// HELO returns the HELO name(s) of the record, joined by ",".
func (r Record) HELO() string { return stringOrList(r.Helo) }

// Recipients returns the recipient(s) of the record, joined by ",".
func (r Record) Recipients() string { return stringOrList(r.Rcpt) }

func stringOrList(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var l []string
	if json.Unmarshal(raw, &l) == nil {
		return strings.Join(l, ",")
	}
	return ""
}

// ClientAddr returns the client's address, if the record has one.
func (r Record) ClientAddr() (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(r.Client); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(r.Client)
	return a, err == nil
}

// Stats counts what Read saw.
type Stats struct {
	Lines, Records, Bad int
}

// Read calls fn for every record in r, in order, and counts the lines it
// had to skip. fn's error stops reading and is returned.
func Read(r io.Reader, fn func(Record) error) (Stats, error) {
	s := NewScanner(r)
	for s.Scan() {
		if err := fn(s.Record()); err != nil {
			return s.Stats(), err
		}
	}
	return s.Stats(), s.Err()
}

// readLine returns the next line without its end; a line over MaxLine is
// returned as one byte that does not parse, so it counts as bad.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > MaxLine {
			line = []byte{0}
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			if err == nil || err == io.EOF {
				return line, err
			}
			return nil, err
		}
		line = append(line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		return bytes.TrimRight(line, "\r\n"), err
	}
}

// Filter selects records. Zero fields match everything.
type Filter struct {
	Msgs    []string     // "refused", "would refuse", "session", "relayed", ...
	Client  netip.Prefix // the client's address is in it
	Rule    string       // the rule, a path.Match pattern: "helo.*", "dnsbl*"
	Stage   string       // connect, helo, mail, rcpt, data
	Text    string       // in the HELO, sender or recipients (case-insensitive)
	Since   time.Time
	Until   time.Time
	Session string
}

// Match reports whether r passes the filter.
func (f Filter) Match(r Record) bool {
	if len(f.Msgs) > 0 && !contains(f.Msgs, r.Msg) {
		return false
	}
	if f.Client.IsValid() {
		a, ok := r.ClientAddr()
		if !ok || !f.Client.Contains(a) {
			return false
		}
	}
	if f.Rule != "" {
		if ok, _ := path.Match(f.Rule, r.Rule); !ok {
			return false
		}
	}
	if f.Stage != "" && r.Stage != f.Stage {
		return false
	}
	if f.Session != "" && r.Session != f.Session {
		return false
	}
	if !f.Since.IsZero() && r.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !r.Time.Before(f.Until) {
		return false
	}
	if f.Text != "" {
		from := ""
		if r.From != nil {
			from = *r.From
		}
		hay := strings.ToLower(r.HELO() + " " + from + " " + r.Recipients())
		if !strings.Contains(hay, strings.ToLower(f.Text)) {
			return false
		}
	}
	return true
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// Line renders a record on one terse, greppable line, postscreen style:
//
//	2026-11-23 15:38:48 REFUSED rcpt 192.0.2.7:40280 helo=localhost from=<a@example.org> to=<b@example.com> rule=helo.localhost: 550 5.5.2 ...
func Line(r Record) string {
	var b strings.Builder
	b.WriteString(r.Time.UTC().Format("2006-01-02 15:04:05"))
	b.WriteByte(' ')
	b.WriteString(strings.ToUpper(r.Msg))
	if r.Stage != "" {
		b.WriteString(" " + r.Stage)
	}
	if r.Client != "" {
		b.WriteString(" " + r.Client)
	}
	if h := r.HELO(); h != "" {
		b.WriteString(" helo=" + h)
	}
	if r.From != nil {
		b.WriteString(" from=<" + *r.From + ">")
	}
	if rc := r.Recipients(); rc != "" {
		b.WriteString(" to=<" + strings.ReplaceAll(rc, ",", ">,<") + ">")
	}
	if r.Rule != "" {
		b.WriteString(" rule=" + r.Rule)
	}
	if r.Score != 0 {
		fmt.Fprintf(&b, " score=%g", r.Score)
	}
	if r.Session != "" {
		b.WriteString(" session=" + r.Session)
	}
	if r.Reply != "" {
		b.WriteString(": " + r.Reply)
	} else if r.Reason != "" {
		b.WriteString(": " + r.Reason)
	}
	return b.String()
}
