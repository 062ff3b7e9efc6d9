package proxy

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/mailsink"
	"github.com/mxguard/mxguard/resolver"
	"github.com/mxguard/mxguard/zonedns"
)

// Hostile input, the whole dialogue: the fuzzer's bytes are what a client
// says after the greeting, against the real proxy in front of mailsink.
// Whatever they are:
//
//   - mxguard does not panic (go-smtp turns a panic in a handler into
//     "421 4.0.0 Internal server error" and a log line: both are watched);
//   - it answers and hangs up within a bound (the input is followed by
//     CRLF "." CRLF QUIT and the end of the client's stream), and releases
//     the connection;
//   - every reply is a well-formed SMTP reply line;
//   - whatever the backend received comes from a transaction the client saw
//     accepted (its "queued as" ID), and is clean: known commands, no CR or
//     NUL in a command line, XCLIENT in xtext, our header fields printable
//     and folded, CRLF line ends only (checkBackendSafe).
//
// One mxguard (with its DNS and backend) serves a whole fuzzing process,
// started at the first input. Clients at 127.0.0.5 are trusted (no checks,
// so odd names and parameters reach the backend); at 127.0.0.2 every check
// runs.
//
//	go test -run XXX -fuzz FuzzSMTPDialogue -fuzztime 90s ./proxy
func FuzzSMTPDialogue(f *testing.F) {
	hello := "EHLO mail.good.test\r\n"
	txn := "MAIL FROM:<alice@good.test>\r\nRCPT TO:<bob@mxguard.test>\r\nDATA\r\n"
	msg := "From: alice@good.test\r\nSubject: x\r\n\r\nhello\r\n.\r\n"
	seeds := []string{
		hello + txn + msg + "QUIT\r\n",
		hello + txn + msg + txn + msg,
		"HELO mail.good.test\r\n" + txn + msg,
		hello + "MAIL FROM:<alice@good.test> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=a+2Bb\r\nRCPT TO:<bob@mxguard.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob@mxguard.test\r\nDATA\r\n" + msg,
		hello + "MAIL FROM:<josé@good.test> SMTPUTF8\r\nRCPT TO:<bøb@mxguard.test>\r\nDATA\r\n" + msg,
		hello + "MAIL FROM:<> AUTH=<>\r\nRCPT TO:<postmaster@mxguard.test>\r\nDATA\r\n" + msg,
		hello + txn + "From: alice@good.test\r\n\r\nfirst\n.\nMAIL FROM:<spoof@mxguard.test>\r\nRCPT TO:<v@mxguard.test>\r\nDATA\r\nsmuggled\r\n.\r\n",
		hello + txn + "From: alice@good.test\r\n\r\nfirst\r.\rMAIL FROM:<spoof@mxguard.test>\r\n.\r\n",
		hello + txn + "From: alice@good.test\r\n\r\nfirst\r\n.\r\r\n.\r\n",
		hello + txn + "From: a\r\n\r\n..\r\n.x\r\n\x00\xff\r\n.\r\n",
		hello + "MAIL FROM:<alice@good.test>\r\nRSET\r\nNOOP\r\nVRFY bob\r\nEXPN list\r\nHELP\r\nSTARTTLS\r\nAUTH PLAIN AGFsaWNlAHB3\r\n",
		hello + "MAIL FROM:<alice@good.test>\r\nRCPT TO:<bob@mxguard.test>\r\nBDAT 5 LAST\r\nhello",
		"EHLO evil.example\rX-Injected: 1\r\n" + txn + msg,
		"EHLO [127.0.0.2]\r\nEHLO localhost\r\nHELO nul\x00.example\r\n" + txn + msg,
		hello + "MAIL FROM:<a@good.test\r> ENVID=x+0D+0Ay\r\nRCPT TO:<b@mxguard.test> ORCPT=rfc822;b+0D+0AX:+20y@mxguard.test\r\nDATA\r\n" + msg,
		"DATA\r\nRCPT TO:<x@y>\r\nMAIL FROM:<x@y>\r\n" + strings.Repeat("NOOP ", 2000) + "\r\n",
		hello + txn + strings.Repeat("z", 9000) + "\r\n.\r\n",
		"\r\n\r\n   \r\nX\r\nMAIL\r\nEHLO\r\n\x00\r\n",
		"ehlo mail.good.test\nmail from:<alice@good.test>\nrcpt to:<bob@mxguard.test>\ndata\nFrom: a\n\nbody\n.\n",
		"00\r0\n", // go-smtp echoes an unknown verb, CR and all (found by the fuzzer)
		// The wire's own work: STARTTLS without TLS, NUL lines, junk
		// past its limits, a pipelined group, a bare newline, HTTP.
		"STARTTLS\r\nEHLO mail.good.test\r\n" + txn + msg,
		hello + "MAIL FROM:<alice@good.test>\x00\r\nRCPT TO:<bob@mxguard.test>\r\nDATA\r\n" + msg,
		hello + strings.Repeat("NOOP\r\n", 30) + txn + msg,
		hello + strings.Repeat("FROB\r\n", 12) + txn + msg,
		hello + txn + "From: a\r\n\r\nx\r\n\x00.\r\nMAIL FROM:<spoof@mxguard.test>\r\n.\r\n",
		"EHLO mail.good.test\n" + txn + msg,
		"GET / HTTP/1.1\r\nHost: mx\r\n\r\n",
		hello + "BDAT 3\r\nabcBDAT 0 LAST\r\n",
	}
	for _, s := range seeds {
		f.Add(true, []byte(s))
		f.Add(false, []byte(s))
	}
	var once sync.Once
	var p *fuzzProxy
	var startErr error
	f.Cleanup(func() {
		if p != nil {
			p.close()
		}
	})
	f.Fuzz(func(t *testing.T, trusted bool, input []byte) {
		if len(input) > 64<<10 {
			return
		}
		once.Do(func() { p, startErr = startFuzzProxy() })
		if startErr != nil {
			t.Fatal(startErr)
		}
		from := "127.0.0.2"
		if trusted {
			from = "127.0.0.5"
		}
		p.check(t, input, p.dialogue(t, from, input), bytes.Contains(bytes.ToUpper(input), []byte("SMTPUTF8")))
	})
}

