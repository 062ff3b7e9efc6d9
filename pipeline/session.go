package pipeline

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/dnsbl"
	"github.com/mxguard/mxguard/rules"
)

// The stages of a session, in order.
type stage int

const (
	atConnect stage = iota
	atHELO
	atMail
	atRcpt
	atData
)

var stageNames = [...]string{"connect", "helo", "mail", "rcpt", "data"}

// Decision is what the pipeline says at one stage.
type Decision struct {
	rules.Verdict
	// Stage is where it was decided: connect, helo, mail, rcpt, data.
	Stage string
	// Refuse: give Reply now (and hang up if Action is Drop).
	Refuse bool
	// Hold (at MAIL or RCPT): accept without telling the backend; a
	// refusal decided already will be given at a later stage.
	Hold bool
	// Reply is the verdict's reply with {client} and {evidence} filled in.
	Reply rules.Reply
}

// Session is the checks' view of one connection. Its methods are called in
// SMTP order from one goroutine; the DNS work it starts runs beside it.
type Session struct {
	p       *Pipeline
	client  netip.AddrPort
	trusted bool

	mu        sync.Mutex
	conn      []checks.Result // connection-level results, in order
	helos     []string
	rdns      string // verified name, "", or [TEMPUNAVAIL]
	rdnsDone  chan struct{}
	dnsblDone chan struct{}
	dnsbl     *dnsbl.Verdict // set when dnsblDone is closed
	dnsblIn   bool           // its results are in conn
	last      rules.Verdict

	txn transaction
}

// transaction is what one MAIL FROM … DATA holds.
type transaction struct {
	from    *string
	rcpts   []string
	allowed int // recipients on a full allow list
	results []checks.Result
	spf     *checks.SPFResult
}

// TempUnavail is XCLIENT's word for a name lookup that failed for now.
const TempUnavail = "[TEMPUNAVAIL]"

// NewSession starts the checks of a new connection: the reverse DNS and
// DNS list look-ups begin at once, so that they run during the greeting
// delay. onDNSBL, if not nil, is called when the lists have answered.
func (p *Pipeline) NewSession(client netip.AddrPort, onDNSBL func(allowlisted bool)) *Session {
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	s := &Session{p: p, client: client, trusted: p.Trusted(client.Addr())}
	s.rdnsDone = make(chan struct{})
	if p.Resolver == nil {
		close(s.rdnsDone)
	} else {
		go s.lookupRDNS()
	}
	s.dnsblDone = make(chan struct{})
	if s.trusted || p.DNSBL == nil || s.skips("dnsbl") {
		close(s.dnsblDone)
	} else {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*p.dnsTimeout+time.Second)
			v := p.DNSBL.CheckIP(ctx, client.Addr())
			cancel()
			s.mu.Lock()
			s.dnsbl = v
			s.mu.Unlock()
			close(s.dnsblDone)
			if onDNSBL != nil {
				onDNSBL(v.Allowlisted)
			}
		}()
	}
	if !s.trusted && p.Reputation != nil && !s.skips("reputation") {
		if r, ok := p.Reputation.Check(client.Addr()); ok {
			s.conn = append(s.conn, r)
		}
	}
	return s
}

// Trusted reports a client in trusted_networks: no checks at all.
func (s *Session) Trusted() bool { return s.trusted }

// Client is the client's address.
func (s *Session) Client() netip.AddrPort { return s.client }

// RDNS waits for and returns the client's verified reverse DNS name: "" if
// there is none, TempUnavail if the lookup failed for now.
func (s *Session) RDNS() string {
	<-s.rdnsDone // bounded by the lookup's own timeout
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rdns
}

// HELOs returns every HELO/EHLO name the client used.
func (s *Session) HELOs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.helos...)
}

// SawHELO reports whether name was checked on this connection already.
func (s *Session) SawHELO(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.helos, name)
}

// Results returns every result so far: the connection's, then the
// transaction's.
func (s *Session) Results() []checks.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]checks.Result, 0, len(s.conn)+len(s.txn.results))
	return append(append(out, s.conn...), s.txn.results...)
}

// Last returns the last verdict.
func (s *Session) Last() rules.Verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *Session) add(r ...checks.Result) {
	s.mu.Lock()
	s.conn = append(s.conn, r...)
	s.mu.Unlock()
}

// facts are what the lists may match now.
func (s *Session) facts(rcpt string) rules.Facts {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := rules.Facts{Client: s.client.Addr(), HELO: s.helos, From: s.txn.from, Rcpt: rcpt}
	select {
	case <-s.rdnsDone:
		f.RDNS = s.rdns
	default:
	}
	return f
}

// skips reports whether an allow list switches a check off for this session.
func (s *Session) skips(check string) bool {
	if !s.p.Policy.HasLists() {
		return false // the common case, asked several times a stage
	}
	return s.p.Policy.Skips(s.p.Policy.MatchLists(s.facts("")), check)
}

// SkipGreeting says whether the client skips the greeting delay, and why:
// trusted, on an allow list, passed before (postscreen's PASS OLD), or
// already known good to the DNS allowlists.
func (s *Session) SkipGreeting() (bool, string) {
	switch {
	case s.trusted:
		return true, "trusted"
	case s.skips("pregreet"):
		return true, "allow list"
	case s.p.Reputation != nil && s.p.Reputation.GreetingPassed(s.client.Addr()):
		return true, "pass old"
	}
	select {
	case <-s.dnsblDone:
		if s.dnsbl != nil && s.dnsbl.Allowlisted {
			return true, "dnswl"
		}
	default:
	}
	return false, ""
}

// Pregreet records an early talker.
func (s *Session) Pregreet(r checks.Result) {
	s.add(r)
	if s.p.Reputation != nil {
		s.p.Reputation.FailGreeting(s.client.Addr())
	}
}

// Connect decides after the greeting: the DNS lists (waited for, within
// their timeout), a pregreet, the client and rDNS lists. Only a drop acts
// before the banner; other refusals wait for their stage. A client that
// waited politely and is on no list is remembered (postscreen's PASS NEW).
func (s *Session) Connect(waited bool) Decision {
	s.collectDNSBL()
	d := s.decide(atConnect, "")
	if waited && !d.Action.Refuses() && s.p.Reputation != nil {
		s.mu.Lock()
		listed := s.dnsbl != nil && s.dnsbl.Listed
		pregreet := false
		for _, r := range s.conn {
			pregreet = pregreet || r.Outcome == "pregreet"
		}
		s.mu.Unlock()
		if !listed && !pregreet {
			s.p.Reputation.PassGreeting(s.client.Addr())
		}
	}
	return d
}

// collectDNSBL adds the DNS lists' results, waiting for them if need be.
func (s *Session) collectDNSBL() {
	<-s.dnsblDone // bounded by the checker's timeout
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dnsblIn || s.dnsbl == nil {
		return
	}
	s.dnsblIn = true
	s.conn = append(s.conn, s.dnsbl.Results()...)
}

// Helo checks a HELO/EHLO name not seen before on this connection. Every
// name's results stay: saying HELO again does not wash a verdict.
func (s *Session) Helo(ctx context.Context, name string) Decision {
	s.collectDNSBL()
	s.mu.Lock()
	seen := slices.Contains(s.helos, name)
	if !seen {
		s.helos = append(s.helos, name)
	}
	s.mu.Unlock()
	if !seen && !s.trusted {
		if !s.skips("helo") {
			s.add(s.p.HELO.Check(ctx, name, s.client.Addr()))
		}
		if s.p.DNSBL != nil && !s.skips("rhsbl") {
			if outcome, _, lit := checks.Classify(name); outcome == "" && !lit.IsValid() {
				s.add(s.p.DNSBL.CheckDomain(ctx, strings.TrimSuffix(name, "."), "helo").Results()...)
			}
		}
	}
	return s.decide(atHELO, "")
}

// Mail starts a transaction and checks the sender: hosted-domain spoofing,
// SPF, the sender's domain on the domain lists.
func (s *Session) Mail(ctx context.Context, from string) Decision {
	s.mu.Lock()
	s.txn = transaction{from: &from}
	s.mu.Unlock()
	if s.trusted {
		return s.decide(atMail, "")
	}
	var rs []checks.Result
	if !s.skips("sender") {
		if r, spoof := s.p.Spoof.Check(from); spoof {
			rs = append(rs, r)
		}
	}
	var spf *checks.SPFResult
	if s.p.SPF != nil && !s.skips("spf") {
		res := s.p.SPF.Check(ctx, s.client.Addr(), s.lastHELO(), from)
		spf = &res
		rs = append(rs, res.Check)
	}
	if d := checks.Domain(from); d != "" && s.p.DNSBL != nil && !s.skips("rhsbl") {
		rs = append(rs, s.p.DNSBL.CheckDomain(ctx, d, "sender").Results()...)
	}
	s.mu.Lock()
	s.txn.results = append(s.txn.results, rs...)
	s.txn.spf = spf
	s.mu.Unlock()
	return s.decide(atMail, "")
}

