#!/usr/bin/env bash
# bench/run.sh: mxguard, the bare relay and the backend alone, side by side,
# on one machine, in one go (issue 15).
#
# Three targets get the same load: the backend alone (Postfix's smtp-sink,
# or the in-process mailsink), the bare relay in front of it (bench/benchd
# -relay: a go-smtp server relaying in lockstep through go-smtp's client, no
# checks at all), and mxguard in front of it with every check on (DNS
# fixture on loopback, caches warm). For each shape (one message per
# connection; 20 per connection) the three runs alternate, REPS times, and
# the median is reported, so that the ratios hold on a shared machine. Then
# mxguard again with DKIM-signed mail, beside a crypto/rsa verification
# benchmark (same run); the latency one connection at a time; the memory of
# 10,000 idle connections after the banner (relay, mxguard) and in the
# greeting wait (mxguard); the greeting delay; CPU and allocation profiles.
#
#   bash bench/run.sh                      # about 6 minutes on 2 cores
#   REPS=1 IDLE=2000 PROFILE=0 bash bench/run.sh
#
# Knobs (environment):
#   N=5000          messages per load run      C=20       connections
#   REPS=3          alternating repetitions (the median is reported)
#   SIZE=1024       message size, headers incl.
#   DKIM=1          also run mxguard with DKIM-signed mail (RSA 2048, one signature for all)
#   DKIM_REPS=5     signed/unsigned pairs (2N messages each, 20 per connection) for the DKIM goal
#   LOW_N=2000      messages in the one-connection-at-a-time latency runs
#   BUDGETS=1       the allocation-budget benchmarks (go test -bench, proxy and checks)
#   IDLE=10000      idle connections held (0: skip)   IDLE_HOLD=6s
#   GREETING=1      the greeting-delay runs (cold / warm pass cache / trusted)
#   GREET_DELAY=1s  mxguard's greeting delay (waited only by new addresses)
#   COLD_N=100 WARM_N=1000
#   BACKEND=smtp-sink (default when installed) or mailsink
#   SMTP_SINK=/usr/sbin/smtp-sink
#   PROFILE=1       CPU and allocation profiles of mxguard   PROFILE_SECONDS=4
#   LOG_LEVEL=warn  mxguard's log level (to a file)           KEEP=0 keep the work directory
#   REV=            what to call the build in the report (default: git describe)
#
# Everything runs on loopback; clients dial from several 127.0.0.x source
# addresses so that they look like distinct hosts. Everything started here
# is stopped on exit (also on Ctrl-C).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-5000}
C=${C:-20}
REPS=${REPS:-3}
SIZE=${SIZE:-1024}
DKIM=${DKIM:-1}
DKIM_REPS=${DKIM_REPS:-5}
LOW_N=${LOW_N:-2000}
IDLE=${IDLE:-10000}
IDLE_HOLD=${IDLE_HOLD:-6s}
GREETING=${GREETING:-1}
GREET_DELAY=${GREET_DELAY:-1s}
COLD_N=${COLD_N:-100}
WARM_N=${WARM_N:-1000}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
BACKEND=${BACKEND:-}
PROFILE=${PROFILE:-1}
BUDGETS=${BUDGETS:-1}
PROFILE_SECONDS=${PROFILE_SECONDS:-4}
LOG_LEVEL=${LOG_LEVEL:-warn}
KEEP=${KEEP:-0}

# Client addresses: the load (10), the cold greeting runs (COLD_N, each used
# once), the idle connections (20 per run). 127.0.0.2 is a DNSBL test point:
# avoided.
MAIN_NET=127.0.0 MAIN_FIRST=11 MAIN_LAST=20
COLD_NET=127.0.1
IDLE_COUNT=20
HELO=mail.bench.example
FROM=load@bench.example
TO=postmaster@bench-mx.example

die() {
	echo "bench: $*" >&2
	exit 1
}
note() { echo "bench: $*" >&2; }

seq_list() { # NET FIRST LAST -> comma list
	local out="" i
	for ((i = $2; i <= $3; i++)); do out+="${out:+,}$1.$i"; done
	echo "$out"
}
MAIN_SRC=$(seq_list $MAIN_NET $MAIN_FIRST $MAIN_LAST)
COLD_SRC=$(seq_list $COLD_NET 1 "$COLD_N")

[ "$COLD_N" -ge 1 ] && [ "$COLD_N" -le 250 ] || die "COLD_N must be 1..250"
[ "$REPS" -ge 1 ] || die "REPS must be at least 1"
[ -r /proc/self/stat ] || die "needs Linux /proc"
[ -n "${EPOCHREALTIME:-}" ] || die "needs bash 5"
command -v go >/dev/null || die "needs the go command"
if [ -z "$BACKEND" ]; then
	BACKEND=mailsink
	[ -x "$SMTP_SINK" ] && BACKEND=smtp-sink
fi
case $BACKEND in
smtp-sink) [ -x "$SMTP_SINK" ] || die "$SMTP_SINK not found (apt-get install postfix), or BACKEND=mailsink" ;;
mailsink) ;;
*) die "BACKEND must be smtp-sink or mailsink" ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mxguard-bench.XXXXXX")
BIN=$WORK/bin
mkdir -p "$BIN"

# --- processes ---------------------------------------------------------------
declare -A PID     # name -> pid of what we started
declare -A TICKS   # "run:name" -> CPU ticks used during the run
declare -A FOREIGN # run -> % of the machine's CPU used by other processes meanwhile
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)

cleanup() {
	local rc=$? name pid i
	trap - EXIT INT TERM
	for name in "${!PID[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null || true; done
	for name in "${!PID[@]}"; do
		pid=${PID[$name]}
		for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then
		echo "bench: work directory kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # NAME CMD...: in the background, output in $WORK/NAME.out/.err
	local name=$1
	shift
	"$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
	PID[$name]=$!
}

