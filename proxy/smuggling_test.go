package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/miekg/dns"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/mailsink"
)

// SMTP smuggling (the 2023 reports against Postfix, Exim and Sendmail): a
// message whose body holds a non-standard end of data — <LF>.<LF>,
// <CR>.<CR>, <LF>.<CR><LF>, <CR><LF>.<LF>, ... — followed by a second
// transaction. A server that takes the odd sequence for the end of data
// runs the second transaction as if the sending server had sent it.
//
// mxguard ends DATA only at <CR><LF>.<CR><LF> (go-smtp's reader): every
// other sequence is message content. Toward the backend every line ends in
// CRLF (proxy/backend turns a bare CR or LF into CRLF) and lines starting
// with a dot are dot-stuffed, so no backend, strict or lenient, can find an
// end of data inside the message either. The smuggled transaction is never
// seen by mxguard's checks nor by the backend: exactly one message arrives,
// with the attempt in its body.
func TestSmugglingEndOfData(t *testing.T) {
	var tap *wireTap
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		tap = startWireTap(t, c.Backend.Address)
		c.Backend.Address = tap.addr()
	}})
	sequences := []struct{ name, seq string }{
		{"LF.LF", "\n.\n"},
		{"CRLF.LF", "\r\n.\n"},
		{"LF.CRLF", "\n.\r\n"},
		{"CR.CR", "\r.\r"},
		{"CR.CRLF", "\r.\r\n"},
		{"CRLF.CR", "\r\n.\r"},
		{"LF.CR", "\n.\r"},
		{"CR.LF", "\r.\n"},
		{"CRLF.CRCRLF", "\r\n.\r\r\n"},
		// NUL sequences: TestNULInData (refused, or removed, by limits.nul_bytes).
		{"CRLF SP.CRLF", "\r\n .\r\n"},
		{"CRLF..CRLF", "\r\n..\r\n"}, // a stuffed dot line: content "."
	}
	for _, sq := range sequences {
		t.Run(sq.name, func(t *testing.T) {
			h.sink.Reset()
			tap.reset()
			h.dns.ResetCounters()
			logsBefore := len(h.logs.lines("relayed"))
			refusedBefore := len(h.logs.lines("refused"))

			c := h.greeted("127.0.0.2")
			c.T = t
			c.Cmd("EHLO mail.good.test", 250)
			c.Cmd("MAIL FROM:<alice@good.test>", 250)
			c.Cmd("RCPT TO:<bob@mxguard.test>", 250)
			c.Cmd("DATA", 354)
			// The published form: the odd sequence, the smuggled
			// transaction, whose message ends where the sending server's
			// does (CRLF.CRLF).
			body := "From: alice@good.test\r\nTo: bob@mxguard.test\r\nSubject: first\r\n\r\nfirst body" + sq.seq +
				"MAIL FROM:<spoof@mxguard.test>\r\nRCPT TO:<victim@mxguard.test>\r\nDATA\r\n" +
				"From: ceo@mxguard.test\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n.\r\n"
			if _, err := c.Conn.Write([]byte(body)); err != nil {
				t.Fatal(err)
			}
			reply := c.Expect(250)
			// The stream is in step: the next reply is NOOP's, not one
			// to a smuggled command.
			c.Cmd("NOOP", 250)
			c.Cmd("QUIT", 221)

			msgs, err := h.sink.WaitMessages(1, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			h.logs.wait(t, "session", 1)
			if len(msgs) != 1 {
				t.Fatalf("backend got %d messages, want 1", len(msgs))
			}
			m := msgs[0]
			if m.From != "alice@good.test" || len(m.To) != 1 || m.To[0] != "bob@mxguard.test" || !contains(reply, m.ID) {
				t.Errorf("backend message from %q to %v (%s), client got %q", m.From, m.To, m.ID, reply)
			}
			if !bytes.Contains(m.Data, []byte("MAIL FROM:<spoof@mxguard.test>\r\n")) || !bytes.Contains(m.Data, []byte("smuggled body")) {
				t.Errorf("the smuggling attempt is not in the message body: %q", m.Data)
			}
			if i := bareLineEnd(m.Data); i >= 0 {
				t.Errorf("backend message has a bare CR or LF at %d: %q", i, m.Data)
			}
			var mails int
			for _, s := range h.sink.Sessions() {
				for _, cmd := range s.Commands {
					if strings.HasPrefix(strings.ToUpper(cmd), "MAIL ") {
						mails++
					}
				}
			}
			if mails != 1 {
				t.Errorf("backend saw %d MAIL commands, want 1", mails)
			}

			// What went over the wire to the backend: CRLF only, and one
			// end of data, whoever reads it.
			wire := tap.upstream()
			if i := bareLineEnd(wire); i >= 0 {
				t.Errorf("bare CR or LF on the wire to the backend at %d: %q", i, wire[max(0, i-40):min(len(wire), i+40)])
			}
			if n := bytes.Count(wire, []byte("\r\n.\r\n")); n != 1 {
				t.Errorf("%d ends of data on the wire to the backend, want 1:\n%q", n, wire)
			}

			// The checks never saw the second MAIL FROM: no SPF lookup for
			// its domain, no spoofing refusal, one relayed line.
			if n := h.dns.Queries("mxguard.test.", dns.TypeTXT); n != 0 {
				t.Errorf("SPF looked up the smuggled sender's domain (%d queries)", n)
			}
			if n := len(h.logs.lines("refused")) - refusedBefore; n != 0 {
				t.Errorf("%d refusals: a smuggled command reached the checks", n)
			}
			if n := len(h.logs.lines("relayed")) - logsBefore; n != 1 {
				t.Errorf("%d relayed lines, want 1", n)
			}
		})
	}
}

