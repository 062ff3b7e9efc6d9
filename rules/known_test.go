package rules

import (
	"strings"
	"testing"

	"github.com/mxguard/mxguard/registry"
)

// known is what the registered checks report, as mxguard builds it.
var known = Known{Checks: registry.Names(), Outcomes: registry.Outcomes()}

// Every outcome a registered check reports has a built-in rule, and the
// built-in rules name only outcomes some check reports (Parse refuses any
// other).
func TestEveryOutcomeHasABuiltInRule(t *testing.T) {
	p, err := Parse("none.toml", nil, known)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range known.Outcomes {
		if _, ok := p.outcomes[strings.TrimSuffix(o, "*")]; !ok {
			t.Errorf("outcome %s has no rule in rules/default.toml", o)
		}
	}
}
