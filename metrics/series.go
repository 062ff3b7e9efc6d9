package metrics

import (
	"sync"
	"sync/atomic"
)

// maxSeries bounds the children of one labelled metric. Label values come
// from the configuration, so this is never reached in practice; if a bug
// ever fed unbounded values, the excess is counted under the label value
// "other" instead of growing the metric without end.
const maxSeries = 2000

// other is the label value that takes series past maxSeries.
const other = "other"

// series resolves label values to a metric's child once: the first call
// with a key builds the child through the vector, every later call is one
// atomic load and one map look-up, without a lock or an allocation. The
// map is copied on write; writes happen once per new label set.
type series[K comparable, M any] struct {
	m     atomic.Pointer[map[K]M]
	mu    sync.Mutex // serialises writers
	make  func(K) M
	other K // the key series past maxSeries fall into
}

func newSeries[K comparable, M any](make func(K) M, other K) *series[K, M] {
	s := &series[K, M]{make: make, other: other}
	m := map[K]M{}
	s.m.Store(&m)
	return s
}

func (s *series[K, M]) get(k K) M {
	if v, ok := (*s.m.Load())[k]; ok {
		return v
	}
	return s.add(k)
}

func (s *series[K, M]) add(k K) M {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.m.Load()
	if v, ok := old[k]; ok {
		return v
	}
	if len(old) >= maxSeries {
		if v, ok := old[s.other]; ok {
			return v
		}
		k = s.other
	}
	v := s.make(k)
	next := make(map[K]M, len(old)+1)
	for ok, ov := range old {
		next[ok] = ov
	}
	next[k] = v
	s.m.Store(&next)
	return v
}
