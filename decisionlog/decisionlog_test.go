package decisionlog

import (
	"bytes"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func readSample(t *testing.T) ([]Record, Stats) {
	t.Helper()
	f, err := os.Open("../testdata/log/sample.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []Record
	st, err := Read(f, func(r Record) error { recs = append(recs, r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return recs, st
}

func TestRead(t *testing.T) {
	recs, st := readSample(t)
	if st.Lines != 11 || st.Records != 9 || st.Bad != 2 {
		t.Errorf("stats %+v", st)
	}
	r := recs[5] // the first helo.localhost refusal
	if r.Msg != "refused" || r.Rule != "helo.localhost" || r.HELO() != "localhost" || r.Recipients() != "bob@demo.example" ||
		r.From == nil || *r.From != "alice@sender.example" || r.Stage != "rcpt" || len(r.Checks) != 1 || r.Where == "" {
		t.Errorf("record %+v", r)
	}
	if h := recs[2].HELO(); h != "mail.sender.example" {
		t.Errorf("session line HELO list: %q", h)
	}
	if a, ok := recs[7].ClientAddr(); !ok || a != netip.MustParseAddr("2001:db8::7") {
		t.Errorf("IPv6 client %v %v", a, ok)
	}
}

func TestFilter(t *testing.T) {
	recs, _ := readSample(t)
	count := func(f Filter) int {
		n := 0
		for _, r := range recs {
			if f.Match(r) {
				n++
			}
		}
		return n
	}
	cases := []struct {
		name string
		f    Filter
		want int
	}{
		{"all", Filter{}, 9},
		{"refused", Filter{Msgs: []string{"refused"}}, 4},
		{"refused and would", Filter{Msgs: []string{"refused", "would refuse"}}, 5},
		{"rule glob", Filter{Rule: "helo.*"}, 2},
		{"rule exact", Filter{Rule: "dnsbl"}, 1},
		{"client net", Filter{Client: netip.MustParsePrefix("198.51.100.0/24")}, 4},
		{"client v6", Filter{Client: netip.MustParsePrefix("2001:db8::/32")}, 1},
		{"stage", Filter{Stage: "connect"}, 1},
		{"text in rcpt", Filter{Text: "CAROL@"}, 1},
		{"text in sender", Filter{Text: "cheap-pills"}, 1},
		{"since", Filter{Since: time.Date(2026, 11, 23, 15, 38, 49, 0, time.UTC)}, 3},
		{"until", Filter{Until: time.Date(2026, 11, 23, 15, 38, 46, 0, time.UTC)}, 3},
		{"session", Filter{Session: "6CPD5GSN17JL"}, 2},
	}
	for _, c := range cases {
		if got := count(c.f); got != c.want {
			t.Errorf("%s: %d records, want %d", c.name, got, c.want)
		}
	}
}

func TestLine(t *testing.T) {
	recs, _ := readSample(t)
	got := Line(recs[5])
	want := "2026-11-23 15:38:48 REFUSED rcpt 198.51.100.5:40280 helo=localhost from=<alice@sender.example> to=<bob@demo.example> rule=helo.localhost session=4VD1X9VKJ7ST: 550 5.5.2 Helo command rejected: localhost is not a mail server's name (helo.localhost)"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if l := Line(recs[6]); !strings.Contains(l, " from=<> ") {
		t.Errorf("null sender: %s", l)
	}
}

func TestSummary(t *testing.T) {
	recs, _ := readSample(t)
	s := NewSummary()
	for _, r := range recs {
		s.Add(r)
	}
	var b bytes.Buffer
	s.Write(&b, 10)
	for _, want := range []string{"sessions 1, messages relayed 1, refusals 4, would-refuse (log mode) 1", "helo.localhost  2", "198.51.100.5  2", "deny.new-blocklist  1"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}

func TestLongLine(t *testing.T) {
	long := `{"msg":"refused","reason":"` + strings.Repeat("x", MaxLine) + `"}` + "\n" + `{"msg":"session"}` + "\n"
	var n int
	st, err := Read(strings.NewReader(long), func(Record) error { n++; return nil })
	if err != nil || st.Bad != 1 || n != 1 {
		t.Errorf("stats %+v, %d records, %v", st, n, err)
	}
}

func FuzzParse(f *testing.F) {
	data, _ := os.ReadFile("../testdata/log/sample.log")
	for _, l := range bytes.Split(data, []byte("\n")) {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := Parse(line)
		if err != nil {
			return
		}
		_ = Line(r)
		Filter{Rule: "helo.*", Text: "x", Client: netip.MustParsePrefix("0.0.0.0/0")}.Match(r)
		s := NewSummary()
		s.Add(r)
		s.Write(&bytes.Buffer{}, 3)
		if r.Msg == "" {
			t.Fatal("a record without msg was accepted")
		}
	})
}

func FuzzRead(f *testing.F) {
	data, _ := os.ReadFile("../testdata/log/sample.log")
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := Read(bytes.NewReader(data), func(Record) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		if st.Records+st.Bad != st.Lines {
			t.Fatalf("stats do not add up: %+v", st)
		}
	})
}
