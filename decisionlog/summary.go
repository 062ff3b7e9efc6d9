package decisionlog

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
)

// Summary counts refusals by rule, stage and client, and sessions and
// relayed messages, for a quick look at what mxguard did.
type Summary struct {
	Sessions, Relayed, Refused, Would      int
	ByRule, ByStage, ByClient, WouldByRule map[string]int
}

// NewSummary returns an empty summary.
func NewSummary() *Summary {
	return &Summary{ByRule: map[string]int{}, ByStage: map[string]int{}, ByClient: map[string]int{}, WouldByRule: map[string]int{}}
}

// Add counts one record: in the totals, and in the tables if it is a
// refusal.
func (s *Summary) Add(r Record) {
	s.Seen(r)
	s.Refusal(r)
}

// Seen counts one record in the totals of sessions and relayed messages
// only: `mxguard log -summary` counts every record read there, and only
// those its filter selects in the tables.
func (s *Summary) Seen(r Record) {
	switch r.Msg {
	case "session":
		s.Sessions++
	case "relayed":
		s.Relayed++
	}
}

// Refusal counts one record in the refusal tables, if it is a refusal.
func (s *Summary) Refusal(r Record) {
	switch r.Msg {
	case "refused":
		s.Refused++
		s.ByRule[r.Rule]++
		s.ByStage[r.Stage]++
		if a, ok := r.ClientAddr(); ok {
			s.ByClient[a.String()]++
		}
	case "would refuse":
		s.Would++
		s.WouldByRule[r.Rule]++
	}
}

// Write prints the summary, largest counts first, top n of each table.
func (s *Summary) Write(w io.Writer, n int) {
	fmt.Fprintf(w, "sessions %d, messages relayed %d, refusals %d, would-refuse (log mode) %d\n", s.Sessions, s.Relayed, s.Refused, s.Would)
	table := func(title string, m map[string]int) {
		if len(m) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s\n", title)
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		for i, kv := range sorted(m) {
			if i == n {
				fmt.Fprintf(tw, "  ...\t%d more\n", len(m)-n)
				break
			}
			fmt.Fprintf(tw, "  %s\t%d\n", kv.k, kv.v)
		}
		tw.Flush()
	}
	table("refusals by rule", s.ByRule)
	table("refusals by stage", s.ByStage)
	table("refusals by client", s.ByClient)
	table("would refuse, by rule (log mode)", s.WouldByRule)
}

type kv struct {
	k string
	v int
}

func sorted(m map[string]int) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].v != out[j].v {
			return out[i].v > out[j].v
		}
		return out[i].k < out[j].k
	})
	return out
}
