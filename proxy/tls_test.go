package proxy

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/textproto"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
)

// writeCert makes a self-signed certificate for mx.mxguard.test.
func writeCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mx.mxguard.test"},
		DNSNames:     []string{"mx.mxguard.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// STARTTLS is offered when a certificate is configured; mail relayed after
// it says ESMTPS, and a HELO verdict survives the TLS restart.
func TestSTARTTLS(t *testing.T) {
	cert, key := writeCert(t)
	h := newHarness(t, harnessOpt{cfg: func(c *config.Config) {
		c.TLS.CertFile, c.TLS.KeyFile = cert, key
	}})
	starttls := func(c *client) {
		c.Cmd("STARTTLS", 220)
		tc := tls.Client(c.Conn, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.mxguard.test"})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		c.Conn = tc
		c.R = bufio.NewReader(tc)
		c.TP = textproto.NewReader(c.R)
	}

	c := h.greeted("127.0.0.2")
	if ehlo := c.Cmd("EHLO mail.good.test", 250); !contains(ehlo, "STARTTLS") {
		t.Fatalf("STARTTLS not offered: %q", ehlo)
	}
	starttls(c)
	c.SendMail("mail.good.test", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: tls\r\n\r\nx\r\n"))
	got, err := h.sink.WaitMessages(1, 5e9)
	if err != nil {
		t.Fatal(err)
	}
	if recv, _ := stripReceived(t, got[0].Data); !contains(recv, "with ESMTPS id") {
		t.Errorf("Received after STARTTLS: %q", recv)
	}

	c = h.greeted("127.0.0.2")
	c.Cmd("EHLO localhost", 250)
	starttls(c)
	c.Cmd("EHLO mail.good.test", 250)
	c.Cmd("MAIL FROM:<alice@good.test>", 250)
	c.Send("RCPT TO:<bob@mxguard.test>")
	if code, _ := c.Reply(); code != 550 {
		t.Errorf("STARTTLS washed the HELO verdict: RCPT got %d", code)
	}
}
