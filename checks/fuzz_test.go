package checks

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

// Hostile input: whatever a client says in HELO, Classify and Check must
// not panic, and what they call valid must really be a host name or an
// address literal — the proxy puts a valid name in headers and DNS queries.
//
//	go test -run XXX -fuzz FuzzClassify -fuzztime 60s ./checks
func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		"mail.example.com", "MAIL.Example.COM.", " mail.example.com ", "a.b", "xn--bcher-kva.example",
		"[192.0.2.1]", "[IPv6:2001:db8::1]", "[ipv6:::ffff:192.0.2.1]", "[IPv6:fe80::1%eth0]", "[01.2.3.4]",
		"", "   ", "mail", "localhost", "LOCALHOST.", "192.0.2.1", "IPv6:2001:db8::1", "ipv6:::1",
		"mail_server.example.com", "-mail.example.com", "mail..example.com", "1.2.3.4.5", "bücher.example",
		"mail.ex\x00ample.com", "mail.example.com\r\nX-Injected: 1", "evil\rX: y", "a.b\t", "\u00a0mail.example.com",
		strings.Repeat("a", 63) + ".example.com", strings.Repeat("abcdefghi.", 25) + "com",
		"[", "[]", "[192.0.2.1", "[IPv6:]", "[x:1.2.3.4]",
	} {
		f.Add(s)
	}
	outcomes := map[string]bool{"": true, "helo.empty": true, "helo.bare_ip": true, "helo.localhost": true,
		"helo.bad_syntax": true, "helo.no_dot": true, "helo.bad_literal": true}
	checker := &HELO{
		Hostname:     "mx.example.com",
		LocalDomains: map[string]bool{"example.com": true},
		OwnIPs:       map[netip.Addr]bool{netip.MustParseAddr("198.51.100.25"): true},
	}
	f.Fuzz(func(t *testing.T, helo string) {
		outcome, reason, addr := Classify(helo)
		if !outcomes[outcome] {
			t.Fatalf("Classify(%q): unknown outcome %q", helo, outcome)
		}
		if (outcome == "") != (reason == "") {
			t.Fatalf("Classify(%q) = %q with reason %q", helo, outcome, reason)
		}
		h := strings.TrimSpace(helo)
		if outcome == "" {
			validHELO(t, h, addr)
			// Validity does not depend on letter case (ASCII only: Unicode
			// case mapping can turn non-ASCII into ASCII, "ſ" into "S").
			if isASCII(h) {
				if o, _, _ := Classify(asciiUpper(h)); o != "" {
					t.Fatalf("Classify(%q) is valid but its upper case is %s", h, o)
				}
			}
			if !Literal(h) && !strings.HasSuffix(h, ".") {
				if o, _, _ := Classify(h + "."); o != "" {
					t.Fatalf("Classify(%q) is valid but with the root dot it is %s", h, o)
				}
			}
		} else if addr.IsValid() && outcome != "helo.bare_ip" {
			t.Fatalf("Classify(%q) = %s but returned an address %s", helo, outcome, addr)
		}

		// The full check, without DNS: a pass only for a valid name.
		client := netip.MustParseAddr("192.0.2.10")
		r := checker.Check(context.Background(), helo, client)
		if r.Check != "helo" || r.Outcome == "" || r.Reason == "" {
			t.Fatalf("Check(%q) = %+v", helo, r)
		}
		if outcome != "" && r.Outcome != outcome {
			t.Fatalf("Check(%q) = %s, Classify said %s", helo, r.Outcome, outcome)
		}
		if r.Pass() && outcome != "" {
			t.Fatalf("Check(%q) passes an invalid HELO (%s)", helo, outcome)
		}
	})
}