// BDAT (CHUNKING, which go-smtp offers) carries the message without dot
// encoding: a chunk holding CRLF "." CRLF and a second transaction is all
// content. mxguard relays it with DATA, dot-stuffed: one message, one MAIL.
func TestSmugglingBDAT(t *testing.T) {
	var tap *wireTap
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		tap = startWireTap(t, c.Backend.Address)
		c.Backend.Address = tap.addr()
	}})
	c := h.greeted("127.0.0.2")
	if ehlo := c.Cmd("EHLO mail.good.test", 250); !contains(ehlo, "CHUNKING") {
		t.Skip("BDAT not offered")
	}
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Cmd("RCPT TO:<bob@mxguard.test>", 250)
	chunk := "From: alice@good.test\r\nSubject: bdat\r\n\r\nfirst\r\n.\r\nMAIL FROM:<spoof@mxguard.test>\r\n" +
		"RCPT TO:<victim@mxguard.test>\r\nDATA\r\nsmuggled\n.\n\r.\r\r\n.\r\n"
	fmt.Fprintf(c.Conn, "BDAT %d LAST\r\n%s", len(chunk), chunk)
	c.Expect(250)
	c.Cmd("NOOP", 250)
	c.Cmd("QUIT", 221)
	msgs, err := h.sink.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h.logs.wait(t, "session", 1)
	if n := len(h.sink.Messages()); n != 1 || !bytes.Contains(msgs[0].Data, []byte("\r\n.\r\nMAIL FROM:<spoof@mxguard.test>\r\n")) {
		t.Errorf("backend got %d messages; first: %q", n, msgs[0].Data)
	}
	wire := tap.upstream()
	if i := bareLineEnd(wire); i >= 0 {
		t.Errorf("bare CR or LF on the wire to the backend at %d", i)
	}
	if n := bytes.Count(wire, []byte("\r\n.\r\n")); n != 1 {
		t.Errorf("%d ends of data on the wire to the backend, want 1", n)
	}
	if n := bytes.Count(wire, []byte("MAIL FROM:")); n != 2 { // ours, and the one inside the message
		t.Errorf("%d MAIL FROM on the wire, want ours and the message's: %q", n, wire)
	}
}