stop() { # NAME: TERM, wait, KILL if need be
	local pid=${PID[$1]:-} i
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	unset "PID[$1]"
}

alive() { kill -0 "${PID[$1]}" 2>/dev/null; }

wait_line() { # NAME PATTERN: until the process prints PATTERN on stdout
	local i
	for ((i = 0; i < 100; i++)); do
		grep -q "$2" "$WORK/$1.out" 2>/dev/null && return 0
		alive "$1" || die "$1 exited: $(tail -3 "$WORK/$1.err")"
		sleep 0.1
	done
	die "$1 did not print '$2' within 10s: $(tail -3 "$WORK/$1.err")"
}

listening() { # PORT
	if command -v ss >/dev/null; then
		ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
	else
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
	fi
}

wait_listen() { # NAME PORT
	local i
	for ((i = 0; i < 100; i++)); do
		listening "$2" && return 0
		alive "$1" || die "$1 exited: $(tail -3 "$WORK/$1.err")"
		sleep 0.1
	done
	die "$1 is not listening on port $2 after 10s: $(tail -3 "$WORK/$1.err")"
}

PORTS=()
next_port() { # sets PORT to a free port
	while :; do
		if [ ${#PORTS[@]} -eq 0 ]; then
			mapfile -t PORTS < <("$BIN/benchd" -free-ports 10)
		fi
		PORT=${PORTS[0]}
		PORTS=("${PORTS[@]:1}")
		listening "$PORT" || return 0
	done
}

ticks() { # PID -> utime+stime in clock ticks, the whole process (all threads)
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
sys_ticks() { awk '/^cpu / { print $2 + $3 + $4; exit }' /proc/stat; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

jget() { # FIELD FILE: a number from smtpload's one-line JSON (0 when absent)
	local v
	v=$(sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" "$2" | head -1)
	echo "${v:-0}"
}

median() { # numbers as arguments -> their median ("-" for none)
	printf '%s\n' "$@" | grep -E '^-?[0-9.]+$' | sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
spread() { # numbers -> "min..max"
	printf '%s\n' "$@" | grep -E '^-?[0-9.]+$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%g..%g", lo, hi }'
}
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; } # EXPR [DECIMALS]

# --- build -------------------------------------------------------------------
note "building mxguard, smtpload and benchd into $BIN"
(cd "$ROOT" && go build -o "$BIN/" ./cmd/mxguard ./cmd/smtpload ./bench/benchd) || die "build failed"
if [ "$PROFILE" = 1 ]; then
	printf '{"Replace":{"%s/cmd/mxguard/zz_bench_pprof.go":"%s/bench/pprof.go.txt"}}\n' "$ROOT" "$ROOT" >"$WORK/overlay.json"
	(cd "$ROOT" && go build -overlay "$WORK/overlay.json" -o "$BIN/mxguard-pprof" ./cmd/mxguard) || die "profiling build failed"
fi

# Idle mode needs file descriptors: take the hard limit (children inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$IDLE" -gt $((NOFILE - 200)) ]; then
	note "RLIMIT_NOFILE is $NOFILE: holding $((NOFILE - 200)) idle connections instead of $IDLE"
	IDLE=$((NOFILE - 200))
fi

# --- fixtures: DNS, the backend, the bare relay ------------------------------
start dns "$BIN/benchd" -dns 127.0.0.1:0 -sender-domain bench.example -dkim-key "$WORK/dkim.pem" -dkim-selector bench \
	-host "$HELO=$MAIN_NET.$MAIN_FIRST-$MAIN_NET.$MAIN_LAST" \
	-host "cold.bench.example=$COLD_NET.1-$COLD_NET.$COLD_N" \
	-host "idle.bench.example=127.0.2.1-127.0.2.$IDLE_COUNT,127.0.3.1-127.0.3.$IDLE_COUNT,127.0.4.1-127.0.4.$IDLE_COUNT"
wait_line dns '^ready'
DNS=$(sed -n 's/^dns=//p' "$WORK/dns.out")

if [ "$BACKEND" = smtp-sink ]; then
	next_port
	ss_user=()
	[ "$(id -u)" = 0 ] && ss_user=(-u "$(id -un postfix 2>/dev/null || echo nobody)")
	# -h: its name; 1024: the listen backlog. It advertises XCLIENT without
	# ADDR, which mxguard needs, so mxguard talks to it with identity "none",
	# as the bare relay does.
	start backend "$SMTP_SINK" "${ss_user[@]}" -h smtp-sink.bench.example "127.0.0.1:$PORT" 1024
	wait_listen backend "$PORT"
	BE_ADDR=127.0.0.1:$PORT IDENTITY=none
else
	start backend "$BIN/benchd" -sink 127.0.0.1:0
	wait_line backend '^ready'
	BE_ADDR=$(sed -n 's/^sink=//p' "$WORK/backend.out") IDENTITY=xclient
fi

start relay "$BIN/benchd" -relay 127.0.0.1:0 -relay-to "$BE_ADDR"
wait_line relay '^ready'
RELAY_ADDR=$(sed -n 's/^relay=//p' "$WORK/relay.out")

# mxguard_start NAME GREET_DELAY MAX_CONNECTIONS TRUSTED [BINARY]: writes
# $WORK/NAME.toml from bench/mxguard-bench.toml, starts it, sets MX.
mxguard_start() {
	local name=$1 delay=$2 maxconn=$3 trusted=$4 bin=${5:-$BIN/mxguard}
	next_port
	sed -e "s|@TRUSTED@|$trusted|; s|@LISTEN@|127.0.0.1:$PORT|; s|@GREET_DELAY@|$delay|" \
		-e "s|@MAX_CONNECTIONS@|$maxconn|; s|@BACKEND@|$BE_ADDR|; s|@IDENTITY@|$IDENTITY|" \
		-e "s|@DNS@|$DNS|; s|@LOG@|$WORK/$name.log|; s|@LOG_LEVEL@|$LOG_LEVEL|; s|@RULES@|$ROOT/bench/rules-bench.toml|" \
		-e "s|@STATE@|$WORK/$name.db|" \
		"$ROOT/bench/mxguard-bench.toml" >"$WORK/$name.toml"
	grep -v '^#' "$WORK/$name.toml" | grep -q '@[A-Z_]*@' && die "unfilled placeholder in $WORK/$name.toml"
	"$BIN/mxguard" check-config -config "$WORK/$name.toml" >/dev/null 2>"$WORK/$name.check" ||
		die "bad bench config: $(cat "$WORK/$name.check")"
	start "$name" "$bin" serve -config "$WORK/$name.toml"
	wait_listen "$name" "$PORT"
	MX=127.0.0.1:$PORT
}

UNSIGNED=(-helo "$HELO" -from "$FROM" -to "$TO" -size "$SIZE" -timeout 30s)
SIGNED=("${UNSIGNED[@]}" -dkim-key "$WORK/dkim.pem" -dkim-domain bench.example -dkim-selector bench)

# load RUN ADDR PER_CONN COUNT CONC SIGNED(0/1) NAME...: one smtpload run;
# its JSON in $WORK/RUN.json, the CPU ticks each named process used in
# TICKS[RUN:NAME], the other processes' share of the machine in FOREIGN.
WARNINGS=()
load() {
	local run=$1 addr=$2 per=$3 n=$4 conc=$5 signed=$6 name rc=0
	shift 6
	local names=("$@") flags=("${UNSIGNED[@]}")
	[ "$signed" = 1 ] && flags=("${SIGNED[@]}")
	declare -A before
	for name in "${names[@]}"; do before[$name]=$(ticks "${PID[$name]}"); done
	local sys0 sys1 t0 t1
	sys0=$(sys_ticks) t0=$EPOCHREALTIME
	"$BIN/smtpload" -addr "$addr" -n "$n" -c "$conc" -per-conn "$per" -src "$MAIN_SRC" "${flags[@]}" -json \
		>"$WORK/$run.json" 2>"$WORK/$run.err" || rc=$?
	sys1=$(sys_ticks) t1=$EPOCHREALTIME
	for name in "${names[@]}"; do TICKS[$run:$name]=$(($(ticks "${PID[$name]}") - ${before[$name]})); done
	[ $rc -le 1 ] || die "smtpload failed ($run): $(cat "$WORK/$run.err")"
	local ours=0 wall
	for name in "${names[@]}"; do ours=$((ours + ${TICKS[$run:$name]})); done
	wall=$(calc "$t1 - $t0" 6)
	if awk -v w="$wall" 'BEGIN { exit !(w >= 1) }'; then
		FOREIGN[$run]=$(awk -v sys=$((sys1 - sys0)) -v ours="$ours" -v cl="$(jget client_cpu_s "$WORK/$run.json")" \
			-v hz="$CLK_TCK" -v n="$NCPU" -v w="$wall" \
			'BEGIN { f = (sys - ours - cl * hz) / (hz * n * w) * 100; printf "%.0f", (f < 0 ? 0 : f) }')
	fi
	local refused errors
	refused=$(jget refused "$WORK/$run.json")
	errors=$(jget errors "$WORK/$run.json")
	if [ "$refused" != 0 ] || [ "$errors" != 0 ]; then
		note "$run: $refused refused, $errors errors: $(sed -n 's/.*"\(refused_by\|errors_by\)":\({[^}]*}\).*/\2/p' "$WORK/$run.json")"
		WARNINGS+=("$run: $refused refused, $errors errors (see $WORK/$run.json)")
	fi
}

cpu_us() { # RUN NAME -> CPU microseconds per accepted message
	awk -v t="${TICKS[$1:$2]}" -v hz="$CLK_TCK" -v ok="$(jget ok "$WORK/$1.json")" \
		'BEGIN { if (ok > 0) printf "%.1f", t / hz / ok * 1e6; else print "-" }'
}

# warm ADDR: one patient connection from each load address (the greeting
# pass cache, the DNS cache), then a short load (backend connections, the
# heap). Everything must pass, or the numbers mean nothing.
warm() {
	local run=warm-$RANDOM
	"$BIN/smtpload" -addr "$1" -n $((MAIN_LAST - MAIN_FIRST + 1)) -c $((MAIN_LAST - MAIN_FIRST + 1)) -per-conn 1 \
		-src "$MAIN_SRC" "${SIGNED[@]}" -json >"$WORK/$run.json" 2>"$WORK/$run.err" ||
		die "warm-up through $1 failed: $(cat "$WORK/$run.json" "$WORK/$run.err")"
	"$BIN/smtpload" -addr "$1" -n 1000 -c "$C" -per-conn 5 -src "$MAIN_SRC" "${UNSIGNED[@]}" -json \
		>"$WORK/$run-2.json" 2>"$WORK/$run-2.err" ||
		die "warm-up through $1 failed: $(cat "$WORK/$run-2.json" "$WORK/$run-2.err")"
}

mxguard_start mx "$GREET_DELAY" 20000 ""
MX_MAIN=$MX
note "warming up mxguard (DNS cache, greeting pass cache for $MAIN_SRC) and the bare relay"
warm "$MX_MAIN"
warm "$RELAY_ADDR"

# --- 1. throughput and CPU, alternating ------------------------------------------
TARGETS=(direct relay mx)
target_addr() { case $1 in direct) echo "$BE_ADDR" ;; relay) echo "$RELAY_ADDR" ;; mx | mxdkim) echo "$MX_MAIN" ;; esac; }
target_procs() { case $1 in direct) echo backend ;; relay) echo "relay backend" ;; mx | mxdkim) echo "mx backend" ;; esac; }
front_proc() { case $1 in direct) echo backend ;; relay) echo relay ;; mx | mxdkim) echo mx ;; esac; }

