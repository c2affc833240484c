#!/usr/bin/env bash
# Profiles one process of a loaded stack: a gateway and N environment workers on sample
# inventories, driven over the admin socket, with `perf record -e cpu-clock -g` on the
# gateway or the first worker, and every process's CPU per call printed from /proc.
# A measuring tool for finding where the hot path's time goes, not a test.
#
#   scripts/profile.sh [BIN]              # BIN: a release build (default: build one)
#   PROFILE=worker WORKERS=3 JOURNAL=off CONCURRENCY=64 SECONDS_=8 scripts/profile.sh
#   LOADGEN=../shared/peers/go-seed/bin/loadgen scripts/profile.sh   # a lighter load generator
#
# Knobs: PROFILE=gateway|worker|none (default gateway), WORKERS=1..3 (1),
# JOURNAL=full|normal|off (full; normal is `--journal-sync normal`, no fsync per commit),
# CONCURRENCY (64), SECONDS_ (8), RATE (calls/s at most, `bench --rate`; not with LOADGEN),
# LOG_LEVEL (info: every call's audit line), LOADGEN (default: `BIN bench`; the Go load
# generator of ../shared/peers is what compare.sh drives both sides with).
# Output: the load generator's JSON line, CPU µs per call per process and the gateway's by
# thread (its event loop apart from the journal's writer, `vpsgw-journal`), our processes' CPU
# over the load generator's (a yardstick that moves with the VM's speed), the shares of CPU
# time the host stole and the machine left idle during the load, and with PROFILE set
# `perf report` reading hints; the perf data stays in $PROFILE_OUT (default
# /tmp/vps-gateway-profile.data).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-gateway}" workers="${WORKERS:-1}" journal="${JOURNAL:-full}"
concurrency="${CONCURRENCY:-64}" seconds="${SECONDS_:-8}" data="${PROFILE_OUT:-/tmp/vps-gateway-profile.data}"
if [ $# -ge 1 ]; then
    bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
else
    swift build -c release --static-swift-stdlib --product vps-gateway 2>&1 | tail -n 1
    bin="$(swift build -c release --static-swift-stdlib --show-bin-path)/vps-gateway"
fi
[ -n "${RATE:-}" ] && [ -n "${LOADGEN:-}" ] && { echo "profile: RATE paces \`vps-gateway bench\` only; unset LOADGEN" >&2; exit 64; }
[ "$profile" = none ] || command -v perf >/dev/null || { echo "profile: perf is missing (apt-get install linux-perf)" >&2; exit 69; }
work="$(mktemp -d /tmp/vps-gateway-profile.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

export GATEWAY_API_SECRET="profile-secret" VPS_GATEWAY_API_SECRET="profile-secret" VPS_GATEWAY_LOG_LEVEL="${LOG_LEVEL:-info}"
export VPS_GATEWAY_MIGRATIONS="${VPS_GATEWAY_MIGRATIONS:-$PWD/migrations}"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
sock="$work/admin.sock"
metrics_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
case "$journal" in
    full | normal) journal_args=(--journal "$work/journal.sqlite3" --journal-sync "$journal") ;;
    off) journal_args=(--journal off) ;;
    *) echo "profile: JOURNAL is full, normal or off, not '$journal'" >&2; exit 64 ;;
esac
"$bin" gateway --listen "127.0.0.1:$port" --admin-socket "$sock" "${journal_args[@]}" --dhcp-leases off \
    --metrics-address "127.0.0.1:$metrics_port" >"$work/gateway.log" 2>&1 &
pids+=("$!")
environments=(production beta dev)
for ((i = 0; i < workers; i++)); do
    env="${environments[$i]}"
    "$bin" inventory create "$work/$env.sqlite3" --environment "$env" --sample-rows 1000 >/dev/null
    VPS_GATEWAY_URL="http://127.0.0.1:$port" "$bin" worker --env "$env" --instance-id "profile-$env" \
        --inventory "sqlite:$work/$env.sqlite3" >"$work/worker-$env.log" 2>&1 &
    pids+=("$!")
done
# Bounded waits: the socket, then every worker registered.
for ((i = 0; i < 200; i++)); do [ -S "$sock" ] && break; sleep 0.05; done
for ((i = 0; i < 200; i++)); do
    connected="$("$bin" clients --admin-socket "$sock" --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("clients", [])))' 2>/dev/null || echo 0)"
    [ "$connected" -ge "$workers" ] && break
    sleep 0.05
done
[ "${connected:-0}" -ge "$workers" ] || { echo "profile: only ${connected:-0} of $workers workers registered; see $work/*.log" >&2; exit 1; }

