#!/usr/bin/env bash
# Load test of `moonjail serve` on loopback: throughput and latency (p50/p99) of trivial
# runs, in process and isolated, and what happens when the service is saturated (503s
# with Retry-After, never a dropped connection). Bounded: each phase lasts DURATION and
# stops by itself; nothing but 127.0.0.1 is contacted.
#
#   bash bench/load.sh                     # release build, 10 s per phase, 64 connections
#   DURATION=5s CONNECTIONS=32 bash bench/load.sh
#   WORKERS=2 ISOLATED_WORKERS=2 bash bench/load.sh   # executors in process / isolated
#   PHASES=inprocess bash bench/load.sh    # some of: inprocess isolated saturated sigterm
#   BIN=path/to/moonjail bash bench/load.sh  # that binary (its moonjail-worker beside
#                                            # it), not a fresh build: before/after
#   INSTRUCTIONS=1 bash bench/load.sh      # the server under callgrind, 4 connections:
#                                          # instructions per request, the A/B measure
#                                          # that other load on the machine cannot move
#
# Installs wrk with apt-get when it is missing. Client and server share the machine:
# on 2 cores the figures are a floor, not the service's capacity.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
PORT=${PORT:-18451}
# The service's own defaults (`moonjail serve --help`): one executor per CPU in process,
# half as many again isolated.
cpus=$(nproc)
WORKERS=${WORKERS:-$cpus}
ISOLATED_WORKERS=${ISOLATED_WORKERS:-$((cpus + (cpus + 1) / 2))}

if ! command -v wrk >/dev/null; then
    echo "installing wrk" >&2
    (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi
PHASES=${PHASES:-inprocess isolated saturated sigterm}
if [ -n "${BIN:-}" ]; then
    bin=$BIN
else
    cargo build --release -q -p moonjail-cli -p moonjail --bin moonjail --bin moonjail-worker
    target=${CARGO_TARGET_DIR:-target}
    bin="$target/release/moonjail"
fi
if [ -n "${BIN:-}" ]; then origin="given"; else origin="built from $(git rev-parse --short HEAD 2>/dev/null || echo '?')"; fi
echo "binary: $bin ($origin), $(nproc) CPUs, load average: $(cut -d' ' -f1-3 /proc/loadavg)"

work=$(mktemp -d)
trap 'kill "${server:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
key=$("$bin" keys add bench --keys "$work/keys.txt" 2>/dev/null)

cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"code": "return 1"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
LUA

# Under callgrind the server is ~50x slower: a few connections keep it busy, and the
# figure is its total instruction count (start-up amortised) over the requests served.
if [ -n "${INSTRUCTIONS:-}" ]; then
    command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind) >/dev/null
    CONNECTIONS=${INSTRUCTIONS_CONNECTIONS:-4}
    DURATION=${INSTRUCTIONS_DURATION:-20s}
    wrap=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out")
else
    wrap=()
fi

start() {
    "${wrap[@]}" "$bin" serve --listen "127.0.0.1:$PORT" --keys "$work/keys.txt" "$@" \
        2>"$work/serve.log" &
    server=$!
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "the service did not become ready" >&2; cat "$work/serve.log" >&2; exit 1
}

stop() {
    kill -TERM "$server"; wait "$server" || true; server=
}

# The server's CPU time (utime stime, in clock ticks) and its threads' context switches.
counters() {
    echo "$(awk '{print $14, $15}' "/proc/$server/stat") \
        $(cat /proc/"$server"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s}')"
}

