package proxy

import (
	"fmt"
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/internal/redistest"
	"github.com/mxguard/mxguard/state"
)

// BenchmarkStateCost: whole sessions (one message each, over loopback, to
// the in-process backend) with greylisting and rate limits off, then on —
// with the state on a bolt file and on Redis — side by side in one run.
// The greylisting triplet has passed (the common case); every rate limit
// is set and never reached. The difference is what the state costs a
// session.
//
//	go test -run XXX -bench StateCost -benchtime 2000x ./proxy
func BenchmarkStateCost(b *testing.B) {
	clock := &testClock{t: time.Now()}
	on := func(c *config.Config) {
		c.Greylist.Enabled = true
		c.RateLimit = config.RateLimit{ConnectionsPerIP: "1000000 / 1m", ConnectionsPerNet: "1000000 / 1m",
			MessagesPerIP: "1000000 / 1m", MessagesPerNet: "1000000 / 1m", RecipientsPerIP: "1000000 / 1m",
			RecipientsPerNet: "1000000 / 1m", MessagesPerSenderDomain: "1000000 / 1m"}
	}
	redis := redistest.Start(b)
	cases := []struct {
		name  string
		cfg   func(*config.Config)
		state func(*config.Config) *state.State
	}{
		{"off/memory", nil, nil},
		{"on/bolt", on, func(c *config.Config) *state.State {
			c.State.Store, c.State.File = config.StoreBolt, b.TempDir()+"/state.db"
			st, err := state.Open(c, state.Options{Now: clock.now})
			if err != nil {
				b.Fatal(err)
			}
			return st
		}},
		{"on/redis", on, func(c *config.Config) *state.State {
			c.State.Store, c.State.RedisAddress, c.State.Prefix = config.StoreRedis, redis.Addr, fmt.Sprintf("bench%d:", time.Now().UnixNano())
			st, err := state.Open(c, state.Options{Now: clock.now})
			if err != nil {
				b.Fatal(err)
			}
			return st
		}},
	}
	msg := []byte("From: alice@good.test\r\nSubject: bench\r\n\r\nhello\r\n")
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			cfg := testConfig()
			if tc.cfg != nil {
				tc.cfg(cfg)
			}
			var st *state.State
			if tc.state != nil {
				st = tc.state(cfg)
				b.Cleanup(func() { st.Close() })
			}
			h := newHarness(b, harnessOpt{state: st, now: clock.now, cfg: func(c *config.Config) {
				*c = *mergeBench(c, cfg)
			}})
			session := func() {
				c := h.greeted("127.0.0.2")
				c.SendMail("mail.good.test", "alice@good.test", []string{"bob@mxguard.test"}, msg)
				c.Cmd("QUIT", 221)
				c.Conn.Close()
			}
			// The triplet passes greylisting first.
			c, _, _ := rcpt(h, "127.0.0.2", "alice@good.test", "bob@mxguard.test")
			c.Cmd("QUIT", 221)
			clock.add(6 * time.Minute)
			session()
			b.ResetTimer()
			for b.Loop() {
				session()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
		})
	}
}

// mergeBench keeps the harness's addresses (backend, DNS) and takes the
// case's settings.
func mergeBench(h, c *config.Config) *config.Config {
	out := *c
	out.Backend.Address, out.DNS.Resolvers = h.Backend.Address, h.DNS.Resolvers
	out.Reputation.GreetPassTTL = config.Duration(time.Hour)
	return &out
}
