package main

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/testsrv"

	"github.com/emersion/go-msgauth/dkim"
)

func writeKey(t *testing.T, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// keyRecord is the DNS TXT record publishing pub.
func keyRecord(t *testing.T, pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k)
	}
	t.Fatalf("%T", pub)
	return ""
}

// TestDKIMSigned sends signed messages through the sink and verifies what
// arrived with go-msgauth: one signature for all and one per message, RSA
// (PKCS#1 and PKCS#8) and Ed25519 keys.
func TestDKIMSigned(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8RSA, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	pkcs8Ed, _ := x509.MarshalPKCS8PrivateKey(edKey)
	for _, tc := range []struct {
		name string
		path string
		pub  crypto.PublicKey
		algo string
	}{
		{"rsa-pkcs1", writeKey(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), rsaKey.Public(), "rsa-sha256"},
		{"rsa-pkcs8", writeKey(t, "PRIVATE KEY", pkcs8RSA), rsaKey.Public(), "rsa-sha256"},
		{"ed25519", writeKey(t, "PRIVATE KEY", pkcs8Ed), edKey.Public(), "ed25519-sha256"},
	} {
		for _, each := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/each=%v", tc.name, each), func(t *testing.T) {
				sink := testsrv.Sink(t, nil)
				cfg := testConfig(sink.Addr())
				cfg.N, cfg.C, cfg.Size = 6, 2, 2000
				cfg.To = []string{"a@example.net", "b@example.net"}
				cfg.DKIMKey, cfg.DKIMSelector, cfg.DKIMEach = tc.path, "sel1", each
				res := mustRun(t, cfg)
				if res.OK != cfg.N || res.DKIM != tc.algo {
					t.Fatalf("%+v", res)
				}
				record := keyRecord(t, tc.pub)
				lookup := func(name string) ([]string, error) {
					if name != "sel1._domainkey.smtpload.example" {
						return nil, fmt.Errorf("unexpected lookup %s", name)
					}
					return []string{record}, nil
				}
				sigs := map[string]bool{}
				for _, m := range sink.Messages() {
					if d := len(m.Data) - res.Size; d < -4 || d > 4 {
						t.Errorf("message of %d bytes, reported %d", len(m.Data), res.Size)
					}
					vs, err := dkim.VerifyWithOptions(bytes.NewReader(m.Data), &dkim.VerifyOptions{LookupTXT: lookup})
					if err != nil || len(vs) != 1 {
						t.Fatalf("%v, %d verifications", err, len(vs))
					}
					v := vs[0]
					if v.Err != nil || v.Domain != "smtpload.example" {
						t.Fatalf("verification: %+v\n%s", v, m.Data)
					}
					if got := slices.Contains(v.HeaderKeys, "message-id") || slices.Contains(v.HeaderKeys, "Message-ID"); got != each {
						t.Errorf("signed %v; Message-ID signed: %v, want %v", v.HeaderKeys, got, each)
					}
					i := bytes.Index(m.Data, []byte(" b="))
					sigs[string(m.Data[i:min(len(m.Data), i+60)])] = true
				}
				if want := map[bool]int{false: 1, true: cfg.N}[each]; len(sigs) != want {
					t.Errorf("%d distinct signatures over %d messages, want %d", len(sigs), cfg.N, want)
				}
			})
		}
	}
}

func TestDKIMKeyErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	cert := writeKey(t, "CERTIFICATE", []byte{1, 2, 3})
	badKey := writeKey(t, "PRIVATE KEY", []byte{1, 2, 3})
	for _, path := range []string{notPEM, cert, badKey, filepath.Join(dir, "missing")} {
		_, err := loadDKIMKey(path, "d", "s")
		if err == nil {
			t.Errorf("%s: no error", path)
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name the file", path, err)
		}
	}
}
