package message

import (
	"slices"
	"strings"
	"testing"
)

func TestFromDomains(t *testing.T) {
	cases := []struct {
		header string // the header fields, without the empty line
		want   []string
	}{
		{"From: alice@example.org", []string{"example.org"}},
		{"From: Alice <alice@Example.ORG>", []string{"example.org"}},
		{`From: "Doe, John" <john@example.org>`, []string{"example.org"}},
		{"From: john@example.org (John Doe)", []string{"example.org"}},
		{"FROM:\r\n  Alice\r\n <alice@example.org>", []string{"example.org"}}, // folded
		{"From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>", []string{"example.de"}},
		{"From: =?windows-1252?q?J=FCrgen?= <j@example.de>", []string{"example.de"}}, // unknown charset
		{`From: "a@evil.example" <a@example.org>`, []string{"example.org"}},
		{`From: "quoted@local"@example.org`, []string{"example.org"}},
		{"From: a@[192.0.2.1]", []string{"[192.0.2.1]"}},
		{"From: Team: a@one.example, b@two.example;", []string{"one.example", "two.example"}}, // group
		{"From: a@one.example, b@two.example", []string{"one.example", "two.example"}},
		{"From: a@one.example\r\nFrom: b@two.example", []string{"one.example", "two.example"}},
		{"From: a@example.org, a@example.org", []string{"example.org", "example.org"}},

		// nothing usable
		{"Subject: no From", nil},
		{"From:", nil},
		{"From: undisclosed-recipients:;", nil}, // empty group
		{"From: alice", nil},
		{"From: <>", nil},
		{"From: alice@", nil},
		{"From: alice@example.org.", nil}, // net/mail: trailing dot in atom
		{"From: @example.org", nil},
		{"From: Alice <alice@example.org", nil},
		{"From: \x00\x01garbage<<@>>", nil},
		{"From: a@one.example\r\nFrom: garbage <", nil}, // one bad field spoils all
	}
	for _, c := range cases {
		h, _, err := ParseHeader(strings.NewReader(c.header + "\r\n\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := FromDomains(h)
		if !slices.Equal(got, c.want) {
			t.Errorf("%q: %q, want %q", c.header, got, c.want)
		}
		if (err == nil) != (c.want != nil) {
			t.Errorf("%q: error %v", c.header, err)
		}
	}
}

func TestAuthservID(t *testing.T) {
	cases := []struct{ value, want string }{
		{"mx.example.com; spf=pass", "mx.example.com"},
		{"mx.example.com;spf=pass", "mx.example.com"},
		{"mx.example.com 1; spf=pass", "mx.example.com"},
		{"  \tMX.Example.COM ; none", "MX.Example.COM"},
		{"(a comment) mx.example.com; none", "mx.example.com"},
		{"(nested (comment\\)) here) mx.example.com; none", "mx.example.com"},
		{`"mx.example.com"; none`, "mx.example.com"},
		{`"mx.ex\"ample.com"; none`, `mx.ex"ample.com`},
		{"mx.example.com(comment); none", "mx.example.com"},
		{"mx.example.com", "mx.example.com"},
		{"", ""},
		{"(unclosed comment mx.example.com; none", ""},
		{"; spf=pass", ""},
	}
	for _, c := range cases {
		if got := AuthservID(c.value); got != c.want {
			t.Errorf("AuthservID(%q) = %q, want %q", c.value, got, c.want)
		}
	}
}
