package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// run executes one load or idle run as cfg says.
func run(cfg Config) (Result, error) {
	if err := cfg.check(); err != nil {
		return Result{}, err
	}
	if cfg.Idle > 0 {
		return runIdle(cfg)
	}
	return runLoad(cfg)
}

// dialer hands out local source addresses round-robin.
type dialer struct {
	addr    string
	timeout time.Duration
	src     []*net.Dialer
	next    atomic.Uint64
}

func newDialer(cfg Config) *dialer {
	d := &dialer{addr: cfg.Addr, timeout: cfg.Timeout}
	for _, a := range cfg.Src {
		d.src = append(d.src, &net.Dialer{Timeout: cfg.Timeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0))})
	}
	if len(d.src) == 0 {
		d.src = []*net.Dialer{{Timeout: cfg.Timeout}}
	}
	return d
}

func (d *dialer) dial() (net.Conn, error) {
	nd := d.src[(d.next.Add(1)-1)%uint64(len(d.src))]
	return nd.Dial("tcp", d.addr)
}

// worker is one connection's goroutine and what it measured.
type worker struct {
	cfg  *Config
	d    *dialer
	msg  *content
	next *atomic.Uint64 // messages handed out so far

	nc       net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	pipeline bool   // the server offered PIPELINING and we were asked to use it
	sent     int    // messages on this connection
	envelope []byte // MAIL, RCPTs and DATA, built once
	mail     []byte
	rcpts    [][]byte
	prefix   []byte

	ok, refused, errs, conns int
	usedPipelining           bool
	refusedBy, errorsBy      counter
	lat, connect, ehlo, env  []time.Duration
	data                     []time.Duration
}

func runLoad(cfg Config) (Result, error) {
	start := time.Now()
	msg, err := buildContent(cfg, start)
	if err != nil {
		return Result{}, err
	}
	c := min(cfg.C, cfg.N)
	d := newDialer(cfg)
	var next atomic.Uint64
	workers := make([]*worker, c)
	per := cfg.N/c + 1
	for i := range workers {
		workers[i] = &worker{
			cfg: &cfg, d: d, msg: msg, next: &next,
			refusedBy: counter{}, errorsBy: counter{},
			lat: make([]time.Duration, 0, per), data: make([]time.Duration, 0, per),
			env: make([]time.Duration, 0, per),
		}
		workers[i].buildEnvelope()
	}
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	t0 := time.Now()
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop()
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	cpu := cpuTime() - cpu0

	res := Result{
		Mode: "load", Addr: cfg.Addr, Messages: cfg.N, Concurrency: c, PerConn: cfg.PerConn,
		Size: msg.size, DKIM: msg.algo, ElapsedS: elapsed.Seconds(), ClientCPUS: cpu.Seconds(),
		RefusedBy: map[string]int{}, ErrorsBy: map[string]int{},
	}
	var lat, connect, ehlo, env, data []time.Duration
	refusedBy, errorsBy := counter{}, counter{}
	for _, w := range workers {
		res.OK += w.ok
		res.Refused += w.refused
		res.Errors += w.errs
		res.Connections += w.conns
		res.Pipelining = res.Pipelining || w.usedPipelining
		lat = append(lat, w.lat...)
		connect = append(connect, w.connect...)
		ehlo = append(ehlo, w.ehlo...)
		env = append(env, w.env...)
		data = append(data, w.data...)
		for k, n := range w.refusedBy {
			refusedBy.add(k, n)
		}
		for k, n := range w.errorsBy {
			errorsBy.add(k, n)
		}
	}
	res.RefusedBy, res.ErrorsBy = refusedBy, errorsBy
	if elapsed > 0 {
		res.MsgsPerSec = float64(res.OK) / elapsed.Seconds()
	}
	for _, s := range [][]time.Duration{lat, connect, ehlo, env, data} {
		slices.Sort(s)
	}
	res.LatencyP50 = toMS(percentile(lat, 0.50))
	res.LatencyP90 = toMS(percentile(lat, 0.90))
	res.LatencyP99 = toMS(percentile(lat, 0.99))
	res.LatencyMax = toMS(percentile(lat, 1))
	res.ConnectP99 = toMS(percentile(connect, 0.99))
	res.EhloP99 = toMS(percentile(ehlo, 0.99))
	res.EnvelopeP99 = toMS(percentile(env, 0.99))
	res.DataP99 = toMS(percentile(data, 0.99))
	res.ConnectP50 = toMS(percentile(connect, 0.50))
	res.EhloP50 = toMS(percentile(ehlo, 0.50))
	res.EnvelopeP50 = toMS(percentile(env, 0.50))
	res.DataP50 = toMS(percentile(data, 0.50))
	return res, nil
}

func (w *worker) buildEnvelope() {
	w.mail = fmt.Appendf(nil, "MAIL FROM:<%s>\r\n", w.cfg.From)
	for _, t := range w.cfg.To {
		w.rcpts = append(w.rcpts, fmt.Appendf(nil, "RCPT TO:<%s>\r\n", t))
	}
	w.envelope = append(w.envelope, w.mail...)
	for _, r := range w.rcpts {
		w.envelope = append(w.envelope, r...)
	}
	w.envelope = append(w.envelope, "DATA\r\n"...)
}

