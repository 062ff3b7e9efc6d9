package proxy

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/mailsink"
)

// TestFaultSoak sends many messages through mxguard while the backend and the
// DNS misbehave, and then checks that the proxy lost nothing and doubled
// nothing.
//
// The run: N messages (MXGUARD_SOAK=N; 3000, or 300 with -short), each with a
// unique token in its Message-ID and in a body line, one recipient each, over
// 16 concurrent clients from 8 source addresses (127.0.0.10-17). Every third
// client sends one message per connection, the others up to five. A client
// acts like an MTA's queue: on 4xx, 421 or a broken connection it tries the
// message again later (at most 15 attempts), on 5xx it gives up.
//
// The faults, all drawn from one seed (MXGUARD_SOAK_SEED=S replays the same
// plan; which client meets which fault still depends on scheduling):
//   - the backend (mailsink), per transaction: 4xx at MAIL, RCPT and the final
//     dot; 421 at MAIL then a hang-up; 5xx at RCPT and the final dot (the client
//     gives up); stalls at MAIL, RCPT and DATA past backend.command_timeout
//     (500ms); a stall after the final dot past backend.data_timeout (5s) that
//     ends in a crash without storing; CutMidData (killed mid-DATA, nothing
//     stored); CloseAfter at RCPT (250, hang-up) and at the final dot (stores,
//     250, hang-up);
//   - the backend killed and restarted on the same address a few times
//     (3 + N/4000; none below 200 messages), each time under a DATA command it
//     is holding and whatever else is in flight, down for 50-250ms; the
//     messages of every incarnation are kept;
//   - the DNS: a quarter of the clients use one-use HELO names and a quarter of
//     the messages one-use sender domains, whose DNS answers SERVFAIL or times
//     out a quarter of the time (mxguard must answer 451 helo.dns_temp and
//     spf.temperror, and the client retries).
//
// Left out on purpose: a backend that commits a message and then dies (or is
// killed, or is given up on by mxguard) before its reply reaches mxguard. The
// client then hears 451 or nothing, keeps the message, and sends it again:
// the duplicate of RFC 1047, which SMTP itself cannot prevent and no proxy
// can. So the backend's crashes happen before the commit (Close at the final
// dot never stores), a kill first waits until every message already past its
// final dot has its reply at the client, and backend.data_timeout is kept
// well above what a loaded machine needs to answer the final dot.
//
// The invariants, exact:
//   - lost = 0: every message whose client got 250 is in the backend;
//   - doubled = 0: no message is in the backend more than once;
//   - unaccounted = 0: every message in the backend had its client told 250.
//     mxguard answers the final dot only after the backend's reply, and
//     passes a 250 on as it came; the backend here never commits without
//     its reply reaching mxguard (CloseAfter replies first; CutMidData and
//     Close at the final dot store nothing); and the clients never hang up
//     while waiting. So a copy without a 250 could only come from mxguard
//     sending a message the client did not finish, or losing a 250.
//   - every message the backend does not have had its client told 4xx or 5xx
//     at its last attempt, and mxguard never left a client without a reply
//     (no broken client connection at all: when the backend fails, mxguard
//     answers 451 and keeps the client's connection);
//   - no 5xx that the backend did not script (a 5xx made up by the proxy
//     bounces mail that should have been retried);
//   - each stored copy is the message as sent, after mxguard's own header
//     fields, with its envelope, and its queue id is the one in the 250 the
//     client got; and mxguard logged exactly one "relayed" line per 250.
//
// Go 1.26 with -race on 2 cores: the default 3000 messages take 15-30s.
// The backend also refuses the DATA command itself now and then (with 4xx),
// which once made mxguard bounce the client's next message (see
// docs/reliability.md, "Faults"); MXGUARD_SOAK_DATA4XX=0 leaves that out.
func TestFaultSoak(t *testing.T) {
	p := fsoakParams{n: 3000, clients: 16, ips: 8, maxAttempts: 15, seed: uint64(time.Now().UnixNano())}
	if testing.Short() {
		p.n = 300
	}
	if v := os.Getenv("MXGUARD_SOAK"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("MXGUARD_SOAK=%q: want a number of messages", v)
		}
		p.n = n
	}
	if v := os.Getenv("MXGUARD_SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("MXGUARD_SOAK_SEED=%q: %v", v, err)
		}
		p.seed = s
	}
	p.data4xx = os.Getenv("MXGUARD_SOAK_DATA4XX") != "0"
	p.kills = 3 + p.n/4000
	if p.n < 200 {
		// A kill waits for the next DATA command after its share of the
		// messages is in; with few messages they may all be past it.
		p.kills = 0
	}
	t.Logf("fault soak: seed %d (MXGUARD_SOAK_SEED=%d replays it), %d messages, %d clients from %d addresses, %d backend kills",
		p.seed, p.seed, p.n, p.clients, p.ips, p.kills)

	r := &fsoakRun{
		t: t, p: p,
		ready: make(chan *fsoakMsg, p.n), done: make(chan struct{}), abort: make(chan struct{}),
		pool:  p.n/4 + 16,
		codes: map[string]int{}, logMsgs: map[string]int{}, logRefused: map[string]int{}, logBackend: map[string]int{},
	}
	for id := range p.n {
		r.msgs = append(r.msgs, fsoakNewMsg(p.seed, id))
	}
	r.be = newFsoakBackend(p)
	spool := t.TempDir()
	r.h = newHarness(t, harnessOpt{
		zone: r.zone(),
		sink: func(s *mailsink.Server) { s.Policy = r.be },
		cfg: func(c *config.Config) {
			c.Limits.MaxConnectionsPerIP = 100
			c.Backend.CommandTimeout = config.Duration(fsoakCommandTimeout)
			c.Backend.DataTimeout = config.Duration(fsoakDataTimeout)
			c.Backend.DialTimeout = config.Duration(time.Second)
			c.DNS.Timeout = config.Duration(fsoakDNSTimeout)
			c.Message.MemoryLimit = 64 << 10 // the 1% of big messages go through a spool file
			c.Message.SpoolDir = spool
		},
	})
	r.be.cur, r.be.all, r.be.addr = r.h.sink, []*mailsink.Server{r.h.sink}, r.h.sink.Addr()
	t.Cleanup(func() {
		r.be.wg.Wait()
		r.be.mu.Lock()
		all := r.be.all
		r.be.mu.Unlock()
		for _, s := range all {
			s.Close()
		}
	})

	start := time.Now()
	r.be.start = start
	r.left.Store(int64(p.n))
	for _, m := range r.msgs {
		r.ready <- m
	}
	stopDrain := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				r.drainLogs()
			case <-stopDrain:
				return
			}
		}
	}()
	workers := make(chan struct{})
	for w := range p.clients {
		go func() {
			defer func() { workers <- struct{}{} }()
			r.worker(w)
		}()
	}
	limit := 2*time.Minute + time.Duration(p.n)*20*time.Millisecond
	select {
	case <-r.done:
	case <-time.After(limit):
		t.Errorf("the soak did not finish within %v: %d messages not in a final state", limit, r.left.Load())
		close(r.abort)
	}
	for range p.clients {
		<-workers
	}
	elapsed := time.Since(start)
	r.be.stop()
	close(stopDrain)
	<-drained
	// mxguard writes its "session" lines as it notices the clients' QUIT.
	time.Sleep(100 * time.Millisecond)
	r.drainLogs()

	r.check(elapsed)
}

