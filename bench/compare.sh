#!/usr/bin/env bash
# bench/compare.sh — throughput/latency of fulcrum next to HAProxy and nginx.
#
# A benchmark, not a test: it never fails on "slow", only on "could not run".
# See bench/README.md for what is measured and why it is set up this way.
#
# Environment (all optional):
#   THREADS=1         worker threads/processes of every proxy (fulcrum threads,
#                     HAProxy nbthread, nginx worker_processes)
#   ROUNDS=3          interleaved rounds; the table shows the median per target
#   DURATION=10       seconds per wrk run
#   WARMUP=2          seconds of unmeasured load per target before round 1 (0 = none)
#   CONNS=64          wrk connections for the "small" and "close" scenarios
#   WRK_THREADS=1     wrk threads
#   SCENARIOS=small   space-separated list: small c1000 close big big1m idle (see below),
#                     or "all" for every one of them
#   IDLE_CONNS=10000  client connections the "idle" scenario opens and holds
#   IDLE_HOLD=5       seconds the "idle" scenario holds them (RSS is read meanwhile)
#   ACCESS_LOG=true   fulcrum's access_log (it is on by default, as an operator runs it);
#                     "both" runs a second fulcrum with it off ("fulcrum-nolog") in the
#                     same interleaved rounds, so the log's cost is read within one run
#   SKIP_FULCRUM=0    1 = leave fulcrum out (e.g. while it does not build)
#   FULCRUM_BIN=      use this binary instead of `cargo build --release`
#   FULCRUM_BASE_BIN= also run this (older) fulcrum binary, as target "fulcrum-base",
#                     in the same interleaved rounds and with the same settings: an A/B
#                     of two builds within one run (two runs on a VM differ by ~0.1)
#   FULCRUM_SERVER_MAXCONN=  if set, per-server max_connections for fulcrum
#                     (unset = fulcrum's default)
#   PROXY_CPUS=0      CPU list for the proxies (taskset -c)
#   LOAD_CPUS=1       CPU list for wrk and the two backend nginx
#   KEEP_TMP=0        1 = keep the temp dir (configs, fulcrum's log) for inspection
#
# Scenarios:
#   small  keep-alive, CONNS connections, "ok\n" body        (the default)
#   c1000  keep-alive, 1000 connections, "ok\n" body
#   close  "Connection: close" on every request, CONNS connections
#   big    keep-alive, CONNS connections, 64 KiB body
#   big1m  keep-alive, CONNS connections, 1 MiB body
#   idle   IDLE_CONNS keep-alive connections, one request each, then held idle: the
#          proxies' resident memory (VmRSS) with them open (not a wrk run)
set -euo pipefail

# ---------------------------------------------------------------- settings
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-1}
SCENARIOS=${SCENARIOS:-small}
[[ $SCENARIOS == all ]] && SCENARIOS="idle small c1000 close big big1m"   # idle first: RSS before any load
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_HOLD=${IDLE_HOLD:-5}
ACCESS_LOG=${ACCESS_LOG:-true}
SKIP_FULCRUM=${SKIP_FULCRUM:-0}
FULCRUM_BIN=${FULCRUM_BIN:-}
FULCRUM_BASE_BIN=${FULCRUM_BASE_BIN:-}
FULCRUM_SERVER_MAXCONN=${FULCRUM_SERVER_MAXCONN:-}
PROXY_CPUS=${PROXY_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
KEEP_TMP=${KEEP_TMP:-0}
CLK_TCK=$(getconf CLK_TCK)

BACKEND1_PORT=18081
BACKEND2_PORT=18082
HAPROXY_PORT=18090
NGINX_PROXY_PORT=18091
FULCRUM_PORT=18092
FULCRUM_ADMIN_PORT=18093
FULCRUM_NOLOG_PORT=18094
FULCRUM_NOLOG_ADMIN_PORT=18095
FULCRUM_BASE_PORT=18096
FULCRUM_BASE_ADMIN_PORT=18097

READY_DEADLINE=40      # seconds a server may take to answer 200 after start
STOP_DEADLINE=10       # seconds a process may take to exit after SIGTERM

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=""
PIDS=()                # every process this script started (name:pid)
declare -A PID_OF=()   # name -> pid
declare -A PORT_OF=()  # target -> port
declare -A LOG_OF=()   # name -> file with its stdout/stderr
TARGETS=()             # measured targets, canonical order

log()  { printf '[bench] %s\n' "$*" >&2; }
die()  { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup
stop_pid() {          # stop_pid PID: TERM, wait (bounded), then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_DEADLINE * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop within ${STOP_DEADLINE}s; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? entry
    trap - EXIT INT TERM
    for entry in "${PIDS[@]}"; do
        stop_pid "${entry#*:}"
    done
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 ]]; then
            log "kept temp dir $TMP"
        else
            rm -rf -- "$TMP"
        fi
    fi
    exit "$rc"
}

