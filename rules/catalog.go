package rules

// builtin is the behaviour of every outcome mxguard knows, before the config
// changes any of it. Its names are the ones admins write in the config and
// grep in logs: keep them stable, and keep the README's table in step.
//
// A name ending in ".*" covers a family (dnsbl.<zone>).
var builtin = []Rule{
	{Outcome: "pregreet", Action: Drop, Reply: mustReply("554 5.5.1 Protocol error: talked before the greeting")},

	{Outcome: "helo.pass", Action: Score},
	{Outcome: "helo.empty", Action: Reject, Reply: mustReply("550 5.5.2 Helo command rejected: empty HELO")},
	{Outcome: "helo.no_dot", Action: Reject, Reply: mustReply("550 5.5.2 Helo command rejected: need fully-qualified hostname")},
	{Outcome: "helo.localhost", Action: Reject, Reply: mustReply("550 5.5.2 Helo command rejected: localhost is not a mail server's name")},
	{Outcome: "helo.bare_ip", Action: Reject, Reply: mustReply("550 5.5.2 Helo command rejected: an IP address must be written as [address literal]")},
	{Outcome: "helo.bad_syntax", Action: Reject, Reply: mustReply("550 5.5.2 Helo command rejected: invalid hostname")},
	{Outcome: "helo.bad_literal", Action: Reject, Reply: mustReply("550 5.5.2 Helo command rejected: invalid address literal")},
	{Outcome: "helo.claims_us", Action: Reject, Reply: mustReply("550 5.7.1 Helo command rejected: you are not me")},
	{Outcome: "helo.literal_mismatch", Action: Reject, Reply: mustReply("550 5.7.1 Helo command rejected: address literal is not your address")},
	{Outcome: "helo.unresolvable", Action: Reject, Reply: mustReply("550 5.7.1 Helo command rejected: host not found")},
	{Outcome: "helo.forward_mismatch", Action: Reject, Reply: mustReply("550 5.7.1 Helo command rejected: hostname does not resolve to your address")},
	{Outcome: "helo.dns_temp", Action: Tempfail, Reply: mustReply("451 4.4.3 Helo command rejected: temporary DNS failure, try again later")},

	{Outcome: "reputation.bad", Action: Score, Weight: 3},
	{Outcome: "reputation.good", Action: Score, Weight: -2},

	{Outcome: "sender.spoofs_local", Action: Reject, Reply: mustReply("550 5.7.1 Sender address rejected: not allowed from your address")},
}

// scoreReply is given when the session score reaches reject_score.
var scoreReply = mustReply("550 5.7.1 Message refused: spam score too high")
