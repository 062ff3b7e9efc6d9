package resolver

import (
	"context"
	"net"
	"testing"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dmarc"
	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/zonedns"
)

// The libraries mxguard feeds this resolver to. (dkim.VerifyOptions
// takes the same func type as dmarc; importing dkim here would need
// golang.org/x/crypto, which go.mod does not list yet.)
var (
	_ spf.DNSResolver = (*Resolver)(nil)
	_                 = dmarc.LookupOptions{LookupTXT: (*Resolver)(nil).LookupTXTFunc(context.Background())}
)

const authZone = `
$ORIGIN auth.test.
$TTL 300
@          IN SOA ns hm 1 3600 600 86400 60
pass       IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
viaa       IN TXT "v=spf1 a:host.auth.test -all"
viamx      IN TXT "v=spf1 mx -all"
viamx      IN MX  10 host
host       IN A   192.0.2.10
voids      IN TXT "v=spf1 a:v1.auth.test a:v2.auth.test a:v3.auth.test -all"
broken     IN TXT "v=spf1 -all"
_dmarc     IN TXT "v=DMARC1; p=reject"
_dmarc.broken IN TXT "v=DMARC1; p=none"
`

// SPF and DMARC tell "no record", "temporary failure" and "permanent
// failure" apart only by the *net.DNSError flags.
func TestConsumers(t *testing.T) {
	r, fx, _ := setup(t, authZone, Config{})
	fx.SetFault("broken.auth.test", zonedns.Fault{Rcode: dns.RcodeServerFailure})
	fx.SetFault("_dmarc.broken.auth.test", zonedns.Fault{Rcode: dns.RcodeServerFailure})
	ip := net.ParseIP("192.0.2.10")

	for _, c := range []struct {
		domain string
		want   spf.Result
	}{
		{"pass.auth.test", spf.Pass},
		{"viaa.auth.test", spf.Pass},
		{"viamx.auth.test", spf.Pass},
		{"host.auth.test", spf.None},    // NODATA
		{"missing.auth.test", spf.None}, // NXDOMAIN
		{"voids.auth.test", spf.PermError},
		{"broken.auth.test", spf.TempError},
	} {
		got, err := spf.CheckHostWithSender(ip, "helo.test", "someone@"+c.domain,
			spf.WithResolver(r), spf.WithContext(t.Context()))
		if got != c.want {
			t.Errorf("SPF %s = %s (%v), want %s", c.domain, got, err, c.want)
		}
	}

	opts := &dmarc.LookupOptions{LookupTXT: r.LookupTXTFunc(t.Context())}
	if rec, err := dmarc.LookupWithOptions("auth.test", opts); err != nil || rec.Policy != dmarc.PolicyReject {
		t.Errorf("DMARC auth.test = %+v, %v", rec, err)
	}
	if _, err := dmarc.LookupWithOptions("missing.auth.test", opts); err != dmarc.ErrNoPolicy {
		t.Errorf("DMARC missing: %v, want ErrNoPolicy", err)
	}
	if _, err := dmarc.LookupWithOptions("broken.auth.test", opts); !dmarc.IsTempFail(err) {
		t.Errorf("DMARC broken: %v, want a temporary failure", err)
	}
}
