package resolver

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// exchange asks the servers in order for fqdn/qtype. Each server gets
// up to r.attempts tries when it times out or fails at the network
// level; a SERVFAIL or REFUSED moves on to the next server at once,
// as asking again is unlikely to help. It returns the reply (NOERROR
// or NXDOMAIN) and the server that gave it, or the last error.
func (r *Resolver) exchange(ctx context.Context, fqdn string, qtype uint16) (*dns.Msg, string, error) {
	var last error
	for _, server := range r.servers {
		for range r.attempts {
			if err := ctx.Err(); err != nil {
				return nil, server, ctxError(fqdn, err)
			}
			m, err := r.exchangeOnce(ctx, server, fqdn, qtype)
			if err != nil {
				if cerr := ctx.Err(); cerr != nil {
					return nil, server, ctxError(fqdn, cerr)
				}
				last = netError(fqdn, server, err)
				continue
			}
			if m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError {
				return m, server, nil
			}
			last = rcodeError(fqdn, server, m.Rcode)
			break
		}
	}
	return nil, "", last
}

// exchangeOnce is one attempt: UDP, then TCP if the answer was
// truncated (miekg/dns does not do that by itself).
func (r *Resolver) exchangeOnce(ctx context.Context, server, fqdn string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype) // also sets RD and a random ID
	m.SetEdns0(ednsSize, false)
	reply, err := r.send(ctx, r.udp, m, server)
	if err != nil || !reply.Truncated {
		return reply, err
	}
	m.Id = dns.Id()
	return r.send(ctx, r.tcp, m, server)
}

var errMismatch = errors.New("reply does not match the question")

// send runs one exchange with its own timeout. miekg/dns honours only
// a context's deadline, so cancellation is applied to the socket here:
// when the last caller gives up, the query stops at once.
func (r *Resolver) send(ctx context.Context, c *dns.Client, m *dns.Msg, server string) (*dns.Msg, error) {
	r.upstream.Add(1)
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	reply, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil {
		return nil, err
	}
	// miekg/dns checks the ID but not the question.
	q, a := m.Question[0], reply.Question
	if len(a) != 1 || a[0].Qtype != q.Qtype || a[0].Qclass != q.Qclass || !strings.EqualFold(a[0].Name, q.Name) {
		return nil, errMismatch
	}
	return reply, nil
}