// check counts the backend's copies, prints the counts, and asserts the
// invariants (see TestFaultSoak).
func (r *fsoakRun) check(elapsed time.Duration) {
	t, p := r.t, r.p
	copies := map[int][]*mailsink.Message{}
	foreign := 0
	r.be.mu.Lock()
	incarnations := r.be.all
	kills := r.be.kills
	injected := r.be.injected
	r.be.mu.Unlock()
	stored := 0
	for _, s := range incarnations {
		for _, m := range s.Messages() {
			stored++
			id := fsoakTokenOf(m.Data)
			if id < 0 || id >= p.n {
				foreign++
				continue
			}
			copies[id] = append(copies[id], m)
		}
	}

	var delivered, refused, exhausted, pending, lost, doubled, unaccounted, unanswered, corrupt int
	var problems []string
	problem := func(format string, args ...any) {
		if len(problems) < 20 {
			problems = append(problems, "  "+fmt.Sprintf(format, args...))
		}
	}
	for _, m := range r.msgs {
		n := len(copies[m.id])
		switch m.state {
		case fsoakDelivered:
			delivered++
		case fsoakRefused:
			refused++
		case fsoakExhausted:
			exhausted++
		default:
			pending++
		}
		if m.state == fsoakDelivered && n == 0 {
			lost++
			problem("lost: message %d: the client got 250 (queued as %s), the backend does not have it", m.id, m.queueID)
		}
		if n > 1 {
			doubled++
			problem("doubled: message %d is in the backend %d times", m.id, n)
		}
		if n > 0 && m.state != fsoakDelivered {
			unaccounted++
			problem("unaccounted: message %d is in the backend, its client was never told 250 (last reply %d)", m.id, m.lastCode)
		}
		if n == 0 && m.state != fsoakDelivered && m.state != fsoakPending && (m.lastCode < 400 || m.lastCode >= 600) {
			unanswered++
			problem("unanswered: message %d is not in the backend and its last attempt got no 4xx or 5xx (%d)", m.id, m.lastCode)
		}
		if n == 1 && m.state == fsoakDelivered {
			c := copies[m.id][0]
			_, rest := ourFields(c.Data)
			switch {
			case !bytes.Equal(rest, m.data(p.seed)):
				corrupt++
				problem("corrupt: message %d as stored differs from what the client sent", m.id)
			case c.From != m.from || len(c.To) != 1 || c.To[0] != m.rcpt:
				corrupt++
				problem("corrupt: message %d stored with envelope %s -> %v", m.id, c.From, c.To)
			case c.ID != m.queueID:
				corrupt++
				problem("corrupt: message %d stored as %s, the client's 250 said %q", m.id, c.ID, m.queueID)
			}
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	replies4, replies5 := map[string]int{}, map[string]int{}
	for k, v := range r.codes {
		f := strings.Fields(k)
		switch {
		case len(f) > 1 && strings.HasPrefix(f[1], "4"):
			replies4[k] = v
		case len(f) > 1 && strings.HasPrefix(f[1], "5"):
			replies5[k] = v
		}
	}
	sum := func(m map[string]int) (n int) {
		for _, v := range m {
			n += v
		}
		return n
	}

	t.Logf("fault soak done in %v (seed %d)", elapsed.Round(time.Millisecond), p.seed)
	t.Logf("messages: %d attempted, %d accepted with 250, %d refused 5xx (given up), %d out of retries with 4xx, %d unfinished",
		p.n, delivered, refused, exhausted, pending)
	t.Logf("attempts: %d (%d retries) on %d connections; %d replies 4xx, %d replies 5xx, %d broken connections",
		r.attempts, r.attempts-p.n, r.connections, sum(replies4), sum(replies5), r.unanswered)
	t.Logf("4xx replies by stage, code and kind:")
	for _, l := range fsoakSorted(replies4) {
		t.Logf("  %s", l)
	}
	t.Logf("5xx replies by stage, code and kind:")
	for _, l := range fsoakSorted(replies5) {
		t.Logf("  %s", l)
	}
	inj := map[string]int{}
	for f, n := range injected {
		if n > 0 {
			inj[fsoakFaultNames[f]] = n
		}
	}
	t.Logf("backend faults injected (%d): %s", sum(inj), strings.Join(fsoakTrim(fsoakSorted(inj)), ", "))
	t.Logf("DNS faults: %d connections with a failing HELO name, %d attempts with a failing sender domain", r.heloFaults, r.sendFaults)
	for i, k := range kills {
		t.Logf("backend kill %d at %v: waited %v for committed replies (stuck %d), victim DATA held %v, %d backend sessions open (%d at DATA, %d of them reading data), down %v, restart error %v",
			i+1, k.at.Round(time.Millisecond), k.waited.Round(time.Millisecond), k.stuck, k.victim, k.open, k.atData, k.midData, k.down.Round(time.Millisecond), k.restartE)
	}
	t.Logf("backend: %d incarnations, %d copies stored (%d without a soak token)", len(incarnations), stored, foreign)
	t.Logf("mxguard log: %s", strings.Join(fsoakTrim(fsoakSorted(r.logMsgs)), ", "))
	t.Logf("mxguard refusals (stage rule): %s", strings.Join(fsoakTrim(fsoakSorted(r.logRefused)), ", "))
	t.Logf("mxguard backend failures by stage: %s", strings.Join(fsoakTrim(fsoakSorted(r.logBackend)), ", "))
	shown := 0
	for _, m := range r.msgs {
		if m.state == fsoakExhausted && shown < 5 {
			shown++
			t.Logf("out of retries: message %d: %s", m.id, strings.Join(m.history, "; "))
		}
	}
	t.Logf("INVARIANTS: lost %d, doubled %d, unaccounted %d, unanswered %d, corrupt %d, broken client connections %d, unexpected replies %d",
		lost, doubled, unaccounted, unanswered, corrupt, r.unanswered, len(r.unexpected))

	for _, s := range problems {
		t.Error(s)
	}
	if lost != 0 || doubled != 0 || unaccounted != 0 || unanswered != 0 || corrupt != 0 {
		t.Errorf("invariants broken: lost %d, doubled %d, unaccounted %d, unanswered %d, corrupt %d",
			lost, doubled, unaccounted, unanswered, corrupt)
	}
	if pending != 0 || delivered+refused+exhausted != p.n {
		t.Errorf("%d messages did not reach a final state", p.n-delivered-refused-exhausted)
	}
	if r.unanswered != 0 {
		t.Errorf("%d attempts ended with a broken connection instead of a reply", r.unanswered)
	}
	for i, s := range r.unexpected {
		if i == 10 {
			t.Errorf("... and %d more unexpected replies", len(r.unexpected)-10)
			break
		}
		t.Errorf("unexpected reply: %s", s)
	}
	if foreign != 0 {
		t.Errorf("the backend stored %d messages without a soak token", foreign)
	}
	if stored != delivered {
		t.Errorf("the backend stored %d copies for %d messages accepted", stored, delivered)
	}
	if got := r.logMsgs["relayed"]; got != delivered {
		t.Errorf("mxguard logged %d relayed messages, the clients got %d 250s", got, delivered)
	}
	for i, k := range kills {
		if k.stuck != 0 || k.restartE != nil {
			t.Errorf("backend kill %d: %d committed messages still without a reply at the client after 20s; restart: %v", i+1, k.stuck, k.restartE)
		}
	}
	if len(kills) != p.kills {
		t.Errorf("%d backend kills done, %d planned", len(kills), p.kills)
	}
}

// fsoakTrim trims the padding fsoakSorted puts in front.
func fsoakTrim(s []string) []string {
	for i := range s {
		s[i] = strings.TrimSpace(s[i])
	}
	return s
}
