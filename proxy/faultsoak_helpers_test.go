package proxy

// The machinery of TestFaultSoak (faultsoak_test.go): the misbehaving
// backend, the DNS faults, the retrying clients and the bookkeeping. All
// names start with "fsoak" so that they stay out of the way of the other
// tests in this package.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/mxguard/mxguard/mailsink"
	"github.com/mxguard/mxguard/zonedns"
)

// Timeouts of the soak. The backend's command timeout is short so that
// stalls resolve fast; its data timeout (the wait for the reply to the final
// dot) is generous on purpose: a backend that is merely slow to answer the
// final dot (a loaded machine under -race) and that mxguard gives up on would
// commit a message whose client was told 451: the RFC 1047 duplicate, made by
// the test's configuration rather than by mxguard.
const (
	fsoakCommandTimeout = 500 * time.Millisecond
	fsoakDataTimeout    = 5 * time.Second
	fsoakStall          = 2 * time.Second // backend stall before MAIL/RCPT/DATA replies (> command timeout)
	fsoakEndStall       = 6 * time.Second // backend stall after the final dot (> data timeout), then crash
	fsoakIOTimeout      = 60 * time.Second
	fsoakDNSTimeout     = 300 * time.Millisecond
)

type fsoakParams struct {
	n           int    // messages
	clients     int    // concurrent client workers
	ips         int    // source addresses 127.0.0.10 and up
	seed        uint64 // the whole fault plan derives from it
	maxAttempts int    // per message, then the client gives up (as a real MTA expires its queue)
	kills       int    // backend kill-and-restart cycles
	data4xx     bool   // also refuse the DATA command itself with 4xx (see faultsoak_test.go)
}

// fsoakRand is a deterministic number in [0, 1) for one decision: a hash of
// the seed and what the decision is about (splitmix64 steps).
func fsoakRand(seed uint64, vals ...uint64) float64 {
	x := seed
	for _, v := range vals {
		x += v*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019
		x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
		x = (x ^ (x >> 27)) * 0x94d049bb133111eb
		x ^= x >> 31
	}
	return float64(x>>11) / (1 << 53)
}

// Salts: what a fsoakRand decision is about.
const (
	fsoakSaltPlan = iota + 1
	fsoakSaltHelo
	fsoakSaltSender
	fsoakSaltBackoff
	fsoakSaltKill
	fsoakSaltDown
)

// ---- messages ----

type fsoakState int

const (
	fsoakPending   fsoakState = iota
	fsoakDelivered            // the client got 250 at the end of data
	fsoakRefused              // the client got 5xx and gave up
	fsoakExhausted            // 4xx (or a broken connection) maxAttempts times
)

// fsoakMsg is one message to deliver. It is owned by whichever worker holds
// it (handed over through the ready channel).
type fsoakMsg struct {
	id     int
	from   string // "m<id>@<domain>": the backend's policy finds the message by it
	rcpt   string
	domain string
	flaky  bool // its sender domain's DNS fails at random (spf.temperror)
	size   int

	attempts int
	state    fsoakState
	lastCode int    // the last reply's code (0: the connection broke)
	queueID  string // from the 250 the client got
	history  []string
}

func fsoakNewMsg(seed uint64, id int) *fsoakMsg {
	m := &fsoakMsg{id: id, rcpt: fmt.Sprintf("user%d@mxguard.test", id%97), domain: "soak.test"}
	if id%4 == 0 {
		m.flaky = true
		m.domain = fmt.Sprintf("d%d.snd.soak.test", id)
	}
	m.from = fmt.Sprintf("m%d@%s", id, m.domain)
	r := rand.New(rand.NewPCG(seed, uint64(id)))
	m.size = 300 + r.IntN(3500)
	if r.IntN(100) == 0 { // 1%: big enough to be spooled to a file (message.memory_limit)
		m.size = 32<<10 + r.IntN(96<<10)
	}
	return m
}

