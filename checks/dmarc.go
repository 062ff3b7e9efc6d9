package checks

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"

	"github.com/mxguard/mxguard/message"
)

// DMARC applies the From domain's DMARC policy (RFC 7489) to the SPF and
// DKIM results of a message. go-msgauth parses the record; policy
// discovery (with the organizational-domain fallback) and alignment are
// done here.
type DMARC struct {
	// Resolver fetches the _dmarc records: mxguard's caching resolver.
	// Nil means net.DefaultResolver.
	Resolver TXTResolver
	// Timeout bounds the policy look-ups (default 10s).
	Timeout time.Duration
	// Rand returns a number in 0..99 to sample messages for pct=. Nil
	// means math/rand/v2; tests inject their own.
	Rand func() int
}

// DMARCResult is the DMARC verdict on a message.
type DMARCResult struct {
	// Result is pass, fail, none, temperror or permerror (RFC 8601
	// §2.7.1). A From field DMARC cannot work with (no address, or more
	// than one) is none: no aligned identifier could be extracted.
	Result string
	// Policy is what the domain asks for a failing message, after sp=
	// and pct=: none, quarantine or reject; "" without a policy.
	Policy string
	// Domain is the RFC 5322.From domain.
	Domain string
	// PolicyDomain is where the record was found: Domain, or its
	// organizational domain.
	PolicyDomain string
	// Check is the result for the rules: dmarc.pass, dmarc.none,
	// dmarc.reject, dmarc.quarantine, dmarc.fail_none (failed under
	// p=none: log only), dmarc.temperror, dmarc.permerror or
	// dmarc.bad_from.
	Check Result
}

