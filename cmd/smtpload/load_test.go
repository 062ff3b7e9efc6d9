package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testsrv"

	"github.com/mxguard/mxguard/mailsink"
)

func testConfig(addr string) Config {
	cfg := DefaultConfig()
	cfg.Addr = addr
	cfg.N = 200
	cfg.C = 8
	cfg.Timeout = 10 * time.Second
	cfg.To = []string{"rcpt@example.net"}
	return cfg
}

func mustRun(t *testing.T, cfg Config) Result {
	t.Helper()
	res, err := run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		perConn    int
		pipelining bool
	}{{1, false}, {1, true}, {10, false}, {10, true}, {0, true}} {
		t.Run(fmt.Sprintf("per-conn=%d/pipelining=%v", tc.perConn, tc.pipelining), func(t *testing.T) {
			sink := testsrv.Sink(t, nil)
			cfg := testConfig(sink.Addr())
			cfg.PerConn = tc.perConn
			cfg.Pipelining = tc.pipelining
			cfg.To = []string{"a@example.net", "b@example.net"}
			res := mustRun(t, cfg)
			if res.OK != cfg.N || res.Refused != 0 || res.Errors != 0 {
				t.Fatalf("ok %d refused %d errors %d, want %d ok: %v %v", res.OK, res.Refused, res.Errors, cfg.N, res.RefusedBy, res.ErrorsBy)
			}
			if res.Pipelining != tc.pipelining {
				t.Errorf("pipelining used = %v, want %v", res.Pipelining, tc.pipelining)
			}
			msgs, err := sink.WaitMessages(cfg.N, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			sessions := endedSessions(t, sink)
			if len(sessions) != res.Connections {
				t.Errorf("sink saw %d connections, smtpload reports %d", len(sessions), res.Connections)
			}
			switch tc.perConn {
			case 1:
				if res.Connections != cfg.N {
					t.Errorf("%d connections for %d messages, one each", res.Connections, cfg.N)
				}
			case 0:
				if res.Connections != cfg.C {
					t.Errorf("%d connections, want one per worker (%d)", res.Connections, cfg.C)
				}
			default:
				lo, hi := cfg.N/tc.perConn, cfg.N/tc.perConn+cfg.C
				if res.Connections < lo || res.Connections > hi {
					t.Errorf("%d connections, want %d..%d", res.Connections, lo, hi)
				}
			}
			for _, si := range sessions {
				if tc.perConn > 0 && si.Messages > tc.perConn {
					t.Errorf("session %d carried %d messages, more than %d", si.ID, si.Messages, tc.perConn)
				}
				if n := len(si.Commands); n == 0 || si.Commands[n-1] != "QUIT" {
					t.Fatalf("session %d did not end with QUIT: %q", si.ID, si.Commands[max(0, n-5):])
				}
			}
			ids := map[string]bool{}
			for _, m := range msgs {
				if len(m.To) != 2 || m.From != cfg.From {
					t.Fatalf("envelope %q -> %q", m.From, m.To)
				}
				if d := len(m.Data) - res.Size; d < -2 || d > 2 {
					t.Errorf("message is %d bytes, reported size %d", len(m.Data), res.Size)
				}
				if !bytes.Contains(m.Data, []byte("\r\n.A line that starts with a dot.\r\n")) {
					t.Errorf("dot-stuffed line not restored:\n%s", m.Data)
				}
				id := messageID(m.Data)
				if id == "" || ids[id] {
					t.Errorf("Message-ID %q missing or repeated", id)
				}
				ids[id] = true
			}
			if res.LatencyP50 <= 0 || res.LatencyP99 < res.LatencyP50 || res.LatencyMax < res.LatencyP99 ||
				res.EnvelopeP99 <= 0 || res.DataP99 <= 0 || res.ConnectP99 <= 0 || res.EhloP99 <= 0 {
				t.Errorf("latencies: %+v", res)
			}
			if res.MsgsPerSec <= 0 || res.ElapsedS <= 0 {
				t.Errorf("rate %v over %vs", res.MsgsPerSec, res.ElapsedS)
			}
		})
	}
}