for ((rep = 1; rep <= REPS; rep++)); do
	for per in 1 20; do
		order=("${TARGETS[@]}")
		# Rotate the order each repetition: no target always runs first.
		for ((k = 1; k < rep; k++)); do order=("${order[@]:1}" "${order[0]}"); done
		[ "$DKIM" = 1 ] && order+=(mxdkim)
		note "rep $rep/$REPS, $per message(s) per connection: ${order[*]} ($N messages, $C connections)"
		for t in "${order[@]}"; do
			signed=0
			[ "$t" = mxdkim ] && signed=1
			# shellcheck disable=SC2046
			load "$t-$per-$rep" "$(target_addr "$t")" "$per" "$N" "$C" "$signed" $(target_procs "$t")
		done
		if [ "$DKIM" = 1 ]; then
			"$BIN/benchd" -rsa-verify "$WORK/dkim.pem" -rsa-seconds 0.5 >"$WORK/rsa-$per-$rep.out" ||
				die "rsa-verify failed"
		fi
	done
done

# --- 1a. DKIM: signed and unsigned mail back to back, at 20 per connection -----------
# The extra CPU of a signed message is the difference of two figures with
# a few percent of noise each: measured on pairs run back to back, twice
# the messages, DKIM_REPS times, beside a crypto/rsa verification each.
if [ "$DKIM" = 1 ]; then
	for ((rep = 1; rep <= DKIM_REPS; rep++)); do
		note "DKIM pair $rep/$DKIM_REPS: $((2 * N)) messages unsigned, then signed, 20 per connection"
		load "dku-20-$rep" "$MX_MAIN" 20 $((2 * N)) "$C" 0 mx backend
		load "dks-20-$rep" "$MX_MAIN" 20 $((2 * N)) "$C" 1 mx backend
		"$BIN/benchd" -rsa-verify "$WORK/dkim.pem" -rsa-seconds 0.5 >"$WORK/rsa-pair-$rep.out" || die "rsa-verify failed"
	done
