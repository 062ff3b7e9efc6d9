package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
)

// SPF checks whether the client may send mail for the envelope sender's
// domain (RFC 7208), or for its HELO name when the sender is <>.
// blitiri.com.ar/go/spf evaluates the record with the RFC's limits
// (10 DNS-querying mechanisms, 2 void lookups), which mxguard keeps.
type SPF struct {
	// Resolver answers the DNS questions: mxguard's caching resolver,
	// whose *net.DNSError values the library needs to tell NXDOMAIN from
	// timeouts. Nil means net.DefaultResolver.
	Resolver spf.DNSResolver
	// Timeout bounds the whole evaluation (default 10s). RFC 7208 §4.6.4
	// asks for at least 20s, but a client waiting at MAIL FROM is better
	// served by a prompt temperror: it will retry.
	Timeout time.Duration
}

// SPFResult is the outcome of one SPF evaluation.
type SPFResult struct {
	// Result is the RFC 7208 §2.6 result: pass fail softfail neutral none
	// temperror permerror.
	Result string
	// Domain is the domain whose policy was evaluated.
	Domain string
	// Identity is "mailfrom" or, for the null sender, "helo".
	Identity string
	// Explanation says why the evaluation ended where it did: "matched
	// ip", "matched all", "lookup limit reached", the DNS error. It is
	// not the domain's exp= text, which is never fetched: RFC 7208 §6.2
	// makes it optional, it costs a DNS query, and text chosen by the
	// sender's domain has no place in our replies.
	Explanation string
	// The inputs, kept for the Authentication-Results and Received-SPF
	// header fields.
	Client netip.Addr
	HELO   string
	Sender string // as given at MAIL FROM; "" for <>
	// Check is the result for the rules: spf.<Result>.
	Check Result
}

// Check evaluates SPF for the envelope sender from the client ip, or for
// the HELO identity (postmaster@helo) when the sender is <>.
func (s *SPF) Check(ctx context.Context, ip netip.Addr, helo, sender string) SPFResult {
	ip = ip.Unmap()
	helo = strings.TrimSuffix(strings.TrimSpace(helo), ".")
	r := SPFResult{Identity: "mailfrom", Client: ip, HELO: helo, Sender: sender}

	// The identity the library gets: the sender, with "postmaster" as
	// local part when it has none (RFC 7208 §4.3), or postmaster@helo
	// (§2.4). The library splits at the first "@", so a quoted local part
	// holding one is replaced too; it only matters to %{l} macros.
	local, domain := "", ""
	if at := strings.LastIndexByte(sender, '@'); at >= 0 {
		local, domain = sender[:at], strings.ToLower(strings.TrimSuffix(sender[at+1:], "."))
	}
	who := sender
	if domain == "" {
		r.Identity, who = "helo", "HELO "+helo
		if outcome, _, _ := Classify(helo); outcome != "" || Literal(helo) {
			// RFC 7208 §2.3: only a domain name can have a policy.
			r.Result, r.Explanation = string(spf.None), "HELO is not a domain name"
			r.Check = r.result(who)
			return r
		}
		local, domain = "postmaster", strings.ToLower(helo)
	}
	if local == "" || strings.Contains(local, "@") {
		local = "postmaster"
	}
	r.Domain = domain
	if !ip.IsValid() {
		// A load balancer named no client: there is nothing to evaluate.
		r.Result, r.Explanation = string(spf.None), "the client's address is unknown"
		r.Check = r.result(who)
		return r
	}

	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rec := &spfRecorder{DNSResolver: s.Resolver}
	if rec.DNSResolver == nil {
		rec.DNSResolver = net.DefaultResolver
	}
	res, err := spf.CheckHostWithSender(net.IP(ip.AsSlice()), helo, local+"@"+domain,
		spf.WithResolver(rec), spf.WithContext(ctx))
	r.Result, r.Explanation = string(res), spfExplanation(res, err)
	r.Check = r.result(who)
	if len(rec.records) > 0 {
		r.Check.Evidence = domain + " TXT " + quoteAll(rec.records)
	}
	return r
}

func (r *SPFResult) result(who string) Result {
	return Result{
		Check:   SPFName,
		Outcome: "spf." + r.Result,
		Reason:  fmt.Sprintf("SPF %s for %s from %s: %s", r.Result, who, r.Client, r.Explanation),
	}
}

// spfExplanation turns the library's error, which it returns on success
// too, into words.
func spfExplanation(res spf.Result, err error) string {
	switch {
	case errors.Is(err, spf.ErrNoResult):
		return "no SPF record"
	case err == nil && res == spf.Neutral:
		return "no mechanism matched"
	case err == nil:
		return string(res)
	}
	return err.Error()
}

// spfRecorder passes questions on and notes the first one's SPF record
// (the sender domain's own: the library asks for it before anything
// else) as evidence. Errors go through untouched: the library inspects
// them with type assertions.
type spfRecorder struct {
	spf.DNSResolver
	asked   bool
	records []string
}

func (r *spfRecorder) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txts, err := r.DNSResolver.LookupTXT(ctx, name)
	if !r.asked {
		r.asked = true
		for _, t := range txts {
			if l := strings.ToLower(t); l == "v=spf1" || strings.HasPrefix(l, "v=spf1 ") {
				r.records = append(r.records, t)
			}
		}
	}
	return txts, err
}

// quoteAll quotes DNS strings for evidence: "a", "b".
func quoteAll(txts []string) string {
	q := make([]string, len(txts))
	for i, t := range txts {
		q[i] = fmt.Sprintf("%q", t)
	}
	return strings.Join(q, ", ")
}

// SPFName names the SPF check.
const SPFName Name = "spf"

// SPFKey holds a transaction's SPF result, for DMARC and the header fields.
var SPFKey = NewKey[*SPFResult]("spf", TxnScope)

// SPFSpec registers SPF, evaluated at MAIL FROM.
var SPFSpec = Spec{
	Name:   SPFName,
	Stages: []Stage{AtMail},
	Outcomes: []string{"spf.pass", "spf.fail", "spf.softfail", "spf.neutral", "spf.none", "spf.temperror",
		"spf.permerror"},
	New: func(env *Env) (Check, error) {
		if !env.Config.SPF.Enabled || env.Resolver == nil {
			return nil, nil
		}
		return &SPF{Resolver: env.Resolver, Timeout: env.Config.SPF.Timeout.D()}, nil
	},
}

// Run evaluates the transaction's sender (or HELO, for <>).
func (s *SPF) Run(ctx context.Context, _ Stage, sess *Session) []Result {
	r := s.Check(ctx, sess.Client.Addr(), sess.HELO, *sess.From)
	Put(sess, SPFKey, &r)
	return []Result{r.Check}
}