# start_bg NAME CPUS OUTFILE CMD... : start CMD pinned to CPUS with stdout and
# stderr to OUTFILE, remember its pid
start_bg() {
    local name=$1 cpus=$2 out=$3; shift 3
    taskset -c "$cpus" "$@" >"$out" 2>&1 &
    local pid=$!
    PIDS+=("$name:$pid")
    PID_OF[$name]=$pid
    LOG_OF[$name]=$out
    log "started $name (pid $pid, cpus $cpus)"
}

# ---------------------------------------------------------------- step 1: tools
install_tools() {
    local -a missing=()
    command -v wrk     >/dev/null || missing+=(wrk)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v nginx   >/dev/null || missing+=(nginx-light)
    command -v curl    >/dev/null || missing+=(curl)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v ps      >/dev/null || missing+=(procps)
    ((${#missing[@]} == 0)) && return 0

    [[ $EUID -eq 0 ]] || die "missing ${missing[*]}; run as root or install them"
    log "installing: ${missing[*]}"
    # Do not let the packages start system-wide nginx/haproxy services.
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
        # nginx-light is not in every release; fall back to nginx.
        missing=("${missing[@]/nginx-light/nginx}")
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    ((made_policy)) && rm -f /usr/sbin/policy-rc.d
    return 0
}

raise_fd_limit() {
    local want=65536 hard
    ulimit -n "$want" 2>/dev/null || {
        hard=$(ulimit -Hn)
        [[ $hard == unlimited ]] && hard=$want
        ulimit -n "$hard"
    }
    local need=$((CONNS * 3 + 256))
    [[ " $SCENARIOS " == *" c1000 "* ]] && ((need < 3256)) && need=3256
    [[ " $SCENARIOS " == *" idle "* ]] && ((need < IDLE_CONNS + 256)) && need=$((IDLE_CONNS + 256))
    # HAProxy reserves two fds per maxconn and refuses to start above the limit, and nginx
    # counts both sides in worker_connections: both get (limit - 200) / 2 connections.
    local fit=$(( ($(ulimit -n) - 400) / 2 ))
    if [[ " $SCENARIOS " == *" idle "* ]] && ((IDLE_CONNS > fit)); then
        log "idle scenario: $IDLE_CONNS connections do not fit under ulimit -n $(ulimit -n); using $fit"
        IDLE_CONNS=$fit
    fi
    (($(ulimit -n) >= need)) || die "ulimit -n is $(ulimit -n), need >= $need"
    log "open files limit: $(ulimit -n)"
}

check_ports_free() {
    local port
    for port in $BACKEND1_PORT $BACKEND2_PORT $HAPROXY_PORT $NGINX_PROXY_PORT \
                $FULCRUM_PORT $FULCRUM_ADMIN_PORT $FULCRUM_NOLOG_PORT $FULCRUM_NOLOG_ADMIN_PORT \
                $FULCRUM_BASE_PORT $FULCRUM_BASE_ADMIN_PORT; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is already in use on 127.0.0.1"
        fi
    done
}

# ---------------------------------------------------------------- step 2: fulcrum binary
build_fulcrum() {
    [[ $SKIP_FULCRUM == 1 ]] && { log "SKIP_FULCRUM=1: fulcrum left out"; return 0; }
    if [[ -n $FULCRUM_BIN ]]; then
        [[ -x $FULCRUM_BIN ]] || die "FULCRUM_BIN=$FULCRUM_BIN is not executable"
    else
        log "cargo build --release"
        (cd "$REPO_ROOT" && cargo build --release --quiet) \
            || die "fulcrum did not build (SKIP_FULCRUM=1 runs the rest)"
        FULCRUM_BIN=$REPO_ROOT/target/release/fulcrum
    fi
    log "fulcrum: $FULCRUM_BIN"
    if [[ -n $FULCRUM_BASE_BIN ]]; then
        [[ -x $FULCRUM_BASE_BIN ]] || die "FULCRUM_BASE_BIN=$FULCRUM_BASE_BIN is not executable"
        log "fulcrum-base: $FULCRUM_BASE_BIN"
    fi
}

# waits until http://127.0.0.1:PORT/ answers 200 (or the process dies)
wait_ready() {
    local name=$1 port=$2 pid=${PID_OF[$1]} deadline=$((SECONDS + READY_DEADLINE))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "${LOG_OF[$name]}" >&2 || true
            die "$name (pid $pid) exited during start-up (output above)"
        fi
        if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/" 2>/dev/null; then
            log "$name answers on :$port"
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "${LOG_OF[$name]}" >&2 || true
    die "$name did not answer 200 on :$port within ${READY_DEADLINE}s (output above)"
}

# Common nginx bits. Running as root, workers would become "nobody" and could
# not read the 0700 temp dir, so keep them as root.
nginx_common() {   # nginx_common DIR WORKERS
    local dir=$1 workers=$2
    [[ $EUID -eq 0 ]] && echo "user root;"
    cat <<EOF
worker_processes $workers;
worker_rlimit_nofile $(ulimit -n);
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log crit;
events { worker_connections $(( ($(ulimit -n) - 200) / 2 )); }
EOF
}

nginx_temp_paths() {  # nginx_temp_paths DIR
    local dir=$1
    cat <<EOF
    client_body_temp_path $dir/client_body;
    proxy_temp_path       $dir/proxy;
    fastcgi_temp_path     $dir/fastcgi;
    uwsgi_temp_path       $dir/uwsgi;
    scgi_temp_path        $dir/scgi;
EOF
}

# ---------------------------------------------------------------- step 3: backends
start_backends() {
    head -c 65536 /dev/zero | tr '\0' 'x' >"$TMP/big.bin"
    head -c 1048576 /dev/zero | tr '\0' 'x' >"$TMP/big1m.bin"
    local i port dir
    for i in 1 2; do
        port=$((i == 1 ? BACKEND1_PORT : BACKEND2_PORT))
        dir=$TMP/backend$i
        mkdir -p "$dir"
        {
            nginx_common "$dir" 1
            cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$dir")
    default_type text/plain;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location = /big { alias $TMP/big.bin; }
        location = /big1m { alias $TMP/big1m.bin; }
        location / { return 200 "ok\n"; }
    }
}
EOF
        } >"$dir/nginx.conf"
        start_bg "backend$i" "$LOAD_CPUS" "$dir/stdout.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
    done
    wait_ready backend1 "$BACKEND1_PORT"
    wait_ready backend2 "$BACKEND2_PORT"
}

# ---------------------------------------------------------------- step 4: HAProxy
start_haproxy() {
    local cfg=$TMP/haproxy.cfg
    cat >"$cfg" <<EOF
global
    nbthread $THREADS
    maxconn $(( ($(ulimit -n) - 200) / 2 ))
    # no "log" line: logging off

defaults
    mode http
    timeout connect 2s
    timeout client  60s
    timeout server  30s
    option http-keep-alive
    http-reuse always

frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be

backend be
    balance roundrobin
    server n1 127.0.0.1:$BACKEND1_PORT check inter 2s
    server n2 127.0.0.1:$BACKEND2_PORT check inter 2s
EOF
    haproxy -c -q -f "$cfg" || die "haproxy rejected $cfg"
    start_bg haproxy "$PROXY_CPUS" "$TMP/haproxy.log" haproxy -db -f "$cfg"
    wait_ready haproxy "$HAPROXY_PORT"
}

# ---------------------------------------------------------------- step 5: nginx proxy
start_nginx_proxy() {
    local dir=$TMP/nginx-proxy
    mkdir -p "$dir"
    {
        nginx_common "$dir" "$THREADS"
        cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$dir")
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    upstream be {
        server 127.0.0.1:$BACKEND1_PORT;
        server 127.0.0.1:$BACKEND2_PORT;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PROXY_PORT backlog=4096;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    nginx -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
        || die "nginx rejected $dir/nginx.conf"
    start_bg nginx-proxy "$PROXY_CPUS" "$dir/stdout.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
    wait_ready nginx-proxy "$NGINX_PROXY_PORT"
}

# ---------------------------------------------------------------- step 6: fulcrum
start_fulcrum() {   # start_fulcrum NAME PORT ADMIN_PORT ACCESS_LOG [BINARY]
    [[ $SKIP_FULCRUM == 1 ]] && return 0
    local name=$1 port=$2 admin_port=$3 access_log=$4 bin=${5:-$FULCRUM_BIN}
    local cfg=$TMP/$name.toml maxconn_line=""
    [[ -n $FULCRUM_SERVER_MAXCONN ]] && maxconn_line="max_connections = $FULCRUM_SERVER_MAXCONN"
    mkdir -p "$TMP/$name-state"
    cat >"$cfg" <<EOF
[global]
threads = $THREADS
grace_period = "1s"
state_dir = "$TMP/$name-state"

[admin]
bind = "127.0.0.1:$admin_port"

[[frontends]]
name = "bench"
bind = "127.0.0.1:$port"
backend = "b"
mode = "http"
access_log = $access_log

[backends.b]
algorithm = "round_robin"

[backends.b.health]
kind = "tcp"
interval = "2s"

[[backends.b.servers]]
name = "n1"
address = "127.0.0.1:$BACKEND1_PORT"
$maxconn_line

[[backends.b.servers]]
name = "n2"
address = "127.0.0.1:$BACKEND2_PORT"
$maxconn_line
EOF
    "$bin" check -c "$cfg" >"$TMP/$name-check.txt" 2>&1 \
        || { cat "$TMP/$name-check.txt" >&2; die "fulcrum check rejected $cfg"; }
    # Logs go to a file, so the access log costs what a file write costs.
    start_bg "$name" "$PROXY_CPUS" "$TMP/$name.log" "$bin" run -c "$cfg"
    wait_ready "$name" "$port"
}

# ---------------------------------------------------------------- step 8: measuring
cpu_busy_jiffies() {   # cpu_busy_jiffies LIST (taskset syntax, e.g. 0 or 0-3,6): "busy total"
    awk -v list="$1" '
    BEGIN { n = split(list, parts, ",")
            for (i = 1; i <= n; i++) {
                if (split(parts[i], r, "-") == 2) { for (c = r[1]; c <= r[2]; c++) want["cpu" c] = 1 }
                else want["cpu" parts[i]] = 1 } }
    ($1 in want) { t = 0; for (i = 2; i <= NF; i++) t += $i; busy += t - $5 - $6; total += t }
    END { print busy + 0, total + 0 }' /proc/stat
}

proc_cpu_ticks() {   # utime+stime (all threads) of PID and its children, in clock ticks
    local pid=$1 total=0 p v
    for p in $pid $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        # fields after "(comm)": state is 3rd, utime 14th, stime 15th
        v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# parse_wrk FILE -> "rps p50_us p99_us non2xx sockerr requests mb_per_s"
parse_wrk() {
    awk '
    function us(v,   n, u) {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") return n
        if (u == "ms") return n * 1000
        if (u == "s")  return n * 1000000
        if (u == "m")  return n * 60000000
        return n
    }
    /^ +50% / { p50 = us($2) }
    /^ +99% / { p99 = us($2) }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); sock = $4 + $6 + $8 + $10 }
    / requests in / { reqs = $1 }
    /^Transfer\/sec:/ {
        v = $2 + 0; u = $2; sub(/^[0-9.]+/, "", u)
        mbs = (u == "GB") ? v * 1024 : (u == "MB") ? v : (u == "KB") ? v / 1024 : v / 1048576
    }
    END { printf "%.2f %.1f %.1f %d %d %d %.2f\n", rps + 0, p50 + 0, p99 + 0, non2xx + 0, sock + 0, reqs + 0, mbs + 0 }
    ' "$1"
}

# scenario_params NAME -> sets S_PATH S_CONNS S_HDR
scenario_params() {
    S_PATH=/; S_CONNS=$CONNS; S_HDR=()
    case $1 in
        small) ;;
        c1000) S_CONNS=1000 ;;
        close) S_HDR=(-H "Connection: close") ;;
        big)   S_PATH=/big ;;
        big1m) S_PATH=/big1m ;;
        idle)  S_CONNS=$IDLE_CONNS ;;
        *) die "unknown scenario '$1' (small c1000 close big big1m idle)" ;;
    esac
}

