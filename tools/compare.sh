#!/usr/bin/env bash
# compare.sh: benchmark meteord against nginx + nchan and the yardstick in one run and print
# them side by side.
#
# Installs nginx and nchan (apt) when missing, builds meteord and meteor-bench (release) and
# the yardstick (gcc, from ../shared/bench/ideal.c beside the project root: the least a
# fan-out server can do; skipped when that file is absent), then for each scenario starts a
# fresh server on loopback ports with its own config in a temporary directory, runs
# tools/bench against it, and stops it by pid.
#
# Usage: tools/compare.sh            full scenarios (a few minutes)
#        SCALE=10 tools/compare.sh   subscriber counts divided by 10 (quick check)
#        ONLY=meteord|nchan|ideal    run one server only
#        SCENARIOS_MATCH=regex       run only the scenarios whose label matches (e.g. 'burst|rate-10k')
#        POLL_BATCH_INTERVAL=ms      PollBatchInterval of the kept-alive long-poll mode (benchka)
#        BASELINE=/path/to/meteord   also run an older meteord build ("before"), scenario by
#                                    scenario beside the current one, for before/after figures
# The table has a column per server run (meteord, before, nchan, ideal) and meteord's ratio
# to each of the others.
# Results (one JSON object per scenario) are kept in target/compare/{meteord,nchan,ideal}.jsonl.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCALE=${SCALE:-1}
ONLY=${ONLY:-}
BASELINE=${BASELINE:-}
BENCH=$ROOT/target/release/meteor-bench
METEORD=$ROOT/target/release/meteord
IDEAL_SRC=$ROOT/../shared/bench/ideal.c
IDEAL=$ROOT/target/ideal
OUT=$ROOT/target/compare
TMP=$(mktemp -d /tmp/meteor-compare.XXXXXX)
SERVER_PID=""

log() { printf '%s compare: %s\n' "$(date +%T)" "$*" >&2; }

