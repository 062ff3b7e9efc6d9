package metrics

import (
	"iter"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// The metrics read at scrape time from the part of mxguard that owns the
// number: the caller sets a func once (and again when a reload replaces
// the part); until then the metric is absent from the scrape.

// CacheStats reports a DNS cache's running counters since it was made.
type CacheStats func() (hits, misses uint64)

// funcs is the one collector of every func-based metric.
type funcs struct {
	cache  atomic.Pointer[CacheStats]
	zones  atomic.Pointer[iter.Seq2[string, bool]]
	open   atomic.Pointer[func() int]
	stress atomic.Pointer[func() bool]
	store  atomic.Pointer[func() bool]

	hitsDesc, missesDesc, zoneDesc, openDesc, stressDesc, storeDesc *prometheus.Desc
}

func newFuncs() *funcs {
	return &funcs{
		hitsDesc:   desc(infoDNSCacheHits),
		missesDesc: desc(infoDNSCacheMisses),
		zoneDesc:   desc(infoDNSBLZoneUp),
		openDesc:   desc(infoConnectionsOpen),
		stressDesc: desc(infoStress),
		storeDesc:  desc(infoStoreUp),
	}
}

func desc(i Info) *prometheus.Desc { return prometheus.NewDesc(i.Name, i.Help, i.Labels, nil) }

func (f *funcs) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{f.hitsDesc, f.missesDesc, f.zoneDesc, f.openDesc, f.stressDesc, f.storeDesc} {
		ch <- d
	}
}

func (f *funcs) Collect(ch chan<- prometheus.Metric) {
	if fn := f.cache.Load(); fn != nil {
		hits, misses := (*fn)()
		ch <- prometheus.MustNewConstMetric(f.hitsDesc, prometheus.CounterValue, float64(hits))
		ch <- prometheus.MustNewConstMetric(f.missesDesc, prometheus.CounterValue, float64(misses))
	}
	if seq := f.zones.Load(); seq != nil {
		seen := map[string]bool{}
		for zone, up := range *seq {
			if seen[zone] || len(seen) >= maxSeries {
				continue // a zone twice would fail the whole scrape
			}
			seen[zone] = true
			ch <- prometheus.MustNewConstMetric(f.zoneDesc, prometheus.GaugeValue, b2f(up), zone)
		}
	}
	if fn := f.open.Load(); fn != nil {
		ch <- prometheus.MustNewConstMetric(f.openDesc, prometheus.GaugeValue, float64((*fn)()))
	}
	if fn := f.stress.Load(); fn != nil {
		ch <- prometheus.MustNewConstMetric(f.stressDesc, prometheus.GaugeValue, b2f((*fn)()))
	}
	if fn := f.store.Load(); fn != nil {
		ch <- prometheus.MustNewConstMetric(f.storeDesc, prometheus.GaugeValue, b2f((*fn)()))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// setPtr stores fn, or clears the pointer for a nil fn.
func setPtr[F any](p *atomic.Pointer[F], fn F, isNil bool) {
	if isNil {
		p.Store(nil)
		return
	}
	p.Store(&fn)
}

// SetDNSCache makes mxguard_dns_cache_hits_total and _misses_total read
// fn at each scrape (resolver.Resolver.Stats). Call it again when a
// reload replaces the resolver; nil removes the metrics.
func (m *Metrics) SetDNSCache(fn CacheStats) {
	if m != nil {
		setPtr(&m.funcs.cache, fn, fn == nil)
	}
}

// SetDNSBLZones makes mxguard_dnsbl_zone_up read zones at each scrape:
// each configured list zone and whether its self-test passes.
func (m *Metrics) SetDNSBLZones(zones iter.Seq2[string, bool]) {
	if m != nil {
		setPtr(&m.funcs.zones, zones, zones == nil)
	}
}

// SetOpenConnections makes mxguard_connections_open read fn.
func (m *Metrics) SetOpenConnections(fn func() int) {
	if m != nil {
		setPtr(&m.funcs.open, fn, fn == nil)
	}
}

// SetStress makes mxguard_stress read fn (true = under stress).
func (m *Metrics) SetStress(fn func() bool) {
	if m != nil {
		setPtr(&m.funcs.stress, fn, fn == nil)
	}
}

// SetStoreUp makes mxguard_store_up read fn (true = the store answers).
func (m *Metrics) SetStoreUp(fn func() bool) {
	if m != nil {
		setPtr(&m.funcs.store, fn, fn == nil)
	}
}