fi

# --- 1b. latency without queueing: one connection at a time ----------------------
for ((rep = 1; rep <= REPS; rep++)); do
	for per in 1 20; do
		order=("${TARGETS[@]}")
		for ((k = 1; k < rep; k++)); do order=("${order[@]:1}" "${order[0]}"); done
		note "rep $rep/$REPS, latency, $per message(s) per connection, 1 connection: ${order[*]} ($LOW_N messages)"
		for t in "${order[@]}"; do
			# shellcheck disable=SC2046
			load "low-$t-$per-$rep" "$(target_addr "$t")" "$per" "$LOW_N" 1 0 $(target_procs "$t")
		done
	done
done

# --- 2. greeting delay: pass cache cold, then warm -------------------------------
if [ "$GREETING" = 1 ]; then
	note "greeting: $COLD_N connections from $COLD_N new addresses (cold), then $WARM_N from the same (warm)"
	COLD_FLAGS=(-helo cold.bench.example -from "$FROM" -to "$TO" -size "$SIZE" -timeout 30s)
	greet_run() { # RUN ADDR COUNT
		"$BIN/smtpload" -addr "$2" -n "$3" -c "$C" -per-conn 1 -src "$COLD_SRC" "${COLD_FLAGS[@]}" -json \
			>"$WORK/$1.json" 2>"$WORK/$1.err" || {
			note "$1: $(cat "$WORK/$1.json" "$WORK/$1.err")"
			WARNINGS+=("$1: refusals or errors (see $WORK/$1.json)")
		}
	}
	greet_run greet-cold "$MX_MAIN" "$COLD_N"
	greet_run greet-warm "$MX_MAIN" "$WARM_N"
	mxguard_start mx-trusted "$GREET_DELAY" 20000 '"127.0.0.0/8"'
	greet_run greet-trusted "$MX" "$WARM_N"
	stop mx-trusted
fi
stop mx

