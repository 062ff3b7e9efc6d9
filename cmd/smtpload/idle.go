package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// idleConn is one held connection and what its server said.
type idleConn struct {
	nc     net.Conn
	start  time.Time
	state  atomic.Int32 // idle* below
	greet  time.Duration
	reply  string // first line of a refusal
	errKey string
	done   chan struct{} // closed when the reader goroutine ends
}

const (
	idleSilent  int32 = iota // nothing received yet
	idleBait                 // "220-" received, waiting for the last line
	idleGreeted              // the complete 220 greeting
	idleRefused              // a 4xx/5xx greeting
	idleClosed               // the server closed without a (complete) greeting, or after one
	idleError                // a read error other than our own close
)

// runIdle opens cfg.Idle connections (cfg.C dials at a time), reads their
// greetings as they come, holds them all for cfg.Hold once the last is open,
// then closes them.
func runIdle(cfg Config) (Result, error) {
	d := newDialer(cfg)
	res := Result{Mode: "idle", Addr: cfg.Addr, Idle: cfg.Idle, Concurrency: cfg.C, HoldS: cfg.Hold.Seconds()}
	errorsBy := counter{}
	var mu sync.Mutex
	conns := make([]*idleConn, 0, cfg.Idle)

	t0 := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(cfg.C, cfg.Idle) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(cfg.Idle) {
				start := time.Now()
				nc, err := d.dial()
				if err != nil {
					mu.Lock()
					res.Errors++
					errorsBy.add(errKey("connect", err), 1)
					mu.Unlock()
					continue
				}
				ic := &idleConn{nc: nc, start: start, done: make(chan struct{})}
				go ic.read()
				mu.Lock()
				conns = append(conns, ic)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.OpenedS = time.Since(t0).Seconds()
	res.Accepted = len(conns)
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "smtpload: holding %d connections for %v\n", len(conns), cfg.Hold)
	}
	time.Sleep(cfg.Hold)

	// The verdict is taken before closing: what the server did while held.
	states := make([]int32, len(conns))
	for i, ic := range conns {
		states[i] = ic.state.Load()
	}
	for _, ic := range conns {
		ic.nc.Close()
	}
	refusedBy := counter{}
	var greets []time.Duration
	for i, ic := range conns {
		<-ic.done
		switch states[i] {
		case idleSilent:
			res.Silent++
			res.StillOpen++
		case idleBait:
			res.Bait++
			res.StillOpen++
		case idleGreeted:
			res.Greeted++
			res.StillOpen++
			greets = append(greets, ic.greet)
		case idleRefused:
			res.Refused++
			refusedBy.add(ic.reply, 1)
		case idleClosed:
			res.Closed++
			if ic.greet > 0 {
				res.Greeted++
				greets = append(greets, ic.greet)
			}
		case idleError:
			res.Errors++
			errorsBy.add(ic.errKey, 1)
		}
	}
	slices.Sort(greets)
	res.GreetP50 = toMS(percentile(greets, 0.5))
	res.GreetP99 = toMS(percentile(greets, 0.99))
	res.RefusedBy, res.ErrorsBy = refusedBy, errorsBy
	return res, nil
}

// read follows the greeting, then waits for the server to hang up (or for
// our close at the end of the hold).
func (ic *idleConn) read() {
	defer close(ic.done)
	r := bufio.NewReaderSize(ic.nc, 512)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return // ours, at the end of the hold
			}
			if ic.state.Load() == idleRefused {
				return
			}
			if !isEOF(err) {
				ic.errKey = errKey("greeting", err)
				ic.state.Store(idleError)
				return
			}
			ic.state.Store(idleClosed)
			return
		}
		switch st := ic.state.Load(); {
		case st >= idleGreeted:
			// Anything after the greeting (a timeout's 421, say) is the
			// server ending the session.
			if st == idleGreeted {
				ic.state.Store(idleClosed)
			}
		case len(line) < 4 || !digit3(line):
			ic.errKey = "greeting: malformed reply " + fmt.Sprintf("%q", trimLine(line, 40))
			ic.state.Store(idleError)
			return
		case line[0] != '2':
			ic.reply = trimLine(line, 200)
			ic.state.Store(idleRefused)
			// Read on: the server hangs up, or we do.
		case line[3] == '-':
			ic.state.Store(idleBait)
		default:
			ic.greet = time.Since(ic.start)
			ic.state.Store(idleGreeted)
		}
	}
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }
