package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/internal/realmta"
)

// Exim (the heavy build) with hosts_proxy naming the proxy: mxguard sends a
// PROXY v1 or v2 header, one Exim takes both.
func TestEximProxy(t *testing.T) {
	t.Parallel()
	realmta.Require(t, "exim")
	e := realmta.StartExim(t, realmta.EximOptions{ProxyProtocol: true, MessageSizeLimit: backendSizeLimit})
	for _, id := range []config.Identity{config.IdentityProxyV1, config.IdentityProxyV2} {
		t.Run(string(id), func(t *testing.T) { runSuite(t, eximBackend(e, id)) })
	}
}

var (
	eximQueued  = regexp.MustCompile(`^OK id=(\S+)$`)
	eximConnect = regexp.MustCompile(`(?m) SMTP connection from .*\(TCP/IP connection count = \d+\)$`)
)

func eximBackend(e *realmta.Exim, id config.Identity) backend {
	return backend{
		name:     "exim/" + string(id),
		addr:     e.Addr(),
		identity: id,
		// The instance expects PROXY from 127.0.0.1 only: the client at
		// 127.0.0.2 talks to it plainly.
		directProxy: 0,
		log:         e.MainLog,
		messages:    func(t *testing.T) []realmta.Delivered { return e.Messages(t) },
		queueID: func(reply string) string {
			if m := eximQueued.FindStringSubmatch(reply); m != nil {
				return m[1]
			}
			return ""
		},
		checkReceived: func(t *testing.T, hdr, qid string, c *client) {
			want := fmt.Sprintf("Received: from [%s] (port=%d helo=%s)\n\tby exim.backend.test with esmtp (Exim ", clientIP, c.port(), clientHELO)
			if !strings.HasPrefix(hdr, want) || !strings.Contains(hdr, "\n\tid "+qid+"\n") {
				t.Errorf("Exim's Received header:\n%s\nwant it to start with\n%s\nand hold id %s", hdr, want, qid)
			}
		},
		checkDeliveryLog: func(t *testing.T, log, qid string, c *client) {
			want := fmt.Sprintf("%s <= alice@good.test H=(%s) [%s]:%d ", qid, clientHELO, clientIP, c.port())
			if logLine(log, want) == "" {
				t.Errorf("Exim's mainlog has no line with %q:\n%s", want, log)
			}
		},
		checkRejectLog: func(t *testing.T, log, sender, rcpt string, c *client) {
			host := fmt.Sprintf("H=(%s) [%s]:%d ", clientHELO, clientIP, c.port())
			if logLine(log, host, "F=<"+sender+"> rejected RCPT <"+rcpt+">") == "" {
				t.Errorf("Exim logged no refusal of RCPT <%s> with %q for sender %s:\n%s", rcpt, host, sender, log)
			}
		},
		connections: func(log string) int { return countLines(log, eximConnect) },
	}
}
