package dnsbl

import (
	"encoding/binary"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// Hostile input: whatever a dnsbl.sites entry says, ParseSite does not
// panic; an error quotes the entry (the config layer adds only where it came
// from); a parsed site has a usable domain, prints (String) as an entry that
// parses back to the same site, and matches the same answers.
//
//	go test -run XXX -fuzz FuzzParseSite -fuzztime 60s ./dnsbl
func FuzzParseSite(f *testing.F) {
	for _, s := range []string{
		"bl.example", "b.barracudacentral.org*2", "zen.spamhaus.org=127.0.0.[2..11]*3",
		"list.dnswl.org=127.0.[0..255].[1..3]*-5", "bl.mailspike.net=127.0.0.[2;10..14]*2",
		"ZEN.Spamhaus.ORG.*1", "  bl.example*+2 ", "bl.example=127.0.0.[007..9]", "bl.example=[127].[0..0].0.[2;2]",
		"key_123.zen.dq.spamhaus.net=127.0.0.[2..11]", "bl.example=127.0.0.2;3", "bl.example*-0",
		"", "=127.0.0.2", "*2", "bl.example*", "bl.example*2*3", "bl..example", "bl.example=127.0.0.[2..300]",
		"bl.example=127.0.0.[2..", "bl.example=127.0.0.[]", "bl.example=127.0.0.[11..2]", "bl.example=127.0.0.[2]x",
		"bl.example=127.0.0.1..3", "bl.example*99999999999999999999", "bl.example\x00=127.0.0.2",
	} {
		f.Add(s, uint32(0x7f000002))
	}
	f.Fuzz(func(t *testing.T, entry string, ip uint32) {
		s, err := ParseSite(entry)
		if err != nil {
			in := strings.TrimSpace(entry)
			if msg := err.Error(); !strings.Contains(msg, in) && !strings.Contains(msg, strconv.Quote(in)) {
				t.Fatalf("ParseSite(%q): error %q does not quote the entry", entry, msg)
			}
			return
		}
		d := s.Domain
		if d == "" || d != strings.ToLower(d) || strings.HasSuffix(d, ".") || domainSyntax(d) != "" {
			t.Fatalf("ParseSite(%q): domain %q", entry, d)
		}
		if strings.Trim(d, "abcdefghijklmnopqrstuvwxyz0123456789-_.") != "" {
			t.Fatalf("ParseSite(%q): domain %q has characters a DNS query cannot carry", entry, d)
		}
		if s.filter != nil && len(s.filter) != 4 {
			t.Fatalf("ParseSite(%q): %d octets in the filter", entry, len(s.filter))
		}
		printed := s.String()
		again, err := ParseSite(printed)
		if err != nil {
			t.Fatalf("ParseSite(%q).String() = %q does not parse: %v", entry, printed, err)
		}
		if !reflect.DeepEqual(again, s) || again.String() != printed {
			t.Fatalf("ParseSite(%q) = %#v prints as %q, which parses to %#v", entry, s, printed, again)
		}
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], ip)
		a := netip.AddrFrom4(b)
		if s.Match(a) != again.Match(a) {
			t.Fatalf("%q and %q disagree on %s", entry, printed, a)
		}
		if s.HasFilter() && s.Match(netip.AddrFrom16([16]byte{15: 1})) {
			t.Fatalf("%q: a filter matched an IPv6 answer", entry)
		}
	})
}
