package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// `mxguard test` runs described sessions through the checks and rules
// (DNS from a zone file) and prints the decision; its exit status is the
// class of the final reply.
func TestTestCommand(t *testing.T) {
	base := []string{"test", "-config", "../../testdata/sessions/mxguard.toml", "-zone", "../../testdata/sessions/example.zone"}
	cases := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"clean mail", []string{"-client", "192.0.2.10", "-helo", "mail.sender.test", "-from", "alice@sender.test", "-to", "bob@example.com", "-message", "../../testdata/sessions/good.eml"}, 0, []string{
			"helo.pass  0  HELO mail.sender.test resolves to the client 192.0.2.10",
			"spf.pass  -1",
			"dmarc.pass  -1",
			"Authentication-Results: mx.example.com; spf=pass",
			"Result: accept (score -2)",
		}},
		{"listed client, refused at RCPT", []string{"-client", "192.0.2.7", "-helo", "mail.sender.test", "-from", "alice@sender.test", "-to", "bob@example.com"}, 5, []string{
			"dnsbl.bl.test  +3      client 192.0.2.7 listed by bl.test as 127.0.0.4",
			"refusal pending, given at rcpt",
			"Result: refused at RCPT: 554 5.7.1 Service unavailable; client [192.0.2.7] blocked using bl.test (dnsbl)",
		}},
		{"postmaster is exempt", []string{"-client", "192.0.2.7", "-helo", "mail.sender.test", "-from", "alice@sender.test", "-to", "bob@example.com", "-to", "postmaster@example.com"}, 0, []string{
			"rule allow.abuse-desk at ../../testdata/sessions/rules.toml:6",
			"Result: accept",
		}},
		{"log-mode list", []string{"-client", "192.0.2.11", "-helo", "mail.sender.test", "-from", "x@cheap-pills.test", "-to", "bob@example.com"}, 0, []string{
			"would have refused (a rule in log mode, or an exemption): reject, rule deny.new-blocklist: 550 5.7.1 Access denied (deny.new-blocklist)",
			"Result: accept",
		}},
		{"DMARC reject after DATA", []string{"-client", "192.0.2.11", "-helo", "mail.sender.test", "-from", "bounce@cheap-pills.test", "-to", "bob@example.com", "-message", "../../testdata/sessions/forged.eml"}, 5, []string{
			"dmarc.reject  reject",
			"Result: refused at DATA: 550 5.7.1 Message rejected per the From domain's DMARC policy (dmarc.reject)",
		}},
		{"HELO score from a local rule", []string{"-client", "192.0.2.11", "-helo", "other.sender.test"}, 0, []string{
			"helo.forward_mismatch  +3",
			"Result: accept (score 3)",
		}},
		{"pregreet", []string{"-client", "192.0.2.11", "-pregreet"}, 5, []string{
			"Result: refused at CONNECT: 554 5.5.1 Protocol error: talked before the greeting (pregreet)",
			"and the connection is dropped",
		}},
		{"trusted", []string{"-client", "192.0.2.250", "-helo", "localhost", "-from", "ceo@example.com", "-to", "bob@example.com"}, 0, []string{
			"rule trusted",
			"Result: accept",
		}},
		{"spoofed sender", []string{"-client", "192.0.2.11", "-helo", "mail.sender.test", "-from", "ceo@example.com", "-to", "bob@example.com"}, 5, []string{
			"sender.spoofs_local  reject",
			"Result: refused at RCPT: 550 5.7.1 Sender address rejected: not allowed from your address (sender.spoofs_local)",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append(append([]string{}, base...), c.args...), &out, &errb)
			if code != c.code {
				t.Errorf("exit %d, want %d\n%s%s", code, c.code, out.String(), errb.String())
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestTestCommandJSON(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"test", "-json", "-config", "../../testdata/sessions/mxguard.toml", "-zone", "../../testdata/sessions/example.zone",
		"-client", "192.0.2.7", "-helo", "mail.sender.test", "-from", "alice@sender.test", "-to", "bob@example.com"}, &out, &errb)
	if code != 5 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r struct {
		Result struct {
			Refused bool
			Stage   string
			Rule    string
		}
		Stages []struct{ Stage string }
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if !r.Result.Refused || r.Result.Stage != "rcpt" || r.Result.Rule != "dnsbl" || len(r.Stages) != 4 {
		t.Errorf("%+v", r)
	}
}

func TestTestCommandErrors(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"test", "-config", "../../testdata/sessions/mxguard.toml", "-client", "not-an-ip"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "not an IP address") {
		t.Errorf("exit %d: %s", code, errb.String())
	}
}

func TestLogCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"log", "../../testdata/log/sample.log"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "2026-11-23 15:38:46 REFUSED connect 198.51.100.4:40274 rule=pregreet") ||
		!strings.Contains(lines[3], "WOULD REFUSE mail [2001:db8::7]:25000 from=<x@cheap-pills.test> rule=deny.new-blocklist") {
		t.Errorf("lines:\n%s", out.String())
	}
	if !strings.Contains(errb.String(), "skipped 2 lines") {
		t.Errorf("stderr %q", errb.String())
	}
	out.Reset()
	run([]string{"log", "-rule", "helo.*", "-client", "198.51.100.0/24", "../../testdata/log/sample.log"}, &out, &errb)
	if n := strings.Count(out.String(), "\n"); n != 2 {
		t.Errorf("filtered: %d lines:\n%s", n, out.String())
	}
	out.Reset()
	run([]string{"log", "-summary", "../../testdata/log/sample.log"}, &out, &errb)
	if !strings.Contains(out.String(), "refusals 4") || !strings.Contains(out.String(), "helo.localhost  2") {
		t.Errorf("summary:\n%s", out.String())
	}
}
