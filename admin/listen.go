package admin

import (
	"fmt"
	"net"
	"net/netip"
)

const remoteHint = "the admin listener shows client addresses and decisions: listen on 127.0.0.1 or [::1], " +
	"or allow a remote address explicitly (and set an auth file)"

// checkListen refuses an address that is not loopback, unless allowed:
// an IP literal must be a loopback address; the name "localhost" passes
// here and its address is checked once bound (checkBound).
func checkListen(addr string, allowRemote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("admin: listen address %q: %v", addr, err)
	}
	if allowRemote {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
		return nil
	}
	what := "not a loopback address"
	if host == "" {
		what = "every interface"
	}
	return fmt.Errorf("admin: listen address %q is %s; %s", addr, what, remoteHint)
}

// checkBound checks the address actually bound.
func checkBound(a net.Addr, allowRemote bool) error {
	if allowRemote {
		return nil
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok || !ta.IP.IsLoopback() {
		return fmt.Errorf("admin: bound %s, which is not loopback; %s", a, remoteHint)
	}
	return nil
}
