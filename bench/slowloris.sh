#!/usr/bin/env bash
# bench/slowloris.sh — 10,000 slowloris connections against fulcrum and HAProxy: the
# proxy's memory per held connection, and normal traffic's p99 latency meanwhile.
#
# A benchmark, not a test: it fails only on "could not run". See bench/README.md
# ("Slowloris") for the figures and how to read them. Loopback only; every wait is
# bounded; needs root (or the tools installed and `ulimit -n` >= CONNS + 1024).
#
# Environment (all optional):
#   CONNS=10000       slowloris connections
#   INTERVAL=3        seconds between two header bytes of one connection
#   HOLD=             seconds the driver holds the connections after its ramp
#                     (default: long enough for ROUNDS wrk runs)
#   WRK_DURATION=5    seconds of normal traffic (wrk --latency) with and without them
#   WRK_CONNS=32      wrk connections
#   ROUNDS=3          wrk runs with and without the connections; the median p99 is shown
#   TARGETS="fulcrum haproxy"
#   FULCRUM_BIN=      use this binary instead of `cargo build --release`
#   HEADER_TIMEOUT=60s  how long a request head may take (fulcrum client_header_timeout,
#                     HAProxy `timeout http-request`): long enough that every connection
#                     is held at once; with 10s (fulcrum's default) both proxies close them
#                     and the driver reconnects, so fewer are held at any moment
#   PROXY_CPUS=0      CPU list for the proxies; LOAD_CPUS=1 for wrk, the driver, nginx
set -euo pipefail

CONNS=${CONNS:-10000}
INTERVAL=${INTERVAL:-3}
WRK_DURATION=${WRK_DURATION:-5}
WRK_CONNS=${WRK_CONNS:-32}
ROUNDS=${ROUNDS:-3}
HOLD=${HOLD:-$((ROUNDS * (WRK_DURATION + 2) + 8))}
TARGETS=${TARGETS:-"fulcrum haproxy"}
FULCRUM_BIN=${FULCRUM_BIN:-}
HEADER_TIMEOUT=${HEADER_TIMEOUT:-60s}
PROXY_CPUS=${PROXY_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}

BACKEND_PORT=18281
HAPROXY_PORT=18290
FULCRUM_PORT=18292
FULCRUM_ADMIN_PORT=18293
READY_DEADLINE=40

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/.." && pwd)
TMP=$(mktemp -d /tmp/fulcrum-slowloris.XXXXXX)
PIDS=()

log() { printf '[slowloris] %s\n' "$*" >&2; }
die() { printf '[slowloris] error: %s\n' "$*" >&2; exit 1; }

stop_pid() {  # TERM, up to 10 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    rm -rf -- "$TMP"
    exit "$rc"
}
trap cleanup EXIT INT TERM

# ------------------------------------------------------------------ tools and limits
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v curl >/dev/null || missing+=(curl)
command -v ss >/dev/null || missing+=(iproute2)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    [[ $EUID -eq 0 ]] || die "missing ${missing[*]}; run as root or install them"
    log "installing ${missing[*]}"
    made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # the packages must not start services
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    ((made_policy)) && rm -f /usr/sbin/policy-rc.d
fi
# 10,000 connections need 10,000 fds in the driver and as many in the proxy (each is
# started from this shell and inherits the limit).
want=$((CONNS * 2 + 4096))
ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= CONNS + 1024)) || die "ulimit -n is $(ulimit -n); need >= $((CONNS + 1024))"
log "open files limit $(ulimit -n)"

if [[ " $TARGETS " == *" fulcrum "* && -z $FULCRUM_BIN ]]; then
    log "cargo build --release"
    (cd "$REPO_ROOT" && cargo build --release --quiet) || die "fulcrum did not build"
    FULCRUM_BIN=$REPO_ROOT/target/release/fulcrum
fi

