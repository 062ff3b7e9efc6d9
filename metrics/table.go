package metrics

import (
	"fmt"
	"strings"
)

// Info describes one metric: the table every metric is built from, and
// the one README.md is generated from (see Markdown), so the two cannot
// drift.
type Info struct {
	Name   string
	Type   string // counter, gauge, histogram
	Labels []string
	Help   string
}

// The metrics. Label values are bounded: outcome, check, rule, stage,
// action, zone, class, limit and result come from fixed sets or from the
// configuration, never from a client (no address, no name a client sent).
var (
	infoBuildInfo = Info{"mxguard_build_info", "gauge", []string{"version", "goversion"},
		"Always 1; the labels say which mxguard and which Go built it."}
	infoConnections = Info{"mxguard_connections_total", "counter", []string{"outcome"},
		"Connections by what became of them: accepted, refused, dropped, limit, shed, pregreet, ..."}
	infoConnectionsOpen = Info{"mxguard_connections_open", "gauge", nil,
		"Client connections open now."}
	infoRefusals = Info{"mxguard_refusals_total", "counter", []string{"check", "rule", "stage", "action"},
		"Refusals given, by the check whose outcome decided, the deciding rule, the stage the reply was given at, and the action (tempfail, reject, drop)."}
	infoCheckDuration = Info{"mxguard_check_duration_seconds", "histogram", []string{"check"},
		"How long each check took, per run."}
	infoDNSCacheHits = Info{"mxguard_dns_cache_hits_total", "counter", nil,
		"DNS questions answered from the resolver's cache (resets when a reload replaces the resolver)."}
	infoDNSCacheMisses = Info{"mxguard_dns_cache_misses_total", "counter", nil,
		"DNS questions not in the resolver's cache, or expired there."}
	infoDNSBLHits = Info{"mxguard_dnsbl_hits_total", "counter", []string{"zone"},
		"Clients or domains a DNS list (block or allow list) listed, per list zone."}
	infoDNSBLZoneUp = Info{"mxguard_dnsbl_zone_up", "gauge", []string{"zone"},
		"1 when the list's self-test passes, 0 while the list is skipped as broken."}
	infoBackendReplies = Info{"mxguard_backend_replies_total", "counter", []string{"stage", "class"},
		"Replies from the backend MTA by stage (connect, helo, mail, rcpt, data, ...) and code class (2xx, 3xx, 4xx, 5xx)."}
	infoBackendDuration = Info{"mxguard_backend_duration_seconds", "histogram", []string{"stage"},
		"How long the backend took to reply, per stage."}
	infoStress = Info{"mxguard_stress", "gauge", nil,
		"1 while mxguard is under stress (overload measures on), else 0."}
	infoConfigReloads = Info{"mxguard_config_reloads_total", "counter", []string{"result"},
		"Configuration reloads by result: ok, or error (the running configuration stays)."}
	infoConfigLastReload = Info{"mxguard_config_last_reload_success_timestamp_seconds", "gauge", nil,
		"When the configuration was last loaded successfully (Unix time), at start or on reload."}
	infoStoreUp = Info{"mxguard_store_up", "gauge", nil,
		"1 when the state store answers, else 0."}
	infoMessagesRelayed = Info{"mxguard_messages_relayed_total", "counter", nil,
		"Messages the backend accepted through mxguard."}
	infoGreylist = Info{"mxguard_greylist_total", "counter", []string{"result"},
		"Greylisting decisions by result (e.g. new, early, passed, allowlisted)."}
	infoRateLimit = Info{"mxguard_ratelimit_total", "counter", []string{"limit", "result"},
		"Rate limit checks by the configured limit's name and result (e.g. ok, exceeded)."}
)

// All lists every mxguard metric, in the order README.md shows them.
var All = []Info{
	infoBuildInfo,
	infoConnections, infoConnectionsOpen, infoStress,
	infoRefusals, infoCheckDuration,
	infoDNSCacheHits, infoDNSCacheMisses, infoDNSBLHits, infoDNSBLZoneUp,
	infoBackendReplies, infoBackendDuration, infoMessagesRelayed,
	infoConfigReloads, infoConfigLastReload,
	infoStoreUp,
	infoGreylist, infoRateLimit,
}

// Markdown renders All as a Markdown table: name, type, labels, meaning.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| metric | type | labels | meaning |\n|---|---|---|---|\n")
	for _, m := range All {
		labels := ""
		if len(m.Labels) > 0 {
			labels = "`" + strings.Join(m.Labels, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", m.Name, m.Type, labels, m.Help)
	}
	return b.String()
}
