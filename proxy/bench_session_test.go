package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

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

// BenchmarkSessionDKIM is the clean session of BenchmarkSession with its
// message unsigned and signed (RSA-2048, relaxed, the key in the DNS
// cache), one after the other: the difference per session is what a
// signature costs mxguard end to end, to set beside one crypto/rsa
// verification (BenchmarkRSAVerify in ./checks, 30-40 µs here).
func BenchmarkSessionDKIM(b *testing.B) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	rec := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	var txt []string
	for len(rec) > 250 {
		txt, rec = append(txt, `"`+rec[:250]+`"`), rec[250:]
	}
	txt = append(txt, `"`+rec+`"`)
	h := newHarness(b, harnessOpt{zone: "$ORIGIN good.test.\nbench._domainkey TXT " + strings.Join(txt, " ") + "\n"})
	h.srv.log = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h.rep.Pass(netip.MustParseAddr("127.0.0.2"), checks.PregreetName, time.Hour)
	body := strings.Repeat("The quick brown fox jumps over the lazy dog, again and again.\r\n", 14)
	plain := "From: alice@good.test\r\nTo: bob@mxguard.test\r\nSubject: budget\r\nDate: Mon, 1 Jan 2026 12:00:00 +0000\r\n\r\n" + body
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, strings.NewReader(plain), &dkim.SignOptions{Domain: "good.test", Selector: "bench", Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: []string{"From", "To", "Subject", "Date"}}); err != nil {
		b.Fatal(err)
	}
	// The same size either way: the unsigned one carries a field as long.
	pad := "X-Pad: " + strings.Repeat("x", signed.Len()-len(plain)-len("X-Pad: \r\n")) + "\r\n"
	msgs := map[string][]byte{"unsigned": []byte(pad + plain + ".\r\n"), "signed": append(signed.Bytes(), ".\r\n"...)}
	for range 20 {
		rawSession(b, h.addr, msgs["signed"])
	}
	for _, name := range []string{"unsigned", "signed"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rawSession(b, h.addr, msgs[name])
			}
		})
	}
	for _, r := range h.logs.lines("refused") {
		b.Errorf("refused: %v", r)
	}
}
