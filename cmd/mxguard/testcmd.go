package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/message"
	"github.com/mxguard/mxguard/pipeline"
	"github.com/mxguard/mxguard/rules"
	"github.com/mxguard/mxguard/zonedns"
)

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// testSession answers "what would mxguard do with this?": it runs a
// described session through every check and rule, with live DNS or a zone
// file, and sends mail nowhere. The exit status is 0 if the mail would be
// accepted, 4 for a temporary refusal, 5 for a permanent one, 1 on error.
func testFlags(fs *flag.FlagSet) runner {
	path := fs.String("config", defaultConfig, "configuration file")
	zone := fs.String("zone", "", "answer DNS from this zone file instead of the configured resolvers")
	client := fs.String("client", "", "the client's IP address (required)")
	helo := fs.String("helo", "", "HELO/EHLO name")
	from := fs.String("from", "", "MAIL FROM address (\"\" with -null-sender for <>)")
	null := fs.Bool("null-sender", false, "MAIL FROM:<>")
	var to listFlag
	fs.Var(&to, "to", "RCPT TO address (repeat for several)")
	msgFile := fs.String("message", "", "message file (RFC 5322) for the DATA stage")
	pregreet := fs.Bool("pregreet", false, "the client talked before the greeting")
	asJSON := fs.Bool("json", false, "print JSON")
	return noArgs("test", func(stdout, stderr io.Writer) int {
		return testSession(testOptions{path: *path, zone: *zone, client: *client, helo: *helo, from: *from,
			null: *null, to: to, msgFile: *msgFile, pregreet: *pregreet, asJSON: *asJSON}, stdout, stderr)
	})
}

// testOptions are test's flags.
type testOptions struct {
	path, zone, client, helo, from, msgFile string
	null, pregreet, asJSON                  bool
	to                                      []string
}

