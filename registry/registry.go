// Package registry lists the checks mxguard runs. It is the one place a
// check is registered: adding a check is its own package (or file) and one
// line here. At each stage the pipeline runs the checks in this order.
package registry

import (
	"github.com/mxguard/mxguard/checks"
	"github.com/mxguard/mxguard/dnsbl"
	"github.com/mxguard/mxguard/greylist"
	"github.com/mxguard/mxguard/ratelimit/ratecheck"
	"github.com/mxguard/mxguard/reputation"
)

// All are the checks, in the order they run at each stage.
var All = []*checks.Spec{
	&ratecheck.Spec,
	&reputation.Spec,
	&checks.PregreetSpec,
	&checks.NonSMTPSpec,
	&checks.PipeliningSpec,
	&checks.BareNewlineSpec,
	&dnsbl.Spec,
	&checks.HELOSpec,
	&checks.SenderSpec,
	&checks.SPFSpec,
	&dnsbl.DomainSpec,
	&greylist.Spec,
	&checks.MessageSpec,
	&checks.DKIMSpec,
	&checks.DMARCSpec,
}

// Names returns the checks' names, in order.
func Names() []checks.Name {
	out := make([]checks.Name, len(All))
	for i, s := range All {
		out[i] = s.Name
	}
	return out
}

// Outcomes returns every outcome the checks can report, families as
// "dnsbl.*".
func Outcomes() []string {
	var out []string
	for _, s := range All {
		out = append(out, s.Outcomes...)
	}
	return out
}
