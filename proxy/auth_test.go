package proxy

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"
	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/zonedns"
)

// listZone is fixture data for DNS lists and sender authentication.
// Clients come through the PROXY "load balancer" with 192.0.2.x addresses.
func listZone(dkimPub ed25519.PublicKey) string {
	return `
$ORIGIN test.
; DNSBL bl.test: 192.0.2.7 listed; RFC 5782 test points
7.2.0.192.bl       300 A   127.0.0.4
7.2.0.192.bl       300 TXT "spam source, see https://bl.test/192.0.2.7"
2.0.0.127.bl       300 A   127.0.0.2
; DNSWL wl.test: 192.0.2.9 allowlisted
9.2.0.192.wl       300 A   127.0.0.2
2.0.0.127.wl       300 A   127.0.0.2
; RHSBL dbl.test: spam.example listed
spam.example.dbl   300 A   127.0.1.2
test.dbl           300 A   127.0.0.2
; sender authentication
$ORIGIN signer.test.
@                  300 SOA ns.signer.test. h.signer.test. 1 3600 600 86400 60
@                  300 TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc             300 TXT "v=DMARC1; p=reject"
s1._domainkey      300 TXT "v=DKIM1; k=ed25519; p=` + base64.StdEncoding.EncodeToString(dkimPub) + `"
$ORIGIN strict.test.
@                  300 SOA ns.strict.test. h.strict.test. 1 3600 600 86400 60
@                  300 TXT "v=spf1 ip4:198.51.100.1 -all"
$ORIGIN flaky.test.
@                  300 SOA ns.flaky.test. h.flaky.test. 1 3600 600 86400 60
@                  300 TXT "v=spf1 -all"
`
}

func authHarness(t *testing.T, mutate func(*config.Config)) (*harness, ed25519.PrivateKey) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	h := newHarness(t, harnessOpt{proxied: true, zone: listZone(pub), cfg: func(c *config.Config) {
		c.DNSBL.Sites = []string{"bl.test=127.0.0.[2..11]*3", "wl.test*-5"}
		c.DNSBL.DomainSites = []string{"dbl.test=127.0.1.[0..99]*3"}
		c.DNSBL.Threshold = 3
		c.DNSBL.AllowlistThreshold = -1
		c.DNSBL.Timeout = config.Duration(time.Second)
		if mutate != nil {
			mutate(c)
		}
	}})
	return h, priv
}

