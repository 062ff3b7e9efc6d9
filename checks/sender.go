package checks

import (
	"context"
	"fmt"
	"strings"
)

// SenderName names the hosted-domain spoofing check.
const SenderName Name = "sender"

// SenderSpec registers it.
var SenderSpec = Spec{
	Name:     SenderName,
	Stages:   []Stage{AtMail},
	Outcomes: []string{"sender.spoofs_local"},
	New: func(env *Env) (Check, error) {
		return &Spoof{LocalDomains: env.Config.LocalDomainSet()}, nil
	},
}

// Run judges the envelope sender.
func (s *Spoof) Run(_ context.Context, _ Stage, sess *Session) []Result {
	if r, spoof := s.Check(*sess.From); spoof {
		return []Result{r}
	}
	return nil
}

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
		Check:   SenderName,
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
