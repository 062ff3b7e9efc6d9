package admin

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testsrv"
)

// fakeSMTP answers each connection with greeting and records whether
// QUIT came.
func fakeSMTP(t *testing.T, greeting string) (string, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if greeting != "" {
			c.Write([]byte(greeting))
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		got <- line
		c.Write([]byte("221 bye\r\n"))
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), got
}

func TestProbeSMTP(t *testing.T) {
	tests := []struct {
		name, greeting, err string
		quit                bool
	}{
		{"220", "220 mx.example ESMTP\r\n", "", true},
		{"multi-line 220", "220-mx.example ESMTP\r\n220 ready\r\n", "", true},
		{"554", "554 5.3.2 go away\r\n", "greeted with 554", false},
		{"garbage", "hello\r\n", "no greeting", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, got := fakeSMTP(t, tt.greeting)
			err := ProbeSMTP(context.Background(), addr)
			if (tt.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.err) {
				t.Errorf("err %v, want %q", err, tt.err)
			}
			if tt.quit {
				if line := <-got; line != "QUIT\r\n" {
					t.Errorf("sent %q, want QUIT", line)
				}
			}
		})
	}
}

func TestProbeSMTPSilent(t *testing.T) {
	addr, _ := fakeSMTP(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := ProbeSMTP(ctx, addr); err == nil || time.Since(start) > 3*time.Second {
		t.Errorf("a silent server: %v after %v", err, time.Since(start))
	}
}

func TestProbeSMTPRefused(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	if err := ProbeSMTP(context.Background(), addr); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("nothing listening: %v", err)
	}
}

// TestProbeMailsink: against the in-process backend the other tests use.
func TestProbeMailsink(t *testing.T) {
	s := testsrv.Sink(t, nil)
	if err := ProbeSMTP(context.Background(), s.Addr()); err != nil {
		t.Error(err)
	}
}