// The reader behind mxguard's DATA is go-smtp's: only CRLF.CRLF ends a
// message, and bare CR or LF is content. Pinned here, with what the
// backend gets for each, since the smuggling defence depends on it.
func TestSmugglingBareLineEndsAreData(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	cases := []struct{ sent, stored string }{
		{"a\nb\n", "a\r\nb\r\n\r\n"},
		{"a\rb", "a\r\nb\r\n"},
		{"a\n\rb", "a\r\n\r\nb\r\n"},
		{"a\n.\nb", "a\r\n.\r\nb\r\n"},      // the dot line is stuffed on the way, mailsink unstuffs it
		{"a\r\n..\r\nb", "a\r\n.\r\nb\r\n"}, // a stuffed dot line from the client
		{"a\r\n.\nb", "a\r\n\r\nb\r\n"},     // CRLF "." LF: the dot is taken for stuffing
	}
	c := h.greeted("127.0.0.2")
	c.Cmd("EHLO mail.good.test", 250)
	for i, tc := range cases {
		h.sink.Reset()
		c.Cmd("MAIL FROM:<alice@good.test>", 250)
		c.Cmd("RCPT TO:<bob@mxguard.test>", 250)
		c.Cmd("DATA", 354)
		fmt.Fprintf(c.Conn, "From: alice@good.test\r\nSubject: %d\r\n\r\n%s\r\n.\r\n", i, tc.sent)
		c.Expect(250)
		msgs, err := h.sink.WaitMessages(1, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, body := stripReceived(t, msgs[0].Data)
		want := fmt.Sprintf("From: alice@good.test\r\nSubject: %d\r\n\r\n%s", i, tc.stored)
		if string(body) != want {
			t.Errorf("sent %q: backend stored %q, want %q", tc.sent, body, want)
		}
	}
	c.Cmd("QUIT", 221)
}

// A bare CR just before the end of data: "text<CR><CR><LF>.<CR><LF>" ends
// the message for any RFC 5321 reader (the last line is "text<CR>"), and
// the sending server waits for the reply to its final dot.
//
// KNOWN BUG, upstream (go-smtp v0.25.1, data.go, dataReader.Read): after a
// CR, another CR moves its state machine to "middle of line" instead of
// "after CR", so the CRLF that follows is not seen as a line end and the
// end of data is missed; mxguard keeps reading the message until
// data_timeout. The same for "<CRLF>.<CR><CR><LF>", where the CR after the
// dot is also dropped from the content. Not a smuggling path (mxguard sees
// fewer ends of data than the sender, never more, and the backend gets one
// re-encoded message), but such a message cannot be received. Skipped
// unless MXGUARD_KNOWN_BUGS=1.
func TestSmugglingCRBeforeEndOfData(t *testing.T) {
	if !knownBugs() {
		t.Skip("known go-smtp bug: <CR><CR><LF>.<CR><LF> is not taken for the end of data (set MXGUARD_KNOWN_BUGS=1)")
	}
	h := newHarness(t, harnessOpt{})
	for _, body := range []string{"text\r", "text\r\n.\r"} {
		c := h.greeted("127.0.0.2")
		c.Conn.SetDeadline(time.Now().Add(3 * time.Second))
		c.Cmd("EHLO mail.good.test", 250)
		c.Cmd("MAIL FROM:<alice@good.test>", 250)
		c.Cmd("RCPT TO:<bob@mxguard.test>", 250)
		c.Cmd("DATA", 354)
		fmt.Fprintf(c.Conn, "From: alice@good.test\r\nSubject: cr\r\n\r\n%s\r\n.\r\n", body)
		if code, _, err := c.TP.ReadResponse(0); code != 250 {
			t.Errorf("body %q then CRLF.CRLF: got %d %v, want the end of data and 250", body, code, err)
		}
	}
}

// A read timeout in the middle of DATA (limits.data_timeout) must end the
// connection: the client's stream is out of step, and whatever it sends
// next is the rest of a message, not commands. Otherwise a relay that is
// slow to send a large message hands its sender a way to smuggle: the tail
// of the message, after the timeout, runs as a transaction of the relay's.
// Both paths: the message within max_message_size (451 after the timeout)
// and over it (552, go-smtp discarding the rest until the deadline).
//
// This was a bug (docs/reliability.md, "SMTP smuggling"): go-smtp replied
// and went back to reading commands. A read timeout is now final: every
// later read fails, and go-smtp hangs up (proxy/conn.go).
func TestSmugglingAfterDataTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int64
	}{{"within size", 1 << 20}, {"over size", 1000}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
				c.Limits.DataTimeout = config.Duration(time.Second)
				c.Limits.MaxMessageSize = tc.size
			}})
			c := h.greeted("127.0.0.2")
			c.Cmd("EHLO mail.good.test", 250)
			c.Cmd("MAIL FROM:<alice@good.test>", 250)
			c.Cmd("RCPT TO:<bob@mxguard.test>", 250)
			c.Cmd("DATA", 354)
			fmt.Fprintf(c.Conn, "From: alice@good.test\r\nSubject: slow\r\n\r\n%s", strings.Repeat("z\r\n", 1000))
			time.Sleep(1500 * time.Millisecond) // past data_timeout
			c.Conn.Write([]byte("MAIL FROM:<spoof@good.test>\r\nRCPT TO:<victim@mxguard.test>\r\nDATA\r\n" +
				"From: ceo@mxguard.test\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n"))
			var replies []string
			c.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				code, msg, err := c.TP.ReadResponse(0)
				if code == 0 && err != nil {
					break
				}
				replies = append(replies, fmt.Sprintf("%d %s", code, msg))
			}
			time.Sleep(200 * time.Millisecond)
			if n := len(h.sink.Messages()); n != 0 {
				t.Errorf("backend got %d messages after a data timeout; client saw %q", n, replies)
			}
			if len(replies) > 2 {
				t.Errorf("the message's tail was read as commands; replies %q", replies)
			}
		})
	}
}

