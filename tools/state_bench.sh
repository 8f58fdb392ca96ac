#!/usr/bin/env bash
# state_bench.sh: what the state file costs, measured end to end with meteor-bench.
#
# Builds meteord and meteor-bench (release) and starts four standalone meteord nodes:
# no state file, StateSync no, StateSync everysec and StateSync always (state files in a
# temporary directory on the disk of $STATE_DIR, default target/state-bench). Against each:
#   closed:    publish throughput, one publish at a time (--window 1), CLOSED events
#   pipelined: publish throughput, PIPE_WINDOW publishes in flight, PIPE events
#   p99:       publish-to-delivery latency at N subscribers x RATE events/s for SECONDS s
# and prints one table.
#
# Usage: tools/state_bench.sh
#   SCALE=small (N=1000 RATE=100 SECONDS=5 CLOSED=2000 PIPE=20000) or SCALE=full
#   (SECONDS=30 CLOSED=10000 PIPE=200000); each can be set on its own too.
# Raw results (one JSON object per run): target/state-bench/results.jsonl.
# Everything started here is stopped by pid on exit; each bench run is limited to 180 s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCALE=${SCALE:-small}
if [ "$SCALE" = full ]; then
    D_SECONDS=30 D_CLOSED=10000 D_PIPE=200000
else
    D_SECONDS=5 D_CLOSED=2000 D_PIPE=20000
fi
N=${N:-1000}
RATE=${RATE:-100}
SECONDS_=${SECONDS_RUN:-$D_SECONDS}
CLOSED=${CLOSED:-$D_CLOSED}
PIPE=${PIPE:-$D_PIPE}
PIPE_WINDOW=${PIPE_WINDOW:-64}
SIZE=${SIZE:-64}
BENCH=$ROOT/target/release/meteor-bench
METEORD=$ROOT/target/release/meteord
OUT=$ROOT/target/state-bench
STATE_DIR=${STATE_DIR:-$OUT}
mkdir -p "$OUT" "$STATE_DIR"
TMP=$(mktemp -d "$STATE_DIR/run.XXXXXX")
PIDS=()

log() { printf '%s state_bench: %s\n' "$(date +%T)" "$*" >&2; }

# Stops one process we started: TERM, up to 10 s, then KILL.
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building meteord and meteor-bench (release)"
(cd "$ROOT" && cargo build --release -p meteord -p meteor-bench 2>&1 | tail -n 2) >&2
: >"$OUT/results.jsonl"
: >"$OUT/bench.stderr"

cat >"$TMP/meteord.conf" <<'CONF'
# One event per line, no pings: what meteor-bench counts.
SyslogFacility none
SubscriberDocumentRoot /
PingInterval 0
MaxControllers 1024

[bench]
HeaderTemplate HTTP/1.1 ~status~\r\nServer: ~server~\r\nContent-Type: text/plain\r\nCache-Control: no-cache\r\n\r\n
MessageTemplate ~text~\n
Persist 1
CONF

# start_node NAME [extra args...]: sets <NAME>_PID, <NAME>_SUB, <NAME>_CTL.
start_node() {
    local name=$1 pid sub="" ctl="" logf
    shift
    logf=$TMP/$name.log
    "$METEORD" -ConfigFileLocation "$TMP/meteord.conf" -SyslogFacility none \
        -SubscriberIP 127.0.0.1 -SubscriberPort 0 -ControllerIP 127.0.0.1 -ControllerPort 0 \
        "$@" 2>"$logf" &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do
        sub=$(sed -n 's/.*listening for subscribers on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$logf" | head -n1)
        ctl=$(sed -n 's/.*listening for controllers on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$logf" | head -n1)
        [ -n "$sub" ] && [ -n "$ctl" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$sub" ] && [ -n "$ctl" ] || { log "meteord $name did not start:"; tail -n 5 "$logf" >&2; exit 1; }
    printf -v "${name}_PID" '%s' "$pid"
    printf -v "${name}_SUB" '%s' "$sub"
    printf -v "${name}_CTL" '%s' "$ctl"
    log "meteord $name: subscribers $sub, controller $ctl (pid $pid)"
}

start_node none
start_node no -StateFile "$TMP/no.state" -StateSync no
start_node everysec -StateFile "$TMP/everysec.state" -StateSync everysec
start_node always -StateFile "$TMP/always.state" -StateSync always

REQUEST='GET /push/{i}/bench/bench HTTP/1.1\r\nHost: {host}\r\n\r\n'

# run SETUP SCENARIO [bench args...]
run() {
    local setup=$1 scenario=$2 sub ctl pid result
    shift 2
    sub=${setup}_SUB ctl=${setup}_CTL pid=${setup}_PID
    log "$setup $scenario"
    result=$(timeout 200 "$BENCH" -t "${!sub}" --controller "${!ctl}" --request "$REQUEST" \
        --size "$SIZE" --pid "${!pid}" --label "$setup-$scenario" --json --max-time 180 \
        "$@" 2>>"$OUT/bench.stderr" || true)
    [ -n "$result" ] || result="{\"label\":\"$setup-$scenario\",\"error\":\"bench failed\"}"
    echo "$result" >>"$OUT/results.jsonl"
}

SETUPS="none no everysec always"
for setup in $SETUPS; do
    run "$setup" closed -n 10 -m "$CLOSED" --window 1
    run "$setup" pipelined -n 10 -m "$PIPE" --window "$PIPE_WINDOW"
    run "$setup" p99 -n "$N" -m $((RATE * SECONDS_)) -r "$RATE"
done

field() {
    local v
    v=$(grep "\"label\":\"$1\"" "$OUT/results.jsonl" | head -n1 | grep -o "\"$2\":[^,}]*" | head -n1 | cut -d: -f2- | tr -d '"')
    echo "${v:--}"
}
num() { [ "$1" = - ] || [ "$1" = null ] && echo - || printf "%.${2}f" "$1"; }
rate() {
    local p s
    p=$(field "$1" published) s=$(field "$1" publish_s)
    [ "$s" = - ] || [ "$s" = null ] && { echo -; return; }
    awk -v p="$p" -v s="$s" 'BEGIN { if (s > 0) printf "%.0f", p / s; else print "-" }'
}

printf '\n%-10s %14s %16s %10s %10s %8s\n' setup closed_pub/s pipelined_pub/s p50_ms p99_ms lost
for setup in $SETUPS; do
    printf '%-10s %14s %16s %10s %10s %8s\n' "$setup" \
        "$(rate "$setup-closed")" "$(rate "$setup-pipelined")" \
        "$(num "$(field "$setup-p99" lat_p50_ms)" 2)" "$(num "$(field "$setup-p99" lat_p99_ms)" 2)" \
        "$(field "$setup-p99" lost)"
done
printf '\nclosed: one publish at a time (10 subscribers); pipelined: %s publishes in flight;\n' "$PIPE_WINDOW"
printf 'p50/p99: publish-to-delivery at %s subscribers x %s events/s for %s s (%s-byte events).\n' "$N" "$RATE" "$SECONDS_" "$SIZE"
printf 'Raw results: %s/results.jsonl\n' "$OUT"
