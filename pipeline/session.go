package pipeline

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/rules"
)

// Decision is what the pipeline says at one stage.
type Decision = rules.Decision

// Session is one connection as the checks see it. Its stage methods are
// called in SMTP order from one goroutine (the connection's); only the DNS
// work started at connect runs beside it, and hands its answers over on
// channels.
type Session struct {
	p         *Pipeline
	facts     checks.Session
	trusted   bool
	waitEnded atomic.Bool

	// Results: conn holds the connection's (connect, command and HELO
	// stages), txn the transaction's (MAIL, DATA), rcpt the recipient's
	// being decided (they are about that recipient alone: a greylisted or
	// rate-limited recipient does not refuse the others); all every result
	// of the session, whatever became of its transactions, for the
	// session's log record.
	conn, txn, rcpt, all []checks.Result
	// pass: connection tests passed earlier and skipped now (postscreen's
	// PASS OLD); failed: a connection test reported something this time.
	pass    map[checks.Name]bool
	ran     map[checks.Name]bool // command tests that ran
	failed  bool
	mailed  bool     // the client began a transaction
	allowed int      // recipients on an allow list of every check
	held    []string // recipients accepted only to be refused after DATA
	score   float64  // the last decision's: all the log needs of it

	rdnsDone  chan struct{}
	rdns      string // set before rdnsDone is closed
	onEndWait func()
}

// Greeting is what the connection stage saw: what the client sent before
// the banner and when, and whether it was made to wait.
type Greeting struct {
	Early  []byte
	After  time.Duration
	Waited bool
}

// NewSession starts the checks of a new connection: the reverse DNS and the
// checks' own connect-time work (the DNS lists) begin at once, so they run
// during the greeting wait. endWait, if not nil, is called when a check
// finds the wait needless (a DNS allowlisting); it may run on any
// goroutine.
func (p *Pipeline) NewSession(id string, client netip.AddrPort, endWait func()) *Session {
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	s := &Session{p: p, trusted: p.cfg.Trusted(client.Addr()), onEndWait: endWait}
	s.facts = checks.Session{ID: id, Client: client, Trusted: s.trusted, RDNS: s.RDNS, EndWait: s.endWait}
	s.rdnsDone = make(chan struct{})
	if p.Resolver == nil || !client.Addr().IsValid() {
		close(s.rdnsDone)
	} else {
		go s.lookupRDNS()
	}
	if s.trusted {
		return s
	}
	if p.memory != nil && client.Addr().IsValid() {
		rec := p.memory.Recall(context.Background(), client.Addr())
		for _, c := range p.checks {
			if c.passTTL > 0 && rec.Passed[c.spec.Name] {
				if s.pass == nil {
					s.pass = map[checks.Name]bool{}
				}
				s.pass[c.spec.Name] = true
			}
		}
		s.facts.Known = rec.Results
	}
	matched := s.lists()
	for _, c := range p.byStage[checks.AtConnect] {
		if st, ok := c.run.(checks.Starter); ok && !s.skipped(c, matched) {
			st.Start(&s.facts)
		}
	}
	return s
}

func (s *Session) endWait() {
	s.waitEnded.Store(true)
	if s.onEndWait != nil {
		s.onEndWait()
	}
}

// WaitEnded reports that a check found the greeting wait needless (a DNS
// allowlisting) and called endWait.
func (s *Session) WaitEnded() bool { return s.waitEnded.Load() }

// Trusted reports a client in trusted_networks: no checks at all.
func (s *Session) Trusted() bool { return s.trusted }

// Client is the client's address.
func (s *Session) Client() netip.AddrPort { return s.facts.Client }

// Facts is the session as the checks see it; read-only for the caller.
func (s *Session) Facts() *checks.Session { return &s.facts }

// RDNS waits for and returns the client's verified reverse DNS name: "" if
// there is none, checks.TempUnavail if the look-up failed for now.
func (s *Session) RDNS() string {
	<-s.rdnsDone // bounded by the look-up's own timeout
	return s.rdns
}

// HELOs returns every HELO/EHLO name the client used.
func (s *Session) HELOs() []string { return s.facts.HELOs }

// SawHELO reports whether name was checked on this connection already.
func (s *Session) SawHELO(name string) bool { return slices.Contains(s.facts.HELOs, name) }

// Results returns the results the decisions weigh now: the connection's,
// the transaction's, the recipient's being decided.
func (s *Session) Results() []checks.Result {
	out := make([]checks.Result, 0, len(s.conn)+len(s.txn)+len(s.rcpt))
	return append(append(append(out, s.conn...), s.txn...), s.rcpt...)
}

// All returns every result of the session, of every transaction.
func (s *Session) All() []checks.Result { return s.all }

// Score returns the last decision's score.
func (s *Session) Score() float64 { return s.score }