# --- 3. idle connections ------------------------------------------------------------
# idle_run NAME PROC NET: IDLE connections from NET.1-20 held IDLE_HOLD;
# RSS sampled while held: IDLE_RSS (the last sample, all of them open and
# settled), IDLE_PEAK (VmHWM), IDLE_BEFORE.
declare -A IDLE_RSS IDLE_PEAK IDLE_BEFORE IDLE_CPU
declare -A EXTRA RSA # by msg/conn, and "pair"
idle_run() {
	local name=$1 proc=$2 net=$3 pid r last=0 i
	pid=${PID[$proc]}
	sleep 0.5
	IDLE_BEFORE[$name]=$(rss_kb "$pid")
	local t0
	t0=$(ticks "$pid")
	start "idle-$name" "$BIN/smtpload" -addr "$4" -idle "$IDLE" -hold "$IDLE_HOLD" -c 100 \
		-src "$(seq_list "$net" 1 $IDLE_COUNT)" -json
	for ((i = 0; i < 600; i++)); do
		grep -q holding "$WORK/idle-$name.err" 2>/dev/null && break
		alive "idle-$name" || break
		sleep 0.1
	done
	while alive "idle-$name"; do
		r=$(rss_kb "$pid")
		[ "$r" -gt 0 ] && last=$r
		sleep 0.5
	done
	wait "${PID[idle-$name]}" || true
	unset "PID[idle-$name]"
	cp "$WORK/idle-$name.out" "$WORK/idle-$name.json"
	IDLE_RSS[$name]=$last
	IDLE_PEAK[$name]=$(hwm_kb "$pid")
	IDLE_CPU[$name]=$(($(ticks "$pid") - t0))
}
if [ "$IDLE" -gt 0 ]; then
	IDLE_HOLD_S=${IDLE_HOLD%s}
	note "idle: $IDLE connections after the banner, held $IDLE_HOLD: the bare relay"
	stop relay # a fresh one: its memory is the idle connections' alone
	start relay "$BIN/benchd" -relay 127.0.0.1:0 -relay-to "$BE_ADDR"
	wait_line relay '^ready'
	RELAY_ADDR=$(sed -n 's/^relay=//p' "$WORK/relay.out")
	idle_run relay relay 127.0.2 "$RELAY_ADDR"
	stop relay
	# mxguard: greet_delay 1s, so the idle clients wait it out, get the
	# banner and stay; max_connections twice the flood, so stress mode
	# (which would shorten the delays) stays off.
	note "idle: $IDLE connections after the banner, held $IDLE_HOLD: mxguard"
	mxguard_start mx-idle-banner 1s $((2 * IDLE + 1000)) ""
	idle_run mx-banner mx-idle-banner 127.0.3 "$MX"
	stop mx-idle-banner
	note "idle: $IDLE connections in the greeting wait (greet_delay 60s), held $IDLE_HOLD: mxguard"
	mxguard_start mx-idle-greeting 60s $((2 * IDLE + 1000)) "" # its own state file, as the other's
	idle_run mx-greeting mx-idle-greeting 127.0.4 "$MX"
	stop mx-idle-greeting
fi

# --- 4. profiles ----------------------------------------------------------------------
PROFILES=()
if [ "$PROFILE" = 1 ]; then
	next_port
	PPROF_PORT=$PORT
	export MXGUARD_PPROF=127.0.0.1:$PPROF_PORT
	mxguard_start mx-pprof "$GREET_DELAY" 20000 "" "$BIN/mxguard-pprof"
	unset MXGUARD_PPROF
	wait_listen mx-pprof "$PPROF_PORT"
	warm "$MX"
	purl=http://127.0.0.1:$PPROF_PORT/debug/pprof
	fetch() { # URL FILE
		if command -v curl >/dev/null; then
			curl -fsS -o "$2" "$1" || die "could not fetch $1"
		else
			go tool pprof -proto -output "$2" "$1" 2>/dev/null || die "could not fetch $1"
		fi
	}
	for p in 1 20 20s; do
		per=${p%s} signed=0 flags=("${UNSIGNED[@]}")
		[ "$p" = 20s ] && signed=1 flags=("${SIGNED[@]}")
		run=mx-$per-1
		[ "$signed" = 1 ] && run=mxdkim-$per-1
		rate=$(jget msgs_per_sec "$WORK/$run.json")
		[ -f "$WORK/$run.json" ] || rate=1000
		n=$(awk -v r="$rate" -v s="$PROFILE_SECONDS" 'BEGIN { n = int(r * (s + 3)); print (n < 1000 ? 1000 : n) }')
		note "profiling mxguard for ${PROFILE_SECONDS}s under $C connections, $per message(s) each$([ "$signed" = 1 ] && echo ", DKIM-signed")"
		fetch "$purl/allocs" "$WORK/allocs-$p-0.pprof"
		start "profload-$p" "$BIN/smtpload" -addr "$MX" -n "$n" -c "$C" -per-conn "$per" -src "$MAIN_SRC" "${flags[@]}" -json
		sleep 1
		fetch "$purl/profile?seconds=$PROFILE_SECONDS" "$WORK/cpu-$p.pprof"
		fetch "$purl/allocs" "$WORK/allocs-$p-1.pprof"
		wait "${PID[profload-$p]}" || true
		unset "PID[profload-$p]"
		go tool pprof -top -nodecount=22 "$BIN/mxguard-pprof" "$WORK/cpu-$p.pprof" >"$WORK/cpu-$p.top" 2>/dev/null || true
		go tool pprof -top -cum -nodecount=80 "$BIN/mxguard-pprof" "$WORK/cpu-$p.pprof" >"$WORK/cpu-$p.cum" 2>/dev/null || true
		go tool pprof -top -nodecount=15 -sample_index=alloc_space -diff_base "$WORK/allocs-$p-0.pprof" \
			"$BIN/mxguard-pprof" "$WORK/allocs-$p-1.pprof" >"$WORK/allocs-$p.top" 2>/dev/null || true
		PROFILES+=("$p")
	done
	stop mx-pprof
fi

# --- 5. allocation budgets ----------------------------------------------------------------
if [ "$BUDGETS" = 1 ]; then
	note "allocation budgets: BenchmarkSession (proxy), BenchmarkDKIMRun and BenchmarkRSAVerify (checks)"
	(cd "$ROOT" && go test -run XXX -bench 'BenchmarkSession$' -benchmem -count 1 ./proxy) >"$WORK/budget-proxy.txt" 2>&1 ||
		WARNINGS+=("BenchmarkSession failed or is over its budget (see $WORK/budget-proxy.txt)")
	(cd "$ROOT" && go test -run XXX -bench 'BenchmarkDKIMRun$|BenchmarkRSAVerify$' -benchmem -count 1 ./checks) >"$WORK/budget-checks.txt" 2>&1 ||
		WARNINGS+=("BenchmarkDKIMRun failed or is over its budget (see $WORK/budget-checks.txt)")
fi

