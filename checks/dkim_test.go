package checks

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/zonedns"
)

// dkimKeys are made once per test binary: RSA-2048 takes a while.
var dkimKeys = sync.OnceValue(func() (k struct {
	rsa, rsa2 *rsa.PrivateKey
	ed        ed25519.PrivateKey
}) {
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	return k
})

// txtStrings writes a TXT value as the 255-byte character strings DNS
// needs for long records (RFC 6376 §3.6.2.2).
func txtStrings(s string) string {
	var parts []string
	for len(s) > 255 {
		parts = append(parts, `"`+s[:255]+`"`)
		s = s[255:]
	}
	return strings.Join(append(parts, `"`+s+`"`), " ")
}

func dkimKeyRecord(pub crypto.PublicKey) string {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			panic(err)
		}
		return txtStrings("v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der))
	case ed25519.PublicKey:
		return txtStrings("v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub))
	}
	panic("key type")
}

func dkimZone() string {
	k := dkimKeys()
	return `
$TTL 300
$ORIGIN example.test.
@                  SOA ns.example.test. h.example.test. 1 3600 600 86400 60
rsa._domainkey     TXT ` + dkimKeyRecord(k.rsa.Public()) + `
ed._domainkey      TXT ` + dkimKeyRecord(k.ed.Public()) + `
other._domainkey   TXT ` + dkimKeyRecord(k.rsa2.Public()) + `
revoked._domainkey TXT "v=DKIM1; k=rsa; p="
slow._domainkey    TXT ` + dkimKeyRecord(k.rsa.Public()) + `
broken._domainkey  TXT ` + dkimKeyRecord(k.rsa.Public()) + `
twice._domainkey   TXT ` + dkimKeyRecord(k.rsa.Public()) + `
twice._domainkey   TXT "v=DKIM1; k=rsa; p=MIIB"
$ORIGIN sub.example.test.
rsa._domainkey     TXT ` + dkimKeyRecord(k.rsa.Public()) + `
`
}

const dkimMessage = "From: Alice <alice@example.test>\r\n" +
	"To: bob@example.net\r\n" +
	"Subject: lunch\r\n" +
	"Date: Mon, 1 Jan 2026 12:00:00 +0000\r\n" +
	"Message-ID: <1@example.test>\r\n" +
	"\r\n" +
	"Noon at the usual place?\r\n" +
	"\r\n" +
	"-- \r\n" +
	"Alice\r\n"

