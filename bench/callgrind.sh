#!/usr/bin/env bash
# bench/callgrind.sh — instructions fulcrum executes per proxied request (deterministic).
#
# Runs fulcrum under `valgrind --tool=callgrind` behind wrk for a bounded time, with two
# nginx backends, and prints the total instructions (Ir) divided by the requests wrk
# completed. Unlike req/s this hardly moves with the load of the machine, so it is the
# figure to compare two builds with. Start-up and shutdown are included (a few million
# instructions; negligible over thousands of requests).
#
#   bench/callgrind.sh [FULCRUM_BIN]     default: target/release/fulcrum (built if missing)
#
# Environment: DURATION=10 (seconds of wrk), CONNS=16, ACCESS_LOG=true, THREADS=1,
#   BODY_KIB=0 (N > 0: requests fetch an N KiB file instead of the 3-byte "ok\n"),
#   CLOSE=0 (1 = every request says `Connection: close`: a new client connection each),
#   ANNOTATE=0 (1 = print callgrind_annotate's top functions), KEEP_TMP=0.
set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
ACCESS_LOG=${ACCESS_LOG:-true}
THREADS=${THREADS:-1}
ANNOTATE=${ANNOTATE:-0}
KEEP_TMP=${KEEP_TMP:-0}
BODY_KIB=${BODY_KIB:-0}
CLOSE=${CLOSE:-0}
WRK_HEADER=()
if [[ $CLOSE == 1 ]]; then WRK_HEADER=(-H "Connection: close"); fi
[[ $BODY_KIB =~ ^[0-9]+$ ]] || { echo "BODY_KIB must be a number of KiB" >&2; exit 1; }
PATH_ASKED=/
if ((BODY_KIB > 0)); then PATH_ASKED=/body.bin; fi
B1=18181 B2=18182 FE=18192 ADMIN=18193
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$REPO_ROOT/target/release/fulcrum}
PIDS=()

log() { printf '[callgrind] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in valgrind callgrind_annotate wrk nginx curl; do
    command -v "$tool" >/dev/null || die "$tool missing (apt-get install valgrind wrk nginx-light curl)"
done
if [[ ! -x $BIN ]]; then
    (cd "$REPO_ROOT" && cargo build --release --quiet) || die "fulcrum did not build"
fi

TMP=$(mktemp -d /tmp/fulcrum-callgrind.XXXXXX)
cleanup() {
    local pid i
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || continue
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ $KEEP_TMP == 1 ]]; then log "kept $TMP"; else rm -rf -- "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_ready() {   # wait_ready PORT PID (bounded: 60 s, valgrind starts slowly)
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        kill -0 "$2" 2>/dev/null || die "process $2 exited during start-up"
        curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/" 2>/dev/null && return 0
        sleep 0.2
    done
    die "nothing answers on :$1 after 60 s"
}

for port in $B1 $B2; do
    d=$TMP/nginx-$port
    mkdir -p "$d"
    if ((BODY_KIB > 0)); then head -c $((BODY_KIB * 1024)) /dev/zero >"$d/body.bin"; fi
    {
        [[ $EUID -eq 0 ]] && echo "user root;"
        cat <<EOF
worker_processes 1; daemon off; master_process on; pid $d/nginx.pid; error_log $d/error.log crit;
events { worker_connections 1024; }
http {
    access_log off; client_body_temp_path $d/cb; proxy_temp_path $d/p; fastcgi_temp_path $d/f;
    uwsgi_temp_path $d/u; scgi_temp_path $d/s; keepalive_requests 100000000;
    server { listen 127.0.0.1:$port; root $d; location = / { return 200 "ok\n"; } }
}
EOF
    } >"$d/nginx.conf"
    nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" >"$d/out.log" 2>&1 &
    PIDS+=($!)
    wait_ready "$port" $!
done

cat >"$TMP/fulcrum.toml" <<EOF
[global]
threads = $THREADS
grace_period = "1s"
state_dir = "$TMP/state"
[admin]
bind = "127.0.0.1:$ADMIN"
[[frontends]]
name = "bench"
bind = "127.0.0.1:$FE"
backend = "b"
access_log = $ACCESS_LOG
[backends.b]
algorithm = "round_robin"
[backends.b.health]
kind = "tcp"
interval = "2s"
[[backends.b.servers]]
name = "n1"
address = "127.0.0.1:$B1"
[[backends.b.servers]]
name = "n2"
address = "127.0.0.1:$B2"
EOF
mkdir -p "$TMP/state"
valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out" \
    "$BIN" run -c "$TMP/fulcrum.toml" >"$TMP/fulcrum.log" 2>"$TMP/valgrind.log" &
FPID=$!
PIDS=("$FPID" "${PIDS[@]}")
wait_ready "$FE" "$FPID"
wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 10s "${WRK_HEADER[@]}" "http://127.0.0.1:$FE$PATH_ASKED" >"$TMP/wrk.txt" 2>&1 \
    || { cat "$TMP/wrk.txt" >&2; die "wrk failed"; }
kill -TERM "$FPID"
for ((i = 0; i < 300; i++)); do kill -0 "$FPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$FPID" 2>/dev/null && die "fulcrum did not exit within 30 s"

reqs=$(awk '/ requests in / { print $1 }' "$TMP/wrk.txt")
ir=$(awk '/^summary:/ { print $2 } /^totals:/ { print $2 }' "$TMP/callgrind.out"* | sort -n | tail -1)
[[ -n $reqs && $reqs -gt 0 ]] || die "wrk completed no request"
errs=$(grep -E 'Non-2xx|Socket errors' "$TMP/wrk.txt" || true)
log "binary $BIN, access_log=$ACCESS_LOG, $CONNS connections, ${DURATION}s, close=$CLOSE"
[[ -n $errs ]] && log "wrk: $errs"
printf 'requests %d  instructions %d  Ir/request %d\n' "$reqs" "$ir" $((ir / reqs))
if [[ $ANNOTATE == 1 ]]; then
    callgrind_annotate --inclusive=no "$TMP/callgrind.out" 2>/dev/null | head -60
fi
