#!/usr/bin/env bash
# End-to-end test of the installed units under a real systemd: boots the host's systemd as
# PID 1 of a throw-away systemd-nspawn container whose root is a copy-on-write overlay of the
# host's / (upper layer on tmpfs, so nothing reaches the host disk), installs with
# `make install DESTDIR=<container root>`, and checks what an operator relies on:
#
#   1. systemd-analyze verify is silent on the installed units (inside, with the real paths)
#   2. `systemctl start vps-gateway` returns only after READY=1: a lookup right after it works
#   3. `systemctl status` shows the supervisor's STATUS= line
#   4. `journalctl REQUEST_ID=<id>` finds that lookup's events from gateway and worker
#   5. the hosts file is written from the DHCP lease file under the unit's sandboxing
#   6. `systemctl reload` adds an environment without restarting the running worker
#   7. vps-gateway-worker@ENV starts (ready once registered) and stops cleanly on its own
#   8. SIGSTOP on the supervisor makes systemd's watchdog restart the unit
#   9. `systemctl stop` ends with exit 0 and leaves no process behind
#
# Usage: scripts/systemd-test.sh [--if-possible] [--keep]
#   --if-possible  skip (exit 0, saying why) when the machine cannot boot a container:
#                  not root, no systemd-nspawn (Debian's systemd-container), no overlayfs
#   --keep         leave the container running on failure, for a look with nsenter
# Exit codes: 0 passed (or skipped with --if-possible); 1 a check failed; 2 cannot run here.
#
# Why not ../shared/tools: the project carries its own harness. Why nspawn flags as they are:
# --register=no --keep-unit because the host's PID 1 is not systemd (no machined/bus);
# everything is mounted in a private mount namespace so the host sees no mounts; a cgroup leaf
# of our own holds the container so cleanup can kill whatever is left.
set -euo pipefail
cd "$(dirname "$0")/.."

if_possible=false keep=false
for argument in "$@"; do
    case $argument in
        --if-possible) if_possible=true ;;
        --keep) keep=true ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "systemd-test: unknown argument '$argument' (try --help)" >&2; exit 2 ;;
    esac
done

cannot_run() {
    if $if_possible; then
        echo "systemd end-to-end test SKIPPED: $1" >&2
        exit 0
    fi
    echo "systemd-test: cannot run: $1" >&2
    exit 2
}
[ "$(id -u)" -eq 0 ] || cannot_run "needs root (systemd-nspawn, mounts, cgroups)"
command -v systemd-nspawn >/dev/null || cannot_run "systemd-nspawn is missing (apt-get install systemd-container)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || cannot_run "the kernel has no overlayfs"
[ -x /lib/systemd/systemd ] || cannot_run "no systemd at /lib/systemd/systemd to boot"

# The release build first: the container should not sit idle through a cold build.
make -s release >/dev/null

name="vgw-sd-$$"
state="$(mktemp -d /tmp/vps-gateway-systemd.XXXXXX)"
cgroup_leaves=()
nspawn_pid="" leader=""
clean_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '%s systemd-test: %s\n' "$(date +%T.%3N)" "$*" >&2; }

# Inside the container, with a clean environment (nsenter into all its namespaces).
inside() {
    nsenter -t "$leader" -a -- /usr/bin/env -i PATH="$clean_path" HOME=/root LANG=C.UTF-8 \
        SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 "$@"
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && [ "$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null)" != Z ]; }