run_wrk() {   # run_wrk TARGET SECONDS OUTFILE  (uses S_* of the scenario)
    local target=$1 secs=$2 out=$3
    taskset -c "$LOAD_CPUS" wrk -t"$WRK_THREADS" -c"$S_CONNS" -d"${secs}s" --latency \
        --timeout 5s "${S_HDR[@]}" "http://127.0.0.1:${PORT_OF[$target]}$S_PATH" >"$out" 2>&1 \
        || { cat "$out" >&2; die "wrk failed against $target"; }
}

measure() {   # measure SCENARIO ROUND TARGET
    local sc=$1 round=$2 target=$3 out pid r
    local pb pt lb lt pb2 pt2 lb2 lt2 cpu_p cpu_l tk tk2 us_req
    local rps p50 p99 n2 se reqs mbs
    out=$TMP/wrk-$sc-$round-$target.txt
    pid=${PID_OF[$target]:-${PID_OF[backend1]}}     # "direct" is backend1
    read -r pb pt < <(cpu_busy_jiffies "$PROXY_CPUS")
    read -r lb lt < <(cpu_busy_jiffies "$LOAD_CPUS")
    tk=$(proc_cpu_ticks "$pid")
    run_wrk "$target" "$DURATION" "$out"
    tk2=$(proc_cpu_ticks "$pid")
    read -r pb2 pt2 < <(cpu_busy_jiffies "$PROXY_CPUS")
    read -r lb2 lt2 < <(cpu_busy_jiffies "$LOAD_CPUS")
    cpu_p=$(( (pb2 - pb) * 100 / ((pt2 - pt) > 0 ? (pt2 - pt) : 1) ))
    cpu_l=$(( (lb2 - lb) * 100 / ((lt2 - lt) > 0 ? (lt2 - lt) : 1) ))
    r=$(parse_wrk "$out")
    read -r rps p50 p99 n2 se reqs mbs <<<"$r"
    # CPU time the target's own process(es) used per request, in microseconds
    us_req=$(awk -v t=$((tk2 - tk)) -v hz="$CLK_TCK" -v n="$reqs" \
        'BEGIN { printf "%.1f", (n > 0 ? t * 1000000 / hz / n : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sc" "$round" "$target" \
        "$rps" "$p50" "$p99" "$n2" "$se" "$reqs" "$cpu_p" "$cpu_l" "$us_req" "$mbs" >>"$TMP/results.tsv"
    if [[ $target == direct ]] && ((cpu_p > 10)); then
        log "warning: CPU $PROXY_CPUS was ${cpu_p}% busy with no proxy under load:" \
            "something else is running, figures of this round are noisy"
    fi
    log "$(printf '%-6s round %d %-12s %10s req/s %8s MB/s  p50 %8sus  p99 %8sus  non2xx %s sockerr %s  cpuP %s%% cpuL %s%%  %sus cpu/req' \
        "$sc" "$round" "$target" "$rps" "$mbs" "$p50" "$p99" "$n2" "$se" "$cpu_p" "$cpu_l" "$us_req")"
}

rss_kb() {   # sum of VmRSS over PID and its children, in KiB
    local pid=$1 total=0 p v
    for p in $pid $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# A bounded client for the idle scenario: opens N connections one after the other, sends
# one keep-alive request on each and reads its answer, prints "ready OPEN FAILED", holds
# them HOLD seconds, closes them. Gives up connecting after 120 s.
write_idle_client() {
    cat >"$TMP/idle.py" <<'EOF'
import socket, sys, time
port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + 120
req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
socks, failed = [], 0
for _ in range(n):
    if time.monotonic() > deadline:
        break
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(req)
        data = b""
        while not data.endswith(b"ok\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise OSError("closed by the server")
            data += chunk
        socks.append(s)
    except OSError:
        failed += 1
print(f"ready {len(socks)} {failed}", flush=True)
time.sleep(hold)
for s in socks:
    s.close()
EOF
}

measure_idle() {   # measure_idle TARGET: RSS before and with IDLE_CONNS idle connections
    local target=$1 pid before during out=$TMP/idle-$1.txt deadline open failed line
    pid=${PID_OF[$target]}
    before=$(rss_kb "$pid")
    start_bg "idle-$target" "$LOAD_CPUS" "$out" \
        python3 "$TMP/idle.py" "${PORT_OF[$target]}" "$IDLE_CONNS" "$IDLE_HOLD"
    deadline=$((SECONDS + 180))
    until line=$(grep '^ready' "$out" 2>/dev/null); do
        ((SECONDS < deadline)) || die "idle client for $target did not get ready in 180 s"
        kill -0 "${PID_OF[idle-$target]}" 2>/dev/null || { cat "$out" >&2; die "idle client for $target died"; }
        sleep 0.2
    done
    sleep 1
    during=$(rss_kb "$pid")
    read -r _ open failed <<<"$line"
    wait "${PID_OF[idle-$target]}" 2>/dev/null || true
    printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$open" "$failed" "$before" "$during" >>"$TMP/idle.tsv"
    log "$(printf 'idle   %-12s %6d open %4d failed  RSS %8d KiB before, %8d KiB with them open' \
        "$target" "$open" "$failed" "$before" "$during")"
}

run_rounds() {
    local sc round i n=${#TARGETS[@]} target
    : >"$TMP/results.tsv"
    for sc in $SCENARIOS; do
        scenario_params "$sc"
        if [[ $sc == idle ]]; then
            # Memory, not speed: one pass, each proxy in turn (the backend is no proxy).
            write_idle_client
            : >"$TMP/idle.tsv"
            for target in "${TARGETS[@]}"; do
                [[ $target == direct ]] || measure_idle "$target"
            done
            continue
        fi
        if ((WARMUP > 0)); then
            log "scenario $sc: warm-up ${WARMUP}s per target"
            for target in "${TARGETS[@]}"; do
                run_wrk "$target" "$WARMUP" "$TMP/warmup-$sc-$target.txt"
            done
        fi
        for ((round = 1; round <= ROUNDS; round++)); do
            # rotate the order each round so no target always follows the same one
            for ((i = 0; i < n; i++)); do
                measure "$sc" "$round" "${TARGETS[(i + round - 1) % n]}"
            done
        done
    done
}

# ---------------------------------------------------------------- step 9: report
peak_rss_kb() {   # sum of VmHWM over PID and its children (nginx master + workers)
    local pid=$1 total=0 p v
    for p in $pid $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

report() {
    local sc
    echo
    echo "fulcrum vs HAProxy vs nginx — threads=$THREADS rounds=$ROUNDS duration=${DURATION}s" \
         "wrk -t$WRK_THREADS, proxies on CPU $PROXY_CPUS, wrk+backends on CPU $LOAD_CPUS," \
         "fulcrum access_log=$ACCESS_LOG"
    for sc in $SCENARIOS; do
        scenario_params "$sc"
        if [[ $sc == idle ]]; then
            echo
            echo "scenario idle: $IDLE_CONNS keep-alive client connections, one request each, held ${IDLE_HOLD}s"
            awk -F'\t' '
            { t[NR] = $1; o[NR] = $2; f[NR] = $3; b[NR] = $4; d[NR] = $5; if ($1 == "haproxy") h = $5 }
            END {
                printf "  %-14s %7s %7s %12s %12s %10s %9s\n", "target", "open", "failed", "RSS before", "RSS idle", "KiB/conn", "rss/hap"
                for (i = 1; i <= NR; i++)
                    printf "  %-14s %7d %7d %8d KiB %8d KiB %10.2f %9s\n", t[i], o[i], f[i], b[i], d[i],
                        (o[i] > 0 ? (d[i] - b[i]) / o[i] : 0), (h > 0 ? sprintf("%.2f", d[i] / h) : "-")
            }' "$TMP/idle.tsv"
            continue
        fi
        echo
        echo "scenario $sc: ${S_CONNS} connections, path $S_PATH${S_HDR[*]:+, ${S_HDR[*]}}  (medians of $ROUNDS rounds)"
        awk -F'\t' -v sc="$sc" -v order="${TARGETS[*]}" '
        function median(list,   a, n, i, j, t) {
            n = split(list, a, " ")
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function fmt_us(v) { return v >= 1000 ? sprintf("%.2fms", v / 1000) : sprintf("%.0fus", v) }
        $1 == sc {
            rps[$3] = rps[$3] " " $4; p50[$3] = p50[$3] " " $5; p99[$3] = p99[$3] " " $6
            err[$3] += $7 + $8; c0[$3] = c0[$3] " " $10; c1[$3] = c1[$3] " " $11
            cr[$3] = cr[$3] " " $12; mb[$3] = mb[$3] " " $13
        }
        END {
            n = split(order, t, " ")
            hr = ("haproxy" in rps) ? median(rps["haproxy"]) : 0
            hp = ("haproxy" in rps) ? median(p99["haproxy"]) : 0
            printf "  %-14s %11s %9s %9s %9s %8s %9s %9s %6s %6s %9s\n", "target", "req/s", "MB/s", "p50", "p99", "errors", "rps/hap", "p99/hap", "cpuP%", "cpuL%", "us/req"
            for (i = 1; i <= n; i++) {
                k = t[i]; if (!(k in rps)) continue
                r = median(rps[k]); q = median(p99[k])
                rr = "-"; if (hr > 0) rr = sprintf("%.2f", r / hr)
                pr = "-"; if (hp > 0) pr = sprintf("%.2f", q / hp)
                printf "  %-14s %11.0f %9.1f %9s %9s %8d %9s %9s %6.0f %6.0f %9.1f\n", k, r, median(mb[k]), fmt_us(median(p50[k])), fmt_us(q), err[k], rr, pr, median(c0[k]), median(c1[k]), median(cr[k])
            }
        }' "$TMP/results.tsv"
    done
    echo
    echo "  errors = non-2xx/3xx responses + socket errors, summed over rounds;"
    echo "  cpuP% / cpuL% = busy share of the proxy CPUs / the load (wrk+backends) CPUs during the run;"
    echo "  us/req = CPU time of the target's own process(es) per request (for direct: the backend)."
    echo
    echo "peak RSS (VmHWM, master+workers summed for nginx):"
    local name
    for name in fulcrum fulcrum-nolog fulcrum-base haproxy nginx-proxy backend1; do
        [[ -n ${PID_OF[$name]:-} ]] || continue
        printf '  %-14s %8d KiB\n' "$name" "$(peak_rss_kb "${PID_OF[$name]}")"
    done
    if [[ -n ${PID_OF[fulcrum]:-} ]]; then
        printf '  fulcrum log: %s bytes written during the run\n' "$(stat -c %s "$TMP/fulcrum.log")"
    fi
}

# ---------------------------------------------------------------- main
main() {
    [[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer"
    [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]  || die "ROUNDS must be a positive integer"
    [[ $ACCESS_LOG =~ ^(true|false|both)$ ]] || die "ACCESS_LOG must be true, false or both"
    local sc; for sc in $SCENARIOS; do scenario_params "$sc"; done

    install_tools
    raise_fd_limit
    check_ports_free
    build_fulcrum

    trap cleanup EXIT
    trap 'exit 130' INT TERM
    TMP=$(mktemp -d /tmp/fulcrum-bench.XXXXXX)
    log "temp dir $TMP"

    start_backends
    start_fulcrum fulcrum "$FULCRUM_PORT" "$FULCRUM_ADMIN_PORT" "${ACCESS_LOG/both/true}"
    if [[ $ACCESS_LOG == both ]]; then
        start_fulcrum fulcrum-nolog "$FULCRUM_NOLOG_PORT" "$FULCRUM_NOLOG_ADMIN_PORT" false
    fi
    if [[ -n $FULCRUM_BASE_BIN ]]; then
        start_fulcrum fulcrum-base "$FULCRUM_BASE_PORT" "$FULCRUM_BASE_ADMIN_PORT" \
            "${ACCESS_LOG/both/true}" "$FULCRUM_BASE_BIN"
    fi
    start_haproxy
    start_nginx_proxy

    PORT_OF=([direct]=$BACKEND1_PORT [fulcrum]=$FULCRUM_PORT [haproxy]=$HAPROXY_PORT
             [nginx-proxy]=$NGINX_PROXY_PORT [fulcrum-nolog]=$FULCRUM_NOLOG_PORT
             [fulcrum-base]=$FULCRUM_BASE_PORT)
    TARGETS=(direct)
    local name
    for name in fulcrum fulcrum-nolog fulcrum-base; do   # the ones start_fulcrum started
        if [[ -n ${PID_OF[$name]:-} ]]; then TARGETS+=("$name"); fi
    done
    TARGETS+=(haproxy nginx-proxy)

    run_rounds
    report
}

main "$@"
