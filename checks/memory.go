package checks

import (
	"net/netip"
	"time"
)

// Memory is what mxguard remembers of clients between connections: which
// connection tests each address passed recently (postscreen's cache), and
// how its connections went.
type Memory interface {
	// Passed reports whether ip passed test and the pass has not expired.
	Passed(ip netip.Addr, test Name) bool
	// Pass remembers that ip passed test, for ttl.
	Pass(ip netip.Addr, test Name, ttl time.Duration)
	// Fail forgets ip's pass of test: it is tested again next time.
	Fail(ip netip.Addr, test Name)
	// Record adds a finished connection: messages the backend accepted
	// and refusals mxguard gave, by the checks that caused them.
	Record(ip netip.Addr, accepted int, refusals []Name)
}
