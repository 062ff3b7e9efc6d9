// Package metrics defines every Prometheus metric mxguard exports, in one
// place (the table in table.go, documented in README.md), on a registry of
// its own, and the small typed API the rest of mxguard records them with.
//
// Recording is cheap: each call resolves its labels through a copy-on-write
// map of pre-built children (one atomic load and a map look-up, no lock and
// no allocation) and then adds to an atomic counter. Every method is safe
// for concurrent use, and a nil *Metrics records nothing, so code under
// test needs none.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Outcomes of a connection for Connection; the set is small and fixed.
const (
	Accepted = "accepted" // given to the SMTP session
	Refused  = "refused"  // refused at connect (a list, a rule) with a reply
	Dropped  = "dropped"  // hung up on without a reply
	Limit    = "limit"    // over a connection limit
	Shed     = "shed"     // refused under overload
	Pregreet = "pregreet" // talked before the greeting
)

// Histogram buckets, in seconds: checks run from microseconds (a HELO's
// syntax) to the DNS and SPF timeouts; the backend's reply to the end of
// data may take minutes.
var (
	checkBuckets   = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	backendBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
)

// Metrics holds mxguard's metrics and their registry.
type Metrics struct {
	reg   *prometheus.Registry
	funcs *funcs

	connections     *series[string, prometheus.Counter]
	refusals        *series[refusalKey, prometheus.Counter]
	checkDuration   *series[string, prometheus.Observer]
	dnsblHits       *series[string, prometheus.Counter]
	backendReplies  *series[replyKey, prometheus.Counter]
	backendDuration *series[string, prometheus.Observer]
	greylist        *series[string, prometheus.Counter]
	ratelimit       *series[[2]string, prometheus.Counter]

	reloadOK, reloadError prometheus.Counter
	lastReload            prometheus.Gauge
	relayed               prometheus.Counter
}

type refusalKey struct{ check, rule, stage, action string }

type replyKey struct {
	stage string
	class int // code / 100
}

// New builds the metrics on a new registry, with Go's runtime and the
// process's collectors and mxguard_build_info for version.
func New(version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), funcs: newFuncs()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m.funcs)

	build := m.gaugeVec(infoBuildInfo)
	build.WithLabelValues(version, runtime.Version()).Set(1)

	conns := m.counterVec(infoConnections)
	m.connections = newSeries(func(o string) prometheus.Counter { return conns.WithLabelValues(o) }, other)
	for _, o := range []string{Accepted, Refused, Dropped, Limit, Shed, Pregreet} {
		m.connections.get(o) // present at 0 from the start: rate() needs a first sample
	}
	refusals := m.counterVec(infoRefusals)
	m.refusals = newSeries(func(k refusalKey) prometheus.Counter {
		return refusals.WithLabelValues(k.check, k.rule, k.stage, k.action)
	}, refusalKey{other, other, other, other})
	checks := m.histogramVec(infoCheckDuration, checkBuckets)
	m.checkDuration = newSeries(func(c string) prometheus.Observer { return checks.WithLabelValues(c) }, other)
	hits := m.counterVec(infoDNSBLHits)
	m.dnsblHits = newSeries(func(z string) prometheus.Counter { return hits.WithLabelValues(z) }, other)
	replies := m.counterVec(infoBackendReplies)
	m.backendReplies = newSeries(func(k replyKey) prometheus.Counter {
		return replies.WithLabelValues(k.stage, codeClass(k.class))
	}, replyKey{other, 0})
	backend := m.histogramVec(infoBackendDuration, backendBuckets)
	m.backendDuration = newSeries(func(s string) prometheus.Observer { return backend.WithLabelValues(s) }, other)
	grey := m.counterVec(infoGreylist)
	m.greylist = newSeries(func(r string) prometheus.Counter { return grey.WithLabelValues(r) }, other)
	rl := m.counterVec(infoRateLimit)
	m.ratelimit = newSeries(func(k [2]string) prometheus.Counter { return rl.WithLabelValues(k[0], k[1]) }, [2]string{other, other})

	reloads := m.counterVec(infoConfigReloads)
	m.reloadOK, m.reloadError = reloads.WithLabelValues("ok"), reloads.WithLabelValues("error")
	m.lastReload = prometheus.NewGauge(prometheus.GaugeOpts{Name: infoConfigLastReload.Name, Help: infoConfigLastReload.Help})
	m.relayed = prometheus.NewCounter(prometheus.CounterOpts{Name: infoMessagesRelayed.Name, Help: infoMessagesRelayed.Help})
	m.reg.MustRegister(m.lastReload, m.relayed)
	return m
}

