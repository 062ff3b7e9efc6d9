package proxy

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/checks"
)

// Allocation budgets: what one clean session costs mxguard, beyond what
// its client and its backend cost. A session that starts allocating more
// fails the benchmark (go test -run XXX -bench Session -benchmem ./proxy):
// every allocation is garbage the collector pays for, and the GC is a
// large part of mxguard's CPU under load (docs/performance.md).
//
// Measured 2026-12 (docs/performance.md): 491 allocations, 43-44 KB, of
// which go-smtp's buffers are 8 KB; the rest is mxguard's (the pipeline,
// its checks and the decision log most of it).
const (
	sessionAllocBudget = 560      // allocations
	sessionByteBudget  = 52 << 10 // bytes
)

// rawSession runs one clean session to addr from 127.0.0.2 with a raw
// client that allocates little: banner, EHLO, pipelined MAIL, RCPT and
// DATA, a 1 KB message, QUIT.
func rawSession(tb testing.TB, addr string, msg []byte) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(nc)
	expect := func(code string) {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				tb.Fatalf("want %s: %v", code, err)
			}
			if !strings.HasPrefix(line, code) {
				tb.Fatalf("want %s, got %q", code, line)
			}
			if line[3] == ' ' {
				return
			}
		}
	}
	expect("220")
	fmt.Fprintf(nc, "EHLO mail.good.test\r\n")
	expect("250")
	fmt.Fprintf(nc, "MAIL FROM:<alice@good.test>\r\nRCPT TO:<bob@mxguard.test>\r\nDATA\r\n")
	expect("250")
	expect("250")
	expect("354")
	nc.Write(msg)
	expect("250")
	fmt.Fprintf(nc, "QUIT\r\n")
	expect("221")
}

// allocs runs f n times and returns the allocations and bytes per run of
// the whole process.
func allocs(n int, f func()) (objects, bytes float64) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for range n {
		f()
	}
	runtime.ReadMemStats(&m1)
	return float64(m1.Mallocs-m0.Mallocs) / float64(n), float64(m1.TotalAlloc-m0.TotalAlloc) / float64(n)
}

// BenchmarkSession is one clean session through mxguard, every check of
// the harness on (HELO, SPF, DKIM, DMARC, the DNS lists, reputation),
// against the in-process backend; its allocs/op and B/op are those of the
// whole process. It reports mxguard's own share (the same session sent to
// the backend directly is subtracted) and holds it to the budgets above.
func BenchmarkSession(b *testing.B) {
	h := newHarness(b, harnessOpt{})
	// The decision log as a server writes it (JSON, info), but to nowhere:
	// the harness keeps its debug log in a growing buffer.
	h.srv.log = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h.rep.Pass(netip.MustParseAddr("127.0.0.2"), checks.PregreetName, time.Hour)
	body := strings.Repeat("The quick brown fox jumps over the lazy dog, again and again.\r\n", 14)
	msg := []byte("From: alice@good.test\r\nTo: bob@mxguard.test\r\nSubject: budget\r\n\r\n" + body + ".\r\n")
	for range 20 { // warm: DNS cache, pools
		rawSession(b, h.addr, msg)
	}
	const n = 200
	directObjs, directBytes := allocs(n, func() { rawSession(b, h.sink.Addr(), msg) })
	mxObjs, mxBytes := allocs(n, func() { rawSession(b, h.addr, msg) })
	ownObjs, ownBytes := mxObjs-directObjs, mxBytes-directBytes

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rawSession(b, h.addr, msg)
	}
	b.StopTimer()
	b.ReportMetric(ownObjs, "mxguard-allocs/session")
	b.ReportMetric(ownBytes, "mxguard-B/session")
	if ownObjs > sessionAllocBudget || ownBytes > sessionByteBudget {
		b.Errorf("a clean session costs mxguard %.0f allocations and %.0f bytes, over the budget of %d and %d",
			ownObjs, ownBytes, sessionAllocBudget, sessionByteBudget)
	}
}
