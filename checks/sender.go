package checks

import (
	"fmt"
	"strings"
)

// Spoof refuses mail that claims a sender in one of our own domains from a
// host that is neither trusted nor authenticated: mail from us comes from our
// own networks. The caller skips trusted and authenticated clients.
type Spoof struct {
	LocalDomains map[string]bool // lower case
}

// Check judges a MAIL FROM address. The null sender <> is never a spoof
// (bounces come from anywhere).
func (s *Spoof) Check(from string) (Result, bool) {
	domain := Domain(from)
	if domain == "" || !s.LocalDomains[domain] {
		return Result{}, false
	}
	return Result{
		Check:   "sender",
		Outcome: "sender.spoofs_local",
		Reason:  fmt.Sprintf("sender <%s> is in our domain %s but the client is outside our networks", from, domain),
	}, true
}

// Domain returns the lower-case domain of an address, without a trailing
// dot, or "" when there is none.
func Domain(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
}