# --- report --------------------------------------------------------------------------
# stat KIND TARGET PER: the median over the repetitions of
#   rate (msgs/s), cpu (front process µs/msg), becpu (backend µs/msg),
#   p99 (ms, C connections), low99 / low50 (ms, 1 connection).
stat() {
	local kind=$1 t=$2 per=$3 rep vals=()
	for ((rep = 1; rep <= REPS; rep++)); do
		local run=$t-$per-$rep
		case $kind in
		rate) vals+=("$(jget msgs_per_sec "$WORK/$run.json")") ;;
		cpu) vals+=("$(cpu_us "$run" "$(front_proc "$t")")") ;;
		becpu) vals+=("$(cpu_us "$run" backend)") ;;
		p99) vals+=("$(jget latency_p99_ms "$WORK/$run.json")") ;;
		low99) vals+=("$(jget latency_p99_ms "$WORK/low-$run.json")") ;;
		low50) vals+=("$(jget latency_p50_ms "$WORK/low-$run.json")") ;;
		added) # p99 one connection at a time, minus the backend alone's, same repetition
			vals+=("$(calc "$(jget latency_p99_ms "$WORK/low-$run.json") - $(jget latency_p99_ms "$WORK/low-direct-$per-$rep.json")" 3)") ;;
		esac
	done
	median "${vals[@]}"
}
allvals() { # like stat, every repetition: for the spread
	local kind=$1 t=$2 per=$3 rep out=()
	for ((rep = 1; rep <= REPS; rep++)); do
		case $kind in
		rate) out+=("$(printf '%.0f' "$(jget msgs_per_sec "$WORK/$t-$per-$rep.json")")") ;;
		cpu) out+=("$(cpu_us "$t-$per-$rep" "$(front_proc "$t")")") ;;
		esac
	done
	spread "${out[@]}"
}

label() { case $1 in direct) echo "$BACKEND alone" ;; relay) echo "bare relay -> $BACKEND" ;; mx) echo "mxguard -> $BACKEND" ;; mxdkim) echo "mxguard, DKIM-signed" ;; esac; }
f2() { [ "$1" = - ] && echo - || printf '%.2f' "$1"; }
f0() { [ "$1" = - ] && echo - || printf '%.0f' "$1"; }
idle_mb() { [ -n "${IDLE_RSS[$1]:-}" ] && calc "${IDLE_RSS[$1]} / 1024" 1 || echo "-"; }

echo
echo "mxguard benchmark, $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname)"
echo "machine: $NCPU cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r), $(go version | awk '{ print $3 }')"
echo "mxguard: ${REV:-$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)}; every check on (HELO forward DNS, rDNS, DNSBL+RHSBL, SPF, DKIM, DMARC,"
echo "         spoofing, reputation), allow/deny lists (none matching), log at $LOG_LEVEL to a file, DNS fixture on loopback, caches warm"
echo "bare relay: go-smtp server → go-smtp client (bench/benchd -relay), lockstep, no checks; backend: $BACKEND (mxguard's identity: $IDENTITY)"
echo "load:    $N messages of $SIZE bytes, unsigned, 1 recipient, $C connections, pipelining; $REPS alternating repetitions, median shown"
noisy=$(for r in "${!FOREIGN[@]}"; do echo "${FOREIGN[$r]} $r"; done | sort -n | tail -1)
if [ -n "$noisy" ]; then
	echo "noise:   other processes used up to ${noisy%% *}% of the machine's CPU during a run (${noisy#* })$(
		[ "${noisy%% *}" -gt 10 ] && echo ": the machine was shared, the medians are what to read")"
fi
echo
echo "1. Side by side (CPU: the front process's own user+system time per message; p99 at $C connections; +p99: added over"
echo "   the backend alone with 1 connection at a time; idle: RSS holding $IDLE connections)"
printf '%-26s | %-38s | %-38s | %-21s\n' "" "1 message per connection" "20 messages per connection" "idle RSS (MB)"
printf '%-26s | %7s %9s %8s %10s | %7s %9s %8s %10s | %10s %10s\n' "" "msg/s" "CPU µs" "p99 ms" "+p99 ms" "msg/s" "CPU µs" "p99 ms" "+p99 ms" "banner" "greeting"
for t in direct relay mx; do
	row=()
	for per in 1 20; do
		add=$(f2 "$(stat added "$t" "$per")")
		[ "$t" = direct ] && add=-
		row+=("$(f0 "$(stat rate "$t" "$per")")" "$(f0 "$(stat cpu "$t" "$per")")" "$(f2 "$(stat p99 "$t" "$per")")" "$add")
	done
	ib=- ig=-
	[ "$t" = relay ] && ib=$(idle_mb relay)
	[ "$t" = mx ] && ib=$(idle_mb mx-banner) ig=$(idle_mb mx-greeting)
	printf '%-26s | %7s %9s %8s %10s | %7s %9s %8s %10s | %10s %10s\n' "$(label "$t")" "${row[@]}" "$ib" "$ig"
done
if [ "$DKIM" = 1 ]; then
	row=()
	for per in 1 20; do row+=("$(f0 "$(stat rate mxdkim "$per")")" "$(f0 "$(stat cpu mxdkim "$per")")" "$(f2 "$(stat p99 mxdkim "$per")")" "-"); done
	printf '%-26s | %7s %9s %8s %10s | %7s %9s %8s %10s |\n' "$(label mxdkim)" "${row[@]}"
fi
echo
echo "   every repetition (min..max): msg/s and front CPU µs per message"
for t in direct relay mx $([ "$DKIM" = 1 ] && echo mxdkim); do
	printf '   %-24s 1/conn %-12s %-14s 20/conn %-12s %-14s backend CPU µs/msg %s, %s\n' "$(label "$t")" \
		"$(allvals rate "$t" 1)" "$(allvals cpu "$t" 1)" "$(allvals rate "$t" 20)" "$(allvals cpu "$t" 20)" \
		"$(stat becpu "$t" 1)" "$(stat becpu "$t" 20)"