mac=52:54:00:01:00:2a   # production's sample VPS 42: the other environments answer not_found
load() {  # duration
    if [ -n "${LOADGEN:-}" ]; then
        "$LOADGEN" -admin-socket "$sock" -mac "$mac" -concurrency "$concurrency" -duration "$1"
    else
        "$bin" bench --admin-socket "$sock" --mac "$mac" --concurrency "$concurrency" --duration "$1" --warmup 0s --json ${RATE:+--rate "$RATE"}
    fi
}
load 1s >/dev/null  # warm-up, outside the measurement
# The journal's group commits so far: their count and total seconds.
commits() {
    curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '
        /^vps_gateway_journal_commit_duration_seconds_count/ { n = $2 }
        /^vps_gateway_journal_commit_duration_seconds_sum/ { s = $2 }
        END { print (n == "" ? 0 : n), (s == "" ? 0 : s) }'
}
# utime+stime of a stat file: fields 14 and 15 of proc(5), read after the name's last ')'
# (a name may hold spaces).
stat_ticks() { sed 's/.*) //' "$1" 2>/dev/null | awk '{print $12+$13}'; }
ticks() { for pid in "${pids[@]}"; do stat_ticks "/proc/$pid/stat"; done | paste -sd' '; }
# The gateway's CPU by thread name (the event loop, the journal's writer, ...), "name=ticks;…".
thread_ticks() {
    for task in /proc/"${pids[0]}"/task/*; do
        printf '%s=%s;' "$(cat "$task/comm" 2>/dev/null)" "$(stat_ticks "$task/stat")"
    done
}
target=""
case "$profile" in gateway) target="${pids[0]}" ;; worker) target="${pids[1]}" ;; esac
if [ -n "$target" ]; then
    perf record -F 2000 -e cpu-clock -g -p "$target" -o "$data" -- sleep "$seconds" >/dev/null 2>&1 &
    perf_pid=$!
fi
# The load generator's own CPU: this shell's children's user+system seconds, before and after.
# (`times` runs in this shell: a command substitution's subshell has no children of its own.)
# The whole machine's CPU time, for the share the host stole (a VM's `steal` column).
cpu_times() { awk '/^cpu / { print $2+$3+$4+$5+$6+$7+$8+$9, $9, $5+$6 }' /proc/stat; }
before="$(ticks)"; threads_before="$(thread_ticks)"; commits_before="$(commits)"; cpu_before="$(cpu_times)"
times > "$work/times"; load_before="$(tail -n 1 "$work/times")"
result="$(load "${seconds}s")"
times > "$work/times"; load_after="$(tail -n 1 "$work/times")"
after="$(ticks)"; threads_after="$(thread_ticks)"; commits_after="$(commits)"; cpu_after="$(cpu_times)"
[ -n "$target" ] && wait "$perf_pid"
echo "$result"
python3 - "$result" "$before" "$after" "$(getconf CLK_TCK)" "$workers" "$load_before" "$load_after" "$commits_before" "$commits_after" "$cpu_before" "$cpu_after" "$threads_before" "$threads_after" <<'PY'
import json, sys
result, before, after, tck, workers, load_before, load_after, commits_before, commits_after, cpu_before, cpu_after, threads_before, threads_after = sys.argv[1:]
def seconds(times):  # "0m1.234s 0m0.567s": user and system
    total = 0.0
    for part in times.split():
        minutes, rest = part.rstrip("s").split("m")
        total += int(minutes) * 60 + float(rest)
    return total
calls = max(json.loads(result)["requests"], 1)
names = ["gateway", "production", "beta", "dev"][: 1 + int(workers)]
ours = 0.0
for name, b, a in zip(names, before.split(), after.split()):
    micros = (int(a) - int(b)) * 1e6 / int(tck) / calls
    ours += micros
    print(f"{name}: {micros:.0f} µs of CPU per call")
def by_thread(text):  # "name=ticks;…", threads of one name summed
    totals = {}
    for item in filter(None, text.split(";")):
        name, _, value = item.rpartition("=")
        if value.isdigit():
            totals[name] = totals.get(name, 0) + int(value)
    return totals
tb, ta = by_thread(threads_before), by_thread(threads_after)
shares = sorted(((ta[n] - tb.get(n, 0), n) for n in ta), reverse=True)
print("gateway by thread: " + ", ".join(f"{n} {d * 1e6 / int(tck) / calls:.0f}" for d, n in shares if d > 0) + " µs per call")
load = (seconds(load_after) - seconds(load_before)) * 1e6 / calls
print(f"load generator: {load:.0f} µs of CPU per call")
# The Go load generator's CPU per call does not depend on our code, but it moves with the
# VM's speed: our processes' CPU over it compares runs on a VM whose speed drifts.
if load > 0:
    print(f"ours over the load generator's: {ours / load:.2f}")
(t0, st0, idle0), (t1, st1, idle1) = (map(float, cpu_before.split()), map(float, cpu_after.split()))
if t1 > t0:
    print(f"stolen by the host: {100 * (st1 - st0) / (t1 - t0):.0f} % of the machine's CPU time during the load")
    # Idle (with I/O wait): a load that leaves cores idle is bound by waits, not by CPU.
    print(f"idle: {100 * (idle1 - idle0) / (t1 - t0):.0f} % of the machine's CPU time during the load")
(n0, s0), (n1, s1) = (map(float, commits_before.split()), map(float, commits_after.split()))
if n1 > n0:
    print(f"journal: {n1 - n0:.0f} group commits, {calls / (n1 - n0):.1f} calls per commit, {(s1 - s0) * 1e6 / (n1 - n0):.0f} µs per commit")
PY
if [ -n "$target" ]; then
    echo "perf data: $data ($profile); read it with:"
    echo "  perf report -i $data --no-children --sort dso,symbol"
    echo "  perf report -i $data --children --sort symbol -g none   # inclusive, by caller"
fi
