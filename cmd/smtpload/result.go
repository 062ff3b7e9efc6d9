package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Result is what one run measured. Times are in milliseconds (seconds for
// the elapsed time), so the JSON is easy to use from a shell script; the key
// names are unique so that even grep can pick a field.
type Result struct {
	Mode string `json:"mode"` // "load" or "idle"
	Addr string `json:"addr"`

	// Load mode.
	Messages    int    `json:"messages,omitempty"` // attempted
	Concurrency int    `json:"concurrency"`
	PerConn     int    `json:"per_conn,omitempty"`
	Size        int    `json:"size,omitempty"`       // bytes per message as sent, before dot-stuffing
	Pipelining  bool   `json:"pipelining,omitempty"` // used: asked for and offered
	DKIM        string `json:"dkim,omitempty"`       // "rsa-sha256", "ed25519-sha256"

	OK          int `json:"ok"`
	Refused     int `json:"refused"` // a 4xx/5xx reply ended the attempt
	Errors      int `json:"errors"`  // connection or protocol failure
	Connections int `json:"connections"`

	ElapsedS   float64 `json:"elapsed_s"`
	ClientCPUS float64 `json:"client_cpu_s"`           // smtpload's own CPU time (user+system) during the run
	MsgsPerSec float64 `json:"msgs_per_sec,omitempty"` // accepted messages per second

	// Whole transaction: from the start of the connect (a connection's
	// first message) or from MAIL (the following ones) to the final reply.
	LatencyP50 float64 `json:"latency_p50_ms,omitempty"`
	LatencyP90 float64 `json:"latency_p90_ms,omitempty"`
	LatencyP99 float64 `json:"latency_p99_ms,omitempty"`
	LatencyMax float64 `json:"latency_max_ms,omitempty"`
	// Phases (p99): connect + complete banner, EHLO, MAIL..354 to DATA,
	// message content + final reply.
	ConnectP99  float64 `json:"connect_p99_ms,omitempty"`
	EhloP99     float64 `json:"ehlo_p99_ms,omitempty"`
	EnvelopeP99 float64 `json:"envelope_p99_ms,omitempty"`
	DataP99     float64 `json:"data_p99_ms,omitempty"`
	// The same phases at p50.
	ConnectP50  float64 `json:"connect_p50_ms,omitempty"`
	EhloP50     float64 `json:"ehlo_p50_ms,omitempty"`
	EnvelopeP50 float64 `json:"envelope_p50_ms,omitempty"`
	DataP50     float64 `json:"data_p50_ms,omitempty"`

	// Idle mode.
	Idle      int     `json:"idle,omitempty"`     // connections asked for
	Accepted  int     `json:"accepted,omitempty"` // TCP connect succeeded
	Bait      int     `json:"bait,omitempty"`     // got a "220-" first line, not (yet) the last
	Greeted   int     `json:"greeted,omitempty"`  // got the complete 220 greeting
	Silent    int     `json:"silent,omitempty"`   // got nothing at all while held
	Closed    int     `json:"closed_by_server,omitempty"`
	HoldS     float64 `json:"hold_s,omitempty"`
	OpenedS   float64 `json:"opened_s,omitempty"` // time to open them all
	GreetP50  float64 `json:"greet_p50_ms,omitempty"`
	GreetP99  float64 `json:"greet_p99_ms,omitempty"`
	StillOpen int     `json:"still_open,omitempty"` // open when the hold ended

	// Counts per first reply line (refusals) and per kind (errors).
	RefusedBy map[string]int `json:"refused_by,omitempty"`
	ErrorsBy  map[string]int `json:"errors_by,omitempty"`
}

// WriteText prints the result for a human.
func (r *Result) WriteText(w io.Writer) {
	if r.Mode == "idle" {
		fmt.Fprintf(w, "smtpload idle: %s, %d connections (%d dials at a time), held %.1fs\n", r.Addr, r.Idle, r.Concurrency, r.HoldS)
		fmt.Fprintf(w, "  accepted %d  greeted %d  in greeting (220- only) %d  silent %d  refused %d  errors %d\n",
			r.Accepted, r.Greeted, r.Bait, r.Silent, r.Refused, r.Errors)
		fmt.Fprintf(w, "  opened in %.2fs  closed by server while held %d  open at the end %d\n", r.OpenedS, r.Closed, r.StillOpen)
		if r.Greeted > 0 {
			fmt.Fprintf(w, "  greeting after p50 %s  p99 %s\n", ms(r.GreetP50), ms(r.GreetP99))
		}
	} else {
		pipe := "off"
		if r.Pipelining {
			pipe = "on"
		}
		per := fmt.Sprint(r.PerConn)
		if r.PerConn == 0 {
			per = "all"
		}
		dk := ""
		if r.DKIM != "" {
			dk = ", DKIM " + r.DKIM
		}
		fmt.Fprintf(w, "smtpload: %s, %d messages of %d bytes over %d connections, %s per connection, pipelining %s%s\n",
			r.Addr, r.Messages, r.Size, r.Concurrency, per, pipe, dk)
		fmt.Fprintf(w, "  ok %d  refused %d  errors %d  connections %d\n", r.OK, r.Refused, r.Errors, r.Connections)
		fmt.Fprintf(w, "  elapsed %.3fs  %.1f msg/s  (smtpload's own CPU %.2fs)\n", r.ElapsedS, r.MsgsPerSec, r.ClientCPUS)
		fmt.Fprintf(w, "  latency p50 %s  p90 %s  p99 %s  max %s\n", ms(r.LatencyP50), ms(r.LatencyP90), ms(r.LatencyP99), ms(r.LatencyMax))
		fmt.Fprintf(w, "  p50 by phase: connect+banner %s  ehlo %s  mail..data %s  content+reply %s\n",
			ms(r.ConnectP50), ms(r.EhloP50), ms(r.EnvelopeP50), ms(r.DataP50))
		fmt.Fprintf(w, "  p99 by phase: connect+banner %s  ehlo %s  mail..data %s  content+reply %s\n",
			ms(r.ConnectP99), ms(r.EhloP99), ms(r.EnvelopeP99), ms(r.DataP99))
	}
	writeCounts(w, "refused", r.RefusedBy)
	writeCounts(w, "errors", r.ErrorsBy)
}

func writeCounts(w io.Writer, title string, m map[string]int) {
	if len(m) == 0 {
		return
	}
	fmt.Fprintf(w, "  %s:\n", title)
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		return cmp.Or(cmp.Compare(m[b], m[a]), strings.Compare(a, b))
	})
	for _, k := range keys {
		fmt.Fprintf(w, "    %7d  %s\n", m[k], k)
	}
}

func ms(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.3fms", v)
}

// toMS converts for the JSON fields.
func toMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the p-th percentile (0 < p <= 1) of sorted values:
// the smallest value at least p of them do not exceed.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// maxKeys bounds the distinct refusal and error texts kept, so that replies
// carrying queue IDs or addresses cannot grow the maps without bound.
const maxKeys = 50

// counter counts occurrences per text, the overflow under "(other)".
type counter map[string]int

func (c counter) add(k string, n int) {
	if _, ok := c[k]; !ok && len(c) >= maxKeys {
		k = "(other)"
	}
	c[k] += n
}