done
echo "   1 connection at a time, p50 / p99 ms (median):"
for t in direct relay mx; do
	printf '   %-24s 1/conn %s / %s   20/conn %s / %s\n' "$(label "$t")" "$(f2 "$(stat low50 "$t" 1)")" "$(f2 "$(stat low99 "$t" 1)")" \
		"$(f2 "$(stat low50 "$t" 20)")" "$(f2 "$(stat low99 "$t" 20)")"
done
echo "   smtpload's own CPU µs/msg (rep 1): $(for r in direct-1-1 relay-1-1 mx-1-1 direct-20-1 relay-20-1 mx-20-1; do
	awk -v c="$(jget client_cpu_s "$WORK/$r.json")" -v ok="$(jget ok "$WORK/$r.json")" -v r="${r%-1}" 'BEGIN { if (ok > 0) printf "%s %.0f  ", r, c / ok * 1e6 }'
done)"

if [ "$DKIM" = 1 ]; then
	echo
	echo "2. DKIM: mxguard's extra CPU per signed message (rsa-sha256, 2048 bits, keys cached) against one crypto/rsa verification"
	for per in 1 20; do
		ex=() rv=()
		for ((rep = 1; rep <= REPS; rep++)); do
			s=$(cpu_us "mxdkim-$per-$rep" mx) u=$(cpu_us "mx-$per-$rep" mx)
			[ "$s" != - ] && [ "$u" != - ] && ex+=("$(calc "$s - $u" 1)")
			rv+=("$(sed -n 's/^rsa_verify_cpu_us=//p' "$WORK/rsa-$per-$rep.out")")
		done
		EXTRA[$per]=$(median "${ex[@]}") RSA[$per]=$(median "${rv[@]}")
		printf '   %2s msg/conn (the runs of 1.): signed %s µs, unsigned %s µs per message: extra %s µs (reps %s); crypto/rsa verify %s µs; ratio %s\n' \
			"$per" "$(stat cpu mxdkim "$per")" "$(stat cpu mx "$per")" "${EXTRA[$per]}" "$(spread "${ex[@]}")" "${RSA[$per]}" \
			"$(calc "${EXTRA[$per]} / ${RSA[$per]}" 2)"
	done
	ex=() rv=() su=() uu=()
	for ((rep = 1; rep <= DKIM_REPS; rep++)); do
		s=$(cpu_us "dks-20-$rep" mx) u=$(cpu_us "dku-20-$rep" mx)
		su+=("$s") uu+=("$u")
		[ "$s" != - ] && [ "$u" != - ] && ex+=("$(calc "$s - $u" 1)")
		rv+=("$(sed -n 's/^rsa_verify_cpu_us=//p' "$WORK/rsa-pair-$rep.out")")
	done
	EXTRA[pair]=$(median "${ex[@]}") RSA[pair]=$(median "${rv[@]}")
	printf '   20 msg/conn, %s back-to-back pairs of %s messages: signed %s µs, unsigned %s µs: extra %s µs (pairs %s); crypto/rsa verify %s µs (%s); ratio %s (goal ≤ 2)\n' \
		"$DKIM_REPS" $((2 * N)) "$(median "${su[@]}")" "$(median "${uu[@]}")" "${EXTRA[pair]}" "$(spread "${ex[@]}")" "${RSA[pair]}" "$(spread "${rv[@]}")" \
		"$(calc "${EXTRA[pair]} / ${RSA[pair]}" 2)"
fi

if [ "$GREETING" = 1 ]; then
	echo
	echo "3. Greeting delay (1 message per connection, $C at a time)"
	printf '   %-58s | %8s %9s %9s %s\n' case "conn/s" p50 p99 "ok/refused/errors"
	for r in greet-cold greet-warm greet-trusted; do
		case $r in
		greet-cold) l="cold: greet_delay $GREET_DELAY, $COLD_N new addresses, all checks" ;;
		greet-warm) l="warm: $WARM_N from the same addresses (pass cache), all checks" ;;
		greet-trusted) l="trusted_networks: $WARM_N, no delay, no checks (reference)" ;;
		esac
		printf '   %-58s | %8.1f %7.1fms %7.1fms %s/%s/%s\n' "$l" "$(jget msgs_per_sec "$WORK/$r.json")" \
			"$(jget latency_p50_ms "$WORK/$r.json")" "$(jget latency_p99_ms "$WORK/$r.json")" \
			"$(jget ok "$WORK/$r.json")" "$(jget refused "$WORK/$r.json")" "$(jget errors "$WORK/$r.json")"
	done
fi

if [ "$IDLE" -gt 0 ]; then
	echo
	echo "4. Idle: $IDLE connections from $IDLE_COUNT addresses, held $IDLE_HOLD"
	for n in relay mx-banner mx-greeting; do
		j=$WORK/idle-$n.json
		case $n in
		relay) l="bare relay, after the banner" ;;
		mx-banner) l="mxguard, after the banner" ;;
		mx-greeting) l="mxguard, in the greeting wait" ;;
		esac
		printf '   %-30s RSS %6.1f MB (%.1f before, peak %.1f), %5.2f KB per connection; accepted %s, greeted %s, 220- only %s, errors %s; CPU %.2fs\n' \
			"$l" "$(calc "${IDLE_RSS[$n]} / 1024" 2)" "$(calc "${IDLE_BEFORE[$n]} / 1024" 2)" "$(calc "${IDLE_PEAK[$n]} / 1024" 2)" \
			"$(calc "(${IDLE_RSS[$n]} - ${IDLE_BEFORE[$n]}) / ($(jget accepted "$j") + 0.0001)" 2)" \
			"$(jget accepted "$j")" "$(jget greeted "$j")" "$(jget bait "$j")" "$(jget errors "$j")" "$(calc "${IDLE_CPU[$n]} / $CLK_TCK" 2)"
	done