// MAIL and RCPT with whatever parameters: go-smtp parses them, mxguard
// passes on those the backend supports, re-encoded; nothing else reaches
// the backend, and what does is well-formed.
//
//	go test -run XXX -fuzz FuzzMailRcptParams -fuzztime 60s ./proxy
func FuzzMailRcptParams(f *testing.F) {
	for _, s := range [][2]string{
		{"<alice@good.test>", "<bob@mxguard.test>"},
		{"<alice@good.test> SIZE=100 BODY=7BIT", "<bob@mxguard.test> NOTIFY=NEVER"},
		{"<alice@good.test> RET=FULL ENVID=QQ+2B+3D", "<bob@mxguard.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;bob@mxguard.test"},
		{"<alice@good.test> AUTH=<>", "<bob@mxguard.test> ORCPT=utf-8;b\\x{E9}b@mxguard.test"},
		{"<alice@good.test> AUTH=alice+40good.test", "<bob@mxguard.test> ORCPT=rfc822;a+0D+0Ab"},
		{"<josé@good.test> SMTPUTF8", "<bób@mxguard.test>"},
		{"<> ENVID=+00", "<bob@mxguard.test> ORCPT=x-unknown;whatever"},
		{"<@relay.example:alice@good.test> BODY=BINARYMIME", "<bob@mxguard.test> NOTIFY=NEVER,SUCCESS"},
		{"<alice@good.test> SIZE=99999999999 FOO=bar", "<bob@mxguard.test> X=1=2"},
		{"<alice@good.test\r> ENVID=a\rb", "<b\x00ob@mxguard.test> NOTIFY=\x01"},
		{"<\"a b\"@good.test> REQUIRETLS", "<\"we(ird);\"@mxguard.test> ORCPT=rfc822;\"x\"@y"},
	} {
		f.Add(s[0], s[1])
	}
	var once sync.Once
	var p *fuzzProxy
	var startErr error
	f.Cleanup(func() {
		if p != nil {
			p.close()
		}
	})
	f.Fuzz(func(t *testing.T, mail, rcpt string) {
		if strings.Contains(mail+rcpt, "\n") || len(mail)+len(rcpt) > 4000 {
			return // one command line each
		}
		once.Do(func() { p, startErr = startFuzzProxy() })
		if startErr != nil {
			t.Fatal(startErr)
		}
		input := "EHLO mail.good.test\r\nMAIL FROM:" + mail + "\r\nRCPT TO:" + rcpt + "\r\nDATA\r\n" +
			"From: alice@good.test\r\nSubject: params\r\n\r\nbody\r\n.\r\n"
		p.check(t, []byte(input), p.dialogue(t, "127.0.0.5", []byte(input)), strings.Contains(strings.ToUpper(mail), "SMTPUTF8"))
	})
}

