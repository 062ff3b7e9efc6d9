package main

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/emersion/go-msgauth/dkim"
)

// dkimSigner signs with go-msgauth's dkim package, relaxed/relaxed.
type dkimSigner struct {
	domain   string
	selector string
	algo     string // "rsa-sha256" or "ed25519-sha256"
	key      crypto.Signer
}

// loadDKIMKey reads a PEM private key: PKCS#1 RSA ("RSA PRIVATE KEY") or
// PKCS#8 RSA or Ed25519 ("PRIVATE KEY", what openssl genpkey writes).
func loadDKIMKey(path, domain, selector string) (*dkimSigner, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s: PEM block %q: want an RSA or Ed25519 private key", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &dkimSigner{domain: domain, selector: selector}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		s.algo, s.key = "rsa-sha256", k
	case ed25519.PrivateKey:
		s.algo, s.key = "ed25519-sha256", k
	default:
		return nil, fmt.Errorf("%s: %T keys cannot sign DKIM", path, key)
	}
	return s, nil
}

// sign returns the DKIM-Signature field (ending in CRLF) for msg (header
// section, blank line, body; CRLF lines, not dot-stuffed), covering the
// header fields named.
func (s *dkimSigner) sign(msg []byte, names []string) ([]byte, error) {
	sg, err := dkim.NewSigner(&dkim.SignOptions{
		Domain:                 s.domain,
		Selector:               s.selector,
		Signer:                 s.key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             names,
	})
	if err != nil {
		return nil, err
	}
	if _, err := sg.Write(msg); err != nil {
		sg.Close()
		return nil, err
	}
	if err := sg.Close(); err != nil {
		return nil, err
	}
	sig := []byte(sg.Signature())
	if !bytes.HasSuffix(sig, []byte("\r\n")) {
		sig = append(sig, "\r\n"...)
	}
	return sig, nil
}