// fsoakToken is the line in the body that identifies a message.
func fsoakToken(id int) string { return fmt.Sprintf("fsoak-token: %d", id) }

// data is the message as sent (before dot-stuffing): Message-ID and a body
// line carry the token; some lines start with a dot. It is rebuilt from the
// seed whenever needed rather than kept.
func (m *fsoakMsg) data(seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed^0x5eed, uint64(m.id)))
	var b bytes.Buffer
	fmt.Fprintf(&b, "Message-ID: <fsoak.%d.%d@soak.test>\r\n", m.id, seed)
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: fault soak %d\r\n", m.from, m.rcpt, m.id)
	fmt.Fprintf(&b, "Date: Mon, 23 Nov 2026 15:38:48 +0000\r\n\r\n%s\r\n", fsoakToken(m.id))
	const alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,-"
	for b.Len() < m.size {
		if r.IntN(10) == 0 {
			b.WriteByte('.') // dot-stuffing on the way in and out
		}
		n := r.IntN(78)
		for range n {
			b.WriteByte(alphabet[r.IntN(len(alphabet))])
		}
		b.WriteString("\r\n")
	}
	b.WriteString("-- \r\n" + fsoakToken(m.id) + "\r\n")
	return b.Bytes()
}

// fsoakIDOf finds the message id in an envelope sender "m<id>@...".
func fsoakIDOf(from string) int {
	local, _, ok := strings.Cut(from, "@")
	if !ok || !strings.HasPrefix(local, "m") {
		return -1
	}
	id, err := strconv.Atoi(local[1:])
	if err != nil {
		return -1
	}
	return id
}

// fsoakTokenOf finds the token in stored message data (-1: none).
func fsoakTokenOf(data []byte) int {
	i := bytes.Index(data, []byte("\r\nfsoak-token: "))
	if i < 0 {
		return -1
	}
	rest := data[i+len("\r\nfsoak-token: "):]
	j := bytes.IndexByte(rest, '\r')
	if j < 0 {
		return -1
	}
	id, err := strconv.Atoi(string(rest[:j]))
	if err != nil {
		return -1
	}
	return id
}

// ---- the backend ----

// fsoakFault is what the backend does to one transaction.
type fsoakFault int

const (
	fsoakNone          fsoakFault = iota
	fsoakMail4xx                  // 451 to MAIL
	fsoakMail421                  // 421 to MAIL, then hang up
	fsoakMailStall                // no reply to MAIL within mxguard's command timeout
	fsoakRcpt4xx                  // 450 to RCPT
	fsoakRcpt5xx                  // 550 to RCPT: the client gives up
	fsoakRcptStall                // no reply to RCPT in time
	fsoakRcptHangup               // 250 to RCPT, then hang up: mxguard's DATA finds nobody
	fsoakDataStall                // no reply to DATA in time
	fsoakData4xx                  // 451 to the DATA command itself (only with fsoakParams.data4xx)
	fsoakCutMidData               // 354, read a few bytes, die: nothing stored
	fsoakEnd4xx                   // 451 to the final dot: nothing stored
	fsoakEnd5xx                   // 554 to the final dot: nothing stored, the client gives up
	fsoakEndStallCrash            // no reply to the final dot within the data timeout, then die: nothing stored
	fsoakEndHangup                // store, 250, hang up at once (CloseAfter)
	fsoakKillGate                 // (not planned) final dot while a kill is pending: die before storing
	fsoakKillVictim               // (not planned) the DATA command at which the backend is killed
	fsoakFaults
)

var fsoakFaultNames = [fsoakFaults]string{
	"none", "mail-4xx", "mail-421+hangup", "mail-stall", "rcpt-4xx", "rcpt-5xx", "rcpt-stall",
	"rcpt-250+hangup", "data-stall", "data-4xx", "cut-mid-data", "end-4xx", "end-5xx",
	"end-stall+crash", "end-250+hangup", "end-crash(kill pending)", "data(kill victim)",
}

