package admin

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxguard/mxguard/metrics"
)

func testRegistry() prometheus.Gatherer {
	m := metrics.New("test")
	m.Refusal("helo", "helo.localhost", "rcpt", "reject")
	return m.Registry()
}

func TestCheckListen(t *testing.T) {
	tests := []struct {
		addr   string
		remote bool
		ok     bool
	}{
		{"127.0.0.1:9025", false, true},
		{"127.0.0.2:9025", false, true},
		{"[::1]:9025", false, true},
		{"localhost:9025", false, true},
		{"[::ffff:127.0.0.1]:9025", false, true},
		{":9025", false, false},
		{"0.0.0.0:9025", false, false},
		{"[::]:9025", false, false},
		{"192.0.2.1:9025", false, false},
		{"admin.example.org:9025", false, false},
		{"0.0.0.0:9025", true, true},
		{":9025", true, true},
		{"127.0.0.1", false, false},
		{"127.0.0.1", true, false},
	}
	for _, tt := range tests {
		err := checkListen(tt.addr, tt.remote)
		if (err == nil) != tt.ok {
			t.Errorf("checkListen(%q, %v) = %v, want ok=%v", tt.addr, tt.remote, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), tt.addr) {
			t.Errorf("error %q does not name the address", err)
		}
	}
	if err := checkBound(&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}, false); err == nil {
		t.Error("a remote bound address passed")
	}
	if err := checkBound(&net.TCPAddr{IP: net.ParseIP("::1"), Port: 1}, false); err != nil {
		t.Error(err)
	}
}

func TestStartRefusesRemote(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		s, err := Start(Options{Listen: addr})
		if err == nil {
			s.Close()
			t.Errorf("Start(%q) listened", addr)
		} else if !strings.Contains(err.Error(), "allow a remote address") {
			t.Errorf("Start(%q): %v", addr, err)
		}
	}
}

func TestStartOff(t *testing.T) {
	s, err := Start(Options{})
	if s != nil || err != nil {
		t.Fatalf("Start without an address: %v %v", s, err)
	}
	if s.Addr() != "" || s.URL() != "" || s.Close() != nil {
		t.Error("a nil Server is not inert")
	}
}

// TestServe: the real listener serves every route and stops on Close.
func TestServe(t *testing.T) {
	s, err := Start(Options{Listen: "127.0.0.1:0", Recent: fixtureRecent(io.Discard), Registry: testRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") || strings.HasSuffix(s.Addr(), ":0") {
		t.Errorf("URL %q Addr %q", s.URL(), s.Addr())
	}
	for path, want := range map[string]string{
		"":                 "REFUSED1",
		"session/REFUSED1": "helo.localhost",
		"healthz":          "ok",
		"metrics":          `mxguard_refusals_total{action="reject",check="helo",rule="helo.localhost",stage="rcpt"} 1`,
	} {
		resp, body := get(t, s.URL()+path)
		if resp.StatusCode != 200 || !strings.Contains(body, want) {
			t.Errorf("/%s: %d, lacks %q", path, resp.StatusCode, want)
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	c := http.Client{Timeout: 2 * time.Second}
	if _, err := c.Get(s.URL()); err == nil {
		t.Error("still serving after Close")
	}
}

// TestServerLimits: a slow or idle client is cut off, a huge header
// refused.
func TestServerLimits(t *testing.T) {
	s, err := Start(Options{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.srv.ReadHeaderTimeout == 0 || s.srv.ReadTimeout == 0 || s.srv.WriteTimeout == 0 || s.srv.IdleTimeout == 0 || s.srv.MaxHeaderBytes == 0 {
		t.Errorf("a timeout or limit is unset: %+v", s.srv)
	}
}
