package checks

import (
	"context"
	"net/netip"
	"time"
)

// Memory is what mxguard remembers of clients between connections, and
// across restarts and instances when it is kept in a shared store: which
// connection tests each address passed recently (postscreen's cache), and
// how its connections went.
type Memory interface {
	// Recall reads what is remembered of ip, once per connection. A
	// client the memory does not know — or cannot read in time (a store
	// that is down) — recalls nothing: no passes, no results.
	Recall(ctx context.Context, ip netip.Addr) Recollection
	// Pass remembers that ip passed test, for ttl. It does not wait.
	Pass(ip netip.Addr, test Name, ttl time.Duration)
	// Fail forgets ip's pass of test. It does not wait.
	Fail(ip netip.Addr, test Name)
	// Record adds a finished connection: messages the backend accepted
	// and refusals mxguard gave, by the checks that caused them. It does
	// not wait.
	Record(ip netip.Addr, accepted int, refusals []Name)
}

// Recollection is what the memory recalls of a client.
type Recollection struct {
	// Passed are the connection tests it passed and whose pass has not
	// expired.
	Passed map[Name]bool
	// Results are what its history says, for the rules (reputation.bad,
	// reputation.net_good, …).
	Results []Result
}
