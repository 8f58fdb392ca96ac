#!/usr/bin/env bash
# cluster_bench.sh: what sharing channels through Redis costs, measured end to end.
#
# Builds meteord and meteor-bench (release), starts redis-server on a free loopback port
# (no persistence), two meteord nodes sharing channels through it (node A takes the
# publishes, node B serves the subscribers) and one standalone meteord, then runs the same
# scenarios against the pair and against the standalone node:
#   low:  N subscribers, LOW_RATE x 5 events published at LOW_RATE events/s (5 s)
#   rate: N subscribers, EVENTS_RATE events published at RATE events/s
#   max:  N subscribers, EVENTS_MAX events published as fast as the window allows
# and prints one table (events/s, deliveries/s, latency publish-to-delivery, losses, CPU).
# CPU and RSS figures of the pair are the sum of node A, node B and redis-server.
#
# Usage: tools/cluster_bench.sh
#   N=1000 LOW_RATE=100 RATE=1000 EVENTS_RATE=5000 EVENTS_MAX=5000 WINDOW=8 SIZE=64 (defaults)
# Raw results (one JSON object per run) go to target/cluster-bench/{cluster,standalone}.jsonl.
# Everything started here is stopped by pid on exit; each bench run is limited to 180 s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-1000}
LOW_RATE=${LOW_RATE:-100}
RATE=${RATE:-1000}
EVENTS_RATE=${EVENTS_RATE:-5000}
EVENTS_MAX=${EVENTS_MAX:-5000}
WINDOW=${WINDOW:-8}
SIZE=${SIZE:-64}
BENCH=$ROOT/target/release/meteor-bench
METEORD=$ROOT/target/release/meteord
OUT=$ROOT/target/cluster-bench
TMP=$(mktemp -d /tmp/meteor-cluster-bench.XXXXXX)
PIDS=()

log() { printf '%s cluster_bench: %s\n' "$(date +%T)" "$*" >&2; }

# Stops one process we started: TERM, up to 10 s, then KILL.
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# Stops everything we started, newest first (the nodes before redis).
cleanup() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port on 127.0.0.1 that nothing listens on (bounded search in 20000-29999).
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 10000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

# ---- build ------------------------------------------------------------------
command -v redis-server >/dev/null || { log "redis-server is not installed (apt-get install redis-server)"; exit 1; }
log "building meteord and meteor-bench (release)"
(cd "$ROOT" && cargo build --release -p meteord -p meteor-bench 2>&1 | tail -n 2) >&2
mkdir -p "$OUT"
: >"$OUT/cluster.jsonl"
: >"$OUT/standalone.jsonl"
: >"$OUT/bench.stderr"