// fuzzProxy is mxguard with its fixture DNS and mailsink, for fuzzing: no
// *testing.T of its own (it outlives each input), no memory of clients
// (each input starts afresh), a log that is only watched for panics.
type fuzzProxy struct {
	dns  *zonedns.Server
	sink *mailsink.Server
	rt   *Runtime
	srv  *Server
	addr string
	log  *panicWatch
}

// fuzzBound is how long one input may take: mxguard must have answered and
// hung up by then (session_timeout is 5s).
const fuzzBound = 10 * time.Second

func startFuzzProxy() (p *fuzzProxy, err error) {
	p = &fuzzProxy{log: &panicWatch{}}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if p.dns, err = zonedns.New(testZone); err != nil {
		return p, err
	}
	if err = p.dns.Start("127.0.0.1:0"); err != nil {
		return p, err
	}
	p.sink = &mailsink.Server{Hostname: "backend.test", XCLIENT: true, ReadTimeout: fuzzBound,
		Extensions: []string{"PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN", "AUTH PLAIN"}}
	if err = p.sink.Start("127.0.0.1:0"); err != nil {
		return p, err
	}
	cfg := testConfig()
	cfg.TrustedNetworks = []config.Prefix{mustPrefix("127.0.0.5")}
	cfg.Backend.Address = p.sink.Addr()
	cfg.DNS.Resolvers = []string{p.dns.Addr()}
	cfg.Listen.GreetDelay = 0
	cfg.Limits.CommandTimeout = config.Duration(2 * time.Second)
	cfg.Limits.DataTimeout = config.Duration(2 * time.Second)
	cfg.Limits.SessionTimeout = config.Duration(5 * time.Second)
	cfg.Limits.MaxMessageSize = 1 << 20
	// The wire's tests and limits, all on.
	cfg.Tests.Pipelining, cfg.Tests.BareNewline = true, true
	cfg.Limits.JunkCommandLimit, cfg.Limits.HardErrorLimit, cfg.Limits.UnknownCommandLimit = 10, 10, 5
	cfg.Backend.CommandTimeout = config.Duration(2 * time.Second)
	cfg.Backend.DataTimeout = config.Duration(2 * time.Second)
	res, err := resolver.New(resolver.Config{Servers: cfg.DNS.Resolvers, Timeout: cfg.DNS.Timeout.D(), Attempts: 1})
	if err != nil {
		return p, err
	}
	if p.rt, err = NewRuntime(cfg, Shared{Resolver: res}, nil); err != nil {
		return p, err
	}
	p.rt.Start()
	p.srv = New(p.rt, slog.New(slog.NewJSONHandler(p.log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return p, err
	}
	p.srv.Serve(l)
	p.addr = l.Addr().String()
	return p, nil
}

func (p *fuzzProxy) close() {
	if p.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p.srv.Shutdown(ctx)
		cancel()
	}
	if p.rt != nil {
		p.rt.Close()
	}
	if p.sink != nil {
		p.sink.Close()
	}
	if p.dns != nil {
		p.dns.Close()
	}
}

// dialogue connects from the given address, waits for the greeting, sends
// input (a write per line, as a client would), then CRLF "." CRLF QUIT
// CRLF and the end of its stream, and returns everything mxguard said. It
// fails the input if mxguard has not hung up within fuzzBound.
func (p *fuzzProxy) dialogue(t *testing.T, from string, input []byte) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetDeadline(start.Add(fuzzBound))
	var transcript bytes.Buffer
	greeted := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		r := bufio.NewReader(c)
		for first := true; ; first = false {
			line, err := r.ReadString('\n')
			transcript.WriteString(line)
			if err != nil {
				done <- err
				if first {
					close(greeted)
				}
				return
			}
			if first {
				close(greeted)
			}
		}
	}()
	<-greeted
	for _, l := range bytes.SplitAfter(input, []byte("\n")) {
		if _, err := c.Write(l); err != nil {
			break // mxguard hung up: that is an answer too
		}
	}
	c.Write([]byte("\r\n.\r\nQUIT\r\n"))
	c.(*net.TCPConn).CloseWrite()
	err = <-done
	if isTimeout(err) {
		t.Fatalf("mxguard neither answered nor hung up within %v; it said %q", fuzzBound, transcript.String())
	}
	// mxguard lets go of the connection (limits, logs, the backend session).
	for p.srv.lim.open() != 0 {
		if time.Since(start) > fuzzBound {
			t.Fatalf("mxguard still counts %d open connections %v after the client came", p.srv.lim.open(), fuzzBound)
		}
		time.Sleep(time.Millisecond)
	}
	return transcript.String()
}

