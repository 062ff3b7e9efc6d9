package backend

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
)

// BenchmarkTransaction: MAIL + RCPT + DATA of 1 KiB against the fake over
// loopback, on one connection (what a lockstep relay does per message).
// Allocations include the fake's, which allocates nothing per command.
func BenchmarkTransaction(b *testing.B) {
	f := newFake(b, fakeConfig{NoRecord: true})
	c, err := Dial(context.Background(), Options{Addr: f.addr(), Method: MethodXCLIENT, LocalName: "mx.test"}, testID)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	line := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n" // 76 bytes
	msg := []byte(strings.Repeat(line, 13) + strings.Repeat("x", 1024-13*len(line)-2) + "\r\n")
	if len(msg) != 1024 {
		b.Fatalf("message is %d bytes", len(msg))
	}
	rd := bytes.NewReader(msg)
	ctx := context.Background()
	p := MailParams{Size: 1024, Body: "8BITMIME"}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Mail("sender@example.org", p); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Rcpt("rcpt@example.org", RcptParams{}); err != nil {
			b.Fatal(err)
		}
		rd.Reset(msg)
		if _, err := c.Data(ctx, rd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDotWriter: the DATA encoder alone, on a 1 MiB message of typical
// lines (no socket).
func BenchmarkDotWriter(b *testing.B) {
	msg := []byte(strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n", 14000))
	var sink bytes.Buffer
	sink.Grow(2 * len(msg))
	c := &Conn{}
	c.bw = newBufWriter(&sink)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		sink.Reset()
		d := dotWriter{w: c.bw, bol: true}
		for p := msg; len(p) > 0; p = p[min(len(p), 32<<10):] {
			d.write(p[:min(len(p), 32<<10)])
		}
		d.close()
		c.bw.Flush()
	}
}

// BenchmarkLoopbackFloor: four bare request/reply round trips over loopback,
// the same count as a MAIL+RCPT+DATA+dot transaction, with no SMTP work: the
// floor BenchmarkTransaction cannot go below on this machine.
func BenchmarkLoopbackFloor(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			if _, err := c.Write([]byte("250 ok\r\n")); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4096)
	req := []byte("NOOP\r\n")
	b.ReportAllocs()
	for b.Loop() {
		for range 4 {
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			if _, err := c.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkDataLarge: one DATA of 1 MiB of typical lines over loopback.
func BenchmarkDataLarge(b *testing.B) {
	f := newFake(b, fakeConfig{NoRecord: true})
	c, err := Dial(context.Background(), Options{Addr: f.addr(), LocalName: "mx.test"}, testID)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := []byte(strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n", 1<<20/76))
	rd := bytes.NewReader(msg)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(msg)
		if _, err := c.Data(context.Background(), rd); err != nil {
			b.Fatal(err)
		}
	}
}