// Check evaluates DMARC for a message whose From field holds the
// addresses with domains fromDomains, given its SPF result and its DKIM
// signatures.
func (d *DMARC) Check(ctx context.Context, fromDomains []string, spf SPFResult, sigs []DKIMSignature) DMARCResult {
	if len(fromDomains) != 1 {
		// RFC 7489 §6.6.1: a From field that does not name exactly one
		// author has no single domain to align with; such mail may be
		// rejected, and it is how a forger would slip past DMARC.
		why := "the message has no usable From address (missing or unparsable)"
		if len(fromDomains) > 1 {
			why = fmt.Sprintf("the From field has %d addresses (%s)", len(fromDomains), strings.Join(fromDomains, ", "))
		}
		return DMARCResult{Result: "none", Check: Result{Check: DMARCName, Outcome: "dmarc.bad_from",
			Reason: "DMARC cannot be applied: " + why + "; RFC 7489 §6.6.1 allows rejecting such mail"}}
	}
	from := normDomain(fromDomains[0])
	r := DMARCResult{Domain: from}
	res := func(result, outcome, reason, evidence string) DMARCResult {
		r.Result = result
		r.Check = Result{Check: DMARCName, Outcome: outcome, Reason: reason, Evidence: evidence}
		return r
	}
	if from == "" {
		return res("none", "dmarc.bad_from", "DMARC cannot be applied: the From address has no domain", "")
	}

	ctx, cancel, resolver := txtLookups(ctx, d.Timeout, d.Resolver)
	defer cancel()

	// Policy discovery, RFC 7489 §6.6.3: the From domain, then its
	// organizational domain.
	txt, err := lookupDMARC(ctx, resolver, from)
	r.PolicyDomain = from
	if org := orgDomain(from); txt == "" && err == nil && org != from {
		txt, err = lookupDMARC(ctx, resolver, org)
		r.PolicyDomain = org
	}
	where := "_dmarc." + r.PolicyDomain
	switch {
	case err != nil && err.temp:
		return res("temperror", "dmarc.temperror", fmt.Sprintf("DMARC policy for %s could not be fetched now", from), err.Error())
	case err != nil:
		return res("permerror", "dmarc.permerror", fmt.Sprintf("DMARC policy for %s at %s is unusable: %s", from, where, err.msg), err.Error())
	case txt == "":
		r.PolicyDomain = ""
		return res("none", "dmarc.none", fmt.Sprintf("%s publishes no DMARC policy", from), "")
	}
	rec, perr := dmarc.Parse(txt)
	if perr != nil {
		return res("permerror", "dmarc.permerror", fmt.Sprintf("DMARC policy for %s at %s is unusable: %v", from, where, perr), fmt.Sprintf("%s TXT %q", where, txt))
	}
	evidence := fmt.Sprintf("%s TXT %q", where, txt)

	policy, tag := rec.Policy, "p"
	if r.PolicyDomain != from && rec.SubdomainPolicy != "" {
		policy, tag = rec.SubdomainPolicy, "sp"
	}
	r.Policy = string(policy)
	modes := fmt.Sprintf("%s=%s from %s, aspf=%s adkim=%s", tag, policy, where, rec.SPFAlignment, rec.DKIMAlignment)

	// Identifier alignment, RFC 7489 §3.1: an SPF pass for an aligned
	// MAIL FROM (or HELO, for <>) domain, or a valid aligned signature.
	if spf.Result == "pass" && aligned(spf.Domain, from, rec.SPFAlignment) {
		return res("pass", "dmarc.pass", fmt.Sprintf("DMARC pass for %s (%s): SPF pass for %s, aligned (%s)",
			from, modes, spf.Domain, modeName(rec.SPFAlignment)), evidence)
	}
	for _, s := range sigs {
		if s.Result == "pass" && aligned(s.Domain, from, rec.DKIMAlignment) {
			return res("pass", "dmarc.pass", fmt.Sprintf("DMARC pass for %s (%s): DKIM signature d=%s s=%s, aligned (%s)",
				from, modes, s.Domain, s.Selector, modeName(rec.DKIMAlignment)), evidence)
		}
	}

	// No pass. Had an aligned identifier only a temporary error, a later
	// try may pass: failing now would reject good mail over a DNS hiccup.
	details := dmarcDetails(from, rec, spf, sigs)
	if spf.Result == "temperror" && aligned(spf.Domain, from, rec.SPFAlignment) {
		return res("temperror", "dmarc.temperror", fmt.Sprintf("DMARC for %s (%s) undecided: SPF for %s had a temporary error; %s", from, modes, spf.Domain, details), evidence)
	}
	for _, s := range sigs {
		if s.Result == "temperror" && aligned(s.Domain, from, rec.DKIMAlignment) {
			return res("temperror", "dmarc.temperror", fmt.Sprintf("DMARC for %s (%s) undecided: DKIM d=%s s=%s had a temporary error; %s", from, modes, s.Domain, s.Selector, details), evidence)
		}
	}

	// pct= (RFC 7489 §6.6.4): a message left out of the sample gets the
	// next milder policy.
	note := ""
	if rec.Percent != nil && *rec.Percent < 100 {
		rnd := d.Rand
		if rnd == nil {
			rnd = func() int { return rand.IntN(100) }
		}
		if rnd() >= *rec.Percent {
			milder := map[dmarc.Policy]dmarc.Policy{dmarc.PolicyReject: dmarc.PolicyQuarantine, dmarc.PolicyQuarantine: dmarc.PolicyNone}
			if m, ok := milder[policy]; ok {
				note = fmt.Sprintf("; not in the pct=%d sample: %s applied as %s", *rec.Percent, policy, m)
				policy = m
			}
		}
	}
	r.Policy = string(policy)
	outcome := map[dmarc.Policy]string{dmarc.PolicyReject: "dmarc.reject", dmarc.PolicyQuarantine: "dmarc.quarantine"}[policy]
	if outcome == "" {
		outcome = "dmarc.fail_none"
	}
	return res("fail", outcome, fmt.Sprintf("DMARC fail for %s (%s): %s%s", from, modes, details, note), evidence)
}

