#!/usr/bin/env bash
# A PostgreSQL-backed worker beside a SQLite-backed one, same rows, same gateway (journal
# FULL), same load: `vps-gateway bench` at concurrency 1 and 64 against each in turn, with the
# CPU per call of the gateway, the worker and (for PostgreSQL) every server process. Starts its
# own PostgreSQL (Debian's, in a temp directory on a free loopback port, as the postgres user
# when run as root) and removes everything at exit. A measuring tool, not a test.
#   scripts/bench-postgres.sh                         # release build, 10,000 VPSs, 10 s per run
#   BENCH_ROWS=100000 BENCH_DURATION=20s scripts/bench-postgres.sh
#   BENCH_BIN=/path/to/vps-gateway scripts/bench-postgres.sh
# Prints a Markdown table; exit 1 when something did not start.
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${BENCH_ROWS:-10000}"
duration="${BENCH_DURATION:-10s}"
if [ -n "${BENCH_BIN:-}" ]; then
    bin="$BENCH_BIN"
else
    swift build -c release --static-swift-stdlib --product vps-gateway 2>&1 | tail -n 1 >&2
    bin="$(swift build -c release --static-swift-stdlib --show-bin-path)/vps-gateway"
fi
export VPS_GATEWAY_MIGRATIONS="$PWD/migrations"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pgbin/postgres" ] || { echo "bench-postgres: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as_postgres=()
[ "$(id -u)" -eq 0 ] && as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups --)

work="$(mktemp -d /tmp/vps-gateway-bench-pg.XXXXXX)"
pgdir="$(mktemp -d /tmp/vps-gateway-bench-pgdata.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    [ -n "${postmaster:-}" ] && kill -INT "$postmaster" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work" "$pgdir"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The server, a database in the platform's shapes, a read-only role.
password="bench-$$"
[ "$(id -u)" -eq 0 ] && chown postgres: "$pgdir"
printf '%s' "$password" >"$pgdir/pw"; [ "$(id -u)" -eq 0 ] && chown postgres: "$pgdir/pw"
"${as_postgres[@]}" "$pgbin/initdb" -D "$pgdir/data" -U postgres --pwfile "$pgdir/pw" -A scram-sha-256 --no-sync -E UTF8 --locale C >/dev/null
pgport=$(free_port)
"${as_postgres[@]}" "$pgbin/postgres" -D "$pgdir/data" -p "$pgport" -k "$pgdir" -c listen_addresses=127.0.0.1 -c fsync=off >"$work/postgres.log" 2>&1 &
postmaster=$!
export PGPASSWORD="$password"
psql() { "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
for _ in $(seq 1 100); do psql -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
psql -d postgres -c "CREATE DATABASE platform" >/dev/null
psql -d platform >/dev/null <<SQL
CREATE TABLE vps_instances (id text PRIMARY KEY, organization_id text, mac_address text, deleted_at timestamptz);
CREATE TABLE dhcp_leases (id text PRIMARY KEY, vps_id text, organization_id text, mac_address text UNIQUE,
    ip_address text, is_public boolean, expires_at timestamptz, gateway_node text);
CREATE INDEX ON dhcp_leases (ip_address);
CREATE INDEX ON dhcp_leases (lower(trim(mac_address)));
CREATE INDEX ON vps_instances (mac_address);
CREATE INDEX ON vps_instances (lower(trim(mac_address)));
INSERT INTO vps_instances SELECT 'vps-' || i, 'org-' || (i % 97),
    format('52:54:00:%s:%s:%s', lpad(to_hex(i / 65536), 2, '0'), lpad(to_hex((i / 256) % 256), 2, '0'), lpad(to_hex(i % 256), 2, '0')), NULL
    FROM generate_series(1, $rows) AS i;
INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address)
    SELECT 'lease-' || id, id, organization_id, mac_address, '10.' || ((substr(id, 5)::int / 65536) % 256) || '.' || ((substr(id, 5)::int / 256) % 256) || '.' || (substr(id, 5)::int % 256)
    FROM vps_instances;