# ------------------------------------------------------------------ helpers
start_bg() {  # start_bg CPUS LOG CMD...: pinned, output to LOG; sets LAST_PID
    local cpus=$1 out=$2; shift 2
    taskset -c "$cpus" "$@" >"$out" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
wait_ready() {  # wait_ready PORT PID
    local deadline=$((SECONDS + READY_DEADLINE))
    while ((SECONDS < deadline)); do
        kill -0 "$2" 2>/dev/null || die "the process on :$1 exited during start-up"
        curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$1/" 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing answered 200 on :$1 within ${READY_DEADLINE}s"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
held() {  # connections the proxy on port $1 accepted: established ones minus its accept queue
    local est queued
    est=$(ss -Htn state established "( sport = :$1 )" | wc -l)
    queued=$(ss -Htln "( sport = :$1 )" | awk '{ q += $2 } END { print q + 0 }')
    echo $((est - queued))
}
p99_ms() {  # p99_ms PORT: wrk --latency, the 99th percentile in ms
    local out
    out=$(taskset -c "$LOAD_CPUS" timeout $((WRK_DURATION + 20)) \
        wrk -t1 -c"$WRK_CONNS" -d"${WRK_DURATION}s" --latency --timeout 5s "http://127.0.0.1:$1/" 2>&1) \
        || { echo "$out" >&2; echo "nan"; return 0; }
    if echo "$out" | grep -q "^ *0 requests in"; then
        echo "none served"; echo "$out" | sed 's/^/[slowloris]   wrk: /' >&2; return 0
    fi
    echo "$out" | awk '
        $1 == "99%" { v = $2; u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v)
                      f = (u == "us") ? 0.001 : (u == "s") ? 1000 : (u == "m") ? 60000 : 1
                      printf "%.2f", v * f }'
    echo "$out" | awk '/requests in|Non-2xx|Socket errors/' | sed 's/^/[slowloris]   wrk: /' >&2
}

p99_median() {  # p99_median PORT: ROUNDS runs of p99_ms, the median (or "none served")
    local i v all=()
    for ((i = 0; i < ROUNDS; i++)); do
        v=$(p99_ms "$1")
        all+=("$v")
    done
    log "  p99 of each run: ${all[*]}"
    printf '%s\n' "${all[@]}" | { grep -v none || true; } | sort -g | awk -v n="$ROUNDS" '
        { v[NR] = $1 } END { if (NR < n) print "none served"; else print v[int((NR + 1) / 2)] }'
}

# ------------------------------------------------------------------ backend
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
$([[ $EUID -eq 0 ]] && echo "user root;")
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log crit;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 100000000;
    server { listen 127.0.0.1:$BACKEND_PORT backlog=4096; location / { return 200 "ok\n"; } }
}
EOF
start_bg "$LOAD_CPUS" "$TMP/nginx/out.log" nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
wait_ready "$BACKEND_PORT" "$LAST_PID"

# ------------------------------------------------------------------ proxies
# Both with one thread and the same request-head deadline, HEADER_TIMEOUT (fulcrum's
# client_header_timeout; HAProxy's `timeout http-request`), and as many connections as the
# fd limit holds at two fds each (fulcrum derives its limit so; HAProxy refuses to start
# with a maxconn the limit cannot hold).
start_fulcrum() {
    mkdir -p "$TMP/fulcrum-state"
    cat >"$TMP/fulcrum.toml" <<EOF
[global]
threads = 1
grace_period = "1s"
state_dir = "$TMP/fulcrum-state"

[admin]
bind = "127.0.0.1:$FULCRUM_ADMIN_PORT"

[[frontends]]
name = "bench"
bind = "127.0.0.1:$FULCRUM_PORT"
backend = "b"
access_log = false
client_header_timeout = "$HEADER_TIMEOUT"

[backends.b]
min_healthy = 1
[backends.b.health]
kind = "tcp"
interval = "2s"
[[backends.b.servers]]
name = "n1"
address = "127.0.0.1:$BACKEND_PORT"
EOF
    "$FULCRUM_BIN" check -c "$TMP/fulcrum.toml" >"$TMP/fulcrum-check.txt" 2>&1 \
        || { cat "$TMP/fulcrum-check.txt" >&2; die "fulcrum check failed"; }
    start_bg "$PROXY_CPUS" "$TMP/fulcrum.log" "$FULCRUM_BIN" run -c "$TMP/fulcrum.toml"
    wait_ready "$FULCRUM_PORT" "$LAST_PID"
}
start_haproxy() {
    cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $(( ($(ulimit -n) - 200) / 2 ))
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 30s
    timeout http-request $HEADER_TIMEOUT
    option http-keep-alive
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be
backend be
    server n1 127.0.0.1:$BACKEND_PORT check inter 2s
EOF
    haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy rejected its configuration"
    start_bg "$PROXY_CPUS" "$TMP/haproxy.log" haproxy -db -f "$TMP/haproxy.cfg"
    wait_ready "$HAPROXY_PORT" "$LAST_PID"
}