// fsoakPlan is the chance of each fault per backend transaction, in percent.
var fsoakPlan = []struct {
	f   fsoakFault
	pct float64
}{
	{fsoakMail4xx, 4}, {fsoakMail421, 1.5}, {fsoakMailStall, 1},
	{fsoakRcpt4xx, 4}, {fsoakRcpt5xx, 0.4}, {fsoakRcptStall, 1}, {fsoakRcptHangup, 1},
	{fsoakDataStall, 1}, {fsoakData4xx, 2}, {fsoakCutMidData, 3},
	{fsoakEnd4xx, 3}, {fsoakEnd5xx, 0.4}, {fsoakEndStallCrash, 0.3}, {fsoakEndHangup, 4},
}

// fsoakKill describes one kill-and-restart of the backend.
type fsoakKill struct {
	at       time.Duration // since the start of the run
	waited   time.Duration // for replies to committed messages to reach their clients
	stuck    int           // committed messages whose client had no reply when the wait gave up
	victim   bool          // killed while holding a DATA command
	open     int           // backend sessions open at the kill
	atData   int           // of which had sent DATA (no final reply yet)
	midData  int           // of which were reading message data (354 sent, no final dot yet)
	down     time.Duration // until the new backend listened
	restartE error
}

// fsoakBackend is the misbehaving backend: a mailsink Policy shared by every
// incarnation of the server, which it kills and restarts on the same
// address. Each message's faults are a function of the seed, the message and
// how many transactions the backend has seen for it.
type fsoakBackend struct {
	seed    uint64
	addr    string
	data4xx bool
	start   time.Time
	killAt  []int // messages committed before each kill

	mu       sync.Mutex
	cur      *mailsink.Server
	all      []*mailsink.Server // every incarnation, in order
	tries    map[int]int        // backend transactions per message
	plan     map[int]fsoakFault // the fault of each message's current transaction
	injected [fsoakFaults]int
	commits  int // messages past the final dot, to be stored
	nextKill int
	killing  bool
	gate     bool         // a kill is pending: the final dot makes the backend die before storing
	pending  map[int]bool // messages past the final dot, to be stored, whose client has no reply yet
	victim   chan struct{}
	ended    map[int]bool // sessions of the current incarnation past a final dot
	kills    []fsoakKill
	wg       sync.WaitGroup
}

func newFsoakBackend(p fsoakParams) *fsoakBackend {
	be := &fsoakBackend{
		seed: p.seed, data4xx: p.data4xx,
		tries: map[int]int{}, plan: map[int]fsoakFault{}, pending: map[int]bool{}, ended: map[int]bool{},
	}
	// Kills spread over the run: at numbers of messages committed.
	for i := range p.kills {
		span := float64(p.n) / float64(p.kills+1)
		at := span*float64(i+1) + (fsoakRand(p.seed, fsoakSaltKill, uint64(i))-0.5)*span/2
		be.killAt = append(be.killAt, max(1, int(at)))
	}
	return be
}

func (be *fsoakBackend) decide(id, n int) fsoakFault {
	r := fsoakRand(be.seed, fsoakSaltPlan, uint64(id), uint64(n)) * 100
	for _, e := range fsoakPlan {
		if e.f == fsoakData4xx && !be.data4xx {
			continue
		}
		if r < e.pct {
			return e.f
		}
		r -= e.pct
	}
	return fsoakNone
}

// current returns the plan of message id's transaction, counting it as
// injected when it is f's turn.
func (be *fsoakBackend) current(id int, f ...fsoakFault) fsoakFault {
	be.mu.Lock()
	defer be.mu.Unlock()
	p := be.plan[id]
	for _, x := range f {
		if p == x {
			be.injected[p]++
			return p
		}
	}
	return fsoakNone
}

