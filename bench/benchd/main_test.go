package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxguard/mxguard/internal/testsrv"
	"github.com/mxguard/mxguard/mailsink"
)

func TestParseClients(t *testing.T) {
	got, err := parseClients("127.0.0.11-127.0.0.13, ::1")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("127.0.0.11"), netip.MustParseAddr("127.0.0.12"),
		netip.MustParseAddr("127.0.0.13"), netip.MustParseAddr("::1")}
	if !slices.Equal(got, want) {
		t.Errorf("got %v", got)
	}
	for _, bad := range []string{"", "x", "127.0.0.5-127.0.0.1", "127.0.0.1-::1"} {
		if _, err := parseClients(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestZone serves the benchmark zone and asks it what mxguard's checks ask.
func TestZone(t *testing.T) {
	o := options{senderDomain: "bench.example", dkimKey: filepath.Join(t.TempDir(), "k.pem"),
		dkimSelector: "bench", dnsblZone: "dnsbl.bench.example"}
	if err := o.hosts.Set("mail.bench.example=127.0.0.11-127.0.0.12,::1"); err != nil {
		t.Fatal(err)
	}
	zone, err := benchZone(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := testsrv.DNS(t, zone)
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.Addr())
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	ips, err := r.LookupHost(ctx, "mail.bench.example")
	slices.Sort(ips)
	if err != nil || !slices.Equal(ips, []string{"127.0.0.11", "127.0.0.12", "::1"}) {
		t.Errorf("HELO name: %v %v", ips, err)
	}
	for _, ip := range []string{"127.0.0.12", "::1"} {
		if names, err := r.LookupAddr(ctx, ip); err != nil || len(names) != 1 || names[0] != "mail.bench.example." {
			t.Errorf("PTR %s: %v %v", ip, names, err)
		}
	}
	txt, err := r.LookupTXT(ctx, "bench.example")
	if err != nil || len(txt) != 1 || !strings.HasPrefix(txt[0], "v=spf1 ") {
		t.Errorf("SPF: %q %v", txt, err)
	}
	txt, err = r.LookupTXT(ctx, "bench._domainkey.bench.example")
	if err != nil || len(txt) != 1 || !strings.HasPrefix(txt[0], "v=DKIM1; k=rsa; p=MII") {
		t.Errorf("DKIM key: %q %v", txt, err)
	}
	if a, err := r.LookupHost(ctx, "2.0.0.127.dnsbl.bench.example"); err != nil || len(a) != 1 {
		t.Errorf("DNSBL test point: %v %v", a, err)
	}
	if _, err := r.LookupHost(ctx, "11.0.0.127.dnsbl.bench.example"); err == nil {
		t.Error("a client is listed")
	}

	// The key file was created, and is reused.
	again, err := benchZone(o)
	if err != nil || again != zone {
		t.Errorf("second zone differs (%v)", err)
	}
}

func TestFreePorts(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-free-ports", "3"}, &out, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if f := strings.Fields(out.String()); len(f) != 3 {
		t.Errorf("%q", out.String())
	}
	if code := run(nil, &out, &out); code != 2 {
		t.Errorf("no service: exit %d", code)
	}
}

// The bare relay passes a message and the backend's refusals through, in
// lockstep, and stops when closed.
func TestRelay(t *testing.T) {
	sink := testsrv.Sink(t, &mailsink.Server{Hostname: "sink.test",
		Policy: mailsink.PolicyFuncs{RcptFunc: func(_ *mailsink.SessionInfo, to string) *mailsink.Action {
			if strings.HasPrefix(to, "nobody@") {
				return &mailsink.Action{Reply: "550 5.1.1 No such user"}
			}
			return nil
		}}})
	l, srv, err := startRelay("127.0.0.1:0", sink.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Close(); l.Close() }()

	c, err := smtp.Dial(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@client.test", nil); err != nil {
		t.Fatal(err)
	}
	err = c.Rcpt("nobody@sink.test", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || !strings.Contains(se.Message, "No such user") {
		t.Errorf("refused recipient: %v", err)
	}
	if err := c.Rcpt("b@sink.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: hi\r\n\r\n.dot\r\nbody\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	msgs, err := sink.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.Helo != "client.test" || m.From != "a@client.test" || !slices.Equal(m.To, []string{"b@sink.test"}) ||
		string(m.Data) != "Subject: hi\r\n\r\n.dot\r\nbody\r\n" {
		t.Errorf("the backend got helo %q from %q to %q: %q", m.Helo, m.From, m.To, m.Data)
	}
}

func TestRSAVerify(t *testing.T) {
	key := filepath.Join(t.TempDir(), "k.pem")
	if _, err := dkimRecord(key); err != nil { // creates an RSA-2048 key
		t.Fatal(err)
	}
	var out, errs bytes.Buffer
	if code := run([]string{"-rsa-verify", key, "-rsa-seconds", "0.01"}, &out, &errs); code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	for _, k := range []string{"rsa_verify_cpu_us=", "rsa_verify_ops=", "rsa_bits=2048"} {
		if !strings.Contains(out.String(), k) {
			t.Errorf("no %s in %q", k, out.String())
		}
	}
}

func TestPprofGroups(t *testing.T) {
	traces := `File: mxguard
Type: cpu
-----------+-------------------------------------------------------
      10ms   go.etcd.io/bbolt.(*Tx).Commit
             github.com/mxguard/mxguard/store.(*Bolt).commit
-----------+-------------------------------------------------------
      30ms   internal/runtime/syscall/linux.Syscall6
             github.com/mxguard/mxguard/proxy/backend.(*Conn).flush
             github.com/mxguard/mxguard/proxy.(*conn).Mail
-----------+-------------------------------------------------------
      60ms   runtime.memmove
             github.com/mxguard/mxguard/checks.(*DKIM).Run
             github.com/mxguard/mxguard/pipeline.(*Session).Data
             github.com/mxguard/mxguard/proxy.(*conn).Data
-----------+-------------------------------------------------------
`
	var out bytes.Buffer
	if err := printGroups(strings.NewReader(traces), &out, 200); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"state store", "10.0%", "checks, rules, pipeline, resolver", "60.0%  ~ 120 µs/msg", "backend client", "30.0%"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
	if err := printGroups(strings.NewReader("nothing"), &out, 0); err == nil {
		t.Error("no error without samples")
	}
}