ANALYZE;
CREATE ROLE bench LOGIN PASSWORD '$password';
GRANT USAGE ON SCHEMA public TO bench;
GRANT SELECT ON vps_instances, dhcp_leases TO bench;
SQL
# The same rows in a SQLite inventory.
"$bin" inventory create "$work/production.sqlite3" --environment production --sample-rows 0 >/dev/null
psql -d platform -A -t -F ',' -c "SELECT id, organization_id, mac_address FROM vps_instances" >"$work/instances.csv"
psql -d platform -A -t -F ',' -c "SELECT id, vps_id, organization_id, mac_address, ip_address FROM dhcp_leases" >"$work/leases.csv"
python3 - "$work" <<'PY'
import csv, sqlite3, sys
work = sys.argv[1]
db = sqlite3.connect(f"{work}/production.sqlite3")
db.executemany("INSERT INTO vps_instances (id, organization_id, mac_address) VALUES (?, ?, ?)", csv.reader(open(f"{work}/instances.csv")))
db.executemany("INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES (?, ?, ?, ?, ?)", csv.reader(open(f"{work}/leases.csv")))
db.commit()
PY

export GATEWAY_API_SECRET=bench-secret VPS_GATEWAY_API_SECRET=bench-secret VPS_GATEWAY_LOG_LEVEL=warning
port=$(free_port)
"$bin" gateway --listen "127.0.0.1:$port" --admin-socket "$work/admin.sock" --journal "$work/journal.sqlite3" --dhcp-leases off 2>"$work/gateway.log" &
gateway=$!; pids+=("$gateway")
for _ in $(seq 1 100); do [ -S "$work/admin.sock" ] && break; sleep 0.1; done
printf '%s' "$password" >"$work/inventory-password"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The postmaster and its children (backends of the pool's connections, checkpointer, …).
server_ticks() {
    local total=0 pid
    for pid in $postmaster $(ps -o pid= --ppid "$postmaster"); do total=$((total + $(ticks "$pid"))); done
    echo "$total"
}
hz=$(getconf CLK_TCK)
mac=$(printf '52:54:00:00:%02x:%02x' $(( (rows / 2) / 256 % 256 )) $(( (rows / 2) % 256 )))

echo "| inventory | c | calls/s | p50 µs | p99 µs | errors | CPU µs/call: gateway | worker | PostgreSQL server |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for kind in sqlite postgres; do
    if [ "$kind" = sqlite ]; then inventory="sqlite:$work/production.sqlite3"; extra=()
    else inventory="postgres://bench@127.0.0.1:$pgport/platform?sslmode=disable"; extra=(--inventory-password-file "$work/inventory-password"); fi
    "$bin" worker --env production --instance-id "bench-$kind" --gateway-url "http://127.0.0.1:$port" --inventory "$inventory" "${extra[@]}" 2>"$work/worker-$kind.log" &
    worker=$!; pids+=("$worker")
    for _ in $(seq 1 100); do "$bin" clients --admin-socket "$work/admin.sock" --json 2>/dev/null | grep -q "bench-$kind" && break; sleep 0.1; done
    for c in 1 64; do
        # A warm-up first, outside the CPU window, so the ticks cover exactly the measured calls.
        "$bin" bench --admin-socket "$work/admin.sock" --concurrency "$c" --duration 1s --warmup 0s --mac "$mac" --json >/dev/null
        g0=$(ticks "$gateway"); w0=$(ticks "$worker"); s0=$(server_ticks)
        json=$("$bin" bench --admin-socket "$work/admin.sock" --concurrency "$c" --duration "$duration" --warmup 0s --mac "$mac" --json)
        g1=$(ticks "$gateway"); w1=$(ticks "$worker"); s1=$(server_ticks)
        python3 - "$json" "$kind" "$c" "$hz" $((g1 - g0)) $((w1 - w0)) $((s1 - s0)) <<'PY'
import json, sys
r = json.loads(sys.argv[1]); kind, c, hz = sys.argv[2], sys.argv[3], int(sys.argv[4])
g, w, s = (int(x) for x in sys.argv[5:8])
calls = max(1, r["requests"])
per = lambda t: f"{t * 1e6 / hz / calls:.0f}"
print(f"| {kind} | {c} | {r['throughput_rps']:.0f} | {r['p50_us']} | {r['p99_us']} | {r['errors']} | {per(g)} | {per(w)} | {per(s) if kind == 'postgres' else '-'} |")
PY
    done
    kill -TERM "$worker"; wait "$worker" 2>/dev/null || true
done
