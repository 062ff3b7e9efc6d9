package redistest

import (
	"testing"
	"time"
)

func TestStopRestart(t *testing.T) {
	s := Start(t)
	if err := Ping(s.Addr, time.Second); err != nil {
		t.Fatalf("after Start: %v", err)
	}
	s.Stop()
	if err := Ping(s.Addr, 200*time.Millisecond); err == nil {
		t.Fatal("after Stop: PING still answered")
	}
	s.Stop() // twice is fine
	s.Restart()
	if err := Ping(s.Addr, time.Second); err != nil {
		t.Fatalf("after Restart: %v", err)
	}
}

func TestArgs(t *testing.T) {
	s := Start(t, "--requirepass", "secret")
	if err := Ping(s.Addr, time.Second); err != nil {
		t.Fatal(err)
	}
	s.Restart() // with the same arguments
	if err := Ping(s.Addr, time.Second); err != nil {
		t.Fatal(err)
	}
}
