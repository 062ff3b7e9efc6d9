package mailsink

import "testing"

// startT starts s (a zero Server if nil) on 127.0.0.1:0 and closes it when
// the test ends (internal/testsrv.Sink, which imports this package).
func startT(t testing.TB, s *Server) *Server {
	t.Helper()
	if s == nil {
		s = new(Server)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("mailsink: start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
