#!/usr/bin/env bash
# Measures the README's benchmark table on this machine: a release build of the gateway,
# 1 and 3 environment workers, concurrency 1 and 64, and the gateway's resident memory with
# 1,000 idle registered clients. Prints a Markdown table; raw JSON lines go to $BENCH_OUT
# (default: a temp file). BENCH_DURATION (default 10s) sets the length of each run.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${BENCH_DURATION:-10s}"
idle="${BENCH_IDLE_CLIENTS:-1000}"
swift build -c release --product vps-gateway 2>&1 | tail -n 1
bin="$(swift build -c release --show-bin-path)/vps-gateway"
work="$(mktemp -d /tmp/vps-gateway-bench.XXXXXX)"
out="${BENCH_OUT:-$work/results.jsonl}"
pids=()
workers=()
cleanup() {
    for pid in "${workers[@]}" "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -z "${BENCH_OUT:-}" ] && rm -rf "$work" || true
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export GATEWAY_API_SECRET="bench-secret" VPS_GATEWAY_API_SECRET="bench-secret"
export GATEWAY_ADMIN_SOCKET="$work/admin.sock" VPS_GATEWAY_LOG_LEVEL=warning
"$bin" gateway --listen "127.0.0.1:$port" 2>"$work/gateway.log" &
gateway_pid=$!
pids+=("$gateway_pid")
for env in production beta dev; do
    "$bin" inventory create "$work/$env.sqlite3" --environment "$env" --sample-rows 1000 >/dev/null
done

wait_for_clients() {
    for _ in $(seq 1 300); do
        [ "$("$bin" clients --json 2>/dev/null | grep -o '"instance_id"' | wc -l)" -eq "$1" ] && return 0
        sleep 0.1
    done
    echo "workers did not register" >&2
    exit 1
}

start_workers() {
    workers=()
    for env in "$@"; do
        "$bin" worker --env "$env" --instance-id "$env-bench" --gateway-url "http://127.0.0.1:$port" \
            --inventory "sqlite:$work/$env.sqlite3" 2>"$work/worker-$env.log" &
        workers+=($!)
    done
    wait_for_clients "$#"
}

stop_workers() {
    for pid in "${workers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${workers[@]}"; do wait "$pid" 2>/dev/null || true; done
    workers=()
    wait_for_clients 0
}

cpu_ticks() {  # utime+stime of a pid, in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}

run() {  # label, bench arguments...
    local label="$1"; shift
    echo "measuring: $label" >&2
    printf '{"label":"%s","result":%s}\n' "$label" "$("$bin" bench --duration "$duration" --json "$@")" >>"$out"
}

: >"$out"
# Memory first, on the fresh gateway: after the call runs its heap stays grown.
echo "measuring: $idle idle clients" >&2
idle_json="$("$bin" bench --idle-clients "$idle" --gateway-url "http://127.0.0.1:$port" --gateway-pid "$gateway_pid" --json)"
wait_for_clients 0
# A MAC only production knows: with 3 workers the other two answer not_found and are cancelled.
start_workers production
run "1 worker, c=1, FindVPSByLease" --concurrency 1 --mac 52:54:00:01:00:2a
run "1 worker, c=64, FindVPSByLease" --concurrency 64 --mac 52:54:00:01:00:2a
stop_workers
start_workers production beta dev
run "3 workers, c=1, FindVPSByLease" --concurrency 1 --mac 52:54:00:01:00:2a
# Where the CPU goes at c=64: ticks per process around the run.
cpu_before=()
for pid in "$gateway_pid" "${workers[@]}"; do cpu_before+=("$(cpu_ticks "$pid")"); done
run "3 workers, c=64, FindVPSByLease" --concurrency 64 --mac 52:54:00:01:00:2a
cpu_report="$work/cpu.txt"
: >"$cpu_report"
index=0
for pid in "$gateway_pid" "${workers[@]}"; do
    echo "$pid $(( $(cpu_ticks "$pid") - ${cpu_before[$index]} ))" >>"$cpu_report"
    index=$((index + 1))
done
run "3 workers, c=64, Ping (no database)" --concurrency 64 --method Ping --payload-hex 00
stop_workers


python3 - "$out" "$idle_json" "$cpu_report" "$(getconf CLK_TCK)" <<'PY'
import json, sys
print("| run | calls/s | p50 µs | p90 µs | p99 µs | max µs | errors |")
print("|---|---:|---:|---:|---:|---:|---:|")
for line in open(sys.argv[1]):
    row = json.loads(line); r = row["result"]
    print(f'| {row["label"]} | {r["throughput_rps"]:.0f} | {r["p50_us"]} | {r["p90_us"]} | {r["p99_us"]} | {r["max_us"]} | {r["errors"]} |')
rows = [json.loads(line) for line in open(sys.argv[1])]
c64 = next(r["result"] for r in rows if r["label"].startswith("3 workers, c=64, Find"))
ticks = [int(line.split()[1]) for line in open(sys.argv[3])]
per_call = [t / int(sys.argv[4]) * 1e6 / c64["requests"] for t in ticks]
print()
print(f'CPU per call at 3 workers, c=64: gateway {per_call[0]:.0f} µs, workers ' + ", ".join(f"{p:.0f}" for p in per_call[1:])
      + f' µs (production, beta, dev), bench client {c64["client_cpu_us_per_call"]:.0f} µs.')
idle = json.loads(sys.argv[2])
mib = lambda kb: f"{kb/1024:.1f} MiB" if kb is not None else "?"
print()
print(f'Gateway resident memory: {mib(idle["gateway_rss_kb_before"])} freshly started, {mib(idle["gateway_rss_kb_after"])} with {idle["registered"]} registered idle clients '
      f'({idle["per_client_kb"]} KiB per client; all registered in {idle["seconds_to_register"]:.1f} s).')
PY