# ---- redis --------------------------------------------------------------------
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
    >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 100); do
    [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.1
done
[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] || { log "redis did not start:"; tail -n 5 "$TMP/redis.log" >&2; exit 1; }
log "redis-server $REDIS_PORT (pid $REDIS_PID)"

# ---- meteord ------------------------------------------------------------------
cat >"$TMP/meteord.conf" <<'CONF'
# One event per line, no pings: what meteor-bench counts.
SyslogFacility none
SubscriberDocumentRoot /
PingInterval 0

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
    if [ $# -gt 0 ]; then
        for _ in $(seq 100); do grep -q ': link up' "$logf" && break; sleep 0.1; done
        grep -q ': link up' "$logf" || { log "meteord $name did not connect to redis:"; tail -n 5 "$logf" >&2; exit 1; }
    fi
    printf -v "${name}_PID" '%s' "$pid"
    printf -v "${name}_SUB" '%s' "$sub"
    printf -v "${name}_CTL" '%s' "$ctl"
    log "meteord $name: subscribers $sub, controller $ctl (pid $pid)"
}

start_node A -RedisAddress "127.0.0.1:$REDIS_PORT"
start_node B -RedisAddress "127.0.0.1:$REDIS_PORT"
start_node S

# ---- scenarios ----------------------------------------------------------------
REQUEST='GET /push/{i}/bench/bench HTTP/1.1\r\nHost: {host}\r\n\r\n'

# run OUTFILE LABEL SUB CTL PIDS [bench args...]
run() {
    local file=$1 label=$2 sub=$3 ctl=$4 pids=$5 result
    shift 5
    log "$label"
    result=$(timeout 200 "$BENCH" -t "$sub" --controller "$ctl" --request "$REQUEST" \
        -n "$N" --size "$SIZE" --window "$WINDOW" --pid "$pids" --label "$label" \
        --json --max-time 180 "$@" 2>>"$OUT/bench.stderr" || true)
    [ -n "$result" ] || result="{\"label\":\"$label\",\"error\":\"bench failed (see $OUT/bench.stderr)\"}"
    echo "$result" >>"$OUT/$file.jsonl"
}

CLUSTER_PIDS="$A_PID,$B_PID,$REDIS_PID"
for sc in "low|-m $((LOW_RATE * 5)) -r $LOW_RATE" "rate|-m $EVENTS_RATE -r $RATE" "max|-m $EVENTS_MAX"; do
    label=${sc%%|*}
    # shellcheck disable=SC2086 # the scenario's options are a list
    run cluster "$label" "$B_SUB" "$A_CTL" "$CLUSTER_PIDS" ${sc#*|}
    # shellcheck disable=SC2086
    run standalone "$label" "$S_SUB" "$S_CTL" "$S_PID" ${sc#*|}
done

# ---- table --------------------------------------------------------------------
# field FILE LABEL KEY: one value of one run ("-" when missing).
field() {
    local v
    v=$(grep "\"label\":\"$2\"" "$OUT/$1.jsonl" | head -n1 | grep -o "\"$3\":[^,}]*" | head -n1 | cut -d: -f2- | tr -d '"')
    echo "${v:--}"
}
num() { [ "$1" = - ] || [ "$1" = null ] && echo - || printf "%.${2}f" "$1"; }

printf '\n%s subscribers on one node, %s-byte events; cluster = publish on node A, subscribers on node B, via redis-server\n\n' "$N" "$SIZE"
printf '%-6s %-11s %7s %8s %13s %8s %8s %8s %8s %6s %7s %12s\n' \
    scenario setup events pub/s deliveries/s p50_ms p99_ms p999_ms lost dropped cpu_s deliv/cpu_s
for label in low rate max; do
    for setup in cluster standalone; do
        err=$(field "$setup" "$label" error)
        if [ "$err" != - ]; then
            printf '%-6s %-11s error: %s\n' "$label" "$setup" "$err"
            continue
        fi
        published=$(field "$setup" "$label" published)
        publish_s=$(field "$setup" "$label" publish_s)
        pub_rate=-
        if [ "$publish_s" != - ] && [ "$publish_s" != null ]; then
            pub_rate=$(awk -v p="$published" -v s="$publish_s" 'BEGIN { if (s > 0) printf "%.0f", p / s; else print "-" }')
        fi
        printf '%-6s %-11s %7s %8s %13s %8s %8s %8s %8s %6s %7s %12s\n' "$label" "$setup" \
            "$published" "$pub_rate" \
            "$(num "$(field "$setup" "$label" deliveries_per_s)" 0)" \
            "$(num "$(field "$setup" "$label" lat_p50_ms)" 2)" \
            "$(num "$(field "$setup" "$label" lat_p99_ms)" 2)" \
            "$(num "$(field "$setup" "$label" lat_p999_ms)" 2)" \
            "$(field "$setup" "$label" lost)" \
            "$(field "$setup" "$label" disconnected)" \
            "$(num "$(field "$setup" "$label" cpu_s)" 2)" \
            "$(num "$(field "$setup" "$label" deliveries_per_cpu_s)" 0)"
    done
done
printf '\nevents = published and acknowledged; pub/s = events / publishing time; lost = deliveries missing\n'
printf '(of subscribers x events); dropped = subscribers the server closed; cpu_s = server CPU during fan-out\n'
printf '(cluster: node A + node B + redis-server). Raw results: %s/{cluster,standalone}.jsonl\n' "$OUT"
