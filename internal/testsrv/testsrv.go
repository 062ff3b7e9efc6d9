// Package testsrv starts the in-process servers the tests talk to — the
// zone DNS server and the mail sink — on loopback, and stops them when the
// test ends. The servers themselves are product code (the demo and
// `mxguard test -zone` run them): zonedns and mailsink.
package testsrv

import (
	"testing"

	"github.com/mxguard/mxguard/mailsink"
	"github.com/mxguard/mxguard/zonedns"
)

// DNS starts a server for zone on 127.0.0.1:0 and stops it when the test
// ends. It fails the test if the zone does not parse.
func DNS(t testing.TB, zone string) *zonedns.Server {
	t.Helper()
	s, err := zonedns.New(zone)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("zonedns: close: %v", err)
		}
	})
	return s
}

// Sink starts s (a zero Server if nil) on 127.0.0.1:0, failing the test if
// it cannot, and closes it when the test and its subtests finish.
func Sink(t testing.TB, s *mailsink.Server) *mailsink.Server {
	t.Helper()
	if s == nil {
		s = new(mailsink.Server)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("mailsink: start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
