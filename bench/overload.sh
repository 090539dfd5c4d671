#!/usr/bin/env bash
# bench/overload.sh — 1,000 concurrent clients against two slow servers limited to 50
# requests each: fulcrum next to HAProxy with the same maxconn / maxqueue / timeout queue.
#
# A benchmark, not a test: it fails only when it cannot run. What it shows is how each
# proxy keeps servers inside their limit under overload: served throughput (the servers'
# capacity is 2 × 50 / 20 ms = 5,000 req/s), p99 latency of served requests, p99 latency of
# rejections (a 503 should be fast), and the proxy's peak RSS.
#
# Environment (all optional):
#   CONNS=1000        concurrent clients (each on its own keep-alive connection)
#   DURATION=10       seconds per run
#   DELAY_MS=20       the backends' work per request
#   MAXCONN=50        per-server limit (fulcrum max_connections, HAProxy maxconn)
#   MAXQUEUE=200      waiting requests: fulcrum max_queue (per backend); HAProxy maxqueue
#                     is per server, so each server gets MAXQUEUE/2. Note: HAProxy sends
#                     what overflows its server queues to the backend queue, which has no
#                     bound, so HAProxy queues every client and never answers 503 here;
#                     fulcrum refuses past max_queue. MAXQUEUE=1000 compares both queueing all.
#   QUEUE_TIMEOUT=5   seconds (fulcrum queue_timeout, HAProxy timeout queue)
#   THREADS=1         fulcrum threads / HAProxy nbthread
#   PROXY_CPUS=0 LOAD_CPUS=1   taskset pinning of the proxy / the load and backends
#   SKIP_BUILD=0      1 = use target/release binaries as they are
set -euo pipefail

CONNS=${CONNS:-1000}
DURATION=${DURATION:-10}
DELAY_MS=${DELAY_MS:-20}
MAXCONN=${MAXCONN:-50}
MAXQUEUE=${MAXQUEUE:-200}
QUEUE_TIMEOUT=${QUEUE_TIMEOUT:-5}
THREADS=${THREADS:-1}
PROXY_CPUS=${PROXY_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
SKIP_BUILD=${SKIP_BUILD:-0}

B1=18181 B2=18182 FULCRUM_PORT=18192 ADMIN_PORT=18193 HAPROXY_PORT=18190

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

need() { command -v "$1" >/dev/null 2>&1; }
if ! need haproxy || ! need curl || ! need taskset; then
    echo "installing haproxy, curl, util-linux" >&2
    # policy-rc.d 101: do not let the packages start system services.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy curl util-linux >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [ "$SKIP_BUILD" != 1 ]; then
    (cd "$ROOT" && cargo build --release --bin fulcrum --example slow_backend --example overload_load)
fi
BIN=$ROOT/target/release
LOAD=$BIN/examples/overload_load

wait_200() { # url
    for _ in $(seq 400); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
        sleep 0.1
    done
    echo "no 200 from $1 within 40 s" >&2; exit 1
}
peak_rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

taskset -c "$LOAD_CPUS" "$BIN/examples/slow_backend" $B1 "$DELAY_MS" & PIDS+=($!)
taskset -c "$LOAD_CPUS" "$BIN/examples/slow_backend" $B2 "$DELAY_MS" & PIDS+=($!)
wait_200 "http://127.0.0.1:$B1/healthz"; wait_200 "http://127.0.0.1:$B2/healthz"

cat > "$TMP/fulcrum.toml" <<TOML
[global]
threads = $THREADS
grace_period = "1s"
state_dir = "$TMP/state"
[admin]
bind = "127.0.0.1:$ADMIN_PORT"
[[frontends]]
name = "bench"
bind = "127.0.0.1:$FULCRUM_PORT"
backend = "b"
access_log = false
[backends.b]
algorithm = "least_connections"
max_queue = $MAXQUEUE
queue_timeout = "${QUEUE_TIMEOUT}s"
[backends.b.health]
kind = "tcp"
interval = "2s"
[[backends.b.servers]]
name = "s1"
address = "127.0.0.1:$B1"
max_connections = $MAXCONN
[[backends.b.servers]]
name = "s2"
address = "127.0.0.1:$B2"
max_connections = $MAXCONN
TOML

cat > "$TMP/haproxy.cfg" <<CFG
global
    nbthread $THREADS
    maxconn 8000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout queue ${QUEUE_TIMEOUT}s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be
backend be
    balance leastconn
    server s1 127.0.0.1:$B1 maxconn $MAXCONN maxqueue $((MAXQUEUE / 2)) check inter 2s
    server s2 127.0.0.1:$B2 maxconn $MAXCONN maxqueue $((MAXQUEUE / 2)) check inter 2s
CFG

"$BIN/fulcrum" check -c "$TMP/fulcrum.toml" >/dev/null
haproxy -c -q -f "$TMP/haproxy.cfg"

run() { # name port pid
    local out
    out=$(taskset -c "$LOAD_CPUS" "$LOAD" "127.0.0.1:$2" "$CONNS" "$DURATION")
    printf '%-8s %s peak_rss_mb=%.1f\n' "$1" "$out" "$(echo "$(peak_rss_kb "$3") / 1024" | bc -l)"
}

echo "# $CONNS clients, 2 servers × max $MAXCONN, ${DELAY_MS} ms per request (capacity $((2 * MAXCONN * 1000 / DELAY_MS)) req/s), queue $MAXQUEUE, timeout ${QUEUE_TIMEOUT}s, ${DURATION}s"

RUST_LOG=warn taskset -c "$PROXY_CPUS" "$BIN/fulcrum" run -c "$TMP/fulcrum.toml" > "$TMP/fulcrum.log" 2>&1 & FPID=$!; PIDS+=($FPID)
wait_200 "http://127.0.0.1:$FULCRUM_PORT/"
run fulcrum $FULCRUM_PORT $FPID
kill "$FPID"; wait "$FPID" 2>/dev/null || true

taskset -c "$PROXY_CPUS" haproxy -db -f "$TMP/haproxy.cfg" > "$TMP/haproxy.log" 2>&1 & HPID=$!; PIDS+=($HPID)
wait_200 "http://127.0.0.1:$HAPROXY_PORT/"
run haproxy $HAPROXY_PORT $HPID
