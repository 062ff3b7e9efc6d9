package dnsbl

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/checks"
)

// Hit is one pattern that matched: a zone configured with several filters
// can give several hits from its one answer.
type Hit struct {
	Zone    string       // the zone queried
	Name    string       // the name shown for it: its ReplyMap name, else Zone
	Answers []netip.Addr // the answers the pattern matched; shared, read-only
	TXT     string       // the list's reason: its first TXT record, ≤ 200 printable ASCII bytes
	Weight  float64      // the pattern's weight
}

// ZoneError is a zone that could not be used for a check. It counts as not
// listing.
type ZoneError struct {
	Zone   string
	Name   string // as in Hit
	Reason string // "timeout", "server misbehaving: SERVFAIL", "error code 127.255.255.254: ...", ...
	Err    error  // the lookup error; nil when the list answered with an error code
}

func (e ZoneError) Error() string { return "dnsbl zone " + e.Zone + ": " + e.Reason }

// Verdict is the outcome of one CheckIP or CheckDomain.
type Verdict struct {
	Score       float64 // sum of the matching patterns' weights
	Hits        []Hit   // in configuration order
	Listed      bool    // Score >= Threshold
	Allowlisted bool    // AllowlistThreshold is on and Score <= it
	Errors      []ZoneError
	Elapsed     time.Duration

	ip     netip.Addr // for CheckIP
	domain string     // for CheckDomain
	role   string
}

// subject names what was looked up, for reasons: "client 192.0.2.1",
// "sender domain spam.example".
func (v *Verdict) subject() string {
	if v.ip.IsValid() {
		return "client " + v.ip.String()
	}
	switch v.role {
	case "helo":
		return "HELO domain " + v.domain
	case "":
		return "domain " + v.domain
	}
	return v.role + " domain " + v.domain
}

// Results reports the verdict as check results:
//
//   - one per hit: Outcome "dnsbl.<name>" ("dnswl.<name>" for a negative
//     weight; "rhsbl.<name>" and "rhswl.<name>" for domain lists), Score the
//     weight, Reason "client 192.0.2.1 listed by zen.spamhaus.org as
//     127.0.0.4", Evidence the answers and the TXT record;
//   - when Listed, Outcome "dnsbl" ("rhsbl"), Score 0 (the hits carry the
//     weights), Reason "DNSBL rank 4 for [192.0.2.1]", Evidence the names of
//     the blocking lists joined by ", " for the refusal text;
//   - when Allowlisted, Outcome "dnswl" ("rhswl"), likewise.
//
// <name> is the list's ReplyMap name, so a secret key never shows.
func (v *Verdict) Results() []checks.Result {
	if v == nil || len(v.Hits) == 0 {
		return nil
	}
	check, block, allow, rank, rankFor := Name, "dnsbl", "dnswl", "DNSBL", v.subject()
	if v.ip.IsValid() {
		rankFor = "[" + v.ip.String() + "]"
	} else {
		check, block, allow, rank = DomainName, "rhsbl", "rhswl", "RHSBL"
	}
	subject := v.subject()
	out := make([]checks.Result, 0, len(v.Hits)+1)
	for _, h := range v.Hits {
		kind := block
		if h.Weight < 0 {
			kind = allow
		}
		as := joinAddrs(h.Answers)
		ev := as
		if h.TXT != "" {
			ev += "; " + h.TXT
		}
		out = append(out, checks.Result{
			Check:    check,
			Outcome:  kind + "." + h.Name,
			Score:    h.Weight,
			Reason:   subject + " listed by " + h.Name + " as " + as,
			Evidence: ev,
		})
	}
	score := strconv.FormatFloat(v.Score, 'f', -1, 64)
	if v.Listed {
		out = append(out, checks.Result{
			Check:    check,
			Outcome:  block,
			Reason:   rank + " rank " + score + " for " + rankFor,
			Evidence: v.names(func(w float64) bool { return w > 0 }),
		})
	}
	if v.Allowlisted {
		out = append(out, checks.Result{
			Check:    check,
			Outcome:  allow,
			Reason:   rank[:3] + "WL rank " + score + " for " + rankFor,
			Evidence: v.names(func(w float64) bool { return w < 0 }),
		})
	}
	return out
}

// names joins the distinct names of the hits whose weight is wanted: a
// refusal names the lists that blocked, not an allowlist that was outweighed.
func (v *Verdict) names(want func(float64) bool) string {
	var ns []string
	for _, h := range v.Hits {
		if want(h.Weight) && !slices.Contains(ns, h.Name) {
			ns = append(ns, h.Name)
		}
	}
	return strings.Join(ns, ", ")
}

func joinAddrs(as []netip.Addr) string {
	var b []byte
	for i, a := range as {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = a.AppendTo(b)
	}
	return string(b)
}