// dkimSign signs msg as domain with selector, using key.
func dkimSign(t testing.TB, msg, domain, selector string, key crypto.Signer, can dkim.Canonicalization) string {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{
		Domain: domain, Selector: selector, Signer: key,
		HeaderKeys:             []string{"From", "To", "Subject", "Date", "Message-ID"},
		HeaderCanonicalization: can, BodyCanonicalization: can,
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestDKIM(t *testing.T) {
	k := dkimKeys()
	res, srv := authFixture(t, dkimZone())
	srv.SetFault("slow._domainkey.example.test", zonedns.Fault{Drop: true})
	srv.SetFault("broken._domainkey.example.test", zonedns.Fault{Rcode: dns.RcodeServerFailure})
	d := &DKIM{Resolver: res}

	sign := func(msg, sel string, key crypto.Signer) string {
		return dkimSign(t, msg, "example.test", sel, key, dkim.CanonicalizationSimple)
	}
	rsaSigned := sign(dkimMessage, "rsa", k.rsa)
	edSigned := sign(dkimMessage, "ed", k.ed)
	relaxed := dkimSign(t, dkimMessage, "example.test", "rsa", k.rsa, dkim.CanonicalizationRelaxed)
	headerOnly := sign("From: alice@example.test\r\nSubject: empty\r\n\r\n", "ed", k.ed)

	type sig struct{ sel, result, err string }
	cases := []struct {
		name string
		msg  string
		want []sig
	}{
		{"rsa pass", rsaSigned, []sig{{"rsa", "pass", ""}}},
		{"ed25519 pass", edSigned, []sig{{"ed", "pass", ""}}},
		{"relaxed survives refolding", strings.Replace(relaxed, "Subject: lunch", "Subject:   lunch\r\n ", 1), []sig{{"rsa", "pass", ""}}},
		{"unsigned header added", "X-Spam: no\r\n" + rsaSigned, []sig{{"rsa", "pass", ""}}},
		{"no body", strings.TrimSuffix(headerOnly, "\r\n"), []sig{{"ed", "pass", ""}}},
		{"two, both good", sign(edSigned, "rsa", k.rsa), []sig{{"rsa", "pass", ""}, {"ed", "pass", ""}}},
		{"two, one good one bad", sign(edSigned, "other", k.rsa), []sig{{"other", "fail", "signature did not verify"}, {"ed", "pass", ""}}},
		{"tampered body", strings.Replace(rsaSigned, "Noon", "Midnight", 1), []sig{{"rsa", "fail", "body hash did not verify"}}},
		{"tampered signed header", strings.Replace(rsaSigned, "Subject: lunch", "Subject: invoice", 1), []sig{{"rsa", "fail", "signature did not verify"}}},
		{"tampered, ed25519", strings.Replace(edSigned, "Subject: lunch", "Subject: invoice", 1), []sig{{"ed", "fail", "signature did not verify"}}},
		{"wrong key", sign(dkimMessage, "other", k.rsa), []sig{{"other", "fail", "signature did not verify"}}},
		{"key type mismatch", sign(dkimMessage, "rsa", k.ed), []sig{{"rsa", "permerror", "inappropriate key algorithm"}}},
		{"revoked key", sign(dkimMessage, "revoked", k.rsa), []sig{{"revoked", "permerror", "key revoked"}}},
		{"no key", sign(dkimMessage, "missing", k.rsa), []sig{{"missing", "permerror", "no key for signature"}}},
		{"two keys", sign(dkimMessage, "twice", k.rsa), []sig{{"twice", "permerror", "multiple TXT records"}}},
		{"key timeout", sign(dkimMessage, "slow", k.rsa), []sig{{"slow", "temperror", "timeout"}}},
		{"key SERVFAIL", sign(dkimMessage, "broken", k.rsa), []sig{{"broken", "temperror", "SERVFAIL"}}},
		{"one timeout, one pass", sign(edSigned, "slow", k.rsa), []sig{{"slow", "temperror", "timeout"}, {"ed", "pass", ""}}},
		{"malformed", "DKIM-Signature: v=1; d=example.test; s=rsa\r\n" + dkimMessage, []sig{{"rsa", "permerror", "missing required tag"}}},
		{"From not signed", "DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=rsa; h=subject; bh=; b=\r\n" + dkimMessage, []sig{{"rsa", "permerror", "From field not signed"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := d.Verify(t.Context(), strings.NewReader(c.msg))
			if len(r.Signatures) != len(c.want) || len(r.Results) != len(c.want) {
				t.Fatalf("%d signatures, %d results: %+v", len(r.Signatures), len(r.Results), r)
			}
			for i, w := range c.want {
				s, res := r.Signatures[i], r.Results[i]
				if s.Selector != w.sel || s.Result != w.result || !strings.Contains(s.Err, w.err) || (w.err == "") != (s.Err == "") {
					t.Errorf("signature %d: %+v, want %+v", i, s, w)
				}
				if s.Domain != "example.test" || s.Identifier != "@example.test" {
					t.Errorf("signature %d: d=%q i=%q", i, s.Domain, s.Identifier)
				}
				if res.Check != "dkim" || res.Outcome != "dkim."+w.result || !strings.Contains(res.Reason, "d=example.test s="+w.sel) {
					t.Errorf("result %d: %+v", i, res)
				}
			}
		})
	}
}

func TestDKIMUnsigned(t *testing.T) {
	d := &DKIM{Resolver: failingResolver{t}}
	for _, msg := range []string{dkimMessage, "", "From: a@example.test\r\n", "no header at all"} {
		r := d.Verify(t.Context(), strings.NewReader(msg))
		if len(r.Signatures) != 0 || len(r.Results) != 1 || r.Results[0].Outcome != "dkim.none" || r.Results[0].Reason == "" {
			t.Errorf("%q: %+v", msg, r)
		}
	}
}

// failingResolver fails the test if asked anything.
type failingResolver struct{ t *testing.T }

func (f failingResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	f.t.Errorf("unexpected DNS question for %s", name)
	return nil, errors.New("unexpected")
}

func TestDKIMMaxSignatures(t *testing.T) {
	k := dkimKeys()
	res, _ := authFixture(t, dkimZone())
	msg := dkimMessage
	for range 3 {
		msg = dkimSign(t, msg, "example.test", "ed", k.ed, dkim.CanonicalizationRelaxed)
	}
	r := (&DKIM{Resolver: res, MaxSignatures: 2}).Verify(t.Context(), strings.NewReader(msg))
	if len(r.Signatures) != 2 || len(r.Results) != 2 || r.Ignored != 1 {
		t.Fatalf("%+v", r)
	}
	for _, s := range r.Signatures {
		if s.Result != "pass" {
			t.Errorf("%+v", s)
		}
	}
	// The default is 5.
	for range 3 {
		msg = dkimSign(t, msg, "example.test", "ed", k.ed, dkim.CanonicalizationRelaxed)
	}
	if r := (&DKIM{Resolver: res}).Verify(t.Context(), strings.NewReader(msg)); len(r.Signatures) != 5 || r.Ignored != 1 {
		t.Errorf("default: %d verified, %d ignored", len(r.Signatures), r.Ignored)
	}
}

// onceReader checks that Verify reads the message exactly once, to the
// end, without seeking (it is not an io.Seeker).
type onceReader struct {
	r   io.Reader
	n   int
	eof int
}

func (o *onceReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	o.n += n
	if err == io.EOF {
		o.eof++
	}
	return n, err
}

func TestDKIMReadsOnce(t *testing.T) {
	k := dkimKeys()
	res, _ := authFixture(t, dkimZone())
	d := &DKIM{Resolver: res}
	body := strings.Repeat("a line of the body, long enough to matter\r\n", 2000)
	one := dkimSign(t, dkimMessage+body, "example.test", "ed", k.ed, dkim.CanonicalizationSimple)
	for name, msg := range map[string]string{
		"one signature":  one,
		"two signatures": dkimSign(t, one, "example.test", "rsa", k.rsa, dkim.CanonicalizationSimple),
		"missing key":    dkimSign(t, dkimMessage+body, "example.test", "missing", k.rsa, dkim.CanonicalizationSimple),
		"unsigned":       dkimMessage + body,
	} {
		o := &onceReader{r: strings.NewReader(msg)}
		d.Verify(t.Context(), o)
		if o.n != len(msg) || o.eof < 1 {
			t.Errorf("%s: read %d of %d bytes, EOF seen %d times", name, o.n, len(msg), o.eof)
		}
	}
}

// A message that cannot be read to the end gives temperror, never a
// verdict on half a message.
func TestDKIMReadError(t *testing.T) {
	k := dkimKeys()
	res, _ := authFixture(t, dkimZone())
	d := &DKIM{Resolver: res}
	body := strings.Repeat("x\r\n", 50000)
	one := dkimSign(t, dkimMessage+body, "example.test", "ed", k.ed, dkim.CanonicalizationSimple)
	two := dkimSign(t, one, "example.test", "rsa", k.rsa, dkim.CanonicalizationSimple)
	broken := errors.New("disk on fire")
	for _, msg := range []string{one, two} {
		cut := io.MultiReader(strings.NewReader(msg[:len(msg)/2]), iotestErr{broken})
		r := d.Verify(t.Context(), cut)
		if len(r.Signatures) == 0 {
			t.Fatalf("%+v", r)
		}
		for _, s := range r.Signatures {
			if s.Result != "temperror" || !strings.Contains(s.Err, "disk on fire") {
				t.Errorf("%+v", s)
			}
		}
	}
	// Cut inside the header.
	r := d.Verify(t.Context(), io.MultiReader(strings.NewReader(one[:20]), iotestErr{broken}))
	if len(r.Results) != 1 || r.Results[0].Outcome != "dkim.temperror" {
		t.Errorf("cut in header: %+v", r)
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

func TestDKIMHugeHeader(t *testing.T) {
	msg := "DKIM-Signature: v=1\r\n" + strings.Repeat("X-Filler: 1\r\n", 2000) + "\r\nbody\r\n"
	r := (&DKIM{Resolver: failingResolver{t}}).Verify(t.Context(), strings.NewReader(msg))
	if len(r.Results) != 1 || r.Results[0].Outcome != "dkim.permerror" {
		t.Errorf("%+v", r)
	}
}

// BenchmarkDKIMVerify verifies an RSA-2048 signature with the key in the
// resolver's cache, as for a busy sender.
func BenchmarkDKIMVerify(b *testing.B) {
	k := dkimKeys()
	res, _ := authFixture(b, dkimZone())
	d := &DKIM{Resolver: res}
	for _, size := range []int{10 << 10, 1 << 20} {
		line := "The quick brown fox jumps over the lazy dog, again and again.\r\n"
		body := strings.Repeat(line, size/len(line))
		msg := []byte(dkimSign(b, dkimMessage+body, "example.test", "rsa", k.rsa, dkim.CanonicalizationRelaxed))
		if r := d.Verify(b.Context(), bytes.NewReader(msg)); r.Signatures[0].Result != "pass" { // warms the cache
			b.Fatalf("%+v", r)
		}
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				d.Verify(b.Context(), bytes.NewReader(msg))
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
