#!/usr/bin/env bash
# Sets up, builds and runs every test: unit, end-to-end, and the fuzz targets'
# corpus replay, then a short bounded libFuzzer run of each target.
#
#   scripts/test.sh [--no-fuzz] [--fuzz-seconds N]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

fuzz=1
fuzz_seconds=30
while [ $# -gt 0 ]; do
  case "$1" in
    --no-fuzz) fuzz=0; shift ;;
    --fuzz-seconds)
      case "${2:-}" in
        [1-9]|[1-9][0-9]|[1-9][0-9][0-9]|[1-9][0-9][0-9][0-9]) fuzz_seconds=$2; shift 2 ;;
        *) echo "test.sh: --fuzz-seconds needs a whole number of seconds in 1..9999 (got '${2:-}')" >&2; exit 2 ;;
      esac ;;
    -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

# The capture tools too: the testbed's end-to-end tests run real QEMU
# migrations (tests/evaluate_demo_test.sh).
scripts/setup.sh --build-dir build --with-capture-tools
# A failing suite still gets its summary line below; the exit status stays meson's.
meson_rc=0
meson test -C build --print-errorlogs --num-processes 2 || meson_rc=$?
# One summary line for people and CI, counted from meson's own log.
summary=$(python3 - build/meson-logs/testlog.json <<'PY'
import json, sys
counts = {"OK": 0, "FAIL": 0, "SKIP": 0}
for line in open(sys.argv[1]):
    result = json.loads(line).get("result", "FAIL")
    key = "OK" if result in ("OK", "EXPECTEDFAIL") else "SKIP" if result == "SKIP" else "FAIL"
    counts[key] += 1
print(f"{counts['OK']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
PY
)
if [ "$meson_rc" != 0 ]; then
  echo "suites: $summary"
  exit "$meson_rc"
fi

if [ "$fuzz" = 1 ]; then
  # libFuzzer needs clang; a separate build dir keeps the gcc build untouched.
  if [ ! -f build-fuzz/build.ninja ]; then
    CXX=clang++ meson setup build-fuzz -Dfuzz=true --buildtype=debugoptimized
  fi
  meson compile -C build-fuzz -j 2 fuzz_packet_parser fuzz_pcap_reader
  # The corpus copy goes also on a crash or Ctrl-C (bash runs EXIT traps on
  # INT and TERM too).
  work=""
  trap 'rm -rf "$work"' EXIT
  # Crash, timeout and leak inputs: libFuzzer writes them to the working
  # directory (the repository's root) unless told; in the build dir they
  # outlive the corpus copy, to reproduce with build-fuzz/fuzz_TARGET FILE.
  mkdir -p build-fuzz/fuzz-artifacts
  for target in packet_parser pcap_reader; do
    work=$(mktemp -d)
    cp -r tests/fuzz/corpus/. "$work/"
    echo "fuzz: $target for ${fuzz_seconds}s"
    # -max_total_time bounds the run; a crash exits non-zero and fails CI.
    build-fuzz/fuzz_$target -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 \
      -artifact_prefix="build-fuzz/fuzz-artifacts/$target-" \
      -print_final_stats=1 "$work" 2>&1 | tail -n 12
    rm -rf "$work"
  done
fi
echo "suites: $summary"
