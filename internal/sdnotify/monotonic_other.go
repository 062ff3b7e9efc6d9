//go:build !linux

package sdnotify

import "errors"

// MonotonicUsec is CLOCK_MONOTONIC in microseconds; systemd is Linux only.
func MonotonicUsec() (uint64, error) { return 0, errors.New("no CLOCK_MONOTONIC here") }
