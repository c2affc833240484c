#!/usr/bin/env bash
# Installs the Debian packages the build, the local run and the tests need (the DHCP
# end-to-end tests run a real dnsmasq and busybox udhcpc in network namespaces; the systemd
# end-to-end test boots systemd in a systemd-nspawn container; the Connect and gRPC client
# tests run PyPI clients in a virtualenv and curl; the PostgreSQL inventory tests start their own
# PostgreSQL server in a temp directory; promtool, from Debian's prometheus, checks the metrics
# and the alert rules). As root it runs
# apt-get itself; otherwise it prints the exact command and fails when something is missing.
set -euo pipefail

packages=(libsqlite3-dev libsystemd-dev zlib1g-dev pkg-config iproute2 dnsmasq-base dnsmasq-utils busybox systemd-container python3-venv curl openssl postgresql prometheus)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The tests run servers of their own; the package must not create and start a cluster
    # on port 5432 beside them.
    if [[ " ${missing[*]} " == *" postgresql "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
    apt-get update -qq
    others=()
    for package in "${missing[@]}"; do [ "$package" = prometheus ] || others+=("$package"); done
    [ ${#others[@]} -eq 0 ] || apt-get install -y -qq -o Dpkg::Options::=--force-confold "${others[@]}" >/dev/null
    if [[ " ${missing[*]} " == *" prometheus "* ]]; then
        # Here for promtool only: without its recommends (exporters), and its server must not
        # start in the systemd test's container, which boots this machine's /etc.
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null
        rm -f /etc/systemd/system/multi-user.target.wants/prometheus.service
    fi
else
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
