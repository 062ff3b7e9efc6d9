package ratelimit

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/redistest"
)

// AllowAll takes the buckets in order and stops at the first over its
// limit, the later ones untouched: in process and on Redis alike.
func TestAllowAll(t *testing.T) {
	srv := redistest.Start(t)
	limiters := map[string]Limiter{
		"local":    NewLocal(LocalOptions{}),
		"redis":    NewRedis(host(t, srv.Addr, "mxguard:batch:")),
		"fallback": Fallback{Primary: NewRedis(host(t, srv.Addr, "mxguard:batch2:")), Secondary: NewLocal(LocalOptions{})},
	}
	big, small := mustParse(t, "100 / 1h"), mustParse(t, "2 / 1h")
	ctx := context.Background()
	for name, l := range limiters {
		t.Run(name, func(t *testing.T) {
			reqs := []Request{{"a", big, 1}, {"b", small, 1}, {"c", big, 1}}
			for round := 1; round <= 4; round++ {
				i, r, err := AllowAll(ctx, l, reqs)
				if err != nil {
					t.Fatal(err)
				}
				want := -1
				if round > 2 {
					want = 1 // b holds 2
				}
				if i != want || r.Allowed != (want < 0) {
					t.Errorf("round %d: refused at %d (allowed %v), want %d", round, i, r.Allowed, want)
				}
				if want >= 0 && r.RetryAfter <= 0 {
					t.Errorf("round %d: no retry time: %+v", round, r)
				}
			}
			// a was charged every round, c only while b allowed.
			for _, c := range []struct {
				key  string
				left int
			}{{"a", 96}, {"c", 98}} {
				r, err := l.Allow(ctx, c.key, big, 0)
				if err != nil || r.Remaining != c.left {
					t.Errorf("%s: %d tokens left (err %v), want %d", c.key, r.Remaining, err, c.left)
				}
			}
		})
	}
}

// On Redis a stage's buckets cost one script call, not one each.
func TestAllowAllOneRoundTrip(t *testing.T) {
	srv := redistest.Start(t)
	l := NewRedis(host(t, srv.Addr, "mxguard:rt:"))
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	lim := mustParse(t, "100 / 1h")
	ctx := context.Background()
	if _, _, err := l.AllowAll(ctx, []Request{{"x", lim, 1}}); err != nil { // loads the script
		t.Fatal(err)
	}
	before := scriptCalls(t, admin)
	for range 10 {
		if i, _, err := l.AllowAll(ctx, []Request{{"ip", lim, 1}, {"net", lim, 1}, {"from", lim, 1}}); err != nil || i != -1 {
			t.Fatalf("refused at %d: %v", i, err)
		}
	}
	if n := scriptCalls(t, admin) - before; n != 10 {
		t.Errorf("10 calls of three buckets took %d script calls, want 10", n)
	}
}

// scriptCalls counts EVAL and EVALSHA calls the server has answered.
func scriptCalls(t *testing.T, c *redis.Client) int {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range regexp.MustCompile(`cmdstat_(?:eval|evalsha):calls=(\d+)`).FindAllStringSubmatch(info, -1) {
		k, _ := strconv.Atoi(m[1])
		n += k
	}
	return n
}

// A limiter that fails lets the request through and says why.
func TestAllowAllFailsOpen(t *testing.T) {
	boom := errors.New("boom")
	i, r, err := AllowAll(context.Background(), failing{boom}, []Request{{"a", mustParse(t, "1 / 1h"), 1}})
	if i != -1 || !r.Allowed || !errors.Is(err, boom) {
		t.Errorf("got %d %+v %v", i, r, err)
	}
}

type failing struct{ err error }

func (f failing) Allow(context.Context, string, Limit, int) (Result, error) {
	return Result{Allowed: true}, f.err
}