# Stops the server we started (by its pid), waiting at most 10 s.
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() { stop_server; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port on 127.0.0.1 that nothing listens on (bounded search in 18000-18999).
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((18000 + RANDOM % 1000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

# ---- setup ----------------------------------------------------------------
if { [ -z "$ONLY" ] || [ "$ONLY" = nchan ]; } && { ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; }; then
    log "installing nginx and nchan"
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx libnginx-mod-nchan >/dev/null
fi
log "building meteor-bench and meteord (release)"
(cd "$ROOT" && cargo build --release -p meteor-bench 2>&1 | tail -n 3) >&2
[ -x "$BENCH" ] || { log "meteor-bench did not build"; exit 1; }
if [ "$ONLY" != nchan ]; then
    (cd "$ROOT" && cargo build --release -p meteord 2>&1 | tail -n 3) >&2 || log "meteord did not build: its scenarios will show errors"
fi
IDEAL_BUILT=""
if [ -z "$ONLY" ] || [ "$ONLY" = ideal ]; then
    if [ ! -f "$IDEAL_SRC" ]; then
        log "yardstick column skipped: $IDEAL_SRC not found"
    elif gcc -O2 -o "$IDEAL" "$IDEAL_SRC" >&2; then
        IDEAL_BUILT=1
    else
        log "yardstick column skipped: $IDEAL_SRC did not build"
    fi
fi
mkdir -p "$OUT"

# ---- meteord --------------------------------------------------------------
cat > "$TMP/meteord.conf" <<'CONF'
# meteord configuration for the benchmark: short templates, one event per line.
SyslogFacility none
SubscriberDocumentRoot /
PingInterval 0
MaxMessagesPerChannel 1000

[bench]
HeaderTemplate HTTP/1.1 ~status~\r\nServer: ~server~\r\nContent-Type: text/plain\r\nCache-Control: no-cache\r\n\r\n
MessageTemplate ~id~ ~text~\n
Persist 1

[benchlp]
HeaderTemplate HTTP/1.1 ~status~\r\nServer: ~server~\r\nContent-Type: text/plain\r\nCache-Control: no-cache\r\n\r\n
MessageTemplate ~id~ ~text~\n
Persist 1
MaxMessages 1

# Long-poll on kept-alive connections (meteor-bench --longpoll --keep-alive).
[benchka]
HeaderTemplate HTTP/1.1 ~status~\r\nServer: ~server~\r\nContent-Type: text/plain\r\nCache-Control: no-cache\r\n\r\n
MessageTemplate ~id~ ~text~\n
Persist 1
MaxMessages 1
KeepAlive 1
PollBatchInterval 50

# WebSocket subscribers (meteor-bench --websocket): the same line per event, one text frame each.
[benchws]
WebSocketOnly 1
ChannelInfoTemplate
MessageTemplate ~id~ ~text~\n
Persist 1
CONF

# The BASELINE build may predate the WebSocket keys and KeepAlive: it gets the rest (its
# benchka mode then closes after each reply, as benchlp does).
if [ -n "${POLL_BATCH_INTERVAL:-}" ]; then
    sed -i "s/^PollBatchInterval .*/PollBatchInterval $POLL_BATCH_INTERVAL/" "$TMP/meteord.conf"
fi
sed -e '/^# WebSocket subscribers/,$d' -e '/^KeepAlive /d' -e '/^PollBatchInterval /d' "$TMP/meteord.conf" >"$TMP/baseline.conf"

# Starts meteord on ephemeral ports; sets SERVER_PID, SUB_PORT, CTL_PORT.
start_meteord() {
    local conf=$TMP/meteord.conf
    [ "${1:-$METEORD}" = "$BASELINE" ] && conf=$TMP/baseline.conf
    "${1:-$METEORD}" -ConfigFileLocation "$conf" -SyslogFacility none -SubscriberIP 127.0.0.1 \
        -SubscriberPort 0 -ControllerIP 127.0.0.1 -ControllerPort 0 2>"$TMP/meteord.log" &
    SERVER_PID=$!
    wait_started meteord "$TMP/meteord.log" meteord_listening
}
# Whether meteord has announced both ports; sets SUB_PORT and CTL_PORT.
meteord_listening() {
    SUB_PORT=$(sed -n 's/.*listening for subscribers on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/meteord.log" | head -n1)
    CTL_PORT=$(sed -n 's/.*listening for controllers on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/meteord.log" | head -n1)
    [ -n "$SUB_PORT" ] && [ -n "$CTL_PORT" ]
}

# Waits up to 10 s, while SERVER_PID runs, for the check command (the rest of the
# arguments) to succeed; otherwise shows the end of the server's log and stops it.
wait_started() { # $1: the server's name, $2: its log
    local name=$1 logfile=$2
    shift 2
    for _ in $(seq 100); do
        "$@" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "$name did not start:"; tail -n 5 "$logfile" >&2
    stop_server
    return 1
}

# ---- nginx + nchan ----------------------------------------------------------
# Starts nginx (one worker) with nchan; sets SERVER_PID (master), WORKER_PID, NGX_PORT.
start_nchan() {
    NGX_PORT=$(free_port)
    local dir=$TMP/nginx
    rm -rf "$dir"; mkdir -p "$dir"
    cat > "$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
# nginx starts closing idle connections once fewer than 1/16 of worker_connections are free:
# 21000 keeps 19,000 subscribers clear of that (the 20,000 fd limit is the real cap).
events { worker_connections 21000; use epoll; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  nchan_shared_memory_size 512m;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NGX_PORT backlog=4096;
    location = /pub {
      nchan_publisher;
      nchan_channel_id \$arg_id;
      nchan_message_buffer_length 1000;
      nchan_message_timeout 1h;
    }
    location = /sub {
      nchan_subscriber http-raw-stream;
      nchan_channel_id \$arg_id;
      nchan_subscriber_http_raw_stream_separator "\n";
      nchan_subscriber_first_message newest;
    }
    location = /lp {
      nchan_subscriber longpoll;
      # Like meteord's .r<id> backlog batch: every waiting message in one response.
      nchan_longpoll_multipart_response on;
      nchan_channel_id \$arg_id;
      nchan_subscriber_first_message newest;
    }
  }
}
CONF
    nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/stdout.log" 2>&1 &
    SERVER_PID=$!
    WORKER_PID=""
    for _ in $(seq 100); do
        WORKER_PID=$(pgrep -P "$SERVER_PID" | head -n1 || true)
        if [ -n "$WORKER_PID" ] && (exec 3<>"/dev/tcp/127.0.0.1/$NGX_PORT") 2>/dev/null; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "nginx did not start:"; tail -n 5 "$dir/error.log" "$dir/stdout.log" >&2
    stop_server
    return 1
}

# ---- the yardstick -----------------------------------------------------------
# Starts target/ideal (../shared/bench/ideal.c); sets SERVER_PID, IDEAL_SUB, IDEAL_PUB.
start_ideal() {
    IDEAL_SUB=$(free_port) || return 1
    IDEAL_PUB=$(free_port) || return 1
    [ "$IDEAL_SUB" != "$IDEAL_PUB" ] || IDEAL_PUB=$((IDEAL_SUB + 1000))
    "$IDEAL" "$IDEAL_SUB" "$IDEAL_PUB" 2>"$TMP/ideal.log" &
    SERVER_PID=$!
    wait_started "the yardstick" "$TMP/ideal.log" ideal_listening
}
ideal_listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$IDEAL_SUB") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$IDEAL_PUB") 2>/dev/null
}

# ---- scenarios --------------------------------------------------------------
# label | bench arguments (subscriber counts are divided by SCALE)
SCENARIOS=(
    "idle-10k|-n $((10000 / SCALE)) -m 0"
    "idle-19k|-n $((19000 / SCALE)) -m 0"
    "burst-10k-x200|-n $((10000 / SCALE)) -m 200 --size 64 --window 1000"
    "rate-10k-100/s-10s|-n $((10000 / SCALE)) -m 1000 -r 100 --size 64"
    "rate-1k-100/s-10s|-n $((1000 / SCALE)) -m 1000 -r 100 --size 64"
    "fanout-19k-x10|-n $((19000 / SCALE)) -m 10 --size 64"
    "longpoll-1k-200/s-20s|--longpoll -n $((1000 / SCALE)) -m 4000 -r 200 --size 64"
    # The same on kept-alive connections (nchan keeps HTTP/1.1 long-polls alive in both).
    "longpoll-ka-1k-200/s-20s|--longpoll --keep-alive -n $((1000 / SCALE)) -m 4000 -r 200 --size 64"
    # WebSocket beside streaming (meteord only: nchan's websocket subscriber is not set up here).
    "ws-idle-10k|--websocket -n $((10000 / SCALE)) -m 0"
    "ws-burst-10k-x200|--websocket -n $((10000 / SCALE)) -m 200 --size 64 --window 1000"
    "ws-rate-10k-100/s-10s|--websocket -n $((10000 / SCALE)) -m 1000 -r 100 --size 64"
)

# One per server: starts it for the scenario in $args (run_one's locals) and sets pid (for
# /proc figures) and target (the bench's address options), or sets why it is not run and
# returns 1.
setup_meteord() { # $1: the binary
    if [ "$1" = "$BASELINE" ] && [[ $args == *--websocket* ]]; then
        why="not run (no WebSocket mode in the baseline's configuration)"; return 1
    fi
    start_meteord "$1" || { why="meteord did not start"; return 1; }
    pid=$SERVER_PID
    target=(-t "127.0.0.1:$SUB_PORT" --controller "127.0.0.1:$CTL_PORT")
}
setup_nchan() {
    [[ $args == *--websocket* ]] && { why="not run (no websocket set-up for nchan)"; return 1; }
    start_nchan || { why="nginx did not start"; return 1; }
    pid=$WORKER_PID
    target=(-t "127.0.0.1:$NGX_PORT" --pub-url "http://127.0.0.1:$NGX_PORT/pub?id={channel}")
    if [[ $args == *--longpoll* ]]; then
        target+=(--request 'GET /lp?id={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'
            --next-request 'GET /lp?id={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-Modified-Since: {lastmod}\r\nIf-None-Match: {etag}\r\n\r\n')
    else
        target+=(--request 'GET /sub?id={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    fi
}
setup_ideal() {
    [[ $args == *--websocket* || $args == *--longpoll* ]] && { why="not run (streams only)"; return 1; }
    start_ideal || { why="the yardstick did not start"; return 1; }
    pid=$SERVER_PID
    target=(-t "127.0.0.1:$IDEAL_SUB" --controller "127.0.0.1:$IDEAL_PUB")
}

# Runs one scenario against one server; appends its JSON line to $OUT/<server>.jsonl.
run_one() {
    local server=$1 label=$2 args=$3 target=() pid why=""
    case $server in
        before) setup_meteord "$BASELINE" ;;
        meteord) setup_meteord "$METEORD" ;;
        nchan) setup_nchan ;;
        ideal) setup_ideal ;;
    esac || { echo "{\"label\":\"$label\",\"error\":\"$why\"}" >>"$OUT/$server.jsonl"; return; }
    sleep 0.5
    log "$server: $label"
    # shellcheck disable=SC2086 # $args is a list of options
    local result
    result=$(timeout 240 "$BENCH" "${target[@]}" $args --pid "$pid" --label "$label" --json --max-time 180 \
        2>>"$OUT/$server.stderr" || true)
    [ -n "$result" ] || result="{\"label\":\"$label\",\"error\":\"bench failed (see $OUT/$server.stderr)\"}"
    echo "$result" >>"$OUT/$server.jsonl"
    stop_server
}

