package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// profileGroups are the parts of mxguard a CPU profile is split into
// (benchd -pprof-groups), in order: a sample counts for the first group
// one of its frames matches, so the store's work called from a check is
// the store's, and a socket write from the backend client is the
// backend's. The last group takes the rest.
var profileGroups = []struct {
	name string
	re   *regexp.Regexp
}{
	{"state store (store/, bbolt, reputation/, ratelimit/, greylist/)",
		regexp.MustCompile(`mxguard/store\.|go\.etcd\.io/bbolt|mxguard/reputation\.|mxguard/ratelimit|mxguard/greylist`)},
	{"decision log and metrics (proxy/log.go, decisionlog/, slog, metrics/)",
		regexp.MustCompile(`mxguard/decisionlog|log/slog|mxguard/metrics|prometheus|proxy\.\(\*conn\)\.(logSession|relayed|refuse|logWould)`)},
	{"checks, rules, pipeline, resolver",
		regexp.MustCompile(`mxguard/pipeline\.|mxguard/rules\.|mxguard/checks\.|mxguard/dnsbl\.|blitiri|go-msgauth|mxguard/resolver`)},
	{"GC in the background (marking, sweeping, scavenging)",
		regexp.MustCompile(`runtime\.gcBgMarkWorker|runtime\.bgsweep|runtime\.bgscavenge`)},
	{"backend client (proxy/backend/, its socket I/O)", regexp.MustCompile(`mxguard/proxy/backend\.`)},
	{"spool and header parsing (message/)", regexp.MustCompile(`mxguard/message\.`)},
	{"wire, session, greeting, pool (proxy/, client socket I/O)", regexp.MustCompile(`mxguard/proxy\.`)},
	{"go-smtp (parsing, its replies)", regexp.MustCompile(`emersion/go-smtp`)},
	{"the rest (scheduler, netpoll, accept)", regexp.MustCompile(`.`)},
}

// printGroups reads `go tool pprof -traces BINARY PROFILE` and prints the
// share of the samples in each group, and, given the CPU per message, its
// microseconds per message.
func printGroups(r io.Reader, w io.Writer, usPerMsg float64) error {
	sums := make([]float64, len(profileGroups))
	var total float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var value float64
	var frames []string
	flush := func() {
		if len(frames) == 0 {
			return
		}
		total += value
		for i, g := range profileGroups {
			if matchAny(g.re, frames) {
				sums[i] += value
				break
			}
		}
		frames = frames[:0]
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			flush()
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if v, ok := parseDuration(f[0]); ok && len(f) >= 2 && len(frames) == 0 {
			value = v
			frames = append(frames, f[1])
			continue
		}
		if len(frames) > 0 {
			frames = append(frames, f[0])
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return err
	}
	if total == 0 {
		return fmt.Errorf("no samples read (want the output of go tool pprof -traces)")
	}
	for i, g := range profileGroups {
		pct := 100 * sums[i] / total
		if usPerMsg > 0 {
			fmt.Fprintf(w, "%-66s %5.1f%%  ~%4.0f µs/msg\n", g.name, pct, pct*usPerMsg/100)
		} else {
			fmt.Fprintf(w, "%-66s %5.1f%%\n", g.name, pct)
		}
	}
	return nil
}

func matchAny(re *regexp.Regexp, frames []string) bool {
	for _, f := range frames {
		if re.MatchString(f) {
			return true
		}
	}
	return false
}

// parseDuration reads pprof's sample values: "10ms", "1.5s", "300us".
func parseDuration(s string) (float64, bool) {
	for _, u := range []struct {
		suffix string
		ms     float64
	}{{"ms", 1}, {"us", 0.001}, {"µs", 0.001}, {"ns", 1e-6}, {"s", 1000}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			return v * u.ms, err == nil
		}
	}
	return 0, false
}
