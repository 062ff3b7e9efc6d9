package admin

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/textproto"
	"time"
)

// ProbeSMTP reports whether an SMTP server answers at addr: it connects,
// reads the greeting, which must be 220, and says QUIT. It is what a
// Ready func can use to see that the backend answers.
func ProbeSMTP(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("backend %s: %w", addr, err)
	}
	defer c.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(probeTimeout)
	}
	c.SetDeadline(deadline)
	tp := textproto.NewReader(bufio.NewReader(c))
	code, msg, err := tp.ReadResponse(220)
	if err != nil {
		if code != 0 {
			return fmt.Errorf("backend %s greeted with %d %s", addr, code, msg)
		}
		return fmt.Errorf("backend %s: no greeting: %w", addr, err)
	}
	if _, err := c.Write([]byte("QUIT\r\n")); err == nil {
		tp.ReadResponse(221) // a polite goodbye; its reply does not matter
	}
	return nil
}
