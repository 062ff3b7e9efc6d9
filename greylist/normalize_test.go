package greylist

import "testing"

func TestNormalizeSender(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"alice@example.org", "alice@example.org"},
		{"Alice@Example.ORG", "alice@example.org"},
		{"<alice@example.org>", "alice@example.org"},
		{"", ""},
		{"<>", ""},
		{"postmaster", "postmaster"},
		// +extension
		{"alice+news@example.org", "alice@example.org"},
		{"alice+a+b@example.org", "alice@example.org"},
		// VERP: numbers standing alone become #
		{"bounce-12345@lists.example.org", "bounce-#@lists.example.org"},
		{"list-1234-5678@lists.example.org", "list-#-#@lists.example.org"},
		{"bounces.123.456@example.org", "bounces.#.#@example.org"},
		{"user2000@example.org", "user2000@example.org"}, // not standing alone
		{"2000@example.org", "#@example.org"},
		// BATV
		{"prvs=4123abcdef=alice@example.org", "alice@example.org"},
		{"PRVS=4123ABCDEF=Alice@Example.org", "alice@example.org"},
		{"prvs=alice=4123abcdef@example.org", "alice@example.org"},
		{"prvs=bounce-1234=4123abcdef@example.org", "bounce-#@example.org"},
		{"prvs=short=alice@example.org", "alice@example.org"}, // neither is a tag: the standard order
		{"prvs=alice@example.org", "prvs=alice@example.org"},
		// BATV and extension and VERP together
		{"prvs=0123456789=list+99@example.org", "list@example.org"},
		// the last @ splits
		{`"a@b"@example.org`, `"a@b"@example.org`},
	} {
		if got := NormalizeSender(tc.in); got != tc.want {
			t.Errorf("NormalizeSender(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
