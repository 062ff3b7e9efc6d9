package proxy

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/checks"
)

// greet runs the connection stage: the bait banner line, the greeting delay
// and the early-talker (pregreet) test. It reports whether the connection
// goes on to the SMTP dialogue.
//
// postscreen's trick: "220-host ESMTP" is a continuation line, so a client
// that waits for the end of the reply before talking stays silent; a bot that
// reads only the first line talks into the wait and is caught.
func (s *Server) greet(cc *clientConn) bool {
	st := cc.state
	cfg := st.rt.Cfg
	delay := cfg.Listen.GreetDelay.D()
	skip, why := st.pipe.SkipGreeting()
	if skip || delay <= 0 {
		if skip {
			s.log.Debug("greeting skipped", "session", st.id, "client", st.client.String(), "why", why)
		}
		return s.connected(cc, false)
	}
	if !s.trackGreeting(cc, true) {
		cc.writeAndClose(nil, "421 4.3.2 Service shutting down, try again later", time.Second)
		return false
	}

	if cfg.Listen.BaitBanner {
		cc.Conn.SetWriteDeadline(time.Now().Add(cfg.Limits.WriteTimeout.D()))
		if _, err := cc.Conn.Write([]byte("220-" + cfg.Hostname + " ESMTP\r\n")); err != nil {
			s.trackGreeting(cc, false)
			st.setHangup("greeting")
			cc.Close()
			return false
		}
	}
	var buf [128]byte
	cc.Conn.SetReadDeadline(st.start.Add(delay))
	n, err := cc.Conn.Read(buf[:])
	s.trackGreeting(cc, false)
	cc.Conn.SetReadDeadline(time.Time{})
	switch {
	case n > 0:
		cc.early = append([]byte(nil), buf[:n]...)
		s.pregreet(cc, time.Since(st.start))
		return s.connected(cc, false)
	case errors.Is(err, os.ErrDeadlineExceeded):
		// A patient client, or one a DNS allowlist let go early.
		return s.connected(cc, true)
	default:
		st.setHangup("greeting")
		cc.Close()
		return false
	}
}

// connected applies the decision at the end of the connection stage: only a
// drop acts before the banner.
func (s *Server) connected(cc *clientConn, waited bool) bool {
	st := cc.state
	d := st.pipe.Connect(waited)
	s.logWould(st, d.Verdict, "connect")
	if !d.Refuse {
		return true
	}
	s.refuse(st, d, "", "")
	cc.writeAndClose(nil, d.Reply.String(), st.rt.Cfg.Limits.WriteTimeout.D())
	return false
}

// pregreet records an early talker.
func (s *Server) pregreet(cc *clientConn, after time.Duration) {
	st := cc.state
	text := escape(cc.early, 100)
	st.pipe.Pregreet(checks.Result{
		Check:    "pregreet",
		Outcome:  "pregreet",
		Reason:   fmt.Sprintf("client sent %d bytes %.2fs after connecting, before the greeting", len(cc.early), after.Seconds()),
		Evidence: text,
	})
	// The postscreen line: PREGREET 11 after 0.21 from [192.0.2.1]:4711: EHLO x
	s.log.Info("pregreet", "session", st.id, "client", st.client.String(),
		"bytes", len(cc.early), "after", round(after), "text", text)
}

func (s *Server) trackGreeting(cc *clientConn, in bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in {
		if s.closing {
			return false
		}
		s.greeting[cc] = struct{}{}
	} else {
		delete(s.greeting, cc)
	}
	return true
}

// escape renders client bytes for a log line the way postscreen does: at
// most max bytes, non-printables as C escapes (\r\n, \x00).
func escape(b []byte, max int) string {
	var sb strings.Builder
	for i, c := range b {
		if i >= max {
			sb.WriteString("...")
			break
		}
		switch {
		case c == '\r':
			sb.WriteString(`\r`)
		case c == '\n':
			sb.WriteString(`\n`)
		case c == '\t':
			sb.WriteString(`\t`)
		case c == '\\':
			sb.WriteString(`\\`)
		case c < ' ' || c >= 0x7f:
			sb.WriteString(`\x`)
			sb.WriteString(strconv.FormatUint(uint64(c)>>4, 16))
			sb.WriteString(strconv.FormatUint(uint64(c)&15, 16))
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// round gives seconds with two decimals, as postscreen logs them.
func round(d time.Duration) float64 {
	return float64(d.Round(10*time.Millisecond)) / float64(time.Second)
}