// knownBugs reports MXGUARD_KNOWN_BUGS=1: run the tests of bugs reported
// in docs/reliability.md but not fixed yet (they fail until then).
func knownBugs() bool { return os.Getenv("MXGUARD_KNOWN_BUGS") != "" }

// CR, LF, NUL, other controls and 8-bit bytes in HELO, in MAIL and RCPT
// addresses and in their parameters (ENVID, AUTH, ORCPT, NOTIFY) never reach
// a header field mxguard writes (Received, Authentication-Results), an
// XCLIENT attribute or any command line toward the backend unescaped.
// Clients at 127.0.0.5 are trusted (no checks), at 127.0.0.2 checked with
// every rule in log mode: odd names are relayed either way, so that what
// mxguard writes about them can be inspected.
func TestInjectionNeverReachesTheBackend(t *testing.T) {
	for _, identity := range []config.Identity{config.IdentityXCLIENT, config.IdentityProxyV1} {
		t.Run(string(identity), func(t *testing.T) {
			h := newHarness(t, harnessOpt{
				cfg: func(c *config.Config) {
					c.TrustedNetworks = []config.Prefix{mustPrefix("127.0.0.5")}
					c.Backend.ClientIdentity = identity
					withRules(t, c, "[defaults]\nmode = \"log\"\n")
				},
				sink: func(s *mailsink.Server) {
					s.Extensions = []string{"PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN", "AUTH PLAIN"}
					s.XCLIENT = identity == config.IdentityXCLIENT
					if identity == config.IdentityProxyV1 {
						s.Proxy = mailsink.ProxyRequired
					}
				},
			})
			injectionCases(t, h)
		})
	}
}