phase() {
    local name=$1; shift
    echo "== $name"
    start "$@"
    local before after
    before=$(counters)
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/post.lua" \
        "http://127.0.0.1:$PORT/v1/run" > "$work/wrk.out"
    after=$(counters)
    grep -E "Requests/sec|Latency|50%|99%|Non-2xx|requests in|Socket errors" "$work/wrk.out"
    # Per request: what the server spent, whatever else shares the machine.
    awk -v b="$before" -v a="$after" -v hz="$(getconf CLK_TCK)" \
        -v n="$(awk '/requests in/ {print $1}' "$work/wrk.out")" 'BEGIN {
            split(b, x, " "); split(a, y, " ");
            printf "  server per request: %.0f us user, %.0f us system, %.2f context switches\n",
                (y[1] - x[1]) / hz * 1e6 / n, (y[2] - x[2]) / hz * 1e6 / n, (y[3] - x[3]) / n }'
    # What every request was answered (wrk counts only non-2xx): by status, from the
    # service's own counters.
    curl -s "http://127.0.0.1:$PORT/metrics" > "$work/metrics" || true
    grep -E '^moonjail_http_requests_total\{route="/v1/run"' "$work/metrics" > "$work/counts" || true
    cat "$work/counts"
    # Memory after the load: bounded by the executors, the queue and the connections.
    awk '/^VmRSS|^VmHWM/ {printf "  server %s %d MiB\n", $1, $2 / 1024}' "/proc/$server/status" | paste -sd' ' | sed 's/  */ /g; s/^/ /'
    # The same quantiles as the service saw them (head read to response ready, the
    # executor queue included; wrk's own scheduling and the sockets not): the upper
    # bound of the histogram bucket each falls in.
    awk -F'[{}" ]+' '/^moonjail_http_request_duration_seconds_bucket/ && /route="\/v1\/run"/ {
            for (i = 2; i < NF; i++) if ($i == "le=") le = $(i + 1);
            n++; les[n] = le; counts[n] = $NF }
        END { if (n == 0) exit; total = counts[n];
            for (i = 1; i <= n; i++) { if (!p50 && counts[i] >= total * 0.5) p50 = les[i];
                                       if (!p99 && counts[i] >= total * 0.99) p99 = les[i] }
            printf "  server side (bucket bounds): p50 <= %.2f ms, p99 <= %.2f ms\n", p50 * 1000, p99 * 1000 }' \
        "$work/metrics"
    stop
    if [ -n "${INSTRUCTIONS:-}" ]; then
        local total served
        total=$(callgrind_annotate "$work/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        # Runs answered: 200s only (a saturated phase's 503s cost far less).
        served=$(awk '/status="200"/ {s += $2} END {print s + 0}' "$work/counts")
        if [ -z "$total" ] || [ "$served" -eq 0 ]; then
            echo "  instructions: no callgrind total or no run answered" >&2
        else
            # Isolated, the workers' instructions are not in the server's count.
            echo "  instructions: $total in all, $served runs answered: $((total / served)) per run (callgrind, start-up included${isolated_note:-})"
        fi
    fi
}

# SIGTERM in the middle of a phase: every request the service read must reach the
# client. The service logs one "answered" line per request when its response is ready;
# wrk counts the responses it received. Requests sent after the service stopped
# accepting show up as wrk's connect/read errors (never read, so never answered).
sigterm_phase() {
    local name=$1; shift
    echo "== SIGTERM after $SIGTERM_AFTER s of load: $name, queue $CONNECTIONS"
    MOONJAIL_LOG=moonjail_http=info start "$@" --queue "$CONNECTIONS" --grace 5s
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$work/post.lua" \
        "http://127.0.0.1:$PORT/v1/run" > "$work/wrk.out" &
    local client=$!
    sleep "$SIGTERM_AFTER"
    local status=0
    kill -TERM "$server"; wait "$server" || status=$?; server=
    wait "$client" || true
    local answered received unanswered
    answered=$(grep -c 'route=/v1/run.*answered' "$work/serve.log" || true)
    # The stop's own tally: requests read and never answered (cancelled, or left).
    unanswered=$(sed -n 's/.*stopped.*unanswered=\([0-9]*\).*/\1/p' "$work/serve.log" | tail -1)
    received=$(awk '/requests in/ {print $1}' "$work/wrk.out")
    grep -E "requests in|Socket errors|Non-2xx" "$work/wrk.out" || true
    grep 'stopped' "$work/serve.log" | sed 's/^/  service: /' || true
    echo "  service: exit status $status, $answered runs answered, ${unanswered:-?} requests unanswered; client: $received responses received"
    if [ "$answered" -eq "$received" ] && [ "${unanswered:-1}" -eq 0 ] && [ "$status" -eq 0 ]; then
        echo "  every request the service read was answered, and every answer received"
    else
        echo "  LOST: answers that never reached the client, or requests read and never answered" >&2
    fi
}
SIGTERM_AFTER=${SIGTERM_AFTER:-3}

# Throughput: a queue as deep as the connections, so every request waits its turn.
for p in $PHASES; do
    case $p in
        inprocess) phase "in process, $WORKERS workers, queue $CONNECTIONS" --workers "$WORKERS" --queue "$CONNECTIONS" ;;
        isolated) isolated_note="; the supervisor only, not its workers" phase "isolated, $ISOLATED_WORKERS workers, queue $CONNECTIONS" --workers "$ISOLATED_WORKERS" --queue "$CONNECTIONS" --isolate ;;
        saturated) phase "saturated: 1 worker, queue 0 (expect 503s, each answered)" --workers 1 --queue 0 ;;
        sigterm)
            sigterm_phase "in process, $WORKERS workers" --workers "$WORKERS"
            sigterm_phase "isolated, $ISOLATED_WORKERS workers" --workers "$ISOLATED_WORKERS" --isolate ;;
        *) echo "unknown phase $p (inprocess, isolated, saturated, sigterm)" >&2; exit 2 ;;
    esac
done
