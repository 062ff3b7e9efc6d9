// Package sdnotify tells systemd how a Type=notify service is doing, by the
// sd_notify(3) protocol: newline-separated VAR=value lines in one datagram
// to the unix socket named in $NOTIFY_SOCKET ("@name" is in the abstract
// namespace). Outside systemd, with no NOTIFY_SOCKET, it does nothing.
//
// It is this small file rather than go-systemd's daemon package because
// the protocol is a dozen lines, and systemd ≥ 253 wants MONOTONIC_USEC with
// RELOADING=1, which go-systemd leaves to the caller.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Notifier sends to one socket. A nil *Notifier sends nothing.
type Notifier struct {
	addr    *net.UnixAddr
	onError func(error)
}

// New returns a Notifier for $NOTIFY_SOCKET, or nil when it is unset.
// onError, if not nil, is told of messages that could not be sent.
func New(onError func(error)) *Notifier {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}, onError: onError}
}

// Send sends the lines ("READY=1", "STATUS=...") in one datagram; empty
// lines are left out.
func (n *Notifier) Send(lines ...string) error {
	if n == nil {
		return nil
	}
	var msg []string
	for _, l := range lines {
		if l != "" {
			msg = append(msg, l)
		}
	}
	err := n.send(strings.Join(msg, "\n"))
	if err != nil && n.onError != nil {
		n.onError(err)
	}
	return err
}

func (n *Notifier) send(msg string) error {
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready says the service is up (after start, and after a reload, failed or
// not).
func (n *Notifier) Ready(status string) error { return n.Send("READY=1", status1(status)) }

// Reloading says a reload has begun, with the time it began on
// CLOCK_MONOTONIC, as Type=notify-reload wants; Ready must follow.
func (n *Notifier) Reloading(status string) error {
	lines := []string{"RELOADING=1"}
	if us, err := MonotonicUsec(); err == nil {
		lines = append(lines, fmt.Sprintf("MONOTONIC_USEC=%d", us))
	}
	return n.Send(append(lines, status1(status))...)
}

// Stopping says the service is shutting down.
func (n *Notifier) Stopping(status string) error { return n.Send("STOPPING=1", status1(status)) }

// status1 is a STATUS= line, on one line as systemctl status shows it; ""
// for no status.
func status1(s string) string {
	if s == "" {
		return ""
	}
	return "STATUS=" + strings.ReplaceAll(s, "\n", " ")
}
