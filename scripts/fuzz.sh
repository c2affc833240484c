#!/usr/bin/env bash
# Fuzzes what an attacker controls with libFuzzer: dnsmasq's lease file (a tenant shapes its
# hostname and client id) and messages on a registered stream (anyone holding the secret).
# Builds vps-gateway-fuzz with -sanitize=fuzzer under .build/fuzz (every module instrumented),
# then runs each target for a bounded time on the committed corpus (Fuzz/corpus/TARGET, read
# only) plus a scratch directory for what it finds. A broken property or a crash fails the run
# and leaves the input that did it as crash-* in the scratch directory, which is printed.
#   scripts/fuzz.sh                       # every target, 60 s each
#   scripts/fuzz.sh --seconds 600 lease-file
#   scripts/fuzz.sh --merge               # after a long run: fold new inputs into the corpus
# Exit codes: 0 every target ran clean; 1 a target failed; 2 usage.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
merge=no
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --merge) merge=yes; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        lease-file|session-message) targets+=("$1"); shift ;;
        *) echo "fuzz.sh: unknown argument '$1'; see --help" >&2; exit 2 ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(lease-file session-message)

# lld: SwiftPM defines `main` as the module's entry point, which gold cannot reconcile with
# libFuzzer's own main (it aborts with an internal error); lld lets ours win.
echo "fuzz: building vps-gateway-fuzz with -sanitize=fuzzer (first time: every module, several minutes)" >&2
swift build --scratch-path .build/fuzz --product vps-gateway-fuzz \
    -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING -Xswiftc -use-ld=lld >&2
binary=.build/fuzz/debug/vps-gateway-fuzz

status=0
for target in "${targets[@]}"; do
    scratch=$(mktemp -d "/tmp/vpsgw-fuzz-$target-XXXXXX")
    if [ "$merge" = yes ]; then
        # New inputs from earlier runs (kept in .build/fuzz/found) join the corpus minimized.
        mkdir -p ".build/fuzz/found/$target"
        SWIFT_BACKTRACE=enable=no "$binary" "$target" -merge=1 "Fuzz/corpus/$target" ".build/fuzz/found/$target" >&2
        rm -rf "$scratch"
        continue
    fi
    echo "fuzz: $target for ${seconds}s" >&2
    # -rss_limit_mb and -timeout: an input that makes the code allocate or spin without bound
    # is a finding, not a hung CI run. -close_fd_mask=3: the targets print nothing useful.
    if (cd "$scratch" && SWIFT_BACKTRACE=enable=no "$OLDPWD/$binary" "$target" \
            -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
            -print_final_stats=1 "$scratch" "$OLDPWD/Fuzz/corpus/$target") >"$scratch/fuzz.log" 2>&1; then
        grep -E "^stat::number_of_executed_units|^#[0-9]+.*DONE" "$scratch/fuzz.log" | tail -2 | sed "s/^/fuzz: $target: /" >&2
        mkdir -p ".build/fuzz/found/$target"
        find "$scratch" -maxdepth 1 -type f ! -name fuzz.log -exec cp {} ".build/fuzz/found/$target/" \;
        rm -rf "$scratch"
    else
        status=1
        echo "fuzz: $target FAILED; the input and the log are in $scratch:" >&2
        ls "$scratch" | grep -E '^(crash|leak|timeout|oom)-' >&2 || true
        grep -E "Fatal error|ERROR: libFuzzer|SUMMARY" "$scratch/fuzz.log" | head -5 >&2 || true
    fi
done
exit $status