fi

# Goals (issue 15).
verdict() { awk -v x="$2" "BEGIN { print (($1) ? \"met\" : \"MISSED\") }"; }
echo
echo "Goals (issue 15), from the medians above"
for per in 1 20; do
	rr=$(stat rate relay "$per") rm=$(stat rate mx "$per")
	printf '   %-52s mxguard %6.0f, bare relay %6.0f msg/s: %5.1f%%  %s\n' "throughput ≥ bare relay's, $per msg/conn" "$rm" "$rr" \
		"$(calc "100 * $rm / $rr" 1)" "$(verdict 'x >= 100' "$(calc "100 * $rm / $rr" 1)")"
done
for per in 1 20; do
	cr=$(stat cpu relay "$per") cm=$(stat cpu mx "$per")
	printf '   %-52s mxguard %6s, bare relay %6s µs/msg: %5.1f%%  %s\n' "CPU per message ≤ bare relay's, $per msg/conn" "$cm" "$cr" \
		"$(calc "100 * $cm / $cr" 1)" "$(verdict 'x <= 100' "$(calc "100 * $cm / $cr" 1)")"
done
if [ "$DKIM" = 1 ]; then
	# 20 per connection is the measure: at 1 per connection the difference
	# of two ~800 µs figures is lost in their noise (see the spread above).
	x=$(calc "${EXTRA[pair]} / ${RSA[pair]}" 2)
	printf '   %-52s extra %s µs, verify %s µs: %s×  %s\n' "DKIM extra CPU ≤ 2× one RSA verify (pairs, 20/conn)" "${EXTRA[pair]}" "${RSA[pair]}" "$x" "$(verdict 'x <= 2' "$x")"
	printf '   %-52s 1 msg/conn %s×, 20 msg/conn %s×\n' "   (from the runs of 1., noisier)" "$(calc "${EXTRA[1]} / ${RSA[1]}" 2)" "$(calc "${EXTRA[20]} / ${RSA[20]}" 2)"
fi
if [ "$IDLE" -gt 0 ]; then
	printf '   %-52s %6s MB (bare relay %s MB)  %s\n' "$IDLE idle after the banner < 100 MB" "$(idle_mb mx-banner)" "$(idle_mb relay)" \
		"$(verdict "x < 100 && $IDLE >= 10000" "$(idle_mb mx-banner)")"
	printf '   %-52s %6s MB  %s\n' "$IDLE idle in the greeting wait < 64 MB" "$(idle_mb mx-greeting)" \
		"$(verdict "x < 64 && $IDLE >= 10000" "$(idle_mb mx-greeting)")"
fi
a=$(f2 "$(stat added mx 1)")
printf '   %-52s +%s ms (bare relay +%s ms)  %s\n' "added p99 < 2 ms, 1 msg/conn, 1 connection" "$a" "$(f2 "$(stat added relay 1)")" "$(verdict 'x < 2' "$a")"
printf '   %-52s +%s ms (bare relay +%s ms)\n' "   (for reference: 20 msg/conn)" "$(f2 "$(stat added mx 20)")" "$(f2 "$(stat added relay 20)")"

if [ "$BUDGETS" = 1 ]; then
	echo
	echo "5. Allocation budgets (go test -bench -benchmem; each benchmark fails when over its budget)"
	grep -hE '^Benchmark' "$WORK/budget-proxy.txt" "$WORK/budget-checks.txt" | sed 's/^/   /'
	{ grep -hE 'over the budget|budget [0-9]' "$WORK/budget-proxy.txt" "$WORK/budget-checks.txt" || true; } | sed 's/^/   OVER: /'
fi

for p in "${PROFILES[@]}"; do
	per=${p%s}
	echo
	echo "6.$p CPU profile of mxguard, ${PROFILE_SECONDS}s under $C connections, $per message(s) per connection$([ "$p" = 20s ] && echo ", DKIM-signed")"
	grep '^Duration' "$WORK/cpu-$p.top" | sed 's/^/   /'
	sed -n '/flat%/,$p' "$WORK/cpu-$p.top" | head -16 | sed 's/^/   /'
	echo "   cumulative, mxguard's code and the libraries it calls:"
	sed -n '/flat%/,$p' "$WORK/cpu-$p.cum" |
		grep -E 'flat%|github\.com/|syscall\.(write|read)$|runtime\.mallocgc$|runtime\.gcBgMarkWorker$|runtime\.bgscavenge$|net\.\(\*sysDialer\)\.dialSerial$' |
		grep -vE 'Serve\.func1|handleConn$|\(\*Conn\)\.handle$' | head -26 | sed 's/^/   /'
	echo "   allocated during the profile (alloc_space, top):"
	sed -n '/flat%/,$p' "$WORK/allocs-$p.top" | head -12 | sed 's/^/   /'
	us=$(stat cpu "$([ "$p" = 20s ] && echo mxdkim || echo mx)" "$per")
	echo "   the profile by part of mxguard (a sample counts for the first that matches; µs from the median CPU per message of 1.):"
	go tool pprof -traces "$BIN/mxguard-pprof" "$WORK/cpu-$p.pprof" 2>/dev/null | "$BIN/benchd" -pprof-groups -us-per-msg "$us" | sed 's/^/   /'
done
if [ ${#WARNINGS[@]} -gt 0 ]; then
	echo
	echo "WARNINGS: the figures above include runs with refusals or errors:"
	printf '   %s\n' "${WARNINGS[@]}"
fi
