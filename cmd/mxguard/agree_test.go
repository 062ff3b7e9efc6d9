package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testsrv"

	"github.com/mxguard/mxguard/internal/smtptest"
	"github.com/mxguard/mxguard/mailsink"
)

// agreeCase is one session, described for `mxguard test` and played over
// SMTP against `mxguard serve`.
type agreeCase struct {
	name, client, helo, from string
	to                       []string
	message                  string // file under testdata/sessions
	pregreet                 bool
}

// verdictOf is what became of a session: the action, the stage and the
// reply of its refusal ("accept" with no stage or reply when the mail
// went through).
type verdictOf struct{ Action, Stage, Reply string }

// `mxguard test` and `mxguard serve` agree: the same sessions, the same
// configuration and DNS, the same action, stage and reply.
func TestTestAgreesWithServe(t *testing.T) {
	cases := []agreeCase{
		{name: "clean mail", client: "192.0.2.10", helo: "mail.sender.test", from: "alice@sender.test", to: []string{"bob@example.com"}, message: "good.eml"},
		{name: "listed client", client: "192.0.2.7", helo: "mail.sender.test", from: "alice@sender.test", to: []string{"bob@example.com"}},
		{name: "postmaster exempt", client: "192.0.2.7", helo: "mail.sender.test", from: "alice@sender.test", to: []string{"bob@example.com", "postmaster@example.com"}, message: "good.eml"},
		{name: "log-mode list", client: "192.0.2.11", helo: "mail.sender.test", from: "x@cheap-pills.test", to: []string{"bob@example.com"}, message: "good.eml"},
		{name: "DMARC reject", client: "192.0.2.11", helo: "mail.sender.test", from: "bounce@cheap-pills.test", to: []string{"bob@example.com"}, message: "forged.eml"},
		{name: "spoofed sender", client: "192.0.2.11", helo: "mail.sender.test", from: "ceo@example.com", to: []string{"bob@example.com"}},
		{name: "bad HELO", client: "192.0.2.11", helo: "localhost", from: "alice@sender.test", to: []string{"bob@example.com"}},
		{name: "forged HELO scored", client: "192.0.2.11", helo: "other.sender.test", from: "alice@sender.test", to: []string{"bob@example.com"}, message: "good.eml"},
		// A new client: one that passed the greeting before skips it (the
		// memory of clients, which `mxguard test` does not have).
		{name: "pregreet", client: "192.0.2.99", helo: "mail.sender.test", pregreet: true},
		{name: "trusted", client: "192.0.2.250", helo: "localhost", from: "ceo@example.com", to: []string{"bob@example.com"}, message: "good.eml"},
	}

	zone := "../../testdata/sessions/example.zone"
	zoneData, err := os.ReadFile(zone)
	if err != nil {
		t.Fatal(err)
	}
	dns := testsrv.DNS(t, string(zoneData))
	sink := testsrv.Sink(t, &mailsink.Server{})
	dir := t.TempDir()
	for _, f := range []string{"rules.toml"} {
		os.WriteFile(filepath.Join(dir, f), mustRead(t, "../../testdata/sessions/"+f), 0o644)
	}
	cfgPath, logPath, listen := filepath.Join(dir, "mxguard.toml"), filepath.Join(dir, "mxguard.log"), freePort(t)
	cfg := string(mustRead(t, "../../testdata/sessions/mxguard.toml"))
	cfg = strings.Replace(cfg, "[dnsbl]", fmt.Sprintf(`[listen]
addresses = [%q]
greet_delay = "300ms"
proxy_protocol_from = ["127.0.0.1"]
[backend]
address = %q
client_identity = "none"
[dns]
resolvers = [%q]
[log]
path = %q
[state]
file = %q
control_socket = ""
[dnsbl]`, listen, sink.Addr(), dns.Addr(), logPath, filepath.Join(dir, "state.db")), 1)
	os.WriteFile(cfgPath, []byte(cfg), 0o644)

	var stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- serve(cfgPath, &stderr) }()
	waitLog(t, logPath, `"msg":"started"`, 1)
	defer func() {
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d: %s", code, stderr.String())
		}
	}()

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := viaTest(t, c, cfgPath, zone)
			got := viaServe(t, c, listen, logPath)
			if got != want {
				t.Errorf("serve: %+v\n test: %+v", got, want)
			}
			t.Logf("%+v", got)
		})
	}
}

