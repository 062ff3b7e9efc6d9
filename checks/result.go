// Package checks holds mxguard's checks. A check observes one thing about a
// session (its HELO, its sender, ...) and reports Results; it never writes to
// the client and never decides what to do. The rules package turns Results into
// an action.
package checks

import "strings"

// Result is one observation made by a check.
type Result struct {
	// Check names the check that made the observation.
	Check Name `json:"check"`
	// Outcome is the stable, documented name admins write in rules and grep in
	// logs: "<check>.<what>", e.g. "helo.bare_ip", or a bare name ("pregreet").
	Outcome string `json:"outcome"`
	// Score is the weight the check itself knows (a DNSBL filter's *w).
	// Zero means the rules decide the weight from the outcome name alone.
	Score float64 `json:"score,omitempty"`
	// Reason says what was seen, for humans: "HELO 1.2.3.4 is an IP address
	// without brackets".
	Reason string `json:"reason"`
	// Evidence is what the reason rests on, when there is more to say: the DNS
	// answer, a list's TXT record.
	Evidence string `json:"evidence,omitempty"`
}

// Pass reports whether the result is a clean pass: outcomes named
// "<check>.pass" (or "pass") carry no suspicion.
func (r Result) Pass() bool {
	return r.Outcome == "pass" || strings.HasSuffix(r.Outcome, ".pass")
}
