//go:build !linux

package proxy

import "errors"

var errNoPoller = errors.New("no poller on this system")

// poller is Linux's (park_linux.go); elsewhere connections wait on their
// goroutines.
type poller struct{ pollerBase }

func newPoller() (*poller, error)       { return nil, errNoPoller }
func (p *poller) addLocked(*conn) error { return errNoPoller }
func (p *poller) removeLocked(*conn)    {}
func (p *poller) kickLocked(int64)      {}
func (p *poller) close()                {}
