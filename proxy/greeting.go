package proxy

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/metrics"
	"github.com/mxguard/mxguard/pipeline"
)

// greet runs the connection stage: the bait banner line, the greeting delay
// and the early-talker (pregreet) test, then (afterBanner) the banner and
// go-smtp. A connection that waits is parked (park.go): greet returns, and
// the rest runs on another goroutine when the wait ends.
//
// postscreen's trick: "220-host ESMTP" is a continuation line, so a client
// that waits for the end of the reply before talking stays silent; a bot that
// reads only the first line talks into the wait and is caught.
func (s *Server) greet(c *conn) {
	cfg := c.rt.Cfg
	delay := s.limitsNow(cfg).greetDelay
	skip, why := c.pipe.SkipGreeting()
	if skip || delay <= 0 {
		if skip && s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("greeting skipped", "session", c.id, "client", clientString(c.client), "why", why)
		}
		if s.connected(c, pipeline.Greeting{}) {
			s.afterBanner(c)
		}
		return
	}
	// The deadline is the socket's: endGreeting and interrupt move it
	// (and wake the parked connection), and greetWait reads against it.
	// It is set before the connection is tracked, so that an allowlisting
	// that moves it is never undone here.
	c.Conn.SetReadDeadline(c.start.Add(delay))
	if !s.trackGreeting(c, true) {
		c.dropWith("421 4.3.2 Service shutting down, try again later")
		return
	}
	if c.pipe.WaitEnded() {
		// The allowlisting came before the connection was tracked, and
		// found nothing to wake.
		s.endGreeting(c)
	}

	if cfg.Listen.BaitBanner {
		c.Conn.SetWriteDeadline(time.Now().Add(cfg.Limits.WriteTimeout.D()))
		if _, err := c.Conn.Write(linesFor(cfg.Hostname).bait); err != nil {
			s.trackGreeting(c, false)
			c.hangup = "greeting"
			c.Close()
			return
		}
	}
	s.park(c, inGreeting, c.start.Add(delay))
}

// greetWait ends the greeting wait, when the client talks or hangs up, or
// the deadline passes (or is moved to now: a DNS allowlisting, shutdown,
// session_timeout, shedding).
func (s *Server) greetWait(c *conn) {
	c.ensureWire()
	var buf [128]byte
	n, err := c.Conn.Read(buf[:])
	s.trackGreeting(c, false)
	c.Conn.SetReadDeadline(time.Time{})
	switch {
	case c.shedding.Load():
		c.shed(checks.AtConnect)
		return
	case s.isClosing():
		c.dropWith("421 4.3.2 Service shutting down, try again later")
		return
	}
	var g pipeline.Greeting
	switch {
	case n > 0:
		c.rt.Shared.Metrics.Connection(metrics.Pregreet)
		// What an early talker sent is replayed to go-smtp: the wire reads
		// it first.
		c.buf = append([]byte(nil), buf[:n]...)
		after := time.Since(c.start)
		// The postscreen line: PREGREET 11 after 0.21 from [192.0.2.1]:4711: EHLO x
		s.log.Info("pregreet", "session", c.id, "client", clientString(c.client),
			"bytes", n, "after", round(after), "text", checks.Escape(c.buf, 100))
		g = pipeline.Greeting{Early: c.buf, After: after, Waited: true}
	case errors.Is(err, os.ErrDeadlineExceeded) && !c.timedOut.Load():
		// A patient client, or one a DNS allowlist let go early.
		g = pipeline.Greeting{Waited: true}
	default:
		c.rt.Shared.Metrics.Connection(metrics.Dropped)
		c.hangup = "greeting"
		c.Close()
		return
	}
	if s.connected(c, g) {
		s.afterBanner(c)
	}
}

