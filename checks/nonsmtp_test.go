package checks

import (
	"context"
	"testing"
)

func TestNonSMTPCommand(t *testing.T) {
	cases := []struct {
		line   string
		refuse bool
	}{
		{"EHLO mail.example.org\r\n", false},
		{"helo mail.example.org\r\n", false},
		{"MAIL FROM:<a@example.org>\r\n", false},
		{"RCPT TO:<b@example.com>\r\n", false},
		{"DATA\r\n", false},
		{"QUIT\n", false},
		{"NOOP\r\n", false},
		{"XYZZY\r\n", false}, // unknown, but it could be SMTP: the parser says so
		{"\r\n", false},
		{"GET / HTTP/1.1\r\n", true},
		{"get /index.html HTTP/1.0\r\n", true},
		{"POST /cgi-bin/x HTTP/1.1\r\n", true},
		{"CONNECT 192.0.2.1:25 HTTP/1.0\r\n", true},
		{"HEAD / HTTP/1.1\r\n", true},
		{"USER alice\r\n", true},
		{"Host: mx.example.com\r\n", true},
		{"User-Agent: curl/8.0\r\n", true},
		{"Content-Type: text/plain\r\n", true},
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n", true}, // a TLS ClientHello, in the clear
		{"123 hello\r\n", true},
		{" EHLO x\r\n", true},
	}
	c := nonSMTP{}
	for _, tc := range cases {
		s := &Session{Line: []byte(tc.line), Lines: 1}
		rs := c.Run(context.Background(), AtCommand, s)
		if got := len(rs) > 0; got != tc.refuse {
			t.Errorf("%q: refused %v, want %v (%v)", tc.line, got, tc.refuse, rs)
		}
		for _, r := range rs {
			if r.Check != NonSMTPName || r.Outcome != "non_smtp" || r.Reason == "" || r.Evidence == "" {
				t.Errorf("%q: result %+v", tc.line, r)
			}
		}
	}
}

func FuzzNonSMTPCommand(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte("EHLO x\r\n"))
	f.Fuzz(func(t *testing.T, line []byte) {
		nonSMTPCommand(line)
	})
}