func testSession(o testOptions, stdout, stderr io.Writer) int {
	ip, err := netip.ParseAddr(o.client)
	if err != nil {
		fmt.Fprintf(stderr, "mxguard test: -client %q is not an IP address\n", o.client)
		return 1
	}
	cfg, err := config.Load(o.path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	dnsFrom := "resolvers " + strings.Join(cfg.DNS.Resolvers, ", ")
	if o.zone != "" {
		data, err := os.ReadFile(o.zone)
		if err != nil {
			fmt.Fprintf(stderr, "mxguard test: %v\n", err)
			return 1
		}
		srv, err := zonedns.New(string(data))
		if err == nil {
			err = srv.Start("127.0.0.1:0")
		}
		if err != nil {
			fmt.Fprintf(stderr, "mxguard test: %s: %v\n", o.zone, err)
			return 1
		}
		defer srv.Close()
		cfg.DNS.Resolvers = []string{srv.Addr()}
		dnsFrom = "zone file " + o.zone
	} else if len(cfg.DNS.Resolvers) == 0 {
		dnsFrom = "/etc/resolv.conf"
	}
	res, err := newResolver(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	p, err := pipeline.New(cfg, checks.Env{Resolver: res})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	var msg *message.Spool
	if o.msgFile != "" {
		f, err := os.Open(o.msgFile)
		if err != nil {
			fmt.Fprintf(stderr, "mxguard test: %v\n", err)
			return 1
		}
		msg = message.NewSpool(cfg.Message.MemoryLimit, cfg.Message.SpoolDir)
		_, err = msg.ReadFrom(crlf(f))
		f.Close()
		defer msg.Close()
		if err != nil {
			fmt.Fprintf(stderr, "mxguard test: %v\n", err)
			return 1
		}
	}
	sender := o.from
	if o.null {
		sender = ""
	} else if sender == "" && len(o.to) > 0 {
		fmt.Fprintln(stderr, "mxguard test: -from is needed with -to (or -null-sender)")
		return 1
	}

	r := trace{p: p, s: p.NewSession("test", netip.AddrPortFrom(ip, 40000), nil)}
	r.Header = fmt.Sprintf("client %s, config %s, DNS from %s", ip, o.path, dnsFrom)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r.stage("connect", "", func() pipeline.Decision {
		g := pipeline.Greeting{Waited: true} // a client that waited for the banner
		if o.pregreet {
			g.Early = []byte("EHLO " + cmp.Or(o.helo, "client.example") + "\r\n")
		}
		return r.s.Connect(ctx, g)
	})
	if o.helo != "" && !r.over() {
		r.stage("helo", o.helo, func() pipeline.Decision { return r.s.Helo(ctx, o.helo) })
	}
	if (sender != "" || o.null) && !r.over() {
		r.stage("mail", "<"+sender+">", func() pipeline.Decision { return r.s.Mail(ctx, sender) })
	}
	// A refused recipient does not end a session: the client may try the
	// next one. The session is refused at RCPT only if every one was.
	accepted := 0
	var lastRefusal finalOut
	for _, rc := range o.to {
		if r.over() {
			break
		}
		r.stage("rcpt", "<"+rc+">", func() pipeline.Decision { return r.s.Rcpt(ctx, rc) })
		if r.Final.Refused && r.Final.Action != "drop" {
			lastRefusal, r.Final = r.Final, finalOut{}
		} else {
			accepted++
		}
	}
	if len(o.to) > 0 && accepted == 0 {
		r.Final = lastRefusal
	}
	if msg != nil && !r.over() && len(r.s.Recipients()) > 0 {
		r.stage("data", fmt.Sprintf("%d bytes", msg.Size()), func() pipeline.Decision {
			d, prep := r.s.Data(ctx, msg)
			r.Headers = string(prep.Prepend)
			return d
		})
	}
	r.finish()
	if o.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		r.print(stdout)
	}
	switch {
	case r.Final.Action == "tempfail":
		return 4
	case r.Final.Refused:
		return 5
	}
	return 0
}

// trace is one described session, stage by stage.
type trace struct {
	p    *pipeline.Pipeline
	s    *pipeline.Session
	seen int // results already shown

	Header  string     `json:"session"`
	Stages  []stageOut `json:"stages"`
	Final   finalOut   `json:"result"`
	Headers string     `json:"headers,omitempty"`
}

type stageOut struct {
	Stage    string    `json:"stage"`
	Arg      string    `json:"arg,omitempty"`
	Outcomes []outcome `json:"outcomes"`
	Lists    []string  `json:"lists,omitempty"`
	Action   string    `json:"action"`
	Score    float64   `json:"score"`
	Rule     string    `json:"rule,omitempty"`
	Where    string    `json:"where,omitempty"`
	Reply    string    `json:"reply,omitempty"`
	Effect   string    `json:"effect"`
	Would    *wouldOut `json:"would,omitempty"`
}

type outcome struct {
	checks.Result
	Weight string `json:"weight"`
}

type wouldOut struct {
	Action, Rule, Reply string
}

type finalOut struct {
	Refused bool    `json:"refused"`
	Stage   string  `json:"stage,omitempty"`
	Action  string  `json:"action"`
	Reply   string  `json:"reply,omitempty"`
	Rule    string  `json:"rule,omitempty"`
	Score   float64 `json:"score"`
}

func (r *trace) over() bool { return r.Final.Refused }

func (r *trace) stage(name, arg string, f func() pipeline.Decision) {
	d := f()
	out := stageOut{Stage: name, Arg: arg, Action: d.Action.String(), Score: d.Score, Rule: d.Rule, Where: d.Where}
	all := r.s.Results()
	for _, res := range all[min(r.seen, len(all)):] {
		out.Outcomes = append(out.Outcomes, outcome{Result: res, Weight: r.weight(res)})
	}
	r.seen = len(all)
	for _, l := range r.p.Policy.MatchLists(rules.Facts{Client: r.s.Client().Addr(), RDNS: r.s.RDNS(), HELO: r.s.HELOs()}) {
		out.Lists = append(out.Lists, l.Name+" ("+l.Where+")")
	}
	switch {
	case d.Refuse:
		out.Reply = d.Reply.String()
		out.Effect = "refused: " + d.Reply.String()
		if d.Action == rules.Drop {
			out.Effect += ", and the connection is dropped"
		}
		r.Final = finalOut{Refused: true, Stage: name, Action: d.Action.String(), Reply: d.Reply.String(), Rule: d.Rule, Score: d.Score}
	case d.Hold:
		out.Effect = fmt.Sprintf("accepted here; refused at %s with %s", d.Verdict.Stage, d.Reply)
	case d.Action.Refuses():
		out.Effect = fmt.Sprintf("refusal pending, given at %s: %s", d.Verdict.Stage, d.Reply)
	case name == "connect":
		out.Effect = "greeted"
	default:
		out.Effect = "accepted, relayed to the backend"
		if d.Action == rules.Tag {
			out.Effect = "accepted and tagged"
		}
	}
	if w := d.Would; w != nil {
		out.Would = &wouldOut{Action: w.Action.String(), Rule: w.Rule, Reply: w.Reply.String()}
	}
	r.Stages = append(r.Stages, out)
	if !r.Final.Refused {
		r.Final = finalOut{Action: d.Action.String(), Score: d.Score, Rule: d.Rule}
	}
}

func (r *trace) weight(res checks.Result) string {
	rule, ok := r.p.Policy.Rule(res.Outcome)
	w := res.Score
	if ok && rule.Weight != 0 {
		w = rule.Weight
	}
	switch {
	case ok && (rule.Action == rules.Ignore):
		return "ignored"
	case ok && rule.Action != rules.Score:
		return rule.Action.String()
	case w == 0:
		return "0"
	}
	return fmt.Sprintf("%+g", w)
}

func (r *trace) finish() {
	if !r.Final.Refused && r.Final.Action == "" {
		r.Final.Action = "accept"
	}
}

func (r *trace) print(w io.Writer) {
	fmt.Fprintf(w, "mxguard test: %s\n\n", r.Header)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	for _, st := range r.Stages {
		title := st.Stage
		if st.Arg != "" {
			title += " " + st.Arg
		}
		fmt.Fprintf(tw, "%s\n", strings.ToUpper(title[:1])+title[1:])
		for _, o := range st.Outcomes {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", o.Outcome, o.Weight, o.Reason)
		}
		for _, l := range st.Lists {
			fmt.Fprintf(tw, "  list\t\t%s\n", l)
		}
		fmt.Fprintf(tw, "  → %s (score %g", st.Action, st.Score)
		if st.Rule != "" {
			fmt.Fprintf(tw, ", rule %s", st.Rule)
			if st.Where != "" {
				fmt.Fprintf(tw, " at %s", st.Where)
			}
		}
		fmt.Fprintf(tw, "): %s\n", st.Effect)
		if st.Would != nil {
			fmt.Fprintf(tw, "  would have refused (a rule in log mode, or an exemption): %s, rule %s: %s\n", st.Would.Action, st.Would.Rule, st.Would.Reply)
		}
	}
	tw.Flush()
	if r.Headers != "" {
		fmt.Fprintf(w, "\nHeader fields added:\n%s", r.Headers)
	}
	fmt.Fprintln(w)
	if r.Final.Refused {
		fmt.Fprintf(w, "Result: refused at %s: %s\n", strings.ToUpper(r.Final.Stage), r.Final.Reply)
	} else {
		fmt.Fprintf(w, "Result: %s (score %g)\n", r.Final.Action, r.Final.Score)
	}
}

// crlf makes a message file's bare LF line ends CRLF, as they arrive over
// SMTP.
func crlf(r io.Reader) io.Reader {
	b, _ := io.ReadAll(r)
	s := strings.ReplaceAll(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n", "\r\n")
	return strings.NewReader(s)
}