// validHELO asserts what the proxy relies on for a HELO Classify accepts:
// printable ASCII only, at most 255 bytes, a well-formed literal or name.
func validHELO(t *testing.T, h string, addr netip.Addr) {
	t.Helper()
	if len(h) > 255 {
		t.Fatalf("valid HELO of %d bytes", len(h))
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c >= 0x7f {
			t.Fatalf("valid HELO %q holds byte %#x", h, c)
		}
	}
	if Literal(h) {
		if !addr.IsValid() || !strings.HasSuffix(h, "]") || addr.Zone() != "" || addr.Is4In6() {
			t.Fatalf("valid literal %q gave address %v", h, addr)
		}
		// The literal written back the standard way means the same.
		std := "[" + addr.String() + "]"
		if addr.Is6() {
			std = "[IPv6:" + addr.String() + "]"
		}
		if o, _, a := Classify(std); o != "" || a != addr {
			t.Fatalf("literal %q: its standard form %q gives %q %v", h, std, o, a)
		}
		return
	}
	if addr.IsValid() {
		t.Fatalf("valid name %q came with an address %v", h, addr)
	}
	name := strings.ToLower(strings.TrimSuffix(h, "."))
	switch name {
	case "localhost.localdomain", "localhost6.localdomain6":
		t.Fatalf("valid name %q is the local machine", h)
	}
	if len(name) > 253 || !strings.Contains(name, ".") {
		t.Fatalf("valid name %q: too long or not fully qualified", h)
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			t.Fatalf("valid name %q has label %q", h, l)
		}
		if strings.Trim(l, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			t.Fatalf("valid name %q has label %q with a bad character", h, l)
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		t.Fatalf("valid name %q has an all-numeric top-level domain", h)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		t.Fatalf("valid name %q is an IP address", h)
	}
}

// The sender's domain, as the spoofing check and the domain lists see it,
// and the spoofing check itself: whatever the address, no panic; for an
// address in one of our domains, however it is written (case, the root
// dot, an odd local part), the spoof is seen.
//
//	go test -run XXX -fuzz FuzzSpoofDomain -fuzztime 60s ./checks
func FuzzSpoofDomain(f *testing.F) {
	for _, s := range [][2]string{
		{"alice", "example.com"},
		{"Alice", "EXAMPLE.com."},
		{"\"a@b\"", "example.com"},
		{"\"x\r\n@y\"", "example.com"},
		{"", ""},
		{"postmaster", "sub.example.com"},
		{"a", "example.com.."},
		{"a@b@c", "example.org"},
		{"josé", "exämple.com"},
		{"a", "\u212aelvin.example"}, // Kelvin sign: lower-cases to ASCII k
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, local, domain string) {
		addr := local + "@" + domain
		d := Domain(addr)
		if strings.Contains(d, "@") {
			t.Fatalf("Domain(%q) = %q holds an @", addr, d)
		}
		if d != strings.ToLower(d) {
			t.Fatalf("Domain(%q) = %q is not lower case", addr, d)
		}
		if !strings.Contains(domain, "@") && Domain("x@"+domain) != d {
			t.Fatalf("Domain(%q) = %q depends on the local part", addr, d)
		}
		if Domain(local) != "" && !strings.Contains(local, "@") {
			t.Fatalf("Domain(%q) without an @ is %q", local, Domain(local))
		}

		// Spoofing is seen for exactly the domain Domain returns.
		if d != "" {
			s := &Spoof{LocalDomains: map[string]bool{d: true}}
			r, spoof := s.Check(addr)
			if !spoof || r.Check != "sender" || r.Outcome != "sender.spoofs_local" || !strings.Contains(r.Reason, "<"+addr+">") {
				t.Fatalf("Spoof(%q) with local domain %q = %v %+v", addr, d, spoof, r)
			}
		}
		other := &Spoof{LocalDomains: map[string]bool{d + "x": true}}
		if _, spoof := other.Check(addr); spoof {
			t.Fatalf("Spoof(%q) matched domain %q", addr, d+"x")
		}

		// For a real domain of ours (a valid host name), every way of
		// writing it is one of ours.
		if strings.Contains(domain, "@") || domain == "" {
			return
		}
		if o, _, a := Classify(domain); o != "" || a.IsValid() || strings.HasSuffix(domain, ".") {
			return
		}
		s := &Spoof{LocalDomains: map[string]bool{strings.ToLower(domain): true}}
		for _, v := range []string{domain, domain + ".", asciiUpper(domain), strings.ToLower(domain)} {
			if _, spoof := s.Check(local + "@" + v); !spoof {
				t.Fatalf("Spoof(%q) is not seen for local domain %q", local+"@"+v, strings.ToLower(domain))
			}
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