func (m *Metrics) counterVec(i Info) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: i.Name, Help: i.Help}, i.Labels)
	m.reg.MustRegister(v)
	return v
}

func (m *Metrics) gaugeVec(i Info) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: i.Name, Help: i.Help}, i.Labels)
	m.reg.MustRegister(v)
	return v
}

func (m *Metrics) histogramVec(i Info, buckets []float64) *prometheus.HistogramVec {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: i.Name, Help: i.Help, Buckets: buckets}, i.Labels)
	m.reg.MustRegister(v)
	return v
}

// Registry returns the registry every metric is on (nil for a nil m).
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Connection counts a connection by what became of it (Accepted,
// Refused, ...: a small fixed set).
func (m *Metrics) Connection(outcome string) {
	if m != nil {
		m.connections.get(outcome).Inc()
	}
}

// Refusal counts a refusal: the check whose outcome decided ("helo";
// "" for a list or the score), the rule ("helo.localhost",
// "deny.partners", "score"), the stage the reply was given at and the
// action (tempfail, reject, drop).
func (m *Metrics) Refusal(check, rule, stage, action string) {
	if m != nil {
		m.refusals.get(refusalKey{check, rule, stage, action}).Inc()
	}
}

// CheckDuration records how long one run of a check took.
func (m *Metrics) CheckDuration(check string, d time.Duration) {
	if m != nil {
		m.checkDuration.get(check).Observe(d.Seconds())
	}
}

// DNSBLHit counts a listing by a DNS list zone (block or allow list).
func (m *Metrics) DNSBLHit(zone string) {
	if m != nil {
		m.dnsblHits.get(zone).Inc()
	}
}

// BackendReply counts a backend reply by stage and the class of its code
// (250 counts as 2xx; a code outside 200..599 as "other").
func (m *Metrics) BackendReply(stage string, code int) {
	if m != nil {
		m.backendReplies.get(replyKey{stage, code / 100}).Inc()
	}
}

// BackendDuration records how long the backend took to reply at stage.
func (m *Metrics) BackendDuration(stage string, d time.Duration) {
	if m != nil {
		m.backendDuration.get(stage).Observe(d.Seconds())
	}
}

var classes = [...]string{2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}

func codeClass(c int) string {
	if c >= 2 && c < len(classes) {
		return classes[c]
	}
	return other
}

// MessageRelayed counts a message the backend accepted.
func (m *Metrics) MessageRelayed() {
	if m != nil {
		m.relayed.Inc()
	}
}

// ConfigLoaded records a successful load of the configuration at start:
// it sets the last-success time without counting a reload.
func (m *Metrics) ConfigLoaded() {
	if m != nil {
		m.lastReload.SetToCurrentTime()
	}
}

// ConfigReloaded counts a reload: ok, or not (the running configuration
// stays). A successful one also sets the last-success time.
func (m *Metrics) ConfigReloaded(ok bool) {
	if m == nil {
		return
	}
	if !ok {
		m.reloadError.Inc()
		return
	}
	m.reloadOK.Inc()
	m.lastReload.SetToCurrentTime()
}

// Greylist counts a greylisting decision by result.
func (m *Metrics) Greylist(result string) {
	if m != nil {
		m.greylist.get(result).Inc()
	}
}

// RateLimit counts a rate limit check by the limit's name and result.
func (m *Metrics) RateLimit(limit, result string) {
	if m != nil {
		m.ratelimit.get([2]string{limit, result}).Inc()
	}
}
