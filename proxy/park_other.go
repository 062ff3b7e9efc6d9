//go:build !linux

package proxy

import (
	"errors"
	"time"
)

var errNoPoller = errors.New("no poller on this system")

// poller is Linux's (park_linux.go); elsewhere connections wait on their
// goroutines.
type poller struct{ pollerBase }

func newPoller() (*poller, error)       { return nil, errNoPoller }
func (p *poller) addLocked(*conn) error { return errNoPoller }
func (p *poller) removeLocked(*conn)    {}
func (p *poller) kickLocked(time.Time)  {}
func (p *poller) close()                {}
