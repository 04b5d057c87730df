#!/usr/bin/env bash
# The main job: set up (apt-get) and build shroud, then a short version of its
# evaluation on the namespace testbed (scripts/evaluate --demo): one native and
# one stealth real QEMU live migration (32 MiB guest, 4 MiB/s limit) from
# 192.0.2.10 to 198.51.100.10 across gateway A, an emulated WAN (10 ms each
# way) watched by the adversary's tap, and gateway B, under light background
# traffic; then QEMU's own times and the adversary's verdicts side by side.
# While the migrations run (about 3 minutes), the tap's live view is at
# http://127.0.0.1:9610/ (shroud-control's dashboard and /api).
#
#   scripts/demo.sh [--out DIR] [--dashboard 127.0.0.1:PORT]
#
# Needs root (network namespaces). Without root it says so and runs
# scripts/demo-offline.sh instead (recorded captures, no QEMU).
# Output: DIR (default build/demo): report.md, summary.json, figures.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=build/demo
dashboard=127.0.0.1:9610
# need_value "$@" in an option's case: the option has a value after it.
need_value() { [ $# -ge 2 ] || { echo "demo.sh: $1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) need_value "$@"; out=$2; shift 2 ;;
    --dashboard) need_value "$@"; dashboard=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: the testbed needs root (network namespaces); running scripts/demo-offline.sh instead" >&2
  exec scripts/demo-offline.sh
fi

# The demo replaces DIR whole: only an empty directory or a previous demo's
# output, never one the user meant to keep. summary.json and runs/ do not
# tell: scripts/evaluate's full matrix (results/) has them too. A demo's
# output has the marker below, or (older ones) --demo in its matrix.json.
if [ -e "$out" ] && { [ ! -d "$out" ] || [ -n "$(ls -A "$out")" ]; } &&
   [ ! -e "$out/.shroud-demo" ] && ! grep -qs '"scripts/evaluate --demo ' "$out/matrix.json"; then
  echo "demo.sh: --out $out exists and is not empty or a previous demo's output (no .shroud-demo, no --demo matrix.json); the demo would replace it whole: choose another directory" >&2
  exit 2
fi

scripts/setup.sh --build-dir build --with-capture-tools >&2
# A dashboard port someone else holds is not worth failing the demo for.
if (exec 3<>"/dev/tcp/127.0.0.1/${dashboard#*:}") 2>/dev/null; then
  echo "demo.sh: $dashboard is taken; the dashboard stays inside the tap's namespace" >&2
  dashboard=""
fi
[ -z "$dashboard" ] || echo "== the adversary's live view while the migrations run: http://$dashboard/ ==" >&2
rm -rf "$out"
mkdir -p "$out"
: >"$out/.shroud-demo"  # what the check above looks for
scripts/evaluate --demo --out "$out" --build build ${dashboard:+--dashboard "$dashboard"}

# Side by side, from the report's summary.
python3 scripts/lib/demo_table.py "$out/summary.json"
echo "report: $out/report.md, figures and summary.json beside it" >&2