// loop sends messages until none are left.
func (w *worker) loop() {
	defer w.hangup(true)
	for {
		seq := w.next.Add(1)
		if seq > uint64(w.cfg.N) {
			return
		}
		w.send(seq)
		if w.nc != nil && w.cfg.PerConn > 0 && w.sent >= w.cfg.PerConn {
			w.hangup(true)
		}
	}
}

// outcome of one step of the dialogue.
type outcome int

const (
	done    outcome = iota // the message got its final 2xx
	refused                // a 4xx/5xx ended it
	failed                 // an I/O or protocol error ended it (and the connection)
)

// send delivers message seq, opening a connection first if needed, and
// records the outcome and the timings.
func (w *worker) send(seq uint64) {
	t0 := time.Now()
	first := w.nc == nil
	if first {
		if !w.open() {
			return
		}
	}
	w.sent++
	tMail := time.Now()
	if o := w.envelopePhase(); o != done {
		return
	}
	t354 := time.Now()
	var err error
	w.prefix, err = w.msg.appendPrefix(w.prefix[:0], seq)
	if err != nil {
		w.fail("dkim", err)
		return
	}
	w.deadline()
	w.w.Write(w.prefix)
	w.w.Write(w.msg.shared)
	if err := w.w.Flush(); err != nil {
		w.fail("message", err)
		return
	}
	code, line, err := w.reply()
	if err != nil {
		w.fail("message", err)
		return
	}
	if code/100 != 2 {
		w.refuse(code, line)
		return
	}
	end := time.Now()
	w.ok++
	if first {
		w.lat = append(w.lat, end.Sub(t0))
	} else {
		w.lat = append(w.lat, end.Sub(tMail))
	}
	w.env = append(w.env, t354.Sub(tMail))
	w.data = append(w.data, end.Sub(t354))
}

// open connects, reads the banner and says EHLO. On failure the message is
// counted and false returned.
func (w *worker) open() bool {
	t0 := time.Now()
	nc, err := w.d.dial()
	if err != nil {
		w.errs++
		w.errorsBy.add(errKey("connect", err), 1)
		return false
	}
	w.conns++
	w.nc = nc
	w.sent = 0
	if w.r == nil {
		w.r = bufio.NewReaderSize(nc, 4<<10)
		w.w = bufio.NewWriterSize(nc, 16<<10)
	} else {
		w.r.Reset(nc)
		w.w.Reset(nc)
	}
	w.deadline()
	code, line, err := w.reply()
	if err != nil {
		w.fail("banner", err)
		return false
	}
	if code != 220 {
		w.refuse(code, line)
		w.hangup(true) // a no-op after a 421
		return false
	}
	t1 := time.Now()
	w.connect = append(w.connect, t1.Sub(t0))
	w.deadline()
	w.w.WriteString("EHLO ")
	w.w.WriteString(w.cfg.Helo)
	w.w.WriteString("\r\n")
	if err := w.w.Flush(); err != nil {
		w.fail("ehlo", err)
		return false
	}
	w.pipeline = false
	code, line, err = w.replyLines(func(l []byte) {
		if len(l) >= 14 && bytes.EqualFold(bytes.TrimRight(l[4:], " \r\n"), []byte("PIPELINING")) {
			w.pipeline = w.cfg.Pipelining
		}
	})
	if err != nil {
		w.fail("ehlo", err)
		return false
	}
	if code != 250 {
		w.refuse(code, line)
		w.hangup(true)
		return false
	}
	w.usedPipelining = w.usedPipelining || w.pipeline
	w.ehlo = append(w.ehlo, time.Since(t1))
	return true
}

