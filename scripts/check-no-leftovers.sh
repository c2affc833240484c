#!/usr/bin/env bash
# Runs after the test suite: every process a test started (their command lines name the
# test's directory under ROOT, the run's own directory that `make test` passes) must be
# gone. A leftover fails the run: CI runs on shared machines, and a suite that leaks
# processes breaks the next one.
#   scripts/check-no-leftovers.sh ROOT     (default: /tmp/vpsgw-test-, any run's)
set -uo pipefail
pattern="${1:-/tmp}/vpsgw-test-"
left=$(pgrep -af -- "$pattern" | grep -v -e pgrep -e check-no-leftovers || true)
if [ -n "$left" ]; then
    echo "processes started by the tests are still running:" >&2
    echo "$left" >&2
    pkill -KILL -f -- "$pattern" || true
    exit 1
fi
echo "no test process left behind"