func injectionCases(t *testing.T, h *harness) {
	long := strings.Repeat("\x01é\x7f", 100)
	cases := []struct {
		name             string
		helo, mail, rcpt string // the whole argument as sent
	}{
		{"CR in HELO", "evil.example\rX-Injected:yes", "<alice@good.test>", "<bob@mxguard.test>"},
		{"NUL in HELO", "evil\x00.example", "<alice@good.test>", "<bob@mxguard.test>"},
		{"controls in HELO", "evil.example\x1b[31m\x7f\x01(c);\\", "<alice@good.test>", "<bob@mxguard.test>"},
		{"8-bit HELO", "évil.example\xff\xfe", "<alice@good.test>", "<bob@mxguard.test>"},
		{"long odd HELO", long, "<alice@good.test>", "<bob@mxguard.test>"},
		{"HELO trailing CRs", "mail.good.test\r\r", "<alice@good.test>", "<bob@mxguard.test>"},
		{"CR in sender", "mail.good.test", "<alice\r@good.test>", "<bob@mxguard.test>"},
		{"CR in sender domain", "mail.good.test", "<a@good.test\rX-Injected:1>", "<bob@mxguard.test>"},
		{"NUL in sender", "mail.good.test", "<alice\x00@good.test>", "<bob@mxguard.test>"},
		{"quoted CR in sender", "mail.good.test", "<\"a\rb\"@good.test>", "<bob@mxguard.test>"},
		{"semicolon sender", "mail.good.test", "<\"x;dkim=pass\"@good.test>", "<bob@mxguard.test>"},
		{"8-bit sender", "mail.good.test", "<josé@good.test>", "<bob@mxguard.test>"},
		{"8-bit sender SMTPUTF8", "mail.good.test", "<josé@good.test> SMTPUTF8", "<bob@mxguard.test>"},
		{"invalid UTF-8 sender", "mail.good.test", "<jos\xe9@good.test> SMTPUTF8", "<bob@mxguard.test>"},
		{"null sender odd HELO", "evil.example\x1b\x7f", "<>", "<bob@mxguard.test>"},
		{"ENVID xtext CRLF", "mail.good.test", "<alice@good.test> ENVID=abc+0D+0AX-Injected:+201", "<bob@mxguard.test>"},
		{"ENVID raw CR", "mail.good.test", "<alice@good.test> ENVID=ab\rc", "<bob@mxguard.test>"},
		{"ENVID odd", "mail.good.test", "<alice@good.test> ENVID=a+2Bb=c RET=HDRS", "<bob@mxguard.test>"},
		{"AUTH xtext CRLF", "mail.good.test", "<alice@good.test> AUTH=+22x+0D+0AX-Injected:+201+22@good.test", "<bob@mxguard.test>"},
		{"AUTH NUL", "mail.good.test", "<alice@good.test> AUTH=+22x+00y+22@good.test", "<bob@mxguard.test>"},
		{"AUTH empty", "mail.good.test", "<alice@good.test> AUTH=<>", "<bob@mxguard.test>"},
		{"BODY odd", "mail.good.test", "<alice@good.test> BODY=8bitmime SIZE=10", "<bob@mxguard.test>"},
		{"CR in recipient", "mail.good.test", "<alice@good.test>", "<b\rob@mxguard.test>"},
		{"NUL in recipient", "mail.good.test", "<alice@good.test>", "<bob@mxguard.test\x00>"},
		{"8-bit recipient", "mail.good.test", "<alice@good.test>", "<bób\xff@mxguard.test>"},
		{"comment recipient", "mail.good.test", "<alice@good.test>", "<\"we(ird);\\\"\"@mxguard.test>"},
		{"ORCPT xtext CRLF", "mail.good.test", "<alice@good.test>", "<bob@mxguard.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+0D+0AX-Injected:+201@mxguard.test"},
		{"ORCPT utf-8", "mail.good.test", "<alice@good.test> SMTPUTF8", "<bob@mxguard.test> ORCPT=utf-8;b\\x{E9}b\\x{D}\\x{A}X@mxguard.test"},
		{"ORCPT raw 8-bit", "mail.good.test", "<alice@good.test>", "<bob@mxguard.test> ORCPT=rfc822;b\xe9\x01b@mxguard.test"},
		{"NOTIFY odd", "mail.good.test", "<alice@good.test>", "<bob@mxguard.test> NOTIFY=NEVER,SUCCESS"},
		{"NOTIFY CR", "mail.good.test", "<alice@good.test>", "<bob@mxguard.test> NOTIFY=SUCCESS\rX"},
	}
	for _, from := range []string{"127.0.0.5", "127.0.0.2"} {
		for _, tc := range cases {
			t.Run(from+"/"+tc.name, func(t *testing.T) {
				h.sink.Reset()
				c := h.greeted(from)
				c.T = t
				heloCode := 250
				if strings.Contains(tc.helo, "\x00") {
					heloCode = 500 // a NUL in a command is refused (limits.nul_bytes)
				}
				c.Cmd("EHLO "+tc.helo, heloCode)
				c.Send("MAIL FROM:" + tc.mail)
				mailCode, mailText := c.Reply()
				rcptCode, rcptText := 0, ""
				if mailCode == 250 {
					c.Send("RCPT TO:" + tc.rcpt)
					rcptCode, rcptText = c.Reply()
				}
				if rcptCode == 250 {
					c.DataExpect([]byte("X-Client-Start: 1\r\nFrom: alice@good.test\r\nSubject: injection\r\n\r\nbody\r\n"), 250)
				}
				c.Cmd("QUIT", 221)
				h.logs.wait(t, "session", 1)
				t.Logf("MAIL %d %q, RCPT %d %q", mailCode, mailText, rcptCode, rcptText)
				checkBackendSafe(t, h.sink, strings.Contains(tc.mail, "SMTPUTF8"), "X-Client-Start: 1\r\n")
				if rcptCode == 250 && len(h.sink.Messages()) != 1 {
					t.Errorf("relayed, but the backend has %d messages", len(h.sink.Messages()))
				}
			})
		}
	}
}