func signed(t *testing.T, key ed25519.PrivateKey, msg string) []byte {
	t.Helper()
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: "signer.test", Selector: "s1", Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed})
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Clients through a configured load balancer are known by the address in
// its PROXY header; other hosts' PROXY lines are not believed.
func TestInboundProxyProtocol(t *testing.T) {
	h, _ := authHarness(t, nil)
	c := h.greetedAs("192.0.2.8")
	c.SendMail("[192.0.2.8]", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: x\r\n\r\nx\r\n"))
	got, err := h.sink.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if a := got[0].XCLIENT["ADDR"]; a != "192.0.2.8" {
		t.Errorf("backend learnt client %q, want the PROXY header's 192.0.2.8", a)
	}
	// Not a load balancer: its PROXY line is the client talking first.
	c = h.dial("127.0.0.2")
	c.Conn.Write([]byte("PROXY TCP4 192.0.2.77 127.0.0.1 1 25\r\n"))
	c.R.ReadString('\n') // bait
	if code, _ := c.Reply(); code != 554 {
		t.Errorf("PROXY line from a non-balancer got %d, want the pregreet 554", code)
	}
	// A load balancer that sends no header is cut off.
	c = h.dial("127.0.0.1")
	c.Conn.Write([]byte("EHLO x\r\n"))
	if !c.Closed() {
		t.Error("load balancer connection without PROXY header stays open")
	}
}

func TestDNSBLRefusal(t *testing.T) {
	h, _ := authHarness(t, nil)
	c := h.greetedAs("192.0.2.7")
	c.Cmd("EHLO [192.0.2.7]", 250)
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Send("RCPT TO:<bob@mxguard.test>")
	code, text := c.Reply()
	if code != 554 || text != "5.7.1 Service unavailable; client [192.0.2.7] blocked using bl.test (dnsbl)" {
		t.Errorf("listed client: %d %q", code, text)
	}
	l := h.logs.wait(t, "refused", 1)[0]
	if l["rule"] != "dnsbl" || !strings.Contains(l["reason"].(string), "DNSBL rank 3 for [192.0.2.7]") {
		t.Errorf("refused line %v", l)
	}
	checksJSON := func(l map[string]any) string {
		var b strings.Builder
		for _, c := range l["checks"].([]any) {
			m := c.(map[string]any)
			ev, _ := m["evidence"].(string)
			b.WriteString(m["outcome"].(string) + " " + ev + "|")
		}
		return b.String()
	}
	if s := checksJSON(l); !strings.Contains(s, "dnsbl.bl.test 127.0.0.4; spam source, see https://bl.test/192.0.2.7") {
		t.Errorf("the log lacks the hit with its answer and TXT: %s", s)
	}
	// An unlisted client is served.
	c = h.greetedAs("192.0.2.8")
	c.SendMail("[192.0.2.8]", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: x\r\n\r\nx\r\n"))
}

// A DNSWL-allowlisted client does not wait for the banner.
func TestDNSWLSkipsGreeting(t *testing.T) {
	h, _ := authHarness(t, func(c *config.Config) { c.Listen.GreetDelay = config.Duration(3 * time.Second) })
	start := time.Now()
	c := h.greetedAs("192.0.2.9")
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("allowlisted client waited %v for the banner", d)
	}
	c.SendMail("[192.0.2.9]", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: x\r\n\r\nx\r\n"))
	start = time.Now()
	h.greetedAs("192.0.2.8")
	if d := time.Since(start); d < 2900*time.Millisecond {
		t.Errorf("an unlisted client skipped the wait (%v)", d)
	}
}

func TestRHSBLSender(t *testing.T) {
	h, _ := authHarness(t, nil)
	c := h.greetedAs("192.0.2.8")
	c.Cmd("EHLO [192.0.2.8]", 250)
	c.Cmd("MAIL FROM:<alice@spam.example>", 250)
	c.Send("RCPT TO:<bob@mxguard.test>")
	if code, text := c.Reply(); code != 554 || !strings.Contains(text, "blocked using dbl.test (rhsbl)") {
		t.Errorf("listed sender domain: %d %q", code, text)
	}
}

func TestSPFRefusals(t *testing.T) {
	h, _ := authHarness(t, nil)
	h.dns.SetFault("flaky.test", zonedns.Fault{Rcode: dns.RcodeServerFailure})
	for _, tc := range []struct {
		from, reply string
	}{
		{"alice@strict.test", "550 5.7.23 SPF validation failed"},
		{"alice@flaky.test", "451 4.7.24 SPF validation error, try again later"},
	} {
		c := h.greetedAs("192.0.2.8")
		c.Cmd("EHLO [192.0.2.8]", 250)
		c.Cmd("MAIL FROM:<"+tc.from+">", 250)
		c.Send("RCPT TO:<bob@mxguard.test>")
		if code, text := c.Reply(); fmtReply(code, text)[:len(tc.reply)] != tc.reply {
			t.Errorf("%s: %d %q, want %s", tc.from, code, text, tc.reply)
		}
	}
}

// Signed mail passes DKIM, SPF and DMARC; the backend gets our
// Authentication-Results (a forged one claiming our name is gone, a third
// party's stays) and a message whose signature still verifies.
func TestAuthenticationResults(t *testing.T) {
	h, key := authHarness(t, nil)
	msg := signed(t, key, "From: Alice <alice@signer.test>\r\nTo: bob@mxguard.test\r\nSubject: signed\r\n\r\nHello, signed world.\r\n")
	msg = append([]byte("Authentication-Results: mx.mxguard.test; dkim=pass header.d=bank.example\r\n"+
		"Authentication-Results: relay.example; spf=pass smtp.mailfrom=x@relay.example\r\n"), msg...)
	c := h.greetedAs("192.0.2.8")
	c.SendMail("[192.0.2.8]", "alice@signer.test", []string{"bob@mxguard.test"}, msg)
	got, err := h.sink.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	data := got[0].Data
	fields, rest := ourFields(data)
	ar := strings.ReplaceAll(fields[1], "\r\n\t", " ")
	for _, want := range []string{"Authentication-Results: mx.mxguard.test;", "spf=pass smtp.mailfrom=alice@signer.test", "dkim=pass header.d=signer.test header.s=s1", "dmarc=pass header.from=signer.test"} {
		if !strings.Contains(ar, want) {
			t.Errorf("our Authentication-Results %q lacks %q", ar, want)
		}
	}
	if bytes.Contains(rest, []byte("bank.example")) {
		t.Error("the forged Authentication-Results claiming our name reached the backend")
	}
	if !bytes.Contains(rest, []byte("Authentication-Results: relay.example; spf=pass")) {
		t.Error("a third party's Authentication-Results was removed")
	}
	if score := fields[len(fields)-1]; score != "X-Spam-Score: -3\r\n" {
		t.Errorf("score field %q, want -3 (spf, dkim and dmarc pass)", score)
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(data), &dkim.VerifyOptions{LookupTXT: func(string) ([]string, error) {
		return []string{"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))}, nil
	}})
	if err != nil || len(vs) != 1 || vs[0].Err != nil {
		t.Errorf("the relayed message no longer verifies: %v %+v", err, vs)
	}
}

// DMARC p=reject refuses unaligned mail at the end of DATA, before the
// backend sees it; a message with two From addresses is refused too.
func TestDMARCReject(t *testing.T) {
	h, _ := authHarness(t, nil)
	c := h.greetedAs("192.0.2.8")
	c.Cmd("EHLO [192.0.2.8]", 250)
	c.Cmd("MAIL FROM:<bounce@good.test>", 250)
	c.Cmd("RCPT TO:<bob@mxguard.test>", 250)
	text := c.DataExpect([]byte("From: ceo@signer.test\r\nSubject: wire money\r\n\r\nnow\r\n"), 550)
	if !strings.Contains(text, "DMARC") || !strings.HasSuffix(text, "(dmarc.reject)") {
		t.Errorf("DMARC reply %q", text)
	}
	c.Cmd("MAIL FROM:<bounce@good.test>", 250)
	c.Cmd("RCPT TO:<bob@mxguard.test>", 250)
	c.DataExpect([]byte("From: a@good.test, b@good.test\r\nSubject: two\r\n\r\nx\r\n"), 550)
	if n := len(h.sink.Messages()); n != 0 {
		t.Errorf("backend stored %d messages", n)
	}
}

// A message over message.memory_limit is spooled to a file, relayed whole,
// and leaves no file behind.
func TestSpillToDisk(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.Message.MemoryLimit = 4096
		c.Message.SpoolDir = dir
	}})
	body := strings.Repeat("spilled line of a large message\r\n", 10000)
	msg := []byte("From: alice@good.test\r\nSubject: big\r\n\r\n" + body)
	c := h.greeted("127.0.0.2")
	c.SendMail("mail.good.test", "alice@good.test", []string{"bob@mxguard.test"}, msg)
	got, err := h.sink.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, rest := ourFields(got[0].Data); !bytes.Equal(rest, msg) {
		t.Errorf("spilled message changed: %d bytes, want %d", len(rest), len(msg))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("spool dir keeps %d files", len(ents))
	}
}

// headers.received_spf adds a Received-SPF field (RFC 7208 §9.1) naming the
// result, the client, the sender and us.
func TestReceivedSPFHeader(t *testing.T) {
	h, _ := authHarness(t, func(c *config.Config) { c.Headers.ReceivedSPF = true })
	c := h.greetedAs("192.0.2.8")
	c.SendMail("[192.0.2.8]", "alice@signer.test", []string{"bob@mxguard.test"}, []byte("From: alice@signer.test\r\nSubject: spf\r\n\r\nx\r\n"))
	got, err := h.sink.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fields, _ := ourFields(got[0].Data)
	var spf string
	for _, f := range fields {
		if strings.HasPrefix(f, "Received-SPF:") {
			spf = strings.ReplaceAll(f, "\r\n\t", " ")
		}
	}
	for _, want := range []string{"Received-SPF: pass (mx.mxguard.test:", "client-ip=192.0.2.8;", `envelope-from="alice@signer.test";`, "receiver=mx.mxguard.test;"} {
		if !strings.Contains(spf, want) {
			t.Errorf("Received-SPF %q lacks %q (our fields: %q)", spf, want, fields)
		}
	}
}
