#!/usr/bin/env bash
# The journal's cost in gateway CPU per call, measured three ways, with `scripts/profile.sh`
# runs (no perf). A measuring tool, not a test.
#
#   scripts/journal-cost.sh [BIN]                       # BIN: a release build (default: build one)
#   ROUNDS=3 LOADGEN=../shared/peers/go-seed/bin/loadgen scripts/journal-cost.sh BIN
#
# 1. At the same concurrency: the gateway's CPU per call with the journal FULL minus with it
#    off. This is the issue's measure. But FULL at the same concurrency runs at about two
#    thirds of the calls/s (each call waits for its commit), and at a lower rate every
#    process spends more CPU per call (fewer calls per event-loop wake and system call):
#    the load generator's own CPU per call, which the journal does not touch, rises with it.
# 2. At the same throughput: FULL at CONCURRENCY against journal-off runs at lower
#    concurrencies (OFF_CONCURRENCIES) and at CONCURRENCY, the gateway's CPU per call read at
#    the FULL run's calls/s off a least-squares fit of the off runs (see below).
# 3. At the same throughput with the same callers, with `vps-gateway bench` as the load
#    generator (LOADGEN unset): journal off at CONCURRENCY with `--rate` set to the FULL
#    run's calls/s. Calls in flight then follow from rate times latency (fewer than FULL's),
#    evenly spaced calls arrive one by one where FULL's come in bursts behind each commit,
#    and bench pays a timer per paced call (two to three times its CPU per call), so this
#    one errs low as the first errs high.
#
# Knobs: WORKERS (3), CONCURRENCY (64), OFF_CONCURRENCIES ("8 12 20"), SECONDS_ (5), ROUNDS
# (2), LOADGEN (as profile.sh; the Go load generator is the one compare.sh uses). Each round is one
# FULL run then the off runs, so a VM whose speed drifts moves them together.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then
    bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
else
    swift build -c release --static-swift-stdlib --product vps-gateway 2>&1 | tail -n 1
    bin="$(swift build -c release --static-swift-stdlib --show-bin-path)/vps-gateway"
fi
workers="${WORKERS:-3}" concurrency="${CONCURRENCY:-64}" rounds="${ROUNDS:-2}"
read -r -a lower <<< "${OFF_CONCURRENCIES:-8 12 20}"
runs="$(mktemp /tmp/vps-gateway-journal-cost.XXXXXX)"
trap 'rm -f "$runs"' EXIT

# One run: "round journal concurrency calls/s gateway-µs loadgen-µs paced-rate"
measure() {
    local round="$1" journal="$2" c="$3" rate="${4:-}" out
    echo "journal-cost: round $round, journal $journal, concurrency $c${rate:+, at most $rate calls/s}" >&2
    out="$(PROFILE=none WORKERS="$workers" JOURNAL="$journal" CONCURRENCY="$c" SECONDS_="${SECONDS_:-5}" RATE="$rate" scripts/profile.sh "$bin" 2>&1)" \
        || { echo "$out" >&2; echo "journal-cost: the run failed (above)" >&2; exit 70; }
    python3 - "$round" "$journal" "$c" "$out" "${rate:-0}" >> "$runs" <<'PY'
import json, re, sys
round_, journal, c, out, rate = sys.argv[1:]
result = next(json.loads(line) for line in out.splitlines() if line.startswith("{"))
gateway = re.search(r"^gateway: (\d+) µs", out, re.M).group(1)
load = re.search(r"^load generator: (\d+) µs", out, re.M).group(1)
print(round_, journal, c, result["throughput_rps"], gateway, load, rate)
PY
}

for round in $(seq 1 "$rounds"); do
    measure "$round" full "$concurrency"
    measure "$round" off "$concurrency"
    for c in "${lower[@]}"; do measure "$round" off "$c"; done
    if [ -z "${LOADGEN:-}" ]; then
        full_rate="$(awk -v r="$round" '$1 == r && $2 == "full" { printf "%d", $4 }' "$runs")"
        measure "$round" off "$concurrency" "$full_rate"
    fi
done

python3 - "$runs" "$concurrency" <<'PY'
import statistics, sys
path, concurrency = sys.argv[1], int(sys.argv[2])
rows = [line.split() for line in open(path)]
same, matched, paced = [], [], []
print("round  journal  c   calls/s  gateway µs/call  load generator µs/call")
for r in sorted({row[0] for row in rows}, key=int):
    rounds = [(j, int(c), float(rate), float(gw), float(lg), int(cap)) for (rr, j, c, rate, gw, lg, cap) in rows if rr == r]
    for j, c, rate, gw, lg, cap in rounds:
        print(f"{r:>5}  {j:>7}  {c:>2}  {rate:>8.0f}  {gw:>15.0f}  {lg:>22.0f}" + (f"  (paced to {cap}/s)" if cap else ""))
    full = next(m for m in rounds if m[0] == "full")
    off_same = next(m for m in rounds if m[0] == "off" and m[1] == concurrency and not m[5])
    paced += [full[3] - m[3] for m in rounds if m[5]]
    mine = [m for m in rounds if not m[5]]
    same.append(full[3] - off_same[3])
    # Fitted over every off run of the round as CPU per call = a + b / (calls/s), read at
    # FULL's rate. The gateway's CPU per second hardly moves with its rate when the two cores
    # are shared (about 0.7 of a core from 5,000 to 9,500 calls/s, journal off), so a call's
    # share falls as 1/rate; a straight line through the runs bends away from that.
    offs = [m for m in mine if m[0] == "off"]
    xs, ys = [1 / m[2] for m in offs], [m[3] for m in offs]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(sum((x - mx) ** 2 for x in xs), 1e-18)
    at_rate = my + slope * (1 / full[2] - mx)
    rates = [m[2] for m in offs]
    note = "" if min(rates) <= full[2] <= max(rates) else " (outside the off runs' rates: lower OFF_CONCURRENCIES)"
    matched.append(full[3] - at_rate)
    print(f"round {r}: FULL {full[3]:.0f} µs/call at {full[2]:.0f} calls/s; off at c={concurrency}: {off_same[3]:.0f}; "
          f"off at that rate: {at_rate:.0f}{note}")
print(f"journal cost, same concurrency (c={concurrency}): {', '.join(f'{x:.0f}' for x in same)} µs per call, median {statistics.median(same):.0f}")
print(f"journal cost, same throughput: {', '.join(f'{x:.0f}' for x in matched)} µs per call, median {statistics.median(matched):.0f}")
if paced:
    print(f"journal cost, same callers and throughput (off paced): {', '.join(f'{x:.0f}' for x in paced)} µs per call, median {statistics.median(paced):.0f}")
PY
