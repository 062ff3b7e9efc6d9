package pipeline

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/message"
)

// BenchmarkDataHeaders: the DATA stage without DNS — header parsing, forged
// field removal, our Authentication-Results and score fields, and reading
// the message back with them prepended (what the backend is sent).
func BenchmarkDataHeaders(b *testing.B) {
	p := newPipeline(&testing.T{}, "")
	msg := "Authentication-Results: mx.example.com; dkim=pass\r\nFrom: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: hello\r\nMessage-ID: <1@example.org>\r\n\r\n" + strings.Repeat("body line of a one-kilobyte message....\r\n", 22)
	ctx := context.Background()
	buf := make([]byte, 32<<10) // as the backend client reads: into its own buffer
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		s := p.NewSession("b", client, nil)
		s.Mail(ctx, "alice@example.org")
		s.Rcpt(ctx, "bob@example.com")
		sp := message.NewSpool(1<<20, "")
		sp.ReadFrom(strings.NewReader(msg))
		_, prep := s.Data(ctx, sp)
		io.CopyBuffer(io.Discard, struct{ io.Reader }{prep.Reader(sp, []byte("Received: from x\r\n"))}, buf)
		sp.Close()
	}
}
