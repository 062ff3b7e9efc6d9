package checks

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testsrv"

	"github.com/miekg/dns"
	"github.com/mxguard/mxguard/resolver"
	"github.com/mxguard/mxguard/zonedns"
)

const heloZone = `
$TTL 300
$ORIGIN helo.test.
@       SOA ns.helo.test. h.helo.test. 1 3600 600 86400 60
mail    A    192.0.2.10
mail    AAAA 2001:db8::10
multi   A    192.0.2.1
multi   A    192.0.2.10
other   A    198.51.100.1
v4only  A    192.0.2.10
alias   CNAME mail
broken  A    192.0.2.10
slow    A    192.0.2.10
`

func TestHELOForwardDNS(t *testing.T) {
	srv := testsrv.DNS(t, heloZone)
	srv.SetFault("broken.helo.test", zonedns.Fault{Rcode: dns.RcodeServerFailure})
	srv.SetFault("slow.helo.test", zonedns.Fault{Drop: true})
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 200 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := &HELO{Hostname: "mx.example.com", Resolver: res, DNSTimeout: time.Second}
	v4 := netip.MustParseAddr("192.0.2.10")
	v6 := netip.MustParseAddr("2001:db8::10")
	cases := []struct {
		helo   string
		client netip.Addr
		want   string
	}{
		{"mail.helo.test", v4, "helo.pass"},
		{"MAIL.helo.test.", v4, "helo.pass"},
		{"mail.helo.test", v6, "helo.pass"},
		{"multi.helo.test", v4, "helo.pass"},
		{"alias.helo.test", v4, "helo.pass"},
		{"other.helo.test", v4, "helo.forward_mismatch"},
		{"mail.helo.test", netip.MustParseAddr("192.0.2.11"), "helo.forward_mismatch"},
		{"v4only.helo.test", v6, "helo.unresolvable"}, // NODATA for AAAA
		{"nx.helo.test", v4, "helo.unresolvable"},     // NXDOMAIN
		{"broken.helo.test", v4, "helo.dns_temp"},     // SERVFAIL
		{"slow.helo.test", v4, "helo.dns_temp"},       // timeout
	}
	for _, c := range cases {
		start := time.Now()
		r := h.Check(context.Background(), c.helo, c.client)
		if r.Outcome != c.want {
			t.Errorf("%s from %s: %s (%s; %s), want %s", c.helo, c.client, r.Outcome, r.Reason, r.Evidence, c.want)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s took %v", c.helo, d)
		}
	}
	if r := h.Check(context.Background(), "other.helo.test", v4); r.Evidence != "A 198.51.100.1" {
		t.Errorf("mismatch evidence %q", r.Evidence)
	}
}
