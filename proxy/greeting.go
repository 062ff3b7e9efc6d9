package proxy

import (
	"errors"
	"os"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/metrics"
	"github.com/mxguard/mxguard/pipeline"
)

// greet runs the connection stage: the bait banner line, the greeting delay
// and the early-talker (pregreet) test. It reports whether the connection
// goes on to the SMTP dialogue.
//
// postscreen's trick: "220-host ESMTP" is a continuation line, so a client
// that waits for the end of the reply before talking stays silent; a bot that
// reads only the first line talks into the wait and is caught.
func (s *Server) greet(c *conn) bool {
	cfg := c.rt.Cfg
	delay := s.limitsNow(cfg).greetDelay
	skip, why := c.pipe.SkipGreeting()
	if skip || delay <= 0 {
		if skip {
			s.log.Debug("greeting skipped", "session", c.id, "client", clientString(c.client), "why", why)
		}
		return s.connected(c, pipeline.Greeting{})
	}
	if !s.trackGreeting(c, true) {
		c.dropWith("421 4.3.2 Service shutting down, try again later")
		return false
	}

	if cfg.Listen.BaitBanner {
		c.Conn.SetWriteDeadline(time.Now().Add(cfg.Limits.WriteTimeout.D()))
		if _, err := c.Conn.Write([]byte("220-" + cfg.Hostname + " ESMTP\r\n")); err != nil {
			s.trackGreeting(c, false)
			c.hangup = "greeting"
			c.Close()
			return false
		}
	}
	var buf [128]byte
	c.Conn.SetReadDeadline(c.start.Add(delay))
	n, err := c.Conn.Read(buf[:])
	s.trackGreeting(c, false)
	c.Conn.SetReadDeadline(time.Time{})
	switch {
	case c.shedding.Load():
		c.shed(checks.AtConnect)
		return false
	case s.isClosing():
		c.dropWith("421 4.3.2 Service shutting down, try again later")
		return false
	}
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
		return s.connected(c, pipeline.Greeting{Early: c.buf, After: after, Waited: true})
	case errors.Is(err, os.ErrDeadlineExceeded) && !c.timedOut.Load():
		// A patient client, or one a DNS allowlist let go early.
		return s.connected(c, pipeline.Greeting{Waited: true})
	default:
		c.rt.Shared.Metrics.Connection(metrics.Dropped)
		c.hangup = "greeting"
		c.Close()
		return false
	}
}

// connected applies the decision at the end of the connection stage: only a
// drop acts before the banner.
func (s *Server) connected(c *conn, g pipeline.Greeting) bool {
	d := c.pipe.Connect(c.ctx, g)
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
