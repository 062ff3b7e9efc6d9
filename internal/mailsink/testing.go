package mailsink

import "testing"

// StartT starts s (a zero Server if nil) on 127.0.0.1:0, failing the test if
// it cannot, and closes it when the test and its subtests finish.
func StartT(t testing.TB, s *Server) *Server {
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