var (
	replyLine   = regexp.MustCompile(`^[2-5][0-9][0-9][ -][^\n]*\r\n$`)
	notifyValue = regexp.MustCompile(`^(NEVER|(SUCCESS|FAILURE|DELAY)(,(SUCCESS|FAILURE|DELAY))*)$`)
)

// check judges one dialogue: the replies, the log, and what the backend got;
// then forgets the backend's record for the next input.
func (p *fuzzProxy) check(t *testing.T, input []byte, transcript string, smtputf8 bool) {
	t.Helper()
	defer func() {
		p.sink.Reset()
		p.dns.ResetCounters()
	}()
	if panics := p.log.take(); len(panics) > 0 {
		t.Fatalf("mxguard panicked: %s\ndialogue replies: %q", panics[0], transcript)
	}
	lines := strings.SplitAfter(transcript, "\r\n")
	for i, l := range lines {
		if l == "" && i == len(lines)-1 {
			continue
		}
		if !replyLine.MatchString(l) {
			t.Fatalf("reply line %d is not SMTP: %q in %q", i, l, transcript)
		}
		// go-smtp echoes some client text as it came ("250-Hello <HELO
		// argument>", "500 5.5.2 Syntax errors, <verb> command
		// unrecognized"), a bare CR included, to the client that sent it:
		// a bare CR in a reply only ever comes from the client's own input.
		if strings.Contains(l[:len(l)-2], "\r") && !bareCR(input) {
			t.Fatalf("reply line %d carries a bare CR the client did not send: %q", i, l)
		}
		if strings.HasPrefix(l, "421 4.0.0 Internal server error") {
			t.Fatalf("a handler panicked: %q", transcript)
		}
	}
	checkBackendSafe(t, p.sink, smtputf8, "")
	for _, m := range p.sink.Messages() {
		if !strings.Contains(transcript, "queued as "+m.ID) {
			t.Fatalf("the backend stored %s, which the client never saw accepted: %q", m.ID, transcript)
		}
	}
	// No command toward the backend that the client did not give: each
	// MAIL and RCPT address the backend heard is one the client sent in a
	// command of that verb, and there are no more of them than the client
	// sent.
	sent := map[string]int{}
	given := map[string]map[string]bool{"MAIL": {}, "RCPT": {}}
	for _, l := range strings.Split(strings.ReplaceAll(string(input), "\r", "\n"), "\n") {
		verb, arg, _ := strings.Cut(strings.TrimLeft(l, " "), " ")
		if v := strings.ToUpper(verb); given[v] != nil {
			sent[v]++
			given[v][strings.ToLower(relayedAddress(arg))] = true
		}
	}
	heard := map[string]int{}
	for _, s := range p.sink.Sessions() {
		for _, cmd := range s.Commands {
			checkRelayedParams(t, cmd)
			verb, arg, _ := strings.Cut(cmd, " ")
			if v := strings.ToUpper(verb); given[v] != nil {
				heard[v]++
				if a := strings.ToLower(relayedAddress(arg)); !given[v][a] {
					t.Fatalf("the backend heard %q, an address the client never gave with %s: %q", cmd, v, input)
				}
			}
		}
	}
	for v, n := range heard {
		if n > sent[v] {
			t.Fatalf("the backend heard %d %s commands, the client sent %d: %q", n, v, sent[v], input)
		}
	}
}

