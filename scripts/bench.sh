#!/usr/bin/env bash
# Measures the README's benchmark tables on this machine, release build:
#  1. the gateway's resident memory, fresh and with 1,000 idle registered clients (and, after
#     step 2, what the gateway that served the lookups still holds);
#  2. lookups with 1 and 3 environment workers at concurrency 1 and 64 (journal FULL, the default);
#  3. the same lookups with the journal off, FULL and NORMAL, side by side (1 worker);
#  4. how long a restarted gateway takes to replay 100,000 pending journal rows;
#  5. DHCP: lease line to hosts line latency over 1,000 leases, and a reconcile of 10,000.
# Prints Markdown; raw JSON lines go to $BENCH_OUT (default: a temp file).
# BENCH_DURATION (default 10s) sets each run; BENCH_IDLE_CLIENTS, BENCH_REPLAY_ROWS, BENCH_LEASES
# and BENCH_RECONCILE_LEASES the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${BENCH_DURATION:-10s}"
journal_duration="${BENCH_JOURNAL_DURATION:-5s}"
idle="${BENCH_IDLE_CLIENTS:-1000}"
replay_rows="${BENCH_REPLAY_ROWS:-100000}"
lease_count="${BENCH_LEASES:-1000}"
reconcile_count="${BENCH_RECONCILE_LEASES:-10000}"
swift build -c release --static-swift-stdlib --product vps-gateway 2>&1 | tail -n 1
bin="$(swift build -c release --static-swift-stdlib --show-bin-path)/vps-gateway"
work="$(mktemp -d /tmp/vps-gateway-bench.XXXXXX)"
out="${BENCH_OUT:-$work/results.jsonl}"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -z "${BENCH_OUT:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