// afterBanner sends the banner, go-smtp's word for word (the wire drops
// go-smtp's own), at once rather than after the connection has reached a
// goroutine of go-smtp's: two goroutine hand-offs off the client's wait.
// Then, while many connections are open, it waits, parked, for the client's
// first command before giving the connection to go-smtp: a client that
// stays silent after the banner costs no goroutine and no go-smtp buffers.
// When that wait ends by command_timeout, go-smtp's first read fails with
// it, and go-smtp says 421 as it would have. Parking pays only when many
// connections are open (it costs two epoll calls and a goroutine a
// connection): with parkBannerOver or fewer open, without a poller, or with
// input already waiting (an early talker's), go-smtp gets the connection at
// once.
func (s *Server) afterBanner(c *conn) {
	c.ensureWire()
	park := c.buf == nil && s.lim.open() > s.parkBannerOver && s.poller() != nil
	if park {
		_, park = parkable(c.Conn)
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.handoff(c) // 421
		return
	}
	if park {
		s.banner[c] = struct{}{}
		s.bannerWG.Add(1)
		c.bannerParked = true
	}
	s.mu.Unlock()
	cfg := c.rt.Cfg
	c.Conn.SetWriteDeadline(time.Now().Add(cfg.Limits.WriteTimeout.D()))
	c.Conn.Write(linesFor(cfg.Hostname).banner) // go-smtp's, word for word
	c.wire.bannerSent = true
	if !park {
		s.handoff(c)
		return
	}
	c.park.pending.Store(false) // what cut the greeting short is over
	s.park(c, afterBannerStage, time.Now().Add(s.limitsNow(cfg).commandTimeout))
}

// bannerWait gives a connection parked after the banner to go-smtp.
// bannerWG counts it until go-smtp has it (its banner reaches the wire:
// bannerTaken), so that Shutdown waits for it as a go-smtp session.
func (s *Server) bannerWait(c *conn, why wakeReason) {
	s.mu.Lock()
	delete(s.banner, c)
	s.mu.Unlock()
	if why == wokeDeadline && !c.cut.Load() {
		// command_timeout, as go-smtp would have met it: its first read
		// fails with the socket's own timeout error. (A connection cut
		// meanwhile, or at session_timeout, is hung up without a word.)
		c.Conn.SetReadDeadline(time.Now())
		var b [1]byte
		if _, err := c.Conn.Read(b[:]); err != nil && deadlineExceeded(err) {
			c.wire.readTimed = err
		}
	}
	if !s.handoff(c) {
		c.bannerTaken() // dropped: no go-smtp session to wait for
	}
}

// bannerTaken ends the wait of Shutdown for a connection parked after the
// banner: go-smtp has it (and counts it among its sessions), or it is gone.
func (c *conn) bannerTaken() {
	if c.bannerParked {
		c.bannerOnce.Do(c.srv.bannerWG.Done)
	}
}

// connected applies the decision at the end of the connection stage: only a
// drop acts before the banner.
func (s *Server) connected(c *conn, g pipeline.Greeting) bool {
	d := c.pipe.Connect(c.context(), g)
	c.logWould(d)
	if !d.Refuse {
		return true
	}
	if d.Check != checks.PregreetName {
		c.rt.Shared.Metrics.Connection(metrics.Refused)
	}
	c.refuse(d, "", "")
	c.dropWith(d.Reply.String())
	return false
}

func (s *Server) trackGreeting(c *conn, in bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in {
		if s.closing {
			return false
		}
		s.greeting[c] = struct{}{}
		c.waiting.Store(true)
	} else {
		c.waiting.Store(false)
		delete(s.greeting, c)
	}
	return true
}

// round gives seconds with two decimals, as postscreen logs them.
func round(d time.Duration) float64 {
	return float64(d.Round(10*time.Millisecond)) / float64(time.Second)
}

// greetLines are the bait line and the banner for a hostname, made once
// (a string and a copy each per connection otherwise).
type greetLines struct{ bait, banner []byte }

var greetLinesOf sync.Map // hostname -> *greetLines; one entry a hostname ever used

func linesFor(host string) *greetLines {
	if l, ok := greetLinesOf.Load(host); ok {
		return l.(*greetLines)
	}
	l := &greetLines{
		bait:   []byte("220-" + host + " ESMTP\r\n"),
		banner: []byte("220 " + host + " ESMTP Service Ready\r\n"),
	}
	greetLinesOf.Store(host, l)
	return l
}