// Rcpt decides on one recipient: recipient lists apply to it alone, so a
// recipient on a full allow list (postmaster@) is accepted despite a
// pending refusal.
func (s *Session) Rcpt(ctx context.Context, to string) Decision {
	d := s.decide(atRcpt, to)
	if !d.Refuse && !d.Hold {
		s.mu.Lock()
		s.txn.rcpts = append(s.txn.rcpts, to)
		if d.SkipAll {
			s.txn.allowed++
		}
		s.mu.Unlock()
	}
	return d
}

// Rcpts returns the recipients accepted for relaying in this transaction.
func (s *Session) Rcpts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.txn.rcpts...)
}

// Reset ends the transaction (RSET, end of DATA, a new EHLO).
func (s *Session) Reset() {
	s.mu.Lock()
	s.txn = transaction{}
	s.mu.Unlock()
}

// Finish records how the connection went in the memory of clients.
func (s *Session) Finish(accepted, refused int) {
	if !s.trusted && s.p.Reputation != nil {
		s.p.Reputation.Record(s.client.Addr(), accepted, refused)
	}
}

func (s *Session) lastHELO() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.helos) == 0 {
		return ""
	}
	return s.helos[len(s.helos)-1]
}

// decide asks the rules about everything so far and says what to do at
// this stage.
func (s *Session) decide(at stage, rcpt string) Decision {
	var v rules.Verdict
	if s.trusted {
		v = rules.Verdict{Action: rules.Accept, Rule: "trusted", SkipAll: true}
	} else {
		matched := s.p.Policy.MatchLists(s.facts(rcpt))
		s.mu.Lock()
		conn, txn := s.conn, s.txn.results
		s.mu.Unlock()
		v = s.p.Policy.Decide(matched, conn, txn)
	}
	s.mu.Lock()
	s.last = v
	allAllowed := at == atData && len(s.txn.rcpts) > 0 && s.txn.allowed == len(s.txn.rcpts)
	s.mu.Unlock()
	if allAllowed && v.Action.Refuses() {
		// Every recipient is exempt (postmaster@ on an allow list): the
		// message goes through, and the log says what it escaped.
		w := v
		v = rules.Verdict{Action: rules.Accept, Score: v.Score, Rule: "allow.recipients",
			Reason: "every recipient is on an allow list", Would: &w}
	}
	if v.Would != nil {
		w := *v.Would
		w.Reply = s.expand(w.Reply, w.Evidence)
		v.Would = &w
	}
	d := Decision{Verdict: v, Stage: stageNames[at]}
	if !v.Action.Refuses() {
		return d
	}
	d.Reply = s.expand(v.Reply, v.Evidence)
	switch {
	case v.Action == rules.Drop:
		d.Refuse = true
	case at == atConnect: // before the banner, only a drop acts
	case v.Stage == rules.StageNow:
		d.Refuse = true
	case v.Stage == rules.StageData:
		d.Refuse = at == atData
	default: // rcpt
		d.Refuse = at >= atRcpt
	}
	d.Hold = !d.Refuse && (at == atMail || at == atRcpt)
	return d
}

// expand fills {client} and {evidence} in a reply.
func (s *Session) expand(r rules.Reply, evidence string) rules.Reply {
	if strings.Contains(r.Text, "{") {
		r.Text = strings.NewReplacer("{client}", s.client.Addr().String(), "{evidence}", printable(evidence, 200)).Replace(r.Text)
	}
	return r
}

// printable keeps a reply's text to printable ASCII.
func printable(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c >= 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}

// lookupRDNS finds the client's forward-confirmed reverse DNS name.
func (s *Session) lookupRDNS() {
	defer close(s.rdnsDone)
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.p.dnsTimeout)
	defer cancel()
	name := verifiedName(ctx, s.p.Resolver, s.client.Addr())
	s.mu.Lock()
	s.rdns = name
	s.mu.Unlock()
}

func verifiedName(ctx context.Context, res Resolver, ip netip.Addr) string {
	names, err := res.LookupAddr(ctx, ip.String())
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return ""
		}
		return TempUnavail
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
		return TempUnavail
	}
	return ""
}
