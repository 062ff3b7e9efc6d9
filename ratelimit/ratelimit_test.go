package ratelimit

import (
	"testing"
	"time"
)

func TestParseLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Limit
		str  string // String() of the result
	}{
		{"10 / 1m", Limit{10, time.Minute, 10}, "10 / 1m"},
		{"10/1m", Limit{10, time.Minute, 10}, "10 / 1m"},
		{"  5 /  30s ", Limit{5, 30 * time.Second, 5}, "5 / 30s"},
		{"10 / m", Limit{10, time.Minute, 10}, "10 / 1m"},
		{"100 / h", Limit{100, time.Hour, 100}, "100 / 1h"},
		{"1000 / 1d", Limit{1000, 24 * time.Hour, 1000}, "1000 / 1d"},
		{"1 / 15m", Limit{1, 15 * time.Minute, 1}, "1 / 15m"},
		{"50 / 5m", Limit{50, 5 * time.Minute, 50}, "50 / 5m"},
		{"3 / 1h30m", Limit{3, 90 * time.Minute, 3}, "3 / 1h30m"},
		{"2 / 1d12h", Limit{2, 36 * time.Hour, 2}, "2 / 36h"},
		{"10 / 1m, burst 30", Limit{10, time.Minute, 30}, "10 / 1m, burst 30"},
		{"burst 30, 10 / 1m", Limit{10, time.Minute, 30}, "10 / 1m, burst 30"},
		{"10 / 1m,burst 1", Limit{10, time.Minute, 1}, "10 / 1m, burst 1"},
		{"10 / 500ms", Limit{10, 500 * time.Millisecond, 10}, "10 / 500ms"},
	} {
		got, err := ParseLimit(tc.in)
		if err != nil {
			t.Errorf("ParseLimit(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseLimit(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if s := got.String(); s != tc.str {
			t.Errorf("ParseLimit(%q).String() = %q, want %q", tc.in, s, tc.str)
		}
		if again, err := ParseLimit(got.String()); err != nil || again != got {
			t.Errorf("String() of %q does not parse back: %+v, %v", tc.in, again, err)
		}
	}
}

func TestParseLimitErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `rate limit "": empty part; want "COUNT / PERIOD" with an optional ", burst N", e.g. "10 / 1m" or "10 / 1m, burst 30"`},
		{"10", `rate limit "10": "10" is neither a rate nor a burst; want "COUNT / PERIOD" with an optional ", burst N", e.g. "10 / 1m" or "10 / 1m, burst 30"`},
		{"10 per minute", `rate limit "10 per minute": "10 per minute" is neither a rate nor a burst; want "COUNT / PERIOD" with an optional ", burst N", e.g. "10 / 1m" or "10 / 1m, burst 30"`},
		{"ten / 1m", `rate limit "ten / 1m": count: "ten" is not a whole number of 1 or more`},
		{"0 / 1m", `rate limit "0 / 1m": count: "0" is not a whole number of 1 or more`},
		{"-1 / 1m", `rate limit "-1 / 1m": count: "-1" is not a whole number of 1 or more`},
		{"1.5 / 1m", `rate limit "1.5 / 1m": count: "1.5" is not a whole number of 1 or more`},
		{"10 / 1y", `rate limit "10 / 1y": period: "1y" is not a period: want a number and a unit s, m, h or d, e.g. 30s, 1m, 1h, 1d`},
		{"10 / ", `rate limit "10 / ": period: "" is not a period: want a number and a unit s, m, h or d, e.g. 30s, 1m, 1h, 1d`},
		{"10 / 60", `rate limit "10 / 60": period: "60" is not a period: want a number and a unit s, m, h or d, e.g. 30s, 1m, 1h, 1d`},
		{"10 / 0s", `rate limit "10 / 0s": period: "0s": the period must be longer than zero`},
		{"10 / 1m, burst", `rate limit "10 / 1m, burst": burst: "" is not a whole number of 1 or more`},
		{"10 / 1m, burst 0", `rate limit "10 / 1m, burst 0": burst: "0" is not a whole number of 1 or more`},
		{"10 / 1m, burst 5, burst 6", `rate limit "10 / 1m, burst 5, burst 6": burst given twice`},
		{"10 / 1m, 5 / 1s", `rate limit "10 / 1m, 5 / 1s": two rates; want "COUNT / PERIOD" with an optional ", burst N", e.g. "10 / 1m" or "10 / 1m, burst 30"`},
		{"burst 5", `rate limit "burst 5": no rate; want "COUNT / PERIOD" with an optional ", burst N", e.g. "10 / 1m" or "10 / 1m, burst 30"`},
		{"10 / 1m,", `rate limit "10 / 1m,": empty part; want "COUNT / PERIOD" with an optional ", burst N", e.g. "10 / 1m" or "10 / 1m, burst 30"`},
	} {
		_, err := ParseLimit(tc.in)
		if err == nil {
			t.Errorf("ParseLimit(%q): no error", tc.in)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("ParseLimit(%q) error\n got %s\nwant %s", tc.in, err, tc.want)
		}
	}
}

func TestLimitValid(t *testing.T) {
	for _, tc := range []struct {
		l  Limit
		ok bool
	}{
		{Limit{10, time.Minute, 10}, true},
		{Limit{}, false},
		{Limit{10, 0, 10}, false},
		{Limit{10, time.Minute, 0}, false},
	} {
		if err := tc.l.Valid(); (err == nil) != tc.ok {
			t.Errorf("%+v.Valid() = %v", tc.l, err)
		}
	}
}