// viaTest asks `mxguard test`.
func viaTest(t *testing.T, c agreeCase, cfgPath, zone string) verdictOf {
	args := []string{"test", "-json", "-config", cfgPath, "-zone", zone, "-client", c.client, "-helo", c.helo}
	if c.from != "" {
		args = append(args, "-from", c.from)
	}
	for _, r := range c.to {
		args = append(args, "-to", r)
	}
	if c.message != "" {
		args = append(args, "-message", "../../testdata/sessions/"+c.message)
	}
	if c.pregreet {
		args = append(args, "-pregreet")
	}
	var out, errb bytes.Buffer
	run(args, &out, &errb)
	var r struct {
		Result struct {
			Refused              bool
			Stage, Action, Reply string
		}
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("mxguard test: %v: %s%s", err, out.String(), errb.String())
	}
	if !r.Result.Refused {
		return verdictOf{Action: "accept"}
	}
	return verdictOf{Action: r.Result.Action, Stage: r.Result.Stage, Reply: r.Result.Reply}
}

// viaServe plays the session over SMTP, through the load balancer's PROXY
// header so the client can have any address, and reads what serve logged.
func viaServe(t *testing.T, c agreeCase, listen, logPath string) verdictOf {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	host, port, _ := net.SplitHostPort(listen)
	fmt.Fprintf(conn, "PROXY TCP4 %s %s 40000 %s\r\n", c.client, host, port)
	tp := textproto.NewReader(bufio.NewReader(conn))
	before := len(sessionRecords(t, logPath))
	step := func(cmd string) int {
		if cmd != "" {
			fmt.Fprintf(conn, "%s\r\n", cmd)
		}
		code, _, _ := tp.ReadResponse(0)
		return code
	}
	if c.pregreet {
		fmt.Fprintf(conn, "EHLO %s\r\n", c.helo)
	}
	if step("") == 220 && step("EHLO "+c.helo) == 250 && c.from != "" && step("MAIL FROM:<"+c.from+">") == 250 {
		accepted := 0
		for _, r := range c.to {
			if step("RCPT TO:<"+r+">") == 250 {
				accepted++
			}
		}
		if accepted > 0 && c.message != "" && step("DATA") == 354 {
			msg := bytes.ReplaceAll(bytes.ReplaceAll(mustRead(t, "../../testdata/sessions/"+c.message), []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
			conn.Write(smtptest.DotStuff(msg))
			step("")
		}
		step("QUIT")
	}
	conn.Close()
	// The session record comes when the server sees the end.
	var recs []map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for recs = sessionRecords(t, logPath); len(recs) <= before && time.Now().Before(deadline); recs = sessionRecords(t, logPath) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(recs) <= before {
		t.Fatal("no session record")
	}
	id := recs[len(recs)-1]["session"]
	var last verdictOf
	relayed := false
	for _, r := range records(t, logPath) {
		if r["session"] != id {
			continue
		}
		switch r["msg"] {
		case "relayed":
			relayed = true
		case "refused":
			last = verdictOf{Action: r["action"].(string), Stage: r["stage"].(string), Reply: r["reply"].(string)}
		}
	}
	if relayed {
		return verdictOf{Action: "accept"}
	}
	return last
}

func records(t *testing.T, path string) []map[string]any {
	var out []map[string]any
	for _, line := range bytes.Split(mustRead(t, path), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func sessionRecords(t *testing.T, path string) []map[string]any {
	var out []map[string]any
	for _, r := range records(t, path) {
		if r["msg"] == "session" {
			out = append(out, r)
		}
	}
	return out
}
