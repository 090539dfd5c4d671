#!/usr/bin/env bash
# fulcrum and HAProxy side by side in front of one nginx, over the two server-side protocols
# issue 13 added: TLS to the server ("tls": HTTPS, session resumption, verify off on both
# proxies) and HTTP/2 to the server ("h2": cleartext by prior knowledge, multiplexed).
# Clients speak HTTP/1.1 keep-alive to the proxies (wrk, 100-byte answers).
#
# Each proxy runs one thread pinned to CPU 0; wrk and nginx share CPU 1. Rounds interleave
# the two proxies so drift hits both alike; the medians are printed.
#
# Run: FULCRUM_BIN=target/release/fulcrum bench/upstream.sh
#   SCENARIOS="tls h2"  DURATION=8  ROUNDS=3  CONNS=64
# Needs: nginx (nginx-light), haproxy, wrk, openssl, taskset. Bounded: ROUNDS x scenarios x
# 2 proxies x DURATION seconds of load, then everything it started is stopped by PID.
set -euo pipefail

FULCRUM_BIN=${FULCRUM_BIN:-target/release/fulcrum}
SCENARIOS=${SCENARIOS:-tls h2}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPUS=${LOAD_CPUS:-1}

log() { echo "upstream.sh: $*" >&2; }
die() { log "$*"; exit 1; }
for c in nginx haproxy wrk openssl taskset; do
    command -v "$c" >/dev/null || [[ -x /usr/sbin/$c ]] || die "$c is needed"
done
[[ -x $FULCRUM_BIN ]] || die "no fulcrum binary at $FULCRUM_BIN (cargo build --release)"
PATH=$PATH:/usr/sbin

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local port=$1 i
    for i in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    die "nothing listens on $port"
}

TLS_PORT=$(free_port); H2_PORT=$(free_port)
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 2 \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx; proxy_temp_path $TMP/nginx;
    fastcgi_temp_path $TMP/nginx; uwsgi_temp_path $TMP/nginx; scgi_temp_path $TMP/nginx;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$TLS_PORT ssl;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        ssl_session_cache shared:SSL:1m;
        location / { return 200 "ok\n"; }
    }
    server {
        listen 127.0.0.1:$H2_PORT http2;
        location / { return 200 "ok\n"; }
    }
}
EOF
taskset -c "$LOAD_CPUS" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" &
PIDS+=($!)
wait_port "$TLS_PORT"; wait_port "$H2_PORT"

declare -A PORT_OF PID_OF
start_proxies() {   # start_proxies SCENARIO
    local sc=$1 fport hport
    fport=$(free_port); hport=$(free_port)
    local hserver fbackend
    case $sc in
        tls)
            hserver="server n1 127.0.0.1:$TLS_PORT ssl verify none"
            fbackend="[backends.b.tls]
verify = false"
            ;;
        h2)
            hserver="server n1 127.0.0.1:$H2_PORT proto h2"
            fbackend=""
            ;;
        *) die "unknown scenario $sc (tls h2)" ;;
    esac
    local addr=$([[ $sc == tls ]] && echo "$TLS_PORT" || echo "$H2_PORT")
    cat >"$TMP/haproxy-$sc.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$hport
    default_backend be
backend be
    $hserver
EOF
    cat >"$TMP/fulcrum-$sc.toml" <<EOF
[global]
threads = 1
state_dir = "$TMP/state-$sc"
[admin]
bind = "127.0.0.1:0"
[[frontends]]
name = "www"
bind = "127.0.0.1:$fport"
backend = "b"
access_log = false
[backends.b]
$( [[ $sc == h2 ]] && echo 'protocol = "h2"' )
health = { kind = "tcp", interval = "60s" }
[[backends.b.servers]]
name = "n1"
address = "127.0.0.1:$addr"
max_connections = 0
$fbackend
EOF
    taskset -c "$PROXY_CPU" haproxy -f "$TMP/haproxy-$sc.cfg" -db >"$TMP/haproxy-$sc.log" 2>&1 &
    PID_OF[haproxy]=$!; PIDS+=($!)
    RUST_LOG=warn taskset -c "$PROXY_CPU" "$FULCRUM_BIN" run -c "$TMP/fulcrum-$sc.toml" >"$TMP/fulcrum-$sc.log" 2>&1 &
    PID_OF[fulcrum]=$!; PIDS+=($!)
    PORT_OF[haproxy]=$hport; PORT_OF[fulcrum]=$fport
    wait_port "$hport"; wait_port "$fport"
}

stop_proxies() {
    kill "${PID_OF[haproxy]}" "${PID_OF[fulcrum]}" 2>/dev/null || true
    wait "${PID_OF[haproxy]}" "${PID_OF[fulcrum]}" 2>/dev/null || true
}

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# One wrk run: prints "req/s p99_us cpu_us_per_req".
measure() {   # measure TARGET
    local t=$1 out=$TMP/wrk.txt before after
    before=$(ticks "${PID_OF[$t]}")
    taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
        "http://127.0.0.1:${PORT_OF[$t]}/" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed"; }
    after=$(ticks "${PID_OF[$t]}")
    awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" '
        function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1000000; return v }
        /Requests\/sec/ { rps = $2 }
        /^ +99%/ { p99 = us($2) }
        /requests in/ { n = $1 }
        /Non-2xx/ { bad = $NF }
        END { printf "%d %d %.1f %d\n", rps, p99, (n > 0 ? t * 1000000 / hz / n : 0), bad }' "$out"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "HTTP/1.1 keep-alive clients (wrk -c$CONNS), one nginx; each proxy one thread on CPU $PROXY_CPU;"
echo "medians of $ROUNDS interleaved rounds of ${DURATION}s"
printf '%-6s %-8s %10s %10s %10s %10s\n' scenario proxy "req/s" "p99 us" "cpu us/req" "non-2xx"
for sc in $SCENARIOS; do
    start_proxies "$sc"
    # Warm-up: connections, TLS sessions, the proxies' pools.
    for t in haproxy fulcrum; do
        taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:${PORT_OF[$t]}/" >/dev/null 2>&1 || true
    done
    declare -A R=()
    for r in $(seq 1 "$ROUNDS"); do
        for t in haproxy fulcrum; do
            R[$t,$r]=$(measure "$t")
            log "$sc round $r $t: ${R[$t,$r]}"
        done
    done
    for t in haproxy fulcrum; do
        rps=$(for r in $(seq 1 "$ROUNDS"); do echo "${R[$t,$r]}" | cut -d' ' -f1; done | median)
        p99=$(for r in $(seq 1 "$ROUNDS"); do echo "${R[$t,$r]}" | cut -d' ' -f2; done | median)
        cpu=$(for r in $(seq 1 "$ROUNDS"); do echo "${R[$t,$r]}" | cut -d' ' -f3; done | median)
        bad=$(for r in $(seq 1 "$ROUNDS"); do echo "${R[$t,$r]}" | cut -d' ' -f4; done | median)
        printf '%-6s %-8s %10s %10s %10s %10s\n' "$sc" "$t" "$rps" "$p99" "$cpu" "${bad:-0}"
    done
    unset R
    stop_proxies
done
