package zonedns

import "testing"

// testStart starts a server for zone on 127.0.0.1:0 and stops it when the
// test ends (internal/testsrv.DNS, which imports this package).
func testStart(t testing.TB, zone string) *Server {
	t.Helper()
	s, err := New(zone)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