export GATEWAY_API_SECRET="bench-secret" VPS_GATEWAY_API_SECRET="bench-secret" VPS_GATEWAY_LOG_LEVEL=warning
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Gateways by name: the journal mode each runs with.
declare -A port socket gateway_pid
start_gateway() {  # name, journal argument, DHCP arguments (default: none)...
    local name="$1" journal="$2"; shift 2
    [ $# -eq 0 ] && set -- --dhcp-leases off
    port[$name]=$(free_port)
    socket[$name]="$work/$name.sock"
    "$bin" gateway --listen "127.0.0.1:${port[$name]}" --admin-socket "${socket[$name]}" --journal "$journal" "$@" 2>"$work/gateway-$name.log" &
    gateway_pid[$name]=$!
    pids+=("$!")
    for _ in $(seq 1 100); do [ -S "${socket[$name]}" ] && return 0; sleep 0.1; done
    echo "gateway $name did not start:" >&2; cat "$work/gateway-$name.log" >&2; exit 1
}

clients_of() { "$bin" clients --admin-socket "${socket[$1]}" --json 2>/dev/null | grep -o '"instance_id"' | wc -l; }
wait_for_clients() {  # gateway, count
    for _ in $(seq 1 300); do [ "$(clients_of "$1")" -eq "$2" ] && return 0; sleep 0.1; done
    echo "gateway $1: expected $2 clients" >&2; exit 1
}

workers=()
start_workers() {  # endpoints, environments...
    local endpoints="$1"; shift
    for env in "$@"; do
        VPS_NODE_GATEWAY_ENDPOINTS="$endpoints" "$bin" worker --env "$env" --instance-id "$env-bench" \
            --inventory "sqlite:$work/$env.sqlite3" --backoff-max 1s 2>"$work/worker-$env.log" &
        workers+=($!)
        pids+=("$!")
    done
}
stop_workers() {
    for pid in "${workers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${workers[@]}"; do wait "$pid" 2>/dev/null || true; done
    workers=()
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() {  # table, label, gateway, bench arguments...
    local table="$1" label="$2" gateway="$3"; shift 3
    echo "measuring: $label" >&2
    printf '{"table":"%s","label":"%s","result":%s}\n' "$table" "$label" \
        "$("$bin" bench --admin-socket "${socket[$gateway]}" --duration "${run_duration:-$duration}" --warmup 1s --json "$@")" >>"$out"
}

: >"$out"
for env in production beta dev; do
    "$bin" inventory create "$work/$env.sqlite3" --environment "$env" --sample-rows 1000 >/dev/null
done
start_gateway full "$work/journal-full.sqlite3"
start_gateway off off
start_gateway normal "$work/journal-normal.sqlite3"
"$bin" gateway --help >/dev/null  # warm the binary's pages before timing anything
all="full:http://127.0.0.1:${port[full]},off:http://127.0.0.1:${port[off]},normal:http://127.0.0.1:${port[normal]}"

# 1. Memory first, on a fresh gateway: after load its heap stays grown.
echo "measuring: $idle idle clients" >&2
idle_json="$("$bin" bench --admin-socket "${socket[full]}" --idle-clients "$idle" \
    --gateway-url "http://127.0.0.1:${port[full]}" --gateway-pid "${gateway_pid[full]}" --json)"
wait_for_clients full 0

# 2 and 3. A MAC only production knows: with 3 workers the other two answer not_found or are cancelled.
mac=52:54:00:01:00:2a
start_workers "$all" production
wait_for_clients full 1; wait_for_clients off 1; wait_for_clients normal 1
run main "1 worker, c=1" full --concurrency 1 --mac "$mac"
run main "1 worker, c=64" full --concurrency 64 --mac "$mac"
# Interleaved repetitions: on a shared machine a single run of each says little.
run_duration="$journal_duration"
for rep in 1 2 3; do
    for mode in off full normal; do
        run journal "journal $mode, c=1 #$rep" "$mode" --concurrency 1 --mac "$mac"
        run journal "journal $mode, c=64 #$rep" "$mode" --concurrency 64 --mac "$mac"
    done
done
unset run_duration
start_workers "$all" beta dev
wait_for_clients full 3
run main "3 workers, c=1" full --concurrency 1 --mac "$mac"
cpu_before=()
for pid in "${gateway_pid[full]}" "${workers[@]}"; do cpu_before+=("$(cpu_ticks "$pid")"); done
run main "3 workers, c=64" full --concurrency 64 --mac "$mac"
cpu_report="$work/cpu.txt"
: >"$cpu_report"
index=0
for pid in "${gateway_pid[full]}" "${workers[@]}"; do
    echo "$pid $(( $(cpu_ticks "$pid") - ${cpu_before[$index]} ))" >>"$cpu_report"
    index=$((index + 1))
done
run main "3 workers, c=64, Ping (no database)" full --concurrency 64 --method Ping --payload-hex 00
# What the gateway that served every run above still holds (after a second to settle).
sleep 1
rss_after_load=$(awk '/^VmRSS/{print $2}' "/proc/${gateway_pid[full]}/status")
stop_workers

# 4. Replay: pending rows written while no gateway uses the file, then a gateway started on it.
echo "measuring: replay of $replay_rows pending rows" >&2
replay_journal="$work/journal-replay.sqlite3"
"$bin" journal generate --journal "$replay_journal" --count "$replay_rows" --method Ping --payload-hex 00 --deadline 10m >/dev/null
replay_start=$(date +%s.%N)
start_gateway replay "$replay_journal"
start_workers "replay:http://127.0.0.1:${port[replay]}" production
unfinished="$replay_rows"
for _ in $(seq 1 1200); do  # at most 10 minutes
    unfinished=$("$bin" journal stats --journal "$replay_journal" --json | python3 -c 'import json,sys; c=json.load(sys.stdin)["counts_by_state"]; print(c["pending"]+c["in_flight"])')
    [ "$unfinished" -eq 0 ] && break
    [ -t 2 ] && echo "  $unfinished unfinished" >&2
    sleep 0.5
done
replay_seconds=$(python3 -c "import time; print(round(time.time() - $replay_start, 1))")
replay_counts=$("$bin" journal stats --journal "$replay_journal" --json)
stop_workers

# 5. DHCP: lease lines appended one at a time (as dnsmasq grants them) until each one's hosts
# line is written, with three environments answering; then one big lease file.
echo "measuring: lease to hosts line, $lease_count leases" >&2
# The reconcile measurement writes vps-* hostnames and opts in to the shortcut, so it
# measures reading and diffing, not 10,000 lookups.
start_gateway dhcp "$work/journal-dhcp.sqlite3" --dhcp-leases "$work/dhcp.leases" --dhcp-hosts "$work/dhcp-hosts" --vps-hostname-pattern "vps-*"
start_workers "dhcp:http://127.0.0.1:${port[dhcp]}" production beta dev
wait_for_clients dhcp 3
sleep 2  # the watcher starts once the workers have settled
lease_json="$("$bin" bench --admin-socket "${socket[dhcp]}" --lease-latency "$lease_count" --lease-file "$work/dhcp.leases" --hosts-file "$work/dhcp-hosts" --json)"
echo "measuring: reconcile of $reconcile_count leases" >&2
reconcile_json="$("$bin" bench --admin-socket "${socket[dhcp]}" --reconcile-leases "$reconcile_count" --lease-file "$work/dhcp.leases" --hosts-file "$work/dhcp-hosts" --json)"
stop_workers

python3 - "$out" "$idle_json" "$cpu_report" "$(getconf CLK_TCK)" "$replay_rows" "$replay_seconds" "$replay_counts" "$lease_json" "$reconcile_json" "$rss_after_load" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def table(name):
    print("| run | calls/s | p50 µs | p90 µs | p99 µs | max µs | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        if row["table"] != name: continue
        r = row["result"]
        print(f'| {row["label"]} | {r["throughput_rps"]:.0f} | {r["p50_us"]} | {r["p90_us"]} | {r["p99_us"]} | {r["max_us"]} | {r["errors"]} |')
print("Lookups (journal FULL):\n"); table("main")
c64 = next(r["result"] for r in rows if r["label"] == "3 workers, c=64")
ticks = [int(line.split()[1]) for line in open(sys.argv[3])]
per_call = [t / int(sys.argv[4]) * 1e6 / c64["requests"] for t in ticks]
print(f'\nCPU per call at 3 workers, c=64: gateway {per_call[0]:.0f} µs, workers ' + ", ".join(f"{p:.0f}" for p in per_call[1:])
      + f' µs (production, beta, dev), bench client {c64["client_cpu_us_per_call"]:.0f} µs.')
print("\nJournal off / FULL / NORMAL (1 worker; median of 3 interleaved runs each):\n")
import statistics
print("| run | calls/s | p50 µs | p99 µs | calls/s of the 3 runs |")
print("|---|---:|---:|---:|---|")
medians = {}
for c in (1, 64):
    for mode in ("off", "full", "normal"):
        runs = [r["result"] for r in rows if r["label"].startswith(f"journal {mode}, c={c} #")]
        med = lambda key: statistics.median(r[key] for r in runs)
        medians[(mode, c)] = med("throughput_rps")
        print(f'| journal {mode}, c={c} | {med("throughput_rps"):.0f} | {med("p50_us"):.0f} | {med("p99_us"):.0f} | '
              + ", ".join(f'{r["throughput_rps"]:.0f}' for r in runs) + " |")
for c in (1, 64):
    print(f'\n- c={c}: FULL keeps {medians[("full", c)] / medians[("off", c)] * 100:.0f} %, NORMAL {medians[("normal", c)] / medians[("off", c)] * 100:.0f} % of the journal-off throughput', end="")
print()
idle = json.loads(sys.argv[2])
mib = lambda kb: f"{kb/1024:.1f} MiB" if kb is not None else "?"
print(f'\nGateway resident memory: {mib(idle["gateway_rss_kb_before"])} freshly started, {mib(idle["gateway_rss_kb_after"])} with {idle["registered"]} registered idle clients '
      f'({idle["per_client_kb"]} KiB per client; all registered in {idle["seconds_to_register"]:.1f} s).')
served = sum(r["result"]["requests"] for r in rows if r["table"] == "main" or r["label"].startswith("journal full"))
print(f'The journal FULL gateway holds {mib(int(sys.argv[10]))} after serving the {served} calls of the runs above.')
counts = json.loads(sys.argv[7])["counts_by_state"]
n, seconds = int(sys.argv[5]), float(sys.argv[6])
print(f'\nReplay: {n} pending rows (Ping, 1 worker) finished {seconds} s after the gateway started '
      f'({n / seconds:.0f} rows/s; completed {counts["completed"]}, failed {counts["failed"]}, expired {counts["expired"]}).')
lease, reconcile = json.loads(sys.argv[8]), json.loads(sys.argv[9])
print(f'\nDHCP: a lease line to its hosts line (3 environments, journal FULL): p50 {lease["p50_us"]} µs, p99 {lease["p99_us"]} µs, '
      f'max {lease["max_us"]} µs over {lease["leases"]} leases ({lease["timed_out"]} timed out). '
      f'A reconcile of {reconcile["leases"]} leases: median {reconcile["median_us"]} µs (rounds: {", ".join(map(str, reconcile["reconcile_us"]))} µs).')
PY
