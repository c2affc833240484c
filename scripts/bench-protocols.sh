#!/usr/bin/env bash
# Connect against gRPC on the stream port, as the gateway pays for them: one gateway (journal
# off), one VPS-service instance written with PyPI connectrpc speaking the Connect protocol or
# gRPC (the same client library, so only the protocol differs; gzip off both ways), and the
# Go load generator of ../shared/peers (or `vps-gateway bench` when it is missing) driving
# FindVPSByLease over the admin socket. Interleaved rounds; prints the gateway's CPU per call
# for each protocol and the ratio.
#   scripts/bench-protocols.sh [BINARY]      (default .build/release/vps-gateway)
# Knobs: DURATION=5s ROUNDS=3 CONCURRENCY=8
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-.build/release/vps-gateway}"
DURATION="${DURATION:-5s}"; ROUNDS="${ROUNDS:-3}"; CONCURRENCY="${CONCURRENCY:-8}"
venv=$(scripts/python-clients.sh)
LOADGEN=../shared/peers/go-seed/bin/loadgen
TMP=$(mktemp -d -t vps-protocols.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
MAC=52:54:00:aa:bb:01

run() {  # PROTOCOL ROUND -> one line: protocol calls cpu_us_per_call
  local protocol=$1 port sock gateway client calls before after
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  sock="$TMP/admin-$protocol-$2.sock"
  GATEWAY_API_SECRET=bench "$BIN" gateway --listen "127.0.0.1:$port" --admin-socket "$sock" --journal off --dhcp-leases off --log-level warning >"$TMP/gateway.log" 2>&1 &
  gateway=$!; PIDS+=("$gateway")
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
  NO_PROXY=127.0.0.1 PYTHONPATH="$venv/connect-stubs" "$venv/bin/python" Tests/Clients/connect_worker.py \
    --url "http://127.0.0.1:$port" --secret bench --instance "py-$protocol" --environment production \
    --protocol "$protocol" --no-gzip --lease "$MAC=10.0.0.1=vps-bench=org-bench" >"$TMP/client.log" 2>&1 &
  client=$!; PIDS+=("$client")
  for _ in $(seq 100); do grep -q registered "$TMP/client.log" && break; sleep 0.1; done
  if [ -x "$LOADGEN" ]; then
    "$LOADGEN" -admin-socket "$sock" -mac "$MAC" -concurrency "$CONCURRENCY" -duration 1s >/dev/null
    before=$(ticks "$gateway")
    calls=$("$LOADGEN" -admin-socket "$sock" -mac "$MAC" -concurrency "$CONCURRENCY" -duration "$DURATION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  else
    "$BIN" bench --admin-socket "$sock" --mac "$MAC" --concurrency "$CONCURRENCY" --duration 1s >/dev/null
    before=$(ticks "$gateway")
    calls=$("$BIN" bench --admin-socket "$sock" --mac "$MAC" --concurrency "$CONCURRENCY" --duration "$DURATION" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  fi
  after=$(ticks "$gateway")
  kill "$client" "$gateway" 2>/dev/null || true; wait "$client" "$gateway" 2>/dev/null || true
  python3 -c "import sys; t=$(getconf CLK_TCK); print('$protocol', $calls, round(($after-$before)/t*1e6/max($calls,1), 1))"
}

echo "protocol calls gateway_cpu_us_per_call" >"$TMP/results"
for round in $(seq "$ROUNDS"); do
  for protocol in connect grpc; do run "$protocol" "$round" | tee -a "$TMP/results" >&2; done
done
python3 - "$TMP/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]).read().splitlines()[1:]]
median = {p: statistics.median(float(r[2]) for r in rows if r[0] == p) for p in ("connect", "grpc")}
calls = {p: statistics.median(int(r[1]) for r in rows if r[0] == p) for p in ("connect", "grpc")}
print(f"gateway CPU per call (median of {len(rows)//2} rounds): Connect {median['connect']} µs ({calls['connect']} calls), gRPC {median['grpc']} µs ({calls['grpc']} calls); Connect / gRPC = {median['connect']/median['grpc']:.2f}")
PY