// Rcpts returns the recipients accepted in this transaction.
func (s *Session) Rcpts() []string { return s.facts.Rcpts }

// SkipGreeting says whether the client skips the greeting wait, and why:
// trusted, on an allow list, passed before (postscreen's PASS OLD), or a
// check found the wait needless before it began (a DNS allowlisting).
func (s *Session) SkipGreeting() (bool, string) {
	switch {
	case s.trusted:
		return true, "trusted"
	case len(s.p.waits) == 0:
		return true, "no greeting test"
	case s.waitEnded.Load():
		return true, "allowlisted"
	}
	matched := s.lists()
	listed, passed := true, true
	for _, c := range s.p.waits {
		listed = listed && s.p.Policy.Skips(matched, c.spec.Name)
		passed = passed && s.pass[c.spec.Name]
	}
	switch {
	case listed:
		return true, "allow list"
	case passed:
		return true, "pass old"
	}
	return false, ""
}

// Connect decides after the greeting: the connect-stage checks (the DNS
// lists, waited for within their timeout; the early-talker test), and the
// client and rDNS lists. Only a drop acts before the banner; other refusals
// wait for their stage.
func (s *Session) Connect(ctx context.Context, g Greeting) Decision {
	s.facts.Early, s.facts.EarlyAfter, s.facts.Waited = g.Early, g.After, g.Waited
	return s.stage(ctx, checks.AtConnect)
}

// Command judges one command line before the SMTP parser sees it
// (postscreen's after-greeting tests). pipelined says it came before the
// reply to the command before it. Most lines make no decision at all.
func (s *Session) Command(ctx context.Context, line []byte, pipelined bool) (Decision, bool) {
	if s.trusted || len(s.p.byStage[checks.AtCommand]) == 0 {
		return Decision{}, false
	}
	s.facts.Line, s.facts.Pipelined = line, pipelined
	s.facts.Lines++
	n := len(s.all)
	d := s.stage(ctx, checks.AtCommand)
	s.facts.Line = nil
	return d, len(s.all) > n
}

// Helo checks a HELO/EHLO name not seen before on this connection. Every
// name's results stay: saying HELO again does not wash a verdict.
func (s *Session) Helo(ctx context.Context, name string) Decision {
	if s.SawHELO(name) {
		return s.decide(checks.AtHELO, s.lists())
	}
	s.facts.HELO = name
	s.facts.HELOs = append(s.facts.HELOs, name)
	return s.stage(ctx, checks.AtHELO)
}

// Mail starts a transaction and checks the sender.
func (s *Session) Mail(ctx context.Context, from string) Decision {
	s.Reset()
	s.mailed = true
	s.facts.From = &from
	return s.stage(ctx, checks.AtMail)
}

// Rcpt decides on one recipient: recipient lists apply to it alone, so a
// recipient on a full allow list (postmaster@) is accepted despite a
// pending refusal.
func (s *Session) Rcpt(ctx context.Context, to string) Decision {
	s.facts.Rcpt, s.rcpt = to, nil // the last recipient's results stay for its log record until now
	d := s.stage(ctx, checks.AtRcpt)
	s.facts.Rcpt = ""
	switch {
	case d.Hold:
		s.held = append(s.held, to)
	case !d.Refuse:
		s.facts.Rcpts = append(s.facts.Rcpts, to)
		if d.SkipAll {
			s.allowed++
		}
	}
	return d
}

// Recipients returns every recipient the client was told was accepted in
// this transaction: those relayed, then those held for a refusal at DATA.
func (s *Session) Recipients() []string {
	if len(s.held) == 0 {
		return s.facts.Rcpts
	}
	return append(slices.Clip(s.facts.Rcpts), s.held...)
}

// Reset ends the transaction (RSET, end of DATA, a new EHLO, MAIL).
func (s *Session) Reset() {
	s.facts.ResetTransaction()
	s.txn, s.rcpt = s.txn[:0], nil
	s.allowed, s.held = 0, nil
}

// Finish records how the connection went in the memory of clients: the
// connection tests it passed, the messages accepted and the refusals given
// (by the check that caused each).
func (s *Session) Finish(accepted int, refusals []checks.Name) {
	if s.trusted || s.p.memory == nil || !s.facts.Client.Addr().IsValid() {
		return
	}
	// A command test is passed by a client that got as far as a
	// transaction without failing it; one that hung up before proved
	// nothing.
	if s.mailed {
		for _, c := range s.p.checks {
			if c.last == checks.AtCommand && s.ran[c.spec.Name] {
				s.remember(c)
			}
		}
	}
	s.p.memory.Record(s.facts.Client.Addr(), accepted, refusals)
}

