package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/internal/realmta"
)

// Postfix in front of which mxguard runs as its README says: smtpd moved to a
// loopback port, smtpd_authorized_xclient_hosts naming the proxy.
func TestPostfixXCLIENT(t *testing.T) {
	t.Parallel()
	realmta.Require(t, "postfix")
	p := realmta.StartPostfix(t, realmta.PostfixOptions{XCLIENT: true, MessageSizeLimit: backendSizeLimit})
	runSuite(t, postfixBackend(p, config.IdentityXCLIENT))
}

// Postfix with smtpd_upstream_proxy_protocol = haproxy, which takes PROXY v1
// and v2 headers alike.
func TestPostfixProxy(t *testing.T) {
	t.Parallel()
	realmta.Require(t, "postfix")
	p := realmta.StartPostfix(t, realmta.PostfixOptions{ProxyProtocol: true, MessageSizeLimit: backendSizeLimit})
	for _, id := range []config.Identity{config.IdentityProxyV1, config.IdentityProxyV2} {
		t.Run(string(id), func(t *testing.T) { runSuite(t, postfixBackend(p, id)) })
	}
}

var (
	postfixQueued  = regexp.MustCompile(`^2\.0\.0 Ok: queued as ([0-9A-Z]+)$`)
	postfixConnect = regexp.MustCompile(`(?m) postfix/smtpd\[\d+\]: connect from `)
)

func postfixBackend(p *realmta.Postfix, id config.Identity) backend {
	// With XCLIENT, Postfix takes mxguard's verified name for the client
	// (NAME=); behind PROXY it would look the name up itself, which these
	// instances do not (smtpd_peername_lookup = no: the client has no PTR
	// in the system's DNS).
	name := "mail.good.test"
	var proxyVersion byte
	switch id {
	case config.IdentityProxyV1:
		name, proxyVersion = "unknown", 1
	case config.IdentityProxyV2:
		name, proxyVersion = "unknown", 2
	}
	peer := fmt.Sprintf("%s[%s]", name, clientIP)
	return backend{
		name:            "postfix/" + string(id),
		addr:            p.Addr(),
		identity:        id,
		directProxy:     proxyVersion,
		log:             p.Log,
		messages:        func(t *testing.T) []realmta.Delivered { return p.Messages(t) },
		deliveryHeaders: []string{"Return-Path", "X-Original-To", "Delivered-To"},
		queueID: func(reply string) string {
			if m := postfixQueued.FindStringSubmatch(reply); m != nil {
				return m[1]
			}
			return ""
		},
		checkReceived: func(t *testing.T, hdr, qid string, c *client) {
			want := fmt.Sprintf("Received: from %s (%s [%s])\n\tby postfix.backend.test (Postfix) with ESMTP id %s\n\tfor <bob@%s>; ",
				clientHELO, name, clientIP, qid, domain)
			if !strings.HasPrefix(hdr, want) {
				t.Errorf("Postfix's Received header:\n%s\nwant it to start with\n%s", hdr, want)
			}
		},
		checkDeliveryLog: func(t *testing.T, log, qid string, c *client) {
			if line := logLine(log, " "+qid+": client="); !strings.HasSuffix(line, ": client="+peer) {
				t.Errorf("Postfix's log line for %s is %q, want it to end with client=%s; log:\n%s", qid, line, peer, log)
			}
		},
		checkRejectLog: func(t *testing.T, log, sender, rcpt string, c *client) {
			line := logLine(log, "NOQUEUE: reject: RCPT from "+peer+": ", "from=<"+sender+">", "to=<"+rcpt+">", " helo=<"+clientHELO+">")
			if line == "" {
				t.Errorf("Postfix logged no refusal of RCPT <%s> from %s with helo=<%s> for sender %s; log:\n%s", rcpt, peer, clientHELO, sender, log)
			}
		},
		connections: func(log string) int { return countLines(log, postfixConnect) },
	}
}