// A message whose first line starts with a space or a tab: put after the
// header fields mxguard prepends, that line continues the last of them
// (RFC 5322 folding) — X-Spam-Score, or Authentication-Results with
// headers.score_header = "" — so the client writes into mxguard's own,
// trusted field: "\t; dkim=pass header.d=bank.example" becomes a DKIM pass
// under our authserv-id. Postfix's smtpd has the same problem with its
// Received header and inserts an empty line before such a message (which
// then has no header, only a body).
//
// This was a bug (docs/reliability.md, "Hostile input"); the empty line is
// now put in (pipeline/data.go, Prepared.Reader).
func TestInjectionLeadingWhitespace(t *testing.T) {
	for _, score := range []string{"X-Spam-Score", ""} {
		t.Run("score_header="+score, func(t *testing.T) {
			h := newHarness(t, harnessOpt{cfg: func(c *config.Config) { c.Headers.ScoreHeader = score }})
			c := h.greeted("127.0.0.2")
			c.T = t
			c.SendMail("mail.good.test", "alice@good.test", []string{"bob@mxguard.test"},
				[]byte("\t; dkim=pass header.d=bank.example\r\nFrom: alice@good.test\r\nSubject: x\r\n\r\nx\r\n"))
			got, err := h.sink.WaitMessages(1, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			fields, _ := ourFields(got[0].Data)
			for _, f := range fields {
				if strings.Contains(f, "bank.example") {
					t.Errorf("the client's first line continues our field %q", f)
				}
			}
		})
	}
}

// checkBackendSafe asserts that nothing the backend received carries client
// bytes that could end a line or a header field: every command line is a
// known verb with no CR or NUL; XCLIENT is printable ASCII (xtext); our
// header fields are clean and properly folded; the client's own header
// starts right after them (with clientStart, if not ""). Non-ASCII may appear only as printable UTF-8 in
// Authentication-Results (RFC 8601 with RFC 6532: the sender's address as
// given; see docs/reliability.md for the case without SMTPUTF8).
func checkBackendSafe(t *testing.T, sink *mailsink.Server, smtputf8 bool, clientStart string) {
	t.Helper()
	verbs := map[string]bool{"EHLO": true, "HELO": true, "XCLIENT": true, "MAIL": true, "RCPT": true, "DATA": true, "RSET": true, "NOOP": true, "QUIT": true}
	for _, s := range sink.Sessions() {
		for _, cmd := range s.Commands {
			verb, _, _ := strings.Cut(cmd, " ")
			if !verbs[strings.ToUpper(verb)] {
				t.Errorf("backend got an unexpected command line %q (injected?)", cmd)
			}
			if strings.ContainsAny(cmd, "\r\x00") {
				t.Errorf("backend command line carries CR or NUL: %q", cmd)
			}
			if strings.EqualFold(verb, "XCLIENT") {
				for i := 0; i < len(cmd); i++ {
					if c := cmd[i]; c != ' ' && (c < '!' || c > '~') {
						t.Errorf("XCLIENT line carries byte %#x: %q", c, cmd)
					}
				}
			}
			if up := strings.ToUpper(verb); (up == "MAIL" || up == "RCPT") && !smtputf8 {
				// Parameters are xtext: ASCII only. (Addresses may be
				// UTF-8 only under SMTPUTF8.)
				if params := backendParams(cmd); !isPrintableASCII(params) {
					t.Errorf("backend %s parameters are not printable ASCII: %q", up, cmd)
				}
			}
		}
	}
	for _, m := range sink.Messages() {
		fields, rest := ourFields(m.Data)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "Received: from ") {
			t.Errorf("message does not start with our Received: %.300q", m.Data)
			continue
		}
		if clientStart != "" && !bytes.HasPrefix(rest, []byte(clientStart)) {
			t.Errorf("something between our fields and the client's header: %.600q", m.Data)
		}
		for _, f := range fields {
			checkHeaderField(t, f, strings.HasPrefix(f, "Authentication-Results:"))
		}
		if i := bareLineEnd(m.Data); i >= 0 {
			t.Errorf("bare CR or LF in the relayed message at %d", i)
		}
	}
}

