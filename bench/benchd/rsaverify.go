package main

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// rsaResult is what -rsa-verify measured.
type rsaResult struct {
	cpuMicros, wallMicros float64 // per verification
	ops                   int
	bits                  int
}

// measureRSAVerify times crypto/rsa's PKCS#1 v1.5 verification of a
// SHA-256 digest with the public half of the key in path: the one
// cryptographic operation of verifying an rsa-sha256 DKIM signature (the
// digest of the signed header is computed by the verifier beside it, a few
// hundred bytes: not counted). It runs for about d on one goroutine and
// reports this process's CPU time (user + system, so the GC is in) per
// verification, which bench/run.sh sets beside mxguard's extra CPU per
// signed message.
func measureRSAVerify(path string, d time.Duration) (rsaResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return rsaResult{}, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return rsaResult{}, fmt.Errorf("%s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return rsaResult{}, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := key.(*rsa.PrivateKey)
	if !ok {
		return rsaResult{}, fmt.Errorf("%s: %T is not an RSA key", path, key)
	}
	digest := sha256.Sum256([]byte("from:<load@bench.example>\r\nsubject:smtpload test message\r\n"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, digest[:])
	if err != nil {
		return rsaResult{}, err
	}
	pub := &priv.PublicKey
	verify := func() error { return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) }
	// Warm up: the first verifications set up the key's precomputed values.
	for range 50 {
		if err := verify(); err != nil {
			return rsaResult{}, err
		}
	}
	cpu0, err := cpuNow()
	if err != nil {
		return rsaResult{}, err
	}
	t0 := time.Now()
	n := 0
	for time.Since(t0) < d || n < 100 {
		for range 50 {
			if err := verify(); err != nil {
				return rsaResult{}, err
			}
		}
		n += 50
	}
	wall := time.Since(t0)
	cpu1, err := cpuNow()
	if err != nil {
		return rsaResult{}, err
	}
	return rsaResult{
		cpuMicros:  float64((cpu1 - cpu0).Microseconds()) / float64(n),
		wallMicros: float64(wall.Microseconds()) / float64(n),
		ops:        n,
		bits:       pub.N.BitLen(),
	}, nil
}

// cpuNow is this process's user+system CPU time so far.
func cpuNow() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, errors.New("getrusage: " + err.Error())
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
