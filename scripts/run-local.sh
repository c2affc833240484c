#!/usr/bin/env bash
# Runs vps-gateway locally on embedded defaults: the supervisor (as the systemd unit runs it)
# with a gateway on 127.0.0.1:1537 and three environment workers (production, beta, dev) on
# sample inventories, then looks up a VPS
# that only production knows and shows the hosts file the gateway wrote from a sample
# dnsmasq lease file. Keeps running until Ctrl-C; `--once` stops after the lookup.
# Everything lives in a temp directory that is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
[ "${1:-}" = "--once" ] && once=true

swift build --product vps-gateway 2>&1 | tail -n 1
bin="$(swift build --show-bin-path)/vps-gateway"
work="$(mktemp -d /tmp/vps-gateway-local.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

export GATEWAY_API_SECRET="local-dev-secret" VPS_GATEWAY_API_SECRET="local-dev-secret"
export GATEWAY_ADMIN_SOCKET="$work/admin.sock"
port="${GATEWAY_GRPC_PORT:-1537}"

# A sample dnsmasq lease file: one lease production knows, one nobody knows, one named vps-*.
expiry=$(( $(date +%s) + 3600 ))
cat >"$work/dnsmasq.leases" <<LEASES
$expiry 52:54:00:01:00:07 10.1.0.7 customer-box 01:52:54:00:01:00:07
$expiry 52:54:00:99:00:01 10.9.9.9 stranger *
$expiry 52:54:00:02:00:03 10.2.0.3 vps-beta-0003 *
LEASES

# The one-box install, as systemd runs it: the supervisor with a gateway and three workers.
for env in production beta dev; do
    "$bin" inventory create "$work/$env.sqlite3" --environment "$env" --sample-rows 100 >/dev/null
done
cat >"$work/vps-gateway.yaml" <<CONFIG
gateway:
  listen: 127.0.0.1:$port
  admin_socket: $work/admin.sock
  journal: $work/journal.sqlite3
  dhcp_leases: $work/dnsmasq.leases
  dhcp_hosts: $work/vps-hosts
environments:
  - {name: production, inventory: "sqlite:$work/production.sqlite3", instance_id: production-local}
  - {name: beta, inventory: "sqlite:$work/beta.sqlite3", instance_id: beta-local}
  - {name: dev, inventory: "sqlite:$work/dev.sqlite3", instance_id: dev-local}
supervisor:
  notify_directory: $work/notify
  log_format: text
CONFIG
"$bin" check-config "$work/vps-gateway.yaml"
"$bin" supervise --config "$work/vps-gateway.yaml" &
supervisor=$!
pids+=("$supervisor")

# Wait (at most 30 s) until all three environments are registered.
for _ in $(seq 1 300); do
    count=$("$bin" clients --json 2>/dev/null | grep -o '"instance_id"' | wc -l || true)
    [ "$count" -ge 3 ] && break
    sleep 0.1
done

echo
"$bin" clients
echo
echo "\$ vps-gateway lookup --mac 52:54:00:01:00:2a"
"$bin" lookup --mac 52:54:00:01:00:2a
echo
# The lease watcher starts once the workers have settled (about a second).
for _ in $(seq 1 100); do grep -q "10.1.0.7" "$work/vps-hosts" 2>/dev/null && break; sleep 0.1; done
echo "\$ vps-gateway leases"
"$bin" leases
echo
echo "\$ cat $work/vps-hosts"
cat "$work/vps-hosts"
echo
if $once; then exit 0; fi
cat <<MSG
Running. Try, in another terminal:
  GATEWAY_ADMIN_SOCKET=$work/admin.sock $bin lookup --mac 52:54:00:02:00:07 --json
  GATEWAY_ADMIN_SOCKET=$work/admin.sock $bin bench --concurrency 64 --duration 5s --mac 52:54:00:03:00:01
  $bin journal list --journal $work/journal.sqlite3
  $bin journal stats --journal $work/journal.sqlite3
  kill -HUP $supervisor   # the supervisor re-reads $work/vps-gateway.yaml (edit it first)
  echo "\$(( \$(date +%s) + 3600 )) 52:54:00:03:00:05 10.3.0.5 laptop *" >> $work/dnsmasq.leases; cat $work/vps-hosts
Ctrl-C stops everything and removes $work.
MSG
wait
