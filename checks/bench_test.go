package checks

import (
	"context"
	"net/netip"
	"testing"
)

// BenchmarkClassify: HELO syntax classification, per HELO.
func BenchmarkClassify(b *testing.B) {
	helos := []string{"mail.example.com", "[192.0.2.1]", "localhost", "192.0.2.1", "bad_name.example", "xn--bcher-kva.example"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		Classify(helos[i%len(helos)])
		i++
	}
}

// BenchmarkHELOCheck: the whole HELO check without DNS (literal and name).
func BenchmarkHELOCheck(b *testing.B) {
	h := &HELO{Hostname: "mx.example.com", LocalDomains: map[string]bool{"example.com": true}}
	client := netip.MustParseAddr("192.0.2.1")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		h.Check(ctx, "[192.0.2.1]", client)
	}
}
