#!/usr/bin/env bash
# compare.sh: benchmark meteord against nginx + nchan in one run and print both side by side.
#
# Installs nginx and nchan (apt) when missing, builds meteord and meteor-bench (release),
# then for each scenario starts a fresh server on loopback ports with its own config in a
# temporary directory, runs tools/bench against it, and stops it by pid.
#
# Usage: tools/compare.sh            full scenarios (a few minutes)
#        SCALE=10 tools/compare.sh   subscriber counts divided by 10 (quick check)
#        ONLY=meteord|nchan          run one server only
#        SCENARIOS_MATCH=regex       run only the scenarios whose label matches (e.g. 'burst|rate-10k')
#        POLL_BATCH_INTERVAL=ms      PollBatchInterval of the kept-alive long-poll mode (benchka)
#        BASELINE=/path/to/meteord   also run an older meteord build ("before"), scenario by
#                                    scenario beside the current one, for before/after figures
# Results (one JSON object per scenario) are kept in target/compare/{meteord,nchan}.jsonl.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCALE=${SCALE:-1}
ONLY=${ONLY:-}
BASELINE=${BASELINE:-}
BENCH=$ROOT/target/release/meteor-bench
METEORD=$ROOT/target/release/meteord
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
if [ "$ONLY" != meteord ] && { ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; }; then
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
    SUB_PORT="" CTL_PORT=""
    for _ in $(seq 100); do
        SUB_PORT=$(sed -n 's/.*listening for subscribers on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/meteord.log" | head -n1)
        CTL_PORT=$(sed -n 's/.*listening for controllers on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/meteord.log" | head -n1)
        [ -n "$SUB_PORT" ] && [ -n "$CTL_PORT" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "meteord did not start:"; tail -n 5 "$TMP/meteord.log" >&2
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

# ---- scenarios --------------------------------------------------------------
# label | bench arguments (subscriber counts are divided by SCALE)
SCENARIOS=(
    "idle-10k|-n $((10000 / SCALE)) -m 0"
    "idle-19k|-n $((19000 / SCALE)) -m 0"
    "burst-10k-x200|-n $((10000 / SCALE)) -m 200 --size 64"
    "rate-10k-100/s-10s|-n $((10000 / SCALE)) -m 1000 -r 100 --size 64"
    "rate-1k-100/s-10s|-n $((1000 / SCALE)) -m 1000 -r 100 --size 64"
    "fanout-19k-x10|-n $((19000 / SCALE)) -m 10 --size 64"
    "longpoll-1k-200/s-20s|--longpoll -n $((1000 / SCALE)) -m 4000 -r 200 --size 64"
    # The same on kept-alive connections (nchan keeps HTTP/1.1 long-polls alive in both).
    "longpoll-ka-1k-200/s-20s|--longpoll --keep-alive -n $((1000 / SCALE)) -m 4000 -r 200 --size 64"
    # WebSocket beside streaming (meteord only: nchan's websocket subscriber is not set up here).
    "ws-idle-10k|--websocket -n $((10000 / SCALE)) -m 0"
    "ws-burst-10k-x200|--websocket -n $((10000 / SCALE)) -m 200 --size 64"
    "ws-rate-10k-100/s-10s|--websocket -n $((10000 / SCALE)) -m 1000 -r 100 --size 64"
)

# Runs one scenario against one server; appends its JSON line to $OUT/<server>.jsonl.
run_one() {
    local server=$1 label=$2 args=$3 target=() pid
    if [ "$server" = meteord ] || [ "$server" = before ]; then
        local binary=$METEORD
        [ "$server" = before ] && binary=$BASELINE
        start_meteord "$binary" || { echo "{\"label\":\"$label\",\"error\":\"meteord did not start\"}" >>"$OUT/$server.jsonl"; return; }
        pid=$SERVER_PID
        target=(-t "127.0.0.1:$SUB_PORT" --controller "127.0.0.1:$CTL_PORT")
    elif [[ $args == *--websocket* ]]; then
        echo "{\"label\":\"$label\",\"error\":\"not run (no websocket set-up for nchan)\"}" >>"$OUT/$server.jsonl"
        return
    else
        start_nchan || { echo "{\"label\":\"$label\",\"error\":\"nginx did not start\"}" >>"$OUT/$server.jsonl"; return; }
        pid=$WORKER_PID
        target=(-t "127.0.0.1:$NGX_PORT" --pub-url "http://127.0.0.1:$NGX_PORT/pub?id={channel}")
        if [[ $args == *--longpoll* ]]; then
            target+=(--request 'GET /lp?id={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'
                --next-request 'GET /lp?id={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-Modified-Since: {lastmod}\r\nIf-None-Match: {etag}\r\n\r\n')
        else
            target+=(--request 'GET /sub?id={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
        fi
    fi
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
[ -n "$ONLY" ] && SERVERS=("$ONLY")
[ -n "$BASELINE" ] && SERVERS=(before "${SERVERS[@]}")
for s in "${SERVERS[@]}"; do : >"$OUT/$s.jsonl"; : >"$OUT/$s.stderr"; done
for sc in "${SCENARIOS[@]}"; do
    [ -n "${SCENARIOS_MATCH:-}" ] && ! [[ ${sc%%|*} =~ $SCENARIOS_MATCH ]] && continue
    for s in "${SERVERS[@]}"; do
        run_one "$s" "${sc%%|*}" "${sc#*|}"
    done
done

if [ -n "$BASELINE" ]; then
    "$BENCH" compare "$OUT/before.jsonl" "$OUT/meteord.jsonl" --names before,after
fi
if [[ " ${SERVERS[*]} " == *" nchan "* ]] && [[ " ${SERVERS[*]} " == *" meteord "* ]]; then
    "$BENCH" compare "$OUT/meteord.jsonl" "$OUT/nchan.jsonl" --names meteord,nchan
elif [ -z "$BASELINE" ]; then
    cat "$OUT/${SERVERS[0]}.jsonl"
fi