cleanup() {
    local status=$?
    if [ $status -ne 0 ] && $keep && alive "$leader"; then
        log "kept the container: nsenter -t $leader -a; stop it with kill -TERM $nspawn_pid"
        return
    fi
    if alive "$nspawn_pid"; then
        # nspawn turns SIGTERM into --kill-signal (SIGRTMIN+4): a clean poweroff.
        kill -TERM "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do alive "$nspawn_pid" || break; sleep 0.1; done
        if alive "$nspawn_pid"; then
            log "no clean poweroff within 10 s; killing the container"
            alive "$leader" && kill -KILL "$leader" 2>/dev/null || true
            kill -KILL "$nspawn_pid" 2>/dev/null || true
        fi
    fi
    local leaf pid
    for leaf in "${cgroup_leaves[@]}"; do
        for _ in $(seq 1 20); do
            pids="$(find "$leaf" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
            [ -z "$pids" ] && break
            for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
            sleep 0.1
        done
        find "$leaf" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [ -d "$leaf" ] && log "WARNING: could not remove cgroup $leaf"
    done
    # Every mount lived in the launcher's private mount namespace, gone with its processes.
    rm -rf --one-file-system "$state"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- boot ------------------------------------------------------------------------------
# A cgroup leaf per hierarchy nspawn uses, so the container's subtree never lands in a root
# cgroup and everything left can be found and killed.
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
    cgroup_leaves+=("/sys/fs/cgroup/$name")
else
    [ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ] && cgroup_leaves+=("/sys/fs/cgroup/unified/$name")
    [ -d /sys/fs/cgroup/systemd ] && cgroup_leaves+=("/sys/fs/cgroup/systemd/$name")
fi
for leaf in "${cgroup_leaves[@]}"; do mkdir -p "$leaf"; done
printf '%s\n' "${cgroup_leaves[@]}" >"$state/cgroups"
mkdir -p "$state/mnt"

cat >"$state/launch.sh" <<'LAUNCH'
#!/bin/bash
# Runs in a private mount namespace: builds the overlay root, then becomes systemd-nspawn.
set -euo pipefail
state=$1 name=$2
echo $$ >"$state/nspawn.pid"
while read -r leaf; do echo $$ >"$leaf/cgroup.procs"; done <"$state/cgroups"
mount -n --make-rprivate /
mount -n -t tmpfs -o mode=0755,size=2g "$name" "$state/mnt"
mkdir -p "$state/mnt/upper" "$state/mnt/work" "$state/mnt/root"
mount -n -t overlay -o "lowerdir=/,upperdir=$state/mnt/upper,workdir=$state/mnt/work" "$name" "$state/mnt/root"
root=$state/mnt/root
systemd-id128 new >"$root/etc/machine-id"
echo "$name" >"$root/etc/hostname"
# Only systemd's own units: nothing the host enabled (databases, timers, gettys).
find "$root/etc/systemd/system" -mindepth 2 -maxdepth 2 \( -path '*.wants/*' -o -path '*.requires/*' \) -exec rm -f {} + 2>/dev/null || true
for unit in console-getty.service getty.target systemd-timesyncd.service systemd-networkd-wait-online.service; do
    ln -sfn /dev/null "$root/etc/systemd/system/$unit"
done
mkdir -p "$root/etc/systemd/journald.conf.d" "$root/etc/systemd/system.conf.d"
printf '[Journal]\nStorage=volatile\nRateLimitBurst=0\n' >"$root/etc/systemd/journald.conf.d/50-test.conf"
# No core files from the watchdog's SIGABRT filling the tmpfs.
printf '[Manager]\nDefaultLimitCORE=0\n' >"$root/etc/systemd/system.conf.d/50-test.conf"
# A previous install on the host must not shadow the one under test.
rm -rf "$root/etc/vps-gateway" "$root/var/lib/vps-gateway" "$root/usr/local/lib/systemd/system/vps-gateway"*
# nspawn's own bookkeeping under /run stays in this namespace.
mount -n -t tmpfs -o mode=0755 "$name-run" /run
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
exec systemd-nspawn --quiet -D "$root" --boot --machine="$name" --hostname="$name" \
    --register=no --keep-unit --link-journal=no --console=read-only --private-network \
    --kill-signal=SIGRTMIN+4 --resolv-conf=off --timezone=off
LAUNCH

log "booting systemd in container $name"
(
    # Own session, no inherited descriptors: a runner waiting on our pipes must not hang.
    exec setsid unshare --mount --propagation private -- /bin/bash "$state/launch.sh" "$state" "$name"
) </dev/null >"$state/console.log" 2>&1 &
started=$SECONDS
while [ -z "$leader" ]; do
    nspawn_pid="$(cat "$state/nspawn.pid" 2>/dev/null || true)"
    if [ -n "$nspawn_pid" ]; then
        for child in $(cat /proc/"$nspawn_pid"/task/*/children 2>/dev/null); do
            # The container's PID 1: its innermost namespace pid is 1.
            if awk '/^NSpid:/{found = ($NF == 1 && NF > 2)} END{exit !found}' "/proc/$child/status" 2>/dev/null; then
                leader=$child
            fi
        done
    fi
    if [ $((SECONDS - started)) -gt 60 ]; then cat "$state/console.log" >&2; log "FAIL: the container did not start"; exit 1; fi
    sleep 0.05
done
until inside systemctl is-system-running 2>/dev/null | grep -Eq '^(running|degraded)$'; do
    if [ $((SECONDS - started)) -gt 60 ]; then cat "$state/console.log" >&2; log "FAIL: systemd did not finish booting"; exit 1; fi
    sleep 0.1
done
log "systemd is up (pid $leader on the host) after $((SECONDS - started)) s"

root="/proc/$leader/root"
failures=0
pass() { log "PASS: $*"; }
fail() {
    log "FAIL: $*"
    failures=$((failures + 1))
    inside journalctl --no-pager -n 60 -u vps-gateway >&2 || true
}
# poll SECONDS COMMAND...: true once COMMAND succeeds within SECONDS.
poll() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -ge $deadline ] && return 1; sleep 0.2; done
}

# --- install ---------------------------------------------------------------------------
make -s install DESTDIR="$root" >/dev/null
inside systemd-sysusers >/dev/null 2>&1
inside systemctl daemon-reload

output="$(inside systemd-analyze verify --man=no /usr/local/lib/systemd/system/vps-gateway.service /usr/local/lib/systemd/system/vps-gateway-worker@.service 2>&1)" \
    && [ -z "$output" ] && pass "systemd-analyze verify is silent on the installed units" \
    || fail "systemd-analyze verify: $output"

# The test's node: two environments with sample inventories, a lease file production knows.
bin=/usr/local/bin/vps-gateway
inside mkdir -p /var/lib/vps-gateway /var/lib/misc
for environment in production beta dev; do
    inside "$bin" inventory create "/var/lib/vps-gateway/$environment.sqlite3" --environment "$environment" --sample-rows 100 >/dev/null
done
inside chown -R vps-gateway:vps-gateway /var/lib/vps-gateway
echo "$(( $(date +%s) + 3600 )) 52:54:00:01:00:07 10.1.0.7 customer-box *" >"$root/var/lib/misc/dnsmasq.leases"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$root/etc/vps-gateway/api-secret"
chmod 0600 "$root/etc/vps-gateway/api-secret"
write_config() {
    {
        printf 'gateway:\n  listen: 127.0.0.1:1537\n  api_secret_credential: api-secret\nenvironments:\n'
        for environment in "$@"; do
            printf '  - name: %s\n    inventory: sqlite:/var/lib/vps-gateway/%s.sqlite3\n    instance_id: %s-1\n' "$environment" "$environment" "$environment"
        done
        printf 'supervisor:\n  ready_when: all-workers\n'
    } >"$root/etc/vps-gateway/vps-gateway.yaml.new"
    mv "$root/etc/vps-gateway/vps-gateway.yaml.new" "$root/etc/vps-gateway/vps-gateway.yaml"
}
write_config production beta
# A short watchdog so the SIGSTOP check takes seconds, not a minute.
mkdir -p "$root/etc/systemd/system/vps-gateway.service.d"
printf '[Service]\nWatchdogSec=4s\nRestartSec=1s\n' >"$root/etc/systemd/system/vps-gateway.service.d/test.conf"
inside systemctl daemon-reload

# --- start: returns only after READY=1 -------------------------------------------------
if inside systemctl start vps-gateway; then
    # ready_when: all-workers, so the lookup needs no waiting of its own.
    lookup="$(inside "$bin" lookup --mac 52:54:00:01:00:2a --json 2>"$state/lookup.err")" \
        && pass "systemctl start returned after READY=1; a lookup right after it found $(echo "$lookup" | python3 -c 'import json,sys; print(json.load(sys.stdin)["vps_id"])')" \
        || fail "a lookup right after systemctl start: $lookup $(cat "$state/lookup.err")"
else
    fail "systemctl start vps-gateway failed"
    lookup=""
fi

status_text="$(inside systemctl show -P StatusText vps-gateway)"
# (grep reads everything: with pipefail, a writer killed by SIGPIPE would fail the check.)
if inside systemctl status --no-pager vps-gateway | grep -F 'Status: "gateway ready, production ready, beta ready' >/dev/null; then
    pass "systemctl status shows the STATUS line: $status_text"
else
    fail "systemctl status does not show the STATUS line (StatusText: $status_text)"
fi

# --- journald: one request's history by REQUEST_ID -------------------------------------
request_id="$(echo "$lookup" | python3 -c 'import json,sys; print(json.load(sys.stdin)["request_id"])' 2>/dev/null || true)"
journal_has_request() {
    inside journalctl --no-pager -o json "REQUEST_ID=$request_id" >"$state/request.json" 2>/dev/null
    python3 - "$state/request.json" <<'PY'
import json, sys
entries = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
identifiers = {entry.get("SYSLOG_IDENTIFIER") for entry in entries}
ok = (any(i == "vps-gateway" for i in identifiers)
      and any(str(i).startswith("vps-gateway-worker") for i in identifiers)
      and all(entry.get("MESSAGE_ID") for entry in entries))
sys.exit(0 if ok else 1)
PY
}
if [ -n "$request_id" ] && poll 10 journal_has_request; then
    pass "journalctl REQUEST_ID=$request_id shows $(wc -l <"$state/request.json") events with MESSAGE_IDs from the gateway and a worker"
else
    fail "journalctl REQUEST_ID=${request_id:-?} lacks the lookup's events: $(cat "$state/request.json" 2>/dev/null | head -c 2000)"
fi

# --- DHCP: the hosts file under ProtectSystem=strict ------------------------------------
if poll 20 grep -q "^10.1.0.7 " "$root/var/lib/vps-gateway/vps-hosts" 2>/dev/null; then
    pass "the hosts file names the lease's VPS: $(grep '^10.1.0.7 ' "$root/var/lib/vps-gateway/vps-hosts")"
else
    fail "no hosts line for 10.1.0.7 in /var/lib/vps-gateway/vps-hosts"
fi

# --- reload: add an environment, leave the others alone ---------------------------------
worker_pid() { inside pgrep -f "vps-gateway worker --env $1 " || true; }
production_pid="$(worker_pid production)"
write_config production beta dev
inside systemctl reload vps-gateway
dev_ready() { inside systemctl show -P StatusText vps-gateway | grep "dev ready" >/dev/null; }
if poll 20 dev_ready && [ -n "$production_pid" ] && [ "$(worker_pid production)" = "$production_pid" ]; then
    pass "systemctl reload added dev; the production worker kept pid $production_pid"
else
    fail "reload: StatusText '$(inside systemctl show -P StatusText vps-gateway)', production pid $production_pid → $(worker_pid production)"
fi

# --- vps-gateway-worker@: one environment's worker as a unit of its own -----------------
inside "$bin" inventory create /var/lib/vps-gateway/staging.sqlite3 --environment staging --sample-rows 10 >/dev/null
inside chown vps-gateway:vps-gateway /var/lib/vps-gateway/staging.sqlite3
printf 'VPS_INVENTORY_URL=sqlite:/var/lib/vps-gateway/staging.sqlite3\nVPS_GATEWAY_URL=http://127.0.0.1:1537\n' \
    >"$root/etc/vps-gateway/worker-staging.env"
if inside systemctl start vps-gateway-worker@staging \
    && inside "$bin" clients --json | grep -F '"staging"' >/dev/null; then
    inside systemctl stop vps-gateway-worker@staging
    worker_status="$(inside systemctl show -P ExecMainStatus vps-gateway-worker@staging)"
    if [ "$worker_status" = 0 ]; then
        pass "vps-gateway-worker@staging: start returned once registered; stop exited 0"
    else
        fail "vps-gateway-worker@staging exited $worker_status on stop"
    fi
else
    fail "vps-gateway-worker@staging did not start or register: $(inside journalctl --no-pager -n 20 -u vps-gateway-worker@staging)"
fi

# --- watchdog: a stopped supervisor is restarted by systemd ------------------------------
main_pid="$(inside systemctl show -P MainPID vps-gateway)"
restarts_before="$(inside systemctl show -P NRestarts vps-gateway)"
inside kill -STOP "$main_pid"
restarted() {
    local pid restarts
    pid="$(inside systemctl show -P MainPID vps-gateway)"
    restarts="$(inside systemctl show -P NRestarts vps-gateway)"
    [ "$restarts" -gt "$restarts_before" ] && [ "$pid" != 0 ] && [ "$pid" != "$main_pid" ] \
        && [ "$(inside systemctl is-active vps-gateway)" = active ]
}
if poll 40 restarted && inside journalctl --no-pager -u vps-gateway | grep -F "Failed with result 'watchdog'" >/dev/null; then
    pass "SIGSTOP on the supervisor: systemd's watchdog restarted the unit (pid $main_pid → $(inside systemctl show -P MainPID vps-gateway))"
else
    fail "no watchdog restart after SIGSTOP (NRestarts $(inside systemctl show -P NRestarts vps-gateway), state $(inside systemctl is-active vps-gateway))"
fi

# --- stop: exit 0, nothing left ---------------------------------------------------------
inside systemctl stop vps-gateway
exit_status="$(inside systemctl show -P ExecMainStatus vps-gateway)"
result="$(inside systemctl show -P Result vps-gateway)"
left="$(inside pgrep -f "$bin" || true)"
inside journalctl --no-pager -u vps-gateway -o cat >"$state/unit.log"
if [ "$exit_status" = 0 ] && [ "$result" = success ] && [ -z "$left" ] \
    && grep -F 'child exited child=gateway how=exited with code 0' "$state/unit.log" >/dev/null; then
    pass "systemctl stop: the supervisor and the gateway exited 0 and no process is left"
else
    fail "systemctl stop: exit status $exit_status, result $result, left: ${left:-none}"
fi

security="$(inside systemd-analyze security --offline=yes --no-pager /usr/local/lib/systemd/system/vps-gateway.service 2>/dev/null | grep -o 'exposure level.*' || true)"
log "systemd-analyze security: vps-gateway.service $security"

[ -n "${SYSTEMD_TEST_DUMP:-}" ] && cp "$state/unit.log" "$SYSTEMD_TEST_DUMP"
if [ $failures -gt 0 ]; then
    log "$failures check(s) failed"
    exit 1
fi
log "all checks passed"