// stage runs the checks of one stage and decides.
func (s *Session) stage(ctx context.Context, at checks.Stage) Decision {
	if s.trusted {
		return s.decide(at, nil)
	}
	matched := s.lists()
	for _, c := range s.p.byStage[at] {
		if s.skipped(c, matched) || (c.spec.Greeting && !s.facts.Waited && len(s.facts.Early) == 0) {
			continue
		}
		began := time.Now()
		rs := c.run.Run(ctx, at, &s.facts)
		s.p.metrics.CheckDuration(string(c.spec.Name), time.Since(began))
		if c.passTTL > 0 && at == checks.AtCommand {
			if s.ran == nil {
				s.ran = map[checks.Name]bool{}
			}
			s.ran[c.spec.Name] = true
		}
		if len(rs) > 0 && c.spec.Test && !s.failed {
			s.failed = true
			s.forgetPasses()
		}
		s.add(at, rs)
	}
	d := s.decide(at, matched)
	if at == checks.AtConnect && !d.Action.Refuses() {
		for _, c := range s.p.byStage[at] {
			if c.last == at && !s.skipped(c, matched) &&
				(!c.spec.Greeting || s.facts.Waited || len(s.facts.Early) > 0) {
				s.remember(c)
			}
		}
	}
	return d
}

// remember records a connection test's pass.
func (s *Session) remember(c *check) {
	if c.passTTL > 0 && !s.pass[c.spec.Name] && !s.failed && s.facts.Client.Addr().IsValid() {
		s.p.memory.Pass(s.facts.Client.Addr(), c.spec.Name, c.passTTL)
	}
}

// forgetPasses forgets every pass of a client that failed a connection
// test: it takes them all again next time.
func (s *Session) forgetPasses() {
	if s.p.memory == nil || !s.facts.Client.Addr().IsValid() {
		return
	}
	for _, c := range s.p.checks {
		if c.passTTL > 0 {
			s.p.memory.Fail(s.facts.Client.Addr(), c.spec.Name)
		}
	}
}

func (s *Session) add(at checks.Stage, rs []checks.Result) {
	if len(rs) == 0 {
		return
	}
	switch {
	case at == checks.AtRcpt:
		s.rcpt = append(s.rcpt, rs...)
	case at >= checks.AtMail:
		s.txn = append(s.txn, rs...)
	default:
		s.conn = append(s.conn, rs...)
	}
	s.all = append(s.all, rs...)
}

// skipped says whether a check does not run for this session: an allow
// list switches it off, or the client passed it earlier.
func (s *Session) skipped(c *check, matched []*rules.List) bool {
	return s.pass[c.spec.Name] || (matched != nil && s.p.Policy.Skips(matched, c.spec.Name))
}

// lists returns the lists that match now (nil without lists: the common
// case, asked at every stage).
func (s *Session) lists() []*rules.List {
	if !s.p.Policy.HasLists() {
		return nil
	}
	f := rules.Facts{Client: s.facts.Client.Addr(), HELO: s.facts.HELOs, From: s.facts.From, Rcpt: s.facts.Rcpt}
	select {
	case <-s.rdnsDone:
		f.RDNS = s.rdns
	default:
	}
	return s.p.Policy.MatchLists(f)
}

// decide asks the rules about everything so far.
func (s *Session) decide(at checks.Stage, matched []*rules.List) Decision {
	if s.trusted {
		d := rules.Trusted(at)
		s.score = d.Score
		return d
	}
	in := rules.Input{At: at, Client: s.facts.Client.Addr(), Lists: matched, Results: [][]checks.Result{s.conn, s.txn, s.rcpt},
		RcptsExempt: len(s.facts.Rcpts) > 0 && s.allowed == len(s.facts.Rcpts)}
	d := s.p.Policy.Judge(in)
	s.score = d.Score
	return d
}

// lookupRDNS finds the client's forward-confirmed reverse DNS name.
func (s *Session) lookupRDNS() {
	defer close(s.rdnsDone)
	timeout := 2 * s.p.cfg.DNS.Timeout.D() * time.Duration(max(s.p.cfg.DNS.Attempts, 1))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s.rdns = verifiedName(ctx, s.p.Resolver, s.facts.Client.Addr())
}

func verifiedName(ctx context.Context, res checks.Resolver, ip netip.Addr) string {
	names, err := res.LookupAddr(ctx, ip.String())
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return ""
		}
		return checks.TempUnavail
	}
	network := "ip4"
	if ip.Is6() {
		network = "ip6"
	}
	temp := false
	for i, name := range names {
		if i == 10 { // a PTR set this large is not a mail server's
			break
		}
		ips, err := res.LookupIP(ctx, network, name)
		if err != nil {
			var de *net.DNSError
			temp = temp || !(errors.As(err, &de) && de.IsNotFound)
			continue
		}
		for _, a := range ips {
			if b, ok := netip.AddrFromSlice(a); ok && b.Unmap() == ip {
				return strings.ToLower(strings.TrimSuffix(name, "."))
			}
		}
	}
	if temp {
		return checks.TempUnavail
	}
	return ""
}