// dmarcDetails says why nothing aligned.
func dmarcDetails(from string, rec *dmarc.Record, spf SPFResult, sigs []DKIMSignature) string {
	var parts []string
	switch {
	case spf.Result == "":
		parts = append(parts, "no SPF result")
	case spf.Domain == "":
		parts = append(parts, "SPF "+spf.Result)
	case spf.Result == "pass":
		parts = append(parts, fmt.Sprintf("SPF pass for %s, not aligned (%s)", spf.Domain, modeName(rec.SPFAlignment)))
	default:
		parts = append(parts, fmt.Sprintf("SPF %s for %s", spf.Result, spf.Domain))
	}
	if len(sigs) == 0 {
		parts = append(parts, "no DKIM signature")
	}
	for _, s := range sigs {
		p := fmt.Sprintf("DKIM d=%s s=%s %s", s.Domain, s.Selector, s.Result)
		if s.Result == "pass" {
			p += fmt.Sprintf(", not aligned (%s)", modeName(rec.DKIMAlignment))
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

func modeName(m dmarc.AlignmentMode) string {
	if m == dmarc.AlignmentStrict {
		return "strict"
	}
	return "relaxed"
}

// aligned compares an authenticated domain with the From domain: equal
// in strict mode, the same organizational domain in relaxed mode (RFC
// 7489 §3.1.1, §3.1.2).
func aligned(domain, from string, mode dmarc.AlignmentMode) bool {
	domain = normDomain(domain)
	switch {
	case domain == "":
		return false
	case domain == from:
		return true
	case mode == dmarc.AlignmentStrict:
		return false
	}
	return orgDomain(domain) == orgDomain(from)
}

// orgDomain is the organizational domain (RFC 7489 §3.2): the public
// suffix plus one label. A name that is itself a public suffix is its own.
func orgDomain(domain string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(domain)
	if err != nil {
		return domain
	}
	return org
}

func normDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
}

type dmarcError struct {
	temp     bool
	msg, err string
}

func (e *dmarcError) Error() string { return e.err }

// lookupDMARC returns the DMARC record at _dmarc.domain, "" when there is
// none. Several records are a permanent error: RFC 7489 §6.6.3 then
// applies no policy, and permerror says so while telling why.
func lookupDMARC(ctx context.Context, r TXTResolver, domain string) (string, *dmarcError) {
	name := "_dmarc." + domain
	txts, err := r.LookupTXT(ctx, name)
	if err != nil {
		if de, ok := err.(*net.DNSError); ok && de.IsNotFound {
			return "", nil
		}
		return "", &dmarcError{temp: true, err: err.Error()}
	}
	var recs []string
	for _, t := range txts {
		first, _, _ := strings.Cut(t, ";")
		if k, v, ok := strings.Cut(first, "="); ok && strings.TrimSpace(k) == "v" && strings.TrimSpace(v) == "DMARC1" {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return "", nil
	case 1:
		return recs[0], nil
	}
	return "", &dmarcError{msg: fmt.Sprintf("%d DMARC records", len(recs)), err: name + " TXT " + quoteAll(recs)}
}

// DMARCName names the DMARC check.
const DMARCName Name = "dmarc"

// DMARCKey holds a message's DMARC result, for the header.
var DMARCKey = NewKey[*DMARCResult]("dmarc", TxnScope)

// DMARCSpec registers DMARC: it runs after SPF and DKIM, on their results.
var DMARCSpec = Spec{
	Name:   DMARCName,
	Stages: []Stage{AtData},
	Outcomes: []string{"dmarc.pass", "dmarc.reject", "dmarc.quarantine", "dmarc.fail_none", "dmarc.none",
		"dmarc.temperror", "dmarc.permerror", "dmarc.bad_from"},
	New: func(env *Env) (Check, error) {
		if !env.Config.DMARC.Enabled || env.Resolver == nil {
			return nil, nil
		}
		return &DMARC{Resolver: env.Resolver, Timeout: env.Config.DMARC.Timeout.D()}, nil
	},
}

// Run applies the From domain's policy to the SPF and DKIM results; it
// needs SPF's (DMARC is nothing without it).
func (d *DMARC) Run(ctx context.Context, _ Stage, s *Session) []Result {
	spf, ok := Get(s, SPFKey)
	if !ok || s.Header == nil {
		return nil
	}
	sigs, _ := Get(s, DKIMKey)
	froms, _ := message.FromDomains(s.Header)
	r := d.Check(ctx, froms, *spf, sigs)
	Put(s, DMARCKey, &r)
	return []Result{r.Check}
}
