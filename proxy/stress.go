package proxy

import (
	"fmt"
	"time"

	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/metrics"
	"github.com/mxguard/mxguard/rules"
)

// Stress mode (Postfix's): when many connections are open, connections
// that do nothing must give their slots back sooner. Past stress.threshold
// percent of max_connections the greeting wait, the command timeout and the
// error limits take their stress values; when every slot is taken, the
// connection that costs most and has done least is shed to make room.

// Stressed reports whether the server is in stress mode.
func (s *Server) Stressed() bool { return s.stressed.Load() }

// updateStress enters or leaves stress mode as the open count passes the
// threshold; it leaves only when the load has stayed below nine tenths of
// it for stress.min_duration, so a load hovering at the line does not flap.
func (s *Server) updateStress(open int) {
	cfg := s.rt.Load().Cfg
	enter := max(1, cfg.Limits.MaxConnections*cfg.Stress.Threshold/100)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	switch on := s.stressed.Load(); {
	case !on && open >= enter:
		s.stressed.Store(true)
		s.stressStart, s.stressSince = now, now
		s.log.Warn("stress", "state", "on", "open", open, "threshold", enter, "max_connections", cfg.Limits.MaxConnections)
		// Connections already waiting for a command get the stress
		// timeout too: they are the ones holding the slots.
		cut := time.Now().Add(cfg.Stress.CommandTimeout.D())
		for c := range s.conns {
			if !c.mailStarted.Load() && !c.waiting.Load() {
				c.Conn.SetReadDeadline(cut)
				c.rearm(cut) // parked after the banner
			}
		}
	case on && open < enter*9/10:
		if wait := s.stressSince.Add(cfg.Stress.MinDuration.D()).Sub(now); wait > 0 {
			if s.stressCheck == nil {
				s.stressCheck = time.AfterFunc(wait, func() {
					s.mu.Lock()
					s.stressCheck = nil
					s.mu.Unlock()
					s.updateStress(s.lim.open())
				})
			}
			return
		}
		s.stressed.Store(false)
		s.log.Info("stress", "state", "off", "open", open, "threshold", enter,
			"lasted", secs(now.Sub(s.stressStart)))
	case on && open >= enter*9/10:
		s.stressSince = now // still loaded: the episode goes on
	}
}

// effective are the limits a connection works under now: the stress values
// in stress mode.
type effective struct {
	greetDelay, commandTimeout          time.Duration
	junkLimit, errorLimit, unknownLimit int
}

func (s *Server) limitsNow(cfg *config.Config) effective {
	e := effective{cfg.Listen.GreetDelay.D(), cfg.Limits.CommandTimeout.D(),
		cfg.Limits.JunkCommandLimit, cfg.Limits.HardErrorLimit, cfg.Limits.UnknownCommandLimit}
	if s.stressed.Load() {
		st := cfg.Stress
		e.greetDelay = min(e.greetDelay, st.GreetDelay.D())
		e.commandTimeout = min(e.commandTimeout, st.CommandTimeout.D())
		e.junkLimit = min(e.junkLimit, st.JunkCommandLimit)
		e.errorLimit = min(e.errorLimit, st.HardErrorLimit)
		e.unknownLimit = min(e.unknownLimit, st.UnknownCommandLimit)
	}
	return e
}

// shedOne frees a slot when all are taken: the untrusted connection that
// has not begun a transaction and has been silent longest is cut with
// 421. It reports whether there was one.
func (s *Server) shedOne() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var victim *conn
	for c := range s.conns {
		if c.mailStarted.Load() || c.shedding.Load() || c.pipe.Trusted() {
			continue
		}
		if victim == nil || c.active.Load() < victim.active.Load() {
			victim = c
		}
	}
	if victim == nil || !victim.shedding.CompareAndSwap(false, true) {
		return false
	}
	victim.interrupt()
	return true
}

// shed is the owner's side of shedOne: the reply, the record, the hang-up.
func (c *conn) shed(at checks.Stage) {
	idle := time.Since(time.Unix(0, c.active.Load()))
	reply := rules.Reply{Code: 421, Enhanced: "4.7.0", Text: c.rt.Cfg.Hostname + " Error: server busy, try again later"}
	c.refuse(rules.Refusal(at, limitCheck, "limit",
		fmt.Sprintf("shed: silent %.1fs before MAIL while every connection slot was taken (limits.max_connections)", idle.Seconds()),
		reply, true), "", "")
	c.hangup = "shed"
	c.rt.Shared.Metrics.Connection(metrics.Shed)
	c.dropWith(reply.String())
}