// Mail implements mailsink.Policy: a new transaction, a new plan.
func (be *fsoakBackend) Mail(_ *mailsink.SessionInfo, from string) *mailsink.Action {
	id := fsoakIDOf(from)
	if id < 0 {
		return nil
	}
	be.mu.Lock()
	n := be.tries[id]
	be.tries[id]++
	be.plan[id] = be.decide(id, n)
	be.mu.Unlock()
	switch be.current(id, fsoakMail4xx, fsoakMail421, fsoakMailStall) {
	case fsoakMail4xx:
		return &mailsink.Action{Reply: "451 4.3.0 fsoak mail-4xx: try again later"}
	case fsoakMail421:
		return &mailsink.Action{Reply: "421 4.3.2 fsoak mail-421: shutting down", CloseAfter: true}
	case fsoakMailStall:
		return &mailsink.Action{Delay: fsoakStall}
	}
	return nil
}

// Rcpt implements mailsink.Policy.
func (be *fsoakBackend) Rcpt(si *mailsink.SessionInfo, _ string) *mailsink.Action {
	switch be.current(fsoakIDOf(si.From), fsoakRcpt4xx, fsoakRcpt5xx, fsoakRcptStall, fsoakRcptHangup) {
	case fsoakRcpt4xx:
		return &mailsink.Action{Reply: "450 4.2.1 fsoak rcpt-4xx: mailbox busy"}
	case fsoakRcpt5xx:
		return &mailsink.Action{Reply: "550 5.1.1 fsoak rcpt-5xx: no such user"}
	case fsoakRcptStall:
		return &mailsink.Action{Delay: fsoakStall}
	case fsoakRcptHangup:
		return &mailsink.Action{CloseAfter: true}
	}
	return nil
}

// DataStart implements mailsink.Policy; it also starts the kills.
func (be *fsoakBackend) DataStart(si *mailsink.SessionInfo) *mailsink.Action {
	be.mu.Lock()
	if !be.killing && be.nextKill < len(be.killAt) && be.commits >= be.killAt[be.nextKill] {
		be.killing = true
		be.nextKill++
		be.wg.Add(1)
		go be.kill()
	}
	if be.victim != nil {
		// Hold this DATA until the server dies under it.
		close(be.victim)
		be.victim = nil
		be.injected[fsoakKillVictim]++
		be.mu.Unlock()
		return &mailsink.Action{Delay: time.Hour} // Close interrupts it
	}
	be.mu.Unlock()
	switch be.current(fsoakIDOf(si.From), fsoakDataStall, fsoakData4xx, fsoakCutMidData) {
	case fsoakDataStall:
		return &mailsink.Action{Delay: fsoakStall}
	case fsoakData4xx:
		return &mailsink.Action{Reply: "451 4.3.0 fsoak data-4xx: not now"}
	case fsoakCutMidData:
		return &mailsink.Action{CutMidData: true}
	}
	return nil
}

// DataEnd implements mailsink.Policy.
func (be *fsoakBackend) DataEnd(si *mailsink.SessionInfo, m *mailsink.Message) *mailsink.Action {
	id := fsoakIDOf(m.From)
	be.mu.Lock()
	be.ended[si.ID] = true
	if be.gate {
		// A kill is pending: die before committing (never after: a
		// backend that commits and dies before its reply makes a
		// duplicate no proxy can prevent).
		be.injected[fsoakKillGate]++
		be.mu.Unlock()
		return &mailsink.Action{Close: true}
	}
	f := be.plan[id]
	switch f {
	case fsoakEnd4xx, fsoakEnd5xx, fsoakEndStallCrash, fsoakEndHangup:
		be.injected[f]++
	default:
		f = fsoakNone
	}
	if f == fsoakNone || f == fsoakEndHangup {
		be.pending[id] = true // it will be stored: a kill waits for its reply to reach the client
		be.commits++
	}
	be.mu.Unlock()
	switch f {
	case fsoakEnd4xx:
		return &mailsink.Action{Reply: "451 4.3.0 fsoak end-4xx: try again later"}
	case fsoakEnd5xx:
		return &mailsink.Action{Reply: "554 5.7.1 fsoak end-5xx: message rejected"}
	case fsoakEndStallCrash:
		return &mailsink.Action{Delay: fsoakEndStall, Close: true}
	case fsoakEndHangup:
		return &mailsink.Action{CloseAfter: true}
	}
	return nil
}

