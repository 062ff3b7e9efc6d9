package metrics

import (
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// exercise records something in every metric and sets every func.
func exercise(m *Metrics) {
	m.Connection(Accepted)
	m.Refusal("helo", "helo.localhost", "rcpt", "reject")
	m.CheckDuration("helo", 3*time.Millisecond)
	m.DNSBLHit("bl.test")
	m.BackendReply("rcpt", 250)
	m.BackendDuration("rcpt", 20*time.Millisecond)
	m.MessageRelayed()
	m.ConfigLoaded()
	m.ConfigReloaded(true)
	m.Greylist("new")
	m.RateLimit("per-client", "ok")
	m.SetDNSCache(func() (uint64, uint64) { return 7, 3 })
	m.SetDNSBLZones(zones(map[string]bool{"bl.test": true, "broken.test": false}))
	m.SetOpenConnections(func() int { return 4 })
	m.SetStress(func() bool { return true })
	m.SetStoreUp(func() bool { return true })
}

func zones(z map[string]bool) iter.Seq2[string, bool] {
	return func(yield func(string, bool) bool) {
		for _, k := range slices.Sorted(func(y func(string) bool) {
			for k := range z {
				if !y(k) {
					return
				}
			}
		}) {
			if !yield(k, z[k]) {
				return
			}
		}
	}
}

// TestRegisteredIsTheTable: what a scrape shows is exactly the table, so
// a metric cannot be added without a row (and so without documentation).
func TestRegisteredIsTheTable(t *testing.T) {
	m := New("1.2.3")
	exercise(m)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got, goProc []string
	for _, f := range fams {
		switch n := f.GetName(); {
		case strings.HasPrefix(n, "mxguard_"):
			got = append(got, n)
		case strings.HasPrefix(n, "go_"), strings.HasPrefix(n, "process_"):
			goProc = append(goProc, n)
		default:
			t.Errorf("unexpected metric %s", n)
		}
	}
	var want []string
	for _, i := range All {
		want = append(want, i.Name)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("registered mxguard metrics:\n%v\nthe table:\n%v", got, want)
	}
	if !slices.Contains(goProc, "go_goroutines") || !slices.Contains(goProc, "process_cpu_seconds_total") {
		t.Errorf("Go and process collectors missing: %v", goProc)
	}
}

// TestNaming: Prometheus conventions, and no label that could hold a
// client's address or anything else without bound.
func TestNaming(t *testing.T) {
	forbidden := []string{"ip", "addr", "address", "client", "helo", "sender", "from", "rcpt", "recipient", "session"}
	seen := map[string]bool{}
	for _, i := range All {
		if seen[i.Name] {
			t.Errorf("%s twice in the table", i.Name)
		}
		seen[i.Name] = true
		if !strings.HasPrefix(i.Name, "mxguard_") {
			t.Errorf("%s: no mxguard_ prefix", i.Name)
		}
		switch i.Type {
		case "counter":
			if !strings.HasSuffix(i.Name, "_total") {
				t.Errorf("counter %s does not end in _total", i.Name)
			}
		case "histogram":
			if !strings.HasSuffix(i.Name, "_seconds") {
				t.Errorf("histogram %s is not in seconds", i.Name)
			}
		case "gauge":
			if strings.HasSuffix(i.Name, "_total") {
				t.Errorf("gauge %s ends in _total", i.Name)
			}
		default:
			t.Errorf("%s: bad type %q", i.Name, i.Type)
		}
		for _, l := range i.Labels {
			if slices.Contains(forbidden, l) {
				t.Errorf("%s: label %q may hold client data", i.Name, l)
			}
		}
		if i.Help == "" || strings.Contains(i.Help, "|") {
			t.Errorf("%s: help %q empty or breaks the Markdown table", i.Name, i.Help)
		}
	}
}

func TestRecording(t *testing.T) {
	tests := []struct {
		name   string
		do     func(m *Metrics)
		metric string
		want   string
	}{
		{"connection", func(m *Metrics) { m.Connection(Limit); m.Connection(Limit); m.Connection(Pregreet) }, "mxguard_connections_total", `
mxguard_connections_total{outcome="accepted"} 0
mxguard_connections_total{outcome="dropped"} 0
mxguard_connections_total{outcome="limit"} 2
mxguard_connections_total{outcome="pregreet"} 1
mxguard_connections_total{outcome="refused"} 0
mxguard_connections_total{outcome="shed"} 0
`},
		{"refusal", func(m *Metrics) {
			m.Refusal("helo", "helo.localhost", "rcpt", "reject")
			m.Refusal("helo", "helo.localhost", "rcpt", "reject")
			m.Refusal("", "deny.partners", "connect", "drop")
		}, "mxguard_refusals_total", `
mxguard_refusals_total{action="drop",check="",rule="deny.partners",stage="connect"} 1
mxguard_refusals_total{action="reject",check="helo",rule="helo.localhost",stage="rcpt"} 2
`},
		{"backend reply classes", func(m *Metrics) {
			m.BackendReply("rcpt", 250)
			m.BackendReply("rcpt", 550)
			m.BackendReply("rcpt", 451)
			m.BackendReply("data", 354)
			m.BackendReply("data", 999)
		}, "mxguard_backend_replies_total", `
mxguard_backend_replies_total{class="2xx",stage="rcpt"} 1
mxguard_backend_replies_total{class="3xx",stage="data"} 1
mxguard_backend_replies_total{class="4xx",stage="rcpt"} 1
mxguard_backend_replies_total{class="5xx",stage="rcpt"} 1
mxguard_backend_replies_total{class="other",stage="data"} 1
`},
		{"dnsbl hits", func(m *Metrics) { m.DNSBLHit("bl.test"); m.DNSBLHit("wl.test") }, "mxguard_dnsbl_hits_total", `
mxguard_dnsbl_hits_total{zone="bl.test"} 1
mxguard_dnsbl_hits_total{zone="wl.test"} 1
`},
		{"reloads", func(m *Metrics) { m.ConfigReloaded(true); m.ConfigReloaded(false); m.ConfigReloaded(false) }, "mxguard_config_reloads_total", `
mxguard_config_reloads_total{result="error"} 2
mxguard_config_reloads_total{result="ok"} 1
`},
		{"relayed", func(m *Metrics) { m.MessageRelayed() }, "mxguard_messages_relayed_total", `
mxguard_messages_relayed_total 1
`},
		{"greylist", func(m *Metrics) { m.Greylist("new") }, "mxguard_greylist_total", `
mxguard_greylist_total{result="new"} 1
`},
		{"ratelimit", func(m *Metrics) { m.RateLimit("per-client", "exceeded") }, "mxguard_ratelimit_total", `
mxguard_ratelimit_total{limit="per-client",result="exceeded"} 1
`},
		{"dns cache", func(m *Metrics) { m.SetDNSCache(func() (uint64, uint64) { return 10, 4 }) }, "mxguard_dns_cache_hits_total,mxguard_dns_cache_misses_total", `
mxguard_dns_cache_hits_total 10
mxguard_dns_cache_misses_total 4
`},
		{"dns cache replaced", func(m *Metrics) {
			m.SetDNSCache(func() (uint64, uint64) { return 10, 4 })
			m.SetDNSCache(func() (uint64, uint64) { return 1, 2 })
		}, "mxguard_dns_cache_hits_total,mxguard_dns_cache_misses_total", `
mxguard_dns_cache_hits_total 1
mxguard_dns_cache_misses_total 2
`},
		{"dns cache removed", func(m *Metrics) {
			m.SetDNSCache(func() (uint64, uint64) { return 10, 4 })
			m.SetDNSCache(nil)
		}, "mxguard_dns_cache_hits_total", ``},
		{"zones", func(m *Metrics) { m.SetDNSBLZones(zones(map[string]bool{"a.test": true, "b.test": false})) }, "mxguard_dnsbl_zone_up", `
mxguard_dnsbl_zone_up{zone="a.test"} 1
mxguard_dnsbl_zone_up{zone="b.test"} 0
`},
		{"zone twice", func(m *Metrics) {
			m.SetDNSBLZones(func(yield func(string, bool) bool) { _ = yield("a.test", true) && yield("a.test", false) })
		}, "mxguard_dnsbl_zone_up", `
mxguard_dnsbl_zone_up{zone="a.test"} 1
`},
		{"open", func(m *Metrics) { m.SetOpenConnections(func() int { return 12 }) }, "mxguard_connections_open", `
mxguard_connections_open 12
`},
		{"stress", func(m *Metrics) { m.SetStress(func() bool { return false }) }, "mxguard_stress", `
mxguard_stress 0
`},
		{"store", func(m *Metrics) { m.SetStoreUp(func() bool { return true }) }, "mxguard_store_up", `
mxguard_store_up 1
`},
		{"unset funcs are absent", func(m *Metrics) {}, "mxguard_stress,mxguard_store_up,mxguard_connections_open,mxguard_dnsbl_zone_up", ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New("test")
			tt.do(m)
			names := strings.Split(tt.metric, ",")
			var exp strings.Builder
			for _, n := range names {
				for _, i := range All {
					if i.Name == n && strings.Contains(tt.want, n) {
						fmt.Fprintf(&exp, "# HELP %s %s\n# TYPE %s %s\n", n, i.Help, n, i.Type)
						for _, l := range strings.Split(strings.TrimSpace(tt.want), "\n") {
							if strings.HasPrefix(l, n+"{") || strings.HasPrefix(l, n+" ") {
								exp.WriteString(l + "\n")
							}
						}
					}
				}
			}
			if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(exp.String()), names...); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestHistograms(t *testing.T) {
	m := New("test")
	m.CheckDuration("spf", 30*time.Millisecond)
	m.CheckDuration("spf", 2*time.Second)
	m.BackendDuration("data", 90*time.Second)
	if n := testutil.CollectAndCount(m.Registry(), "mxguard_check_duration_seconds"); n != 1 {
		t.Errorf("check duration series = %d, want 1", n)
	}
	fams, _ := m.Registry().Gather()
	for _, f := range fams {
		switch f.GetName() {
		case "mxguard_check_duration_seconds":
			h := f.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 2 || h.GetSampleSum() < 2.03 || h.GetSampleSum() > 2.031 {
				t.Errorf("check duration: count %d sum %g", h.GetSampleCount(), h.GetSampleSum())
			}
		case "mxguard_backend_duration_seconds":
			h := f.GetMetric()[0].GetHistogram()
			var le60 uint64
			for _, b := range h.GetBucket() {
				if b.GetUpperBound() == 60 {
					le60 = b.GetCumulativeCount()
				}
			}
			if h.GetSampleCount() != 1 || le60 != 0 {
				t.Errorf("backend duration: count %d, le=60 %d", h.GetSampleCount(), le60)
			}
		}
	}
}

func TestBuildInfo(t *testing.T) {
	m := New("1.2.3")
	want := fmt.Sprintf(`# HELP mxguard_build_info %s
# TYPE mxguard_build_info gauge
mxguard_build_info{goversion=%q,version="1.2.3"} 1
`, infoBuildInfo.Help, runtime.Version())
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "mxguard_build_info"); err != nil {
		t.Error(err)
	}
}

func TestLastReloadTime(t *testing.T) {
	m := New("test")
	before := float64(time.Now().Unix())
	m.ConfigReloaded(false)
	if v := testutil.ToFloat64(m.lastReload); v != 0 {
		t.Errorf("after a failed reload: %g, want 0", v)
	}
	m.ConfigLoaded()
	if v := testutil.ToFloat64(m.lastReload); v < before || v > before+60 {
		t.Errorf("after the load: %g, want about %g", v, before)
	}
	if v := testutil.ToFloat64(m.reloadOK); v != 0 {
		t.Errorf("the first load counted as a reload")
	}
}

// TestSeriesBound: a bug feeding unbounded label values cannot grow a
// metric past maxSeries; the excess lands in "other".
func TestSeriesBound(t *testing.T) {
	m := New("test")
	for i := range maxSeries + 50 {
		m.DNSBLHit(fmt.Sprintf("zone%d.test", i))
	}
	if n := testutil.CollectAndCount(m.Registry(), "mxguard_dnsbl_hits_total"); n != maxSeries+1 {
		t.Errorf("series = %d, want %d", n, maxSeries+1)
	}
	fams, _ := m.Registry().Gather()
	for _, f := range fams {
		if f.GetName() != "mxguard_dnsbl_hits_total" {
			continue
		}
		for _, mm := range f.GetMetric() {
			if mm.GetLabel()[0].GetValue() == other && mm.GetCounter().GetValue() != 50 {
				t.Errorf("other = %g, want 50", mm.GetCounter().GetValue())
			}
		}
	}
}

func TestNil(t *testing.T) {
	var m *Metrics
	exercise(m) // must not panic
	if m.Registry() != nil {
		t.Error("a nil Metrics has a registry")
	}
}

func TestHandler(t *testing.T) {
	m := New("9.9")
	exercise(m)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`mxguard_build_info{goversion=`, `mxguard_refusals_total{action="reject",check="helo",rule="helo.localhost",stage="rcpt"} 1`, "go_goroutines", "mxguard_stress 1"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

// TestNoAllocations: the calls on the hot path allocate nothing once a
// label set has been seen.
func TestNoAllocations(t *testing.T) {
	m := New("test")
	exercise(m)
	calls := map[string]func(){
		"Connection":      func() { m.Connection(Accepted) },
		"Refusal":         func() { m.Refusal("helo", "helo.localhost", "rcpt", "reject") },
		"CheckDuration":   func() { m.CheckDuration("helo", time.Millisecond) },
		"DNSBLHit":        func() { m.DNSBLHit("bl.test") },
		"BackendReply":    func() { m.BackendReply("rcpt", 250) },
		"BackendDuration": func() { m.BackendDuration("rcpt", time.Millisecond) },
		"MessageRelayed":  func() { m.MessageRelayed() },
		"RateLimit":       func() { m.RateLimit("per-client", "ok") },
	}
	for name, f := range calls {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %g allocations per call", name, n)
		}
	}
}

func BenchmarkRefusal(b *testing.B) {
	m := New("test")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Refusal("helo", "helo.localhost", "rcpt", "reject")
		}
	})
}

func BenchmarkCheckDuration(b *testing.B) {
	m := New("test")
	b.ReportAllocs()
	for b.Loop() {
		m.CheckDuration("helo", time.Millisecond)
	}
}

// BenchmarkWithLabelValues is what Refusal would cost without the
// pre-resolved children.
func BenchmarkWithLabelValues(b *testing.B) {
	m := New("test")
	m.Refusal("helo", "helo.localhost", "rcpt", "reject")
	v := m.counterVec(Info{Name: "bench_total", Help: "x", Labels: []string{"check", "rule", "stage", "action"}})
	b.ReportAllocs()
	for b.Loop() {
		v.WithLabelValues("helo", "helo.localhost", "rcpt", "reject").Inc()
	}
}