// endedSessions waits for the sink to see every connection end (it notes
// the end after the client closed, a moment after smtpload returned).
func endedSessions(t *testing.T, sink *mailsink.Server) []*mailsink.SessionInfo {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		sessions := sink.Sessions()
		open := 0
		for _, si := range sessions {
			if si.Ended.IsZero() {
				open++
			}
		}
		if open == 0 {
			return sessions
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still open", open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func messageID(data []byte) string {
	for _, l := range strings.Split(string(data), "\r\n") {
		if v, ok := strings.CutPrefix(l, "Message-ID: "); ok {
			return v
		}
		if l == "" {
			break
		}
	}
	return ""
}

func TestLoadSizes(t *testing.T) {
	for _, size := range []int{0, 300, 1024, 100 << 10} {
		sink := testsrv.Sink(t, nil)
		cfg := testConfig(sink.Addr())
		cfg.N, cfg.C, cfg.Size = 5, 2, size
		res := mustRun(t, cfg)
		if res.OK != cfg.N {
			t.Fatalf("size %d: %+v", size, res)
		}
		msgs := sink.Messages()
		got := len(msgs[0].Data)
		if size >= 1024 && (got < size-2 || got > size+2) {
			t.Errorf("-size %d: sent %d bytes", size, got)
		}
		if got != res.Size {
			t.Errorf("-size %d: sent %d bytes, reported %d", size, got, res.Size)
		}
	}
}

func TestLoadNoPipeliningOffered(t *testing.T) {
	sink := testsrv.Sink(t, &mailsink.Server{Extensions: []string{"8BITMIME"}})
	cfg := testConfig(sink.Addr())
	cfg.N = 50
	res := mustRun(t, cfg)
	if res.OK != cfg.N || res.Pipelining {
		t.Fatalf("ok %d, pipelining %v: want all sent in lockstep", res.OK, res.Pipelining)
	}
}

// TestLoadRefusals: refusals at MAIL, RCPT, DATA and end of data are counted
// per first reply line, and the connection goes on to the next message.
func TestLoadRefusals(t *testing.T) {
	for _, pipelining := range []bool{false, true} {
		for _, perConn := range []int{1, 10} {
			t.Run(fmt.Sprintf("pipelining=%v/per-conn=%d", pipelining, perConn), func(t *testing.T) {
				var n atomic.Int64
				policy := mailsink.PolicyFuncs{
					MailFunc: func(si *mailsink.SessionInfo, from string) *mailsink.Action {
						// Every 5th transaction is refused at MAIL.
						if n.Add(1)%5 == 0 {
							return &mailsink.Action{Reply: "451-4.3.0 Try later\n451 4.3.0 (second line)"}
						}
						return nil
					},
					RcptFunc: func(si *mailsink.SessionInfo, to string) *mailsink.Action {
						if strings.HasPrefix(to, "unknown") {
							return &mailsink.Action{Reply: "550 5.1.1 <" + to + ">: Recipient address rejected: User unknown"}
						}
						return nil
					},
					DataEndFunc: func(si *mailsink.SessionInfo, m *mailsink.Message) *mailsink.Action {
						if m.To[0] == "spam@example.net" {
							return &mailsink.Action{Reply: "554 5.7.1 Spam"}
						}
						return nil
					},
				}
				sink := testsrv.Sink(t, &mailsink.Server{Policy: policy})
				cfg := testConfig(sink.Addr())
				cfg.N, cfg.PerConn, cfg.Pipelining = 100, perConn, pipelining

				// All recipients unknown: every MAIL that passes is refused at RCPT.
				cfg.To = []string{"unknown1@example.net", "unknown2@example.net"}
				res := mustRun(t, cfg)
				want := map[string]int{
					"451 4.3.0 Try later": 20,
					"550 5.1.1 <unknown1@example.net>: Recipient address rejected: User unknown": 80,
				}
				if res.OK != 0 || res.Errors != 0 || res.Refused != 100 || !equalCounts(res.RefusedBy, want) {
					t.Fatalf("ok %d errors %d refused %d %v, want refused %v (errors %v)", res.OK, res.Errors, res.Refused, res.RefusedBy, want, res.ErrorsBy)
				}

				// One recipient of two refused: the message goes through.
				n.Store(0)
				cfg.To = []string{"unknown@example.net", "ok@example.net"}
				res = mustRun(t, cfg)
				if res.OK != 80 || res.Refused != 20 || res.Errors != 0 {
					t.Fatalf("ok %d refused %d errors %d %v", res.OK, res.Refused, res.Errors, res.RefusedBy)
				}

				// Refused at the end of data.
				n.Store(0)
				cfg.To = []string{"spam@example.net"}
				res = mustRun(t, cfg)
				want = map[string]int{"451 4.3.0 Try later": 20, "554 5.7.1 Spam": 80}
				if res.OK != 0 || res.Refused != 100 || !equalCounts(res.RefusedBy, want) {
					t.Fatalf("ok %d refused %d %v, want %v", res.OK, res.Refused, res.RefusedBy, want)
				}
				// Refusals do not cost connections.
				if perConn == 10 && res.Connections > 100/10+cfg.C {
					t.Errorf("%d connections for 100 messages at 10 each", res.Connections)
				}
			})
		}
	}
}

func equalCounts(got, want map[string]int) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// TestLoadErrors: a server that vanishes mid-DATA, or is not there, gives
// errors by kind, not refusals.
func TestLoadErrors(t *testing.T) {
	policy := mailsink.PolicyFuncs{DataStartFunc: func(si *mailsink.SessionInfo) *mailsink.Action {
		if si.ID%2 == 0 {
			return &mailsink.Action{CutMidData: true}
		}
		return nil
	}}
	sink := testsrv.Sink(t, &mailsink.Server{Policy: policy})
	cfg := testConfig(sink.Addr())
	cfg.N, cfg.C = 40, 1
	res := mustRun(t, cfg)
	if res.OK != 20 || res.Errors != 20 || res.Refused != 0 {
		t.Fatalf("ok %d errors %d refused %d: %v", res.OK, res.Errors, res.Refused, res.ErrorsBy)
	}
	for k := range res.ErrorsBy {
		if !strings.HasPrefix(k, "message: ") {
			t.Errorf("error %q: want it at the message stage", k)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg = testConfig(addr)
	cfg.N = 10
	res = mustRun(t, cfg)
	if res.Errors != 10 || res.ErrorsBy["connect: connection refused"] != 10 {
		t.Fatalf("errors %d %v", res.Errors, res.ErrorsBy)
	}
}

// TestLoadSourceAddresses: -src spreads the connections over the addresses.
func TestLoadSourceAddresses(t *testing.T) {
	sink := testsrv.Sink(t, nil)
	cfg := testConfig(sink.Addr())
	cfg.N = 30
	cfg.Src = mustAddrs(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	res := mustRun(t, cfg)
	if res.OK != cfg.N {
		t.Fatalf("%+v", res)
	}
	per := map[string]int{}
	for _, si := range sink.Sessions() {
		host, _, _ := net.SplitHostPort(si.RemoteAddr.String())
		per[host]++
	}
	if per["127.0.0.2"] != 10 || per["127.0.0.3"] != 10 || per["127.0.0.4"] != 10 {
		t.Errorf("connections per source: %v", per)
	}
}

// fakeGreeter accepts connections and answers the i-th with greet(i), then
// holds it open until the test ends.
func fakeGreeter(t *testing.T, greet func(i int) string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			if g := greet(i); g != "" {
				c.Write([]byte(g))
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

func TestIdle(t *testing.T) {
	addr := fakeGreeter(t, func(i int) string {
		switch i % 4 {
		case 0:
			return "421 4.7.0 mx.test Error: too many connections from 127.0.0.1, try again later\r\n"
		case 1:
			return "220-mx.test ESMTP\r\n" // the bait line; the rest never comes
		case 2:
			return "220-mx.test ESMTP\r\n220 mx.test ESMTP ready\r\n"
		}
		return "" // silent
	})
	cfg := testConfig(addr)
	cfg.Idle, cfg.C, cfg.Hold = 80, 10, 300*time.Millisecond
	res := mustRun(t, cfg)
	if res.Mode != "idle" || res.Accepted != 80 || res.Refused != 20 || res.Bait != 20 || res.Greeted != 20 ||
		res.Silent != 20 || res.Errors != 0 || res.StillOpen != 60 {
		t.Fatalf("%+v", res)
	}
	if res.RefusedBy["421 4.7.0 mx.test Error: too many connections from 127.0.0.1, try again later"] != 20 {
		t.Errorf("refused by %v", res.RefusedBy)
	}
	if res.GreetP99 <= 0 {
		t.Errorf("greeting latency %v", res.GreetP99)
	}
}

func TestIdleMailsink(t *testing.T) {
	sink := testsrv.Sink(t, &mailsink.Server{ReadTimeout: 200 * time.Millisecond})
	cfg := testConfig(sink.Addr())
	cfg.Src = mustAddrs(t, "127.0.0.2", "127.0.0.3")
	cfg.Idle, cfg.C, cfg.Hold = 50, 5, 100*time.Millisecond
	res := mustRun(t, cfg)
	if res.Accepted != 50 || res.Greeted != 50 || res.StillOpen != 50 || res.Closed != 0 {
		t.Fatalf("%+v", res)
	}
	// Held past the server's timeout: its 421 and hang-up are seen.
	cfg.Idle, cfg.Hold = 10, time.Second
	res = mustRun(t, cfg)
	if res.Accepted != 10 || res.Greeted != 10 || res.Closed != 10 || res.StillOpen != 0 {
		t.Fatalf("%+v", res)
	}
}

func TestCLI(t *testing.T) {
	sink := testsrv.Sink(t, nil)
	var out, errOut bytes.Buffer
	code := cli([]string{"-addr", sink.Addr(), "-n", "20", "-c", "4", "-per-conn", "5", "-size", "2000",
		"-to", "a@example.net, b@example.net", "-src", "127.0.0.2", "-json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var res Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if res.OK != 20 || res.Connections < 4 || res.Connections > 8 || res.Size < 1998 {
		t.Errorf("%+v", res)
	}
	for _, key := range []string{`"msgs_per_sec":`, `"latency_p99_ms":`, `"connect_p99_ms":`, `"data_p99_ms":`} {
		if !strings.Contains(out.String(), key) {
			t.Errorf("JSON lacks %s: %s", key, out.String())
		}
	}

	out.Reset()
	code = cli([]string{"-addr", sink.Addr(), "-n", "3"}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "ok 3  refused 0  errors 0") ||
		!strings.Contains(out.String(), "latency p50") {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	for _, bad := range [][]string{{"-n", "0"}, {"-src", "nonsense"}, {"-c", "0"}, {"-dkim-each"}, {"extra"}} {
		if code := cli(append([]string{"-addr", sink.Addr()}, bad...), &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2", bad, code)
		}
	}
}

func mustAddrs(t *testing.T, s ...string) []netip.Addr {
	t.Helper()
	cfg, err := parseFlags([]string{"-src", strings.Join(s, ",")}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Src
}