# ------------------------------------------------------------------ one target
RESULTS=()
measure() {  # measure NAME PORT PID
    local name=$1 port=$2 pid=$3 base0 rss0 rss1 n p99 st driver deadline
    base0=$(p99_median "$port")
    sleep 1
    rss0=$(rss_kib "$pid")
    st=$TMP/$name-driver.json
    log "$name: $CONNS slowloris connections (one byte every ${INTERVAL}s)"
    start_bg "$LOAD_CPUS" "$TMP/$name-driver.log" python3 "$HERE/slowloris.py" \
        --port "$port" --conns "$CONNS" --interval "$INTERVAL" --ramp 30 --hold "$HOLD" --status "$st"
    driver=$LAST_PID
    deadline=$((SECONDS + 35))
    until [[ -s $st ]] && grep -q '"phase": "hold"\|"phase": "done"' "$st"; do
        ((SECONDS < deadline)) || die "the driver did not finish its ramp"
        kill -0 "$driver" 2>/dev/null || die "the driver exited: $(cat "$TMP/$name-driver.log")"
        sleep 0.2
    done
    sleep 1
    rss1=$(rss_kib "$pid")
    n=$(held "$port")
    log "$name: $n connections accepted ($(ss -Htln "( sport = :$port )" | awk '{ print $2 }') waiting in its accept queue), RSS ${rss0} KiB -> ${rss1} KiB; driver $(cat "$st")"
    p99=$(p99_median "$port")
    log "$name: p99 ${base0} ms without, ${p99} ms with the slowloris connections"
    wait "$driver" 2>/dev/null || true
    log "$name: driver done: $(tail -n 1 "$TMP/$name-driver.log")"
    RESULTS+=("$(awk -v n="$name" -v c="$n" -v a="$rss0" -v b="$rss1" -v p0="$base0" -v p1="$p99" 'BEGIN {
        per = (c > 0) ? (b - a) * 1024 / c : 0
        printf "| %s | %d | %.1f | %.1f | %.0f | %s | %s |", n, c, a / 1024, b / 1024, per, p0, p1 }')")
}

for target in $TARGETS; do
    case $target in
        fulcrum) start_fulcrum; tp=$LAST_PID; measure fulcrum "$FULCRUM_PORT" "$tp" ;;
        haproxy) start_haproxy; tp=$LAST_PID; measure haproxy "$HAPROXY_PORT" "$tp" ;;
        *) die "unknown target $target" ;;
    esac
    stop_pid "$tp"
    sleep 2   # the driver's sockets drain before the next target
done

echo
echo "CONNS=$CONNS HEADER_TIMEOUT=$HEADER_TIMEOUT INTERVAL=${INTERVAL}s WRK_CONNS=$WRK_CONNS WRK_DURATION=${WRK_DURATION}s ROUNDS=$ROUNDS (median p99), $(nproc) CPUs; proxies on CPU $PROXY_CPUS, load on CPU $LOAD_CPUS"
echo
echo "| target | slowloris connections held | RSS before (MiB) | RSS with them (MiB) | bytes per connection | p99 without (ms) | p99 with them (ms) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${RESULTS[@]}"