// checkHeaderField wants one field: printable characters, CRLF only before
// a folding tab or space or at the very end, and a known name.
func checkHeaderField(t *testing.T, f string, utf8OK bool) {
	t.Helper()
	name, _, ok := strings.Cut(f, ":")
	switch name {
	case "Received", "Authentication-Results", "Received-SPF", "X-Spam-Score", "X-Spam-Flag":
	default:
		ok = false
	}
	if !ok || !strings.HasSuffix(f, "\r\n") {
		t.Errorf("not one of our fields: %q", f)
		return
	}
	body := f[:len(f)-2]
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '\r':
			if i+2 >= len(body) || body[i+1] != '\n' || (body[i+2] != '\t' && body[i+2] != ' ') {
				t.Errorf("%s: CR not part of folding at %d: %q", name, i, f)
				return
			}
			i++
		case c == '\n':
			t.Errorf("%s: bare LF at %d: %q", name, i, f)
			return
		case c == '\t':
		case c < ' ' || c == 0x7f:
			t.Errorf("%s: control byte %#x: %q", name, c, f)
			return
		case c >= 0x80:
			r, n := utf8.DecodeRuneInString(body[i:])
			if !utf8OK || r == utf8.RuneError || !unicode.IsPrint(r) {
				t.Errorf("%s: 8-bit byte %#x (not printable UTF-8 in Authentication-Results): %q", name, c, f)
				return
			}
			i += n - 1
		}
	}
}

// backendParams returns the parameters of a MAIL or RCPT line mxguard sent:
// what follows the path, which ends at the last ">" (AUTH=<>, always last,
// aside).
func backendParams(cmd string) string {
	cmd, auth := strings.CutSuffix(cmd, " AUTH=<>")
	params := cmd[strings.LastIndexByte(cmd, '>')+1:]
	if auth {
		params += " AUTH=<>"
	}
	return params
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// bareLineEnd returns the index of the first CR not followed by LF or LF
// not preceded by CR, or -1.
func bareLineEnd(b []byte) int {
	for i, c := range b {
		switch {
		case c == '\r' && (i+1 >= len(b) || b[i+1] != '\n'):
			return i
		case c == '\n' && (i == 0 || b[i-1] != '\r'):
			return i
		}
	}
	return -1
}

// wireTap sits between mxguard and the backend and records the bytes mxguard
// sends, so that tests see exactly what went over the wire (mailsink records
// the message after undoing dot-stuffing).
type wireTap struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	up     bytes.Buffer
	wg     sync.WaitGroup
}

