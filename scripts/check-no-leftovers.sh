#!/usr/bin/env bash
# Runs after the test suite: every process a test started (their command lines name the
# test's temp directory, /tmp/vpsgw-test-*) must be gone. A leftover fails the run: CI runs
# on shared machines, and a suite that leaks processes breaks the next one.
set -uo pipefail
left=$(pgrep -af '/tmp/vpsgw-test-' | grep -v -e pgrep -e check-no-leftovers || true)
if [ -n "$left" ]; then
    echo "processes started by the tests are still running:" >&2
    echo "$left" >&2
    pkill -KILL -f '/tmp/vpsgw-test-' || true
    exit 1
fi
echo "no test process left behind"