// envelopePhase runs MAIL, RCPT and DATA up to the 354.
func (w *worker) envelopePhase() outcome {
	w.deadline()
	if w.pipeline {
		w.w.Write(w.envelope)
		if err := w.w.Flush(); err != nil {
			return w.fail("mail", err)
		}
		var first []byte // the first refusal
		firstCode := 0
		mailOK := true
		accepted := 0
		for i := 0; i < 1+len(w.rcpts); i++ {
			code, line, err := w.reply()
			if err != nil {
				return w.fail(stageName(i), err)
			}
			switch {
			case code/100 == 2 && i == 0:
			case code/100 == 2:
				accepted++
			default:
				if i == 0 {
					mailOK = false
				}
				if first == nil {
					first, firstCode = line, code
				}
			}
		}
		code, line, err := w.reply() // DATA
		if err != nil {
			return w.fail("data", err)
		}
		if !mailOK || accepted == 0 {
			if code == 354 {
				// A server that said yes to DATA with no recipient: end
				// the empty message.
				w.w.WriteString(".\r\n")
				if err := w.w.Flush(); err != nil {
					return w.fail("data", err)
				}
				if _, _, err := w.reply(); err != nil {
					return w.fail("data", err)
				}
			} else if mailOK {
				w.rset()
			}
			return w.refuse(firstCode, first)
		}
		if code != 354 {
			w.rset()
			return w.refuse(code, line)
		}
		return done
	}

	w.w.Write(w.mail)
	if err := w.w.Flush(); err != nil {
		return w.fail("mail", err)
	}
	code, line, err := w.reply()
	if err != nil {
		return w.fail("mail", err)
	}
	if code/100 != 2 {
		return w.refuse(code, line)
	}
	var first []byte
	firstCode, accepted := 0, 0
	for _, rc := range w.rcpts {
		w.w.Write(rc)
		if err := w.w.Flush(); err != nil {
			return w.fail("rcpt", err)
		}
		code, line, err := w.reply()
		if err != nil {
			return w.fail("rcpt", err)
		}
		if code/100 == 2 {
			accepted++
		} else if first == nil {
			first, firstCode = line, code
		}
	}
	if accepted == 0 {
		w.rset()
		return w.refuse(firstCode, first)
	}
	w.w.WriteString("DATA\r\n")
	if err := w.w.Flush(); err != nil {
		return w.fail("data", err)
	}
	code, line, err = w.reply()
	if err != nil {
		return w.fail("data", err)
	}
	if code != 354 {
		w.rset()
		return w.refuse(code, line)
	}
	return done
}

func stageName(i int) string {
	if i == 0 {
		return "mail"
	}
	return "rcpt"
}

// rset ends a transaction left open by a refusal; a failure closes the
// connection (the next message opens another).
func (w *worker) rset() {
	if w.nc == nil {
		return
	}
	w.w.WriteString("RSET\r\n")
	if w.w.Flush() != nil {
		w.hangup(false)
		return
	}
	if _, _, err := w.reply(); err != nil {
		w.hangup(false)
	}
}

// refuse counts a refusal. After a 421 the server is closing: so do we.
func (w *worker) refuse(code int, line []byte) outcome {
	w.refused++
	w.refusedBy.add(string(line), 1)
	if code == 421 {
		w.hangup(false)
	}
	return refused
}

// fail counts an error and drops the connection.
func (w *worker) fail(stage string, err error) outcome {
	w.errs++
	w.errorsBy.add(errKey(stage, err), 1)
	w.hangup(false)
	return failed
}

// hangup closes the connection, politely (QUIT, wait for the reply) if
// quit is set.
func (w *worker) hangup(quit bool) {
	if w.nc == nil {
		return
	}
	if quit {
		w.deadline()
		w.w.WriteString("QUIT\r\n")
		if w.w.Flush() == nil {
			w.reply()
		}
	}
	w.nc.Close()
	w.nc = nil
}

func (w *worker) deadline() {
	w.nc.SetDeadline(time.Now().Add(w.cfg.Timeout))
}

func (w *worker) reply() (int, []byte, error) {
	return readReply(w.r, nil)
}

func (w *worker) replyLines(each func([]byte)) (int, []byte, error) {
	return readReply(w.r, each)
}

var errBadReply = errors.New("malformed reply")

// readReply reads one (possibly multi-line) reply and returns its code and,
// for a 4xx/5xx, its first line (without CRLF). each, if set, sees every
// line (valid during the call only).
func readReply(r *bufio.Reader, each func([]byte)) (int, []byte, error) {
	var first []byte
	code := 0
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return 0, nil, fmt.Errorf("%w: line longer than %d bytes", errBadReply, r.Size())
		}
		if err != nil {
			if err == io.EOF && (len(line) > 0 || code != 0) {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
		if len(line) < 4 || !digit3(line) || (line[3] != ' ' && line[3] != '-' && line[3] != '\r') {
			return 0, nil, fmt.Errorf("%w: %q", errBadReply, trimLine(line, 60))
		}
		c := int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
		if code == 0 {
			code = c
			if c >= 400 { // a refusal: keep its text, "550-" counted as "550 "
				first = append([]byte(nil), bytes.TrimRight(line, "\r\n")...)
				if len(first) > 3 {
					first[3] = ' '
				}
			}
		}
		if each != nil {
			each(line)
		}
		if line[3] != '-' {
			return code, first, nil
		}
	}
}

func digit3(b []byte) bool {
	return b[0] >= '2' && b[0] <= '5' && b[1] >= '0' && b[1] <= '9' && b[2] >= '0' && b[2] <= '9'
}

func trimLine(b []byte, n int) string {
	s := strings.TrimRight(string(b), "\r\n")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

// errKey names an error for counting: the stage and the kind, without the
// addresses that make every message different.
func errKey(stage string, err error) string {
	var kind string
	var errno syscall.Errno
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		kind = "timeout"
	case errors.Is(err, io.EOF):
		kind = "connection closed by the server"
	case errors.Is(err, io.ErrUnexpectedEOF):
		kind = "connection closed by the server mid-reply"
	case errors.As(err, &errno):
		kind = errno.Error()
	case errors.Is(err, errBadReply):
		kind = err.Error()
	default:
		kind = err.Error()
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			kind = op.Err.Error()
		}
	}
	return stage + ": " + kind
}
