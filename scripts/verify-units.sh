#!/usr/bin/env bash
# Installs into a temp DESTDIR and lints the installed units: `systemd-analyze verify` (which
# exits 0 on warnings such as an unknown key, so any output counts as a failure) and
# `systemd-analyze security --offline=yes` (the exposure score the README reports).
# verify checks ExecStart= binaries against the real file system, so the installed PREFIX is
# bind-mounted over the host's in a private mount namespace; the throw-away /run keeps verify
# from leaving /run/systemd/systemd-units-load behind. Needs root (unshare, mount).
# Exit codes: 0 clean; 1 verify printed something or failed.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local
destdir="$(mktemp -d /tmp/vps-gateway-units.XXXXXX)"
trap 'rm -rf "$destdir"' EXIT
make -s install DESTDIR="$destdir" PREFIX="$prefix" >/dev/null
units=("$prefix/lib/systemd/system/vps-gateway.service" "$prefix/lib/systemd/system/vps-gateway-worker@.service")

in_namespace() {
    unshare --mount --propagation private -- /bin/sh -c \
        'mount -n -t tmpfs tmpfs /run && mount -n --bind "$0$1" "$1" && shift && exec "$@"' \
        "$destdir" "$prefix" "$@"
}

status=0
output="$(in_namespace systemd-analyze verify --man=no "${units[@]}" 2>&1)" || status=$?
if [ -n "$output" ] || [ "$status" -ne 0 ]; then
    echo "systemd-analyze verify failed (exit $status):" >&2
    echo "$output" >&2
    exit 1
fi
echo "systemd-analyze verify: clean (${units[*]##*/})"
for unit in "${units[@]}"; do
    in_namespace systemd-analyze security --offline=yes --no-pager "$unit" | grep "Overall exposure level"
done