// relayedAddress takes the address out of "FROM:<a@b> SIZE=1" or
// "TO:<a@b>", as the client or the backend wrote it.
func relayedAddress(arg string) string {
	_, rest, _ := strings.Cut(arg, ":")
	rest = strings.TrimSpace(rest)
	if strings.HasPrefix(rest, "<") {
		if i := strings.IndexByte(rest, '>'); i > 0 {
			return rest[1:i]
		}
	}
	a, _, _ := strings.Cut(rest, " ")
	return a
}

// checkRelayedParams wants each MAIL/RCPT parameter mxguard sends to be one
// it knows, in its encoded form.
func checkRelayedParams(t *testing.T, cmd string) {
	t.Helper()
	verb, _, _ := strings.Cut(cmd, " ")
	var known map[string]func(string) bool
	switch strings.ToUpper(verb) {
	case "MAIL":
		known = map[string]func(string) bool{
			"SIZE":     func(v string) bool { return v != "" && strings.Trim(v, "0123456789") == "" },
			"BODY":     func(v string) bool { return v == "7BIT" || v == "8BITMIME" },
			"SMTPUTF8": func(v string) bool { return v == "" },
			"RET":      func(v string) bool { return v == "FULL" || v == "HDRS" },
			"ENVID":    validXtext,
			"AUTH":     func(v string) bool { return v == "<>" || validXtext(v) },
		}
	case "RCPT":
		known = map[string]func(string) bool{
			"NOTIFY": notifyValue.MatchString,
			"ORCPT": func(v string) bool {
				typ, addr, _ := strings.Cut(v, ";")
				return (typ == "rfc822" && validXtext(addr)) || (typ == "utf-8" && isPrintableASCII(addr) && !strings.ContainsAny(addr, " +="))
			},
		}
	default:
		return
	}
	params := strings.TrimSpace(backendParams(cmd))
	if params == "" {
		return
	}
	for _, kv := range strings.Split(params, " ") {
		k, v, hasValue := strings.Cut(kv, "=")
		ok := known[k]
		if ok == nil || (hasValue == (k == "SMTPUTF8")) || !ok(v) {
			t.Fatalf("backend got parameter %q in %q", kv, cmd)
		}
	}
}

// validXtext reports RFC 3461 xtext: '!'..'~' except '+' and '=', and "+XX"
// with upper-case hex digits.
func validXtext(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) || !isUpperHex(s[i+1]) || !isUpperHex(s[i+2]) {
				return false
			}
			i += 2
		case c < '!' || c > '~' || c == '=':
			return false
		}
	}
	return true
}

// bareCR reports a CR not followed by LF.
func bareCR(b []byte) bool {
	for i, c := range b {
		if c == '\r' && (i+1 == len(b) || b[i+1] != '\n') {
			return true
		}
	}
	return false
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

// panicWatch is the fuzzing proxy's log: it keeps only lines about panics
// (go-smtp's "panic serving ..." reaches it at the debug level).
type panicWatch struct {
	mu     sync.Mutex
	panics []string
}

func (w *panicWatch) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("panic")) {
		w.mu.Lock()
		if len(w.panics) < 10 {
			w.panics = append(w.panics, string(b))
		}
		w.mu.Unlock()
	}
	return len(b), nil
}

func (w *panicWatch) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.panics
	w.panics = nil
	return p
}