func startWireTap(t *testing.T, target string) *wireTap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wireTap{ln: ln, target: target}
	var mu sync.Mutex
	var conns []net.Conn
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, b)
			mu.Unlock()
			w.wg.Add(2)
			go func() {
				defer w.wg.Done()
				io.Copy(b, io.TeeReader(c, w))
				b.(*net.TCPConn).CloseWrite()
			}()
			go func() {
				defer w.wg.Done()
				io.Copy(c, b)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		w.wg.Wait()
	})
	return w
}

func (w *wireTap) addr() string { return w.ln.Addr().String() }

func (w *wireTap) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.up.Write(p)
}

func (w *wireTap) upstream() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.up.Bytes())
}

func (w *wireTap) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.up.Reset()
}

// A NUL in a message: a backend that drops NULs before it looks for the end
// of data reads "\r\n\x00.\r\n" as the end, and runs what follows as a
// second transaction. By default the message is refused with 550 5.6.0 and
// the backend sees nothing of it; with limits.nul_bytes = "remove" the NULs
// are dropped after mxguard's own end-of-data handling, so the line is
// content, dot-stuffed toward the backend: one message, one end of data.
func TestNULInData(t *testing.T) {
	for _, policy := range []config.NULPolicy{config.NULRefuse, config.NULRemove} {
		t.Run(string(policy), func(t *testing.T) {
			var tap *wireTap
			h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
				c.Limits.NULBytes = policy
				tap = startWireTap(t, c.Backend.Address)
				c.Backend.Address = tap.addr()
			}})
			for _, seq := range []string{"\r\n\x00.\r\n", "\r\n.\x00\r\n"} {
				h.sink.Reset()
				tap.reset()
				c := h.greeted("127.0.0.2")
				c.Cmd("EHLO mail.good.test", 250)
				c.Cmd("MAIL FROM:<alice@good.test>", 250)
				c.Cmd("RCPT TO:<bob@mxguard.test>", 250)
				c.Cmd("DATA", 354)
				c.Conn.Write([]byte("From: alice@good.test\r\nSubject: nul\r\n\r\nfirst" + seq +
					"MAIL FROM:<spoof@mxguard.test>\r\nRCPT TO:<victim@mxguard.test>\r\nDATA\r\nsmuggled\r\n.\r\n"))
				if policy == config.NULRefuse {
					if text := c.Expect(550); !contains(text, "5.6.0") || !contains(text, "NUL") {
						t.Errorf("%q: got %q", seq, text)
					}
					c.Cmd("QUIT", 221)
					h.logs.wait(t, "session", 1)
					if n := len(h.sink.Messages()); n != 0 || bytes.Contains(tap.upstream(), []byte("smuggled")) {
						t.Errorf("%q: the backend got %d messages", seq, n)
					}
					continue
				}
				c.Expect(250)
				c.Cmd("QUIT", 221)
				msgs, err := h.sink.WaitMessages(1, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				wire := tap.upstream()
				if bytes.IndexByte(wire, 0) >= 0 || bytes.Count(wire, []byte("\r\n.\r\n")) != 1 || len(msgs) != 1 {
					t.Errorf("%q: %d messages; the wire to the backend: %q", seq, len(msgs), wire)
				}
				if !bytes.Contains(msgs[0].Data, []byte("MAIL FROM:<spoof@mxguard.test>")) {
					t.Errorf("%q: the attempt is not in the message: %q", seq, msgs[0].Data)
				}
			}
			if r := h.logs.lines("refused"); policy == config.NULRefuse && (len(r) != 2 || r[0]["rule"] != "protocol") {
				t.Errorf("refused records: %v", r)
			}
		})
	}
}
