package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// history is the kind of record reputation keeps.
type history struct {
	First    int64          `json:"f"`
	Last     int64          `json:"l"`
	Conns    int            `json:"c"`
	Refusals map[string]int `json:"r,omitempty"`
	Score    float64        `json:"s"`
}

func TestJSONRecords(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, advance func(time.Duration)) {
		ctx := context.Background()
		if _, found, err := GetJSON[history](ctx, s, "rep:192.0.2.1"); found || err != nil {
			t.Fatalf("GetJSON of nothing: %v, %v", found, err)
		}
		seen := func(now int64, refusedBy string) func(h *history, found bool) (time.Duration, error) {
			return func(h *history, found bool) (time.Duration, error) {
				if !found {
					h.First = now
				}
				h.Last = now
				h.Conns++
				if refusedBy != "" {
					if h.Refusals == nil {
						h.Refusals = map[string]int{}
					}
					h.Refusals[refusedBy]++
				}
				return time.Hour, nil
			}
		}
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				by := ""
				if i%4 == 0 {
					by = "dnsbl"
				}
				if _, err := UpdateJSON(ctx, s, "rep:192.0.2.1", seen(int64(100+i), by)); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		h, found, err := GetJSON[history](ctx, s, "rep:192.0.2.1")
		if err != nil || !found || h.Conns != 20 || h.Refusals["dnsbl"] != 5 || h.First < 100 {
			t.Fatalf("after 20 updates: %+v, %v, %v", h, found, err)
		}
		v, _ := s.Get(ctx, "rep:192.0.2.1")
		if len(v) > 80 {
			t.Errorf("record %d bytes: %s", len(v), v)
		}

		// A record that does not decode starts over.
		s.Set(ctx, "rep:bad", []byte("{not json"), 0)
		if _, found, err := GetJSON[history](ctx, s, "rep:bad"); found || err != nil {
			t.Errorf("GetJSON of garbage: %v, %v", found, err)
		}
		h, err = UpdateJSON(ctx, s, "rep:bad", seen(7, ""))
		if err != nil || h.Conns != 1 || h.First != 7 {
			t.Errorf("UpdateJSON over garbage: %+v, %v", h, err)
		}
		boom := errors.New("boom")
		if _, err := UpdateJSON(ctx, s, "rep:bad", func(*history, bool) (time.Duration, error) { return 0, boom }); !errors.Is(err, boom) {
			t.Errorf("UpdateJSON with fn failing: %v", err)
		}
	})
}