// attemptDone is called by a client when an attempt of message id is over
// (it has its reply, or its connection broke).
func (be *fsoakBackend) attemptDone(id int) {
	be.mu.Lock()
	delete(be.pending, id)
	be.mu.Unlock()
}

// kill kills the backend and starts a new one on the same address. It first
// closes the gate (a final dot from now on makes the backend die before
// committing) and waits until every message already past its final dot has
// its reply at the client: killing the backend between its commit and its
// reply is the RFC 1047 duplicate, which no proxy can prevent, and is left
// out. Then it waits for the next DATA command, holds it, and kills the
// server under it and under whatever else is in flight.
func (be *fsoakBackend) kill() {
	defer be.wg.Done()
	k := fsoakKill{at: time.Since(be.start)}
	be.mu.Lock()
	be.gate = true
	num := len(be.kills)
	be.mu.Unlock()
	t0 := time.Now()
	for {
		be.mu.Lock()
		n := len(be.pending)
		be.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Since(t0) > 20*time.Second {
			k.stuck = n
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	k.waited = time.Since(t0)
	victim := make(chan struct{})
	be.mu.Lock()
	be.victim = victim
	be.mu.Unlock()
	select {
	case <-victim:
		k.victim = true
	case <-time.After(2 * time.Second):
	}
	be.mu.Lock()
	be.victim = nil
	old := be.cur
	ended := maps.Clone(be.ended)
	be.mu.Unlock()
	for _, s := range old.Sessions() {
		if !s.Ended.IsZero() {
			continue
		}
		k.open++
		if n := len(s.Commands); n > 0 && s.Commands[n-1] == "DATA" && s.InTransaction {
			k.atData++
			if r := len(s.Replies); r > 0 && strings.HasPrefix(s.Replies[r-1], "354") && !ended[s.ID] {
				k.midData++
			}
		}
	}
	t1 := time.Now()
	old.Close()
	time.Sleep(50*time.Millisecond + time.Duration(fsoakRand(be.seed, fsoakSaltDown, uint64(num))*float64(200*time.Millisecond)))
	ns := &mailsink.Server{Hostname: "backend.test", XCLIENT: true, Policy: be}
	var err error
	for range 100 {
		if err = ns.Start(be.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	k.down = time.Since(t1)
	be.mu.Lock()
	if err == nil {
		be.cur = ns
		be.all = append(be.all, ns)
		be.ended = map[int]bool{}
	} else {
		k.restartE = err
	}
	be.gate = false
	be.killing = false
	be.kills = append(be.kills, k)
	be.mu.Unlock()
}

// stop waits for a kill in progress and closes the current backend (which
// waits for every one of its goroutines, stalled ones included).
func (be *fsoakBackend) stop() {
	be.mu.Lock()
	be.nextKill = len(be.killAt)
	be.mu.Unlock()
	be.wg.Wait()
	be.mu.Lock()
	cur := be.cur
	be.mu.Unlock()
	cur.Close()
}

// ---- the clients ----

// fsoakRun is one soak: the messages, the workers that deliver them, and
// what they saw.
type fsoakRun struct {
	t     *testing.T
	p     fsoakParams
	h     *harness
	be    *fsoakBackend
	msgs  []*fsoakMsg
	ready chan *fsoakMsg // messages waiting for a worker
	left  atomic.Int64   // messages not yet in a final state
	done  chan struct{}  // closed when left reaches 0
	abort chan struct{}  // closed by the watchdog
	pool  int            // HELO names per flaky worker

	mu          sync.Mutex
	attempts    int
	connections int
	codes       map[string]int // attempt outcomes: "rcpt 451 helo.dns_temp" ...
	unanswered  int            // attempts that ended without a reply (broken connection)
	unexpected  []string       // 5xx replies that were not a scripted backend refusal
	heloFaults  int            // connections whose HELO name's DNS failed
	sendFaults  int            // attempts whose sender domain's DNS failed
	logMsgs     map[string]int // mxguard's log lines by msg
	logRefused  map[string]int // mxguard's "refused" lines by rule
	logBackend  map[string]int // mxguard's "backend failed" lines by stage
}

// fsoakZone is the DNS data of the soak: a HELO name for each source
// address, a pool of one-use HELO names for the workers whose DNS is flaky,
// and a sender domain of its own for each message whose DNS is flaky
// (fixture faults are per name, and mxguard's resolver caches answers, so a
// name that failed once and then worked would never fail again).
func (r *fsoakRun) zone() string {
	var b strings.Builder
	b.WriteString("$ORIGIN soak.test.\n")
	b.WriteString("@ SOA ns.soak.test. hostmaster.soak.test. 1 3600 600 86400 60\n")
	b.WriteString("@ TXT \"v=spf1 ip4:127.0.0.0/8 -all\"\n")
	b.WriteString("_dmarc TXT \"v=DMARC1; p=none\"\n")
	for ip := range r.p.ips {
		fmt.Fprintf(&b, "mta.ip%d A 127.0.0.%d\n", 10+ip, 10+ip)
	}
	for w := range r.p.clients {
		if !fsoakFlakyWorker(w) {
			continue
		}
		for j := range r.pool {
			fmt.Fprintf(&b, "h%d.w%d A 127.0.0.%d\n", j, w, 10+w%r.p.ips)
		}
	}
	for _, m := range r.msgs {
		if m.flaky {
			fmt.Fprintf(&b, "%s. TXT \"v=spf1 ip4:127.0.0.0/8 -all\"\n", m.domain)
		}
	}
	return b.String()
}

// fsoakFlakyWorker: a quarter of the workers use HELO names whose DNS fails
// at random.
func fsoakFlakyWorker(w int) bool { return w%4 == 1 }

// dnsFault decides whether one HELO name or sender domain fails this time:
// a quarter of the time, SERVFAIL twice as often as a timeout.
func (r *fsoakRun) dnsFault(salt uint64, a, b int) *zonedns.Fault {
	x := fsoakRand(r.p.seed, salt, uint64(a), uint64(b))
	switch {
	case x < 1.0/6:
		return &zonedns.Fault{Rcode: dns.RcodeServerFailure}
	case x < 1.0/4:
		return &zonedns.Fault{Drop: true}
	}
	return nil
}

func (r *fsoakRun) take(k int) []*fsoakMsg {
	var b []*fsoakMsg
	select {
	case m := <-r.ready:
		b = append(b, m)
	case <-r.done:
		return nil
	case <-r.abort:
		return nil
	}
	for len(b) < k {
		select {
		case m := <-r.ready:
			b = append(b, m)
		default:
			return b
		}
	}
	return b
}

// final puts m in a final state.
func (r *fsoakRun) final(m *fsoakMsg, s fsoakState) {
	m.state = s
	if r.left.Add(-1) == 0 {
		close(r.done)
	}
}

// putBack returns messages that were not tried on a connection that ended.
func (r *fsoakRun) putBack(ms []*fsoakMsg) {
	for _, m := range ms {
		r.ready <- m // never blocks: the channel holds every message
	}
}

// retry schedules m again after a backoff, unless it is out of attempts.
func (r *fsoakRun) retry(m *fsoakMsg) {
	if m.attempts >= r.p.maxAttempts {
		r.final(m, fsoakExhausted)
		return
	}
	d := time.Duration(m.attempts)*50*time.Millisecond +
		time.Duration(fsoakRand(r.p.seed, fsoakSaltBackoff, uint64(m.id), uint64(m.attempts))*float64(50*time.Millisecond))
	time.AfterFunc(min(d, 500*time.Millisecond), func() { r.ready <- m })
}

// fsoakLabel names a reply for the counts: the rule at the end of one of
// mxguard's refusals, the fault of a scripted backend refusal, or the
// enhanced code.
func fsoakLabel(text string) string {
	if _, f, ok := strings.Cut(text, "fsoak "); ok {
		f, _, _ = strings.Cut(f, ":")
		return "backend " + f
	}
	if i := strings.LastIndexByte(text, '('); i >= 0 && strings.HasSuffix(text, ")") {
		return text[i+1 : len(text)-1]
	}
	switch code, _, _ := strings.Cut(text, " "); code {
	case "4.4.1":
		return "backend unavailable (4.4.1)"
	case "4.4.2":
		return "backend lost (4.4.2)"
	}
	if len(text) > 50 {
		text = text[:50]
	}
	return text
}

// outcome records how one attempt of m ended and moves m on: code 0 is a
// broken connection.
func (r *fsoakRun) outcome(m *fsoakMsg, stage string, code int, text string, err error) {
	m.lastCode = code
	if code == 0 {
		m.history = append(m.history, fmt.Sprintf("%v %s: %v", time.Since(r.be.start).Round(time.Millisecond), stage, err))
	} else {
		m.history = append(m.history, fmt.Sprintf("%v %s: %d %s", time.Since(r.be.start).Round(time.Millisecond), stage, code, fsoakLabel(text)))
	}
	r.mu.Lock()
	switch {
	case code == 0:
		r.unanswered++
		r.codes[stage+" connection broken"]++
	case stage == "end" && code == 250:
		r.codes["end 250"]++
	default:
		r.codes[fmt.Sprintf("%s %d %s", stage, code, fsoakLabel(text))]++
		if code >= 500 && !strings.Contains(text, "fsoak ") {
			r.unexpected = append(r.unexpected, fmt.Sprintf("message %d at %s: %d %s", m.id, stage, code, text))
		}
	}
	r.mu.Unlock()
	switch {
	case stage == "end" && code == 250:
		if _, id, ok := strings.Cut(text, "queued as "); ok {
			m.queueID = strings.TrimSpace(id)
		}
		r.final(m, fsoakDelivered)
	case code >= 500 && code < 600:
		r.final(m, fsoakRefused)
	default: // 4xx, a broken connection, or a reply out of step
		if code != 0 && (code < 400 || code >= 500) {
			r.mu.Lock()
			r.unexpected = append(r.unexpected, fmt.Sprintf("message %d at %s: %d %s", m.id, stage, code, text))
			r.mu.Unlock()
		}
		r.retry(m)
	}
}

// fsoakConn is a client connection; every step has a generous deadline.
type fsoakConn struct {
	nc net.Conn
	tp *textproto.Reader
}

func (c *fsoakConn) cmd(line string) (int, string, error) {
	c.nc.SetDeadline(time.Now().Add(fsoakIOTimeout))
	if line != "" {
		if _, err := io.WriteString(c.nc, line+"\r\n"); err != nil {
			return 0, "", err
		}
	}
	code, text, err := c.tp.ReadResponse(0)
	if err != nil {
		return 0, "", err
	}
	return code, text, nil
}

// worker delivers messages like an MTA's queue runner: it connects, sends
// one message (every third worker) or up to five, and on 4xx or a broken
// connection tries the message again later.
func (r *fsoakRun) worker(w int) {
	per := 5
	if w%3 == 0 {
		per = 1
	}
	for seq := 0; ; seq++ {
		batch := r.take(per)
		if batch == nil {
			return
		}
		r.connection(w, seq, batch)
	}
}

func (r *fsoakRun) connection(w, seq int, batch []*fsoakMsg) {
	ipn := 10 + w%r.p.ips
	helo := fmt.Sprintf("mta.ip%d.soak.test", ipn)
	if fsoakFlakyWorker(w) {
		helo = fmt.Sprintf("h%d.w%d.soak.test", seq%r.pool, w)
		if f := r.dnsFault(fsoakSaltHelo, w, seq); f != nil {
			r.h.dns.SetFault(helo, *f)
			defer r.h.dns.ClearFault(helo)
			r.mu.Lock()
			r.heloFaults++
			r.mu.Unlock()
		}
	}
	r.mu.Lock()
	r.connections++
	r.mu.Unlock()

	// Until a message's attempt starts, a failure puts it back untried;
	// the first message carries a failure of the connection itself.
	first := batch[0]
	begin := func(m *fsoakMsg) {
		m.attempts++
		r.mu.Lock()
		r.attempts++
		r.mu.Unlock()
	}
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(ipn))}}
	nc, err := d.Dial("tcp", r.h.addr)
	if err != nil {
		begin(first)
		r.outcome(first, "connect", 0, "", err)
		r.be.attemptDone(first.id)
		r.putBack(batch[1:])
		return
	}
	defer nc.Close()
	c := &fsoakConn{nc: nc, tp: textproto.NewReader(bufio.NewReader(nc))}
	for _, step := range []struct{ stage, line string }{{"banner", ""}, {"ehlo", "EHLO " + helo}} {
		code, text, err := c.cmd(step.line)
		if err != nil || code != map[string]int{"banner": 220, "ehlo": 250}[step.stage] {
			begin(first)
			r.outcome(first, step.stage, code, text, err)
			r.be.attemptDone(first.id)
			r.putBack(batch[1:])
			return
		}
	}
	for i, m := range batch {
		begin(m)
		alive := r.transaction(c, m)
		r.be.attemptDone(m.id)
		if !alive {
			r.putBack(batch[i+1:])
			return
		}
	}
	c.cmd("QUIT")
}

// transaction makes one attempt at m; it reports whether the connection
// can go on.
func (r *fsoakRun) transaction(c *fsoakConn, m *fsoakMsg) (alive bool) {
	if m.flaky {
		if f := r.dnsFault(fsoakSaltSender, m.id, m.attempts); f != nil {
			r.h.dns.SetFault(m.domain, *f)
			defer r.h.dns.ClearFault(m.domain)
			r.mu.Lock()
			r.sendFaults++
			r.mu.Unlock()
		}
	}
	for _, step := range []struct {
		stage, line string
		want        int
	}{{"mail", "MAIL FROM:<" + m.from + ">", 250}, {"rcpt", "RCPT TO:<" + m.rcpt + ">", 250}, {"data", "DATA", 354}} {
		code, text, err := c.cmd(step.line)
		if err != nil || code != step.want {
			r.outcome(m, step.stage, code, text, err)
			if err != nil || code == 421 {
				return false
			}
			code, _, err := c.cmd("RSET")
			return err == nil && code == 250
		}
	}
	c.nc.SetDeadline(time.Now().Add(fsoakIOTimeout))
	if _, err := c.nc.Write(dotStuff(m.data(r.p.seed))); err != nil {
		r.outcome(m, "end", 0, "", err)
		return false
	}
	code, text, err := c.cmd("")
	r.outcome(m, "end", code, text, err)
	return err == nil && code != 421
}

// drainLogs counts mxguard's log lines and empties the buffer, so that a
// long soak does not keep them all in memory.
func (r *fsoakRun) drainLogs() {
	r.h.logs.mu.Lock()
	b := bytes.Clone(r.h.logs.b.Bytes())
	r.h.logs.b.Reset()
	r.h.logs.mu.Unlock()
	var l struct{ Msg, Rule, Stage string }
	r.mu.Lock()
	defer r.mu.Unlock()
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		l.Msg, l.Rule, l.Stage = "", "", ""
		if err := json.Unmarshal(line, &l); err != nil {
			r.t.Errorf("log line is not JSON: %q", line)
			continue
		}
		r.logMsgs[l.Msg]++
		switch l.Msg {
		case "refused":
			r.logRefused[l.Stage+" "+l.Rule]++
		case "backend failed":
			r.logBackend[l.Stage]++
		}
	}
}

// fsoakSorted formats counts, largest first.
func fsoakSorted(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%7d  %s", m[k], k)
	}
	return out
}