SERVERS=(meteord nchan)
[ -n "$IDEAL_BUILT" ] && SERVERS+=(ideal)
[ -n "$ONLY" ] && SERVERS=("$ONLY")
[ "$ONLY" = ideal ] && [ -z "$IDEAL_BUILT" ] && exit 1
[ -n "$BASELINE" ] && SERVERS=(before "${SERVERS[@]}")
for s in "${SERVERS[@]}"; do : >"$OUT/$s.jsonl"; : >"$OUT/$s.stderr"; done
for sc in "${SCENARIOS[@]}"; do
    [ -n "${SCENARIOS_MATCH:-}" ] && ! [[ ${sc%%|*} =~ $SCENARIOS_MATCH ]] && continue
    for s in "${SERVERS[@]}"; do
        run_one "$s" "${sc%%|*}" "${sc#*|}"
    done
done

# One table: meteord first (each ratio is meteord's to that column), then the baseline,
# nchan and the yardstick, whichever ran.
COLUMNS_RUN=()
for s in meteord before nchan ideal; do
    [[ " ${SERVERS[*]} " == *" $s "* ]] && COLUMNS_RUN+=("$s")
done
if [ "${#COLUMNS_RUN[@]}" -ge 2 ]; then
    files=()
    for s in "${COLUMNS_RUN[@]}"; do files+=("$OUT/$s.jsonl"); done
    "$BENCH" compare "${files[@]}" --names "$(IFS=,; echo "${COLUMNS_RUN[*]}")"
else
    cat "$OUT/${SERVERS[0]}.jsonl"
fi
