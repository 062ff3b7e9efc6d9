package dnsfixture

import "testing"

// StartT starts a server for zone on 127.0.0.1:0 and stops it when the
// test ends. It fails the test if the zone does not parse.
func StartT(t testing.TB, zone string) *Server {
	t.Helper()
	s, err := New(zone)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("dnsfixture: close: %v", err)
		}
	})
	return s
}
