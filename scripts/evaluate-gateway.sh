#!/usr/bin/env bash
# Replays real migration captures through shroud-dataplane at their own pace,
# once per seed of Algorithm 3, and prints what the adversary's detectors say
# about the migration's data flow before (native capture) and after (the WAN
# side of the gateway: both directions merged by time).
#
#   scripts/evaluate-gateway.sh [--seeds "1 2 3"] [--config FILE] [BUILD_DIR] [CAPTURE:INSIDE_ADDR ...]
#
# Default captures: tests/data/migration-r8-light.pcap (held out from the
# default model's training) and data/captures/mig-r8-medium-s19.pcap, both
# with 198.51.100.1 as the migrating host. Each run takes the capture's
# duration plus a few seconds. Prints one row per run and a summary.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib/replay.sh
. "$here/scripts/lib/replay.sh"
seeds="1 2 3 4 5 6 7 8 9 10"
config=$here/conf/gateway.example.toml
build=$here/build
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "evaluate-gateway: unknown option $1" >&2; exit 2 ;;
    *) if [ -d "$1" ]; then build=$1; shift; else break; fi ;;
  esac
done
captures=("$@")
[ ${#captures[@]} -gt 0 ] || captures=("$here/tests/data/migration-r8-light.pcap:198.51.100.1"
                                      "$here/data/captures/mig-r8-medium-s19.pcap:198.51.100.1")
for f in "$build/shroud-dataplane" "$build/shroud"; do
  [ -x "$f" ] || { echo "evaluate-gateway: $f missing; build first (scripts/setup.sh)" >&2; exit 2; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/shroud-evalgw.XXXXXX")
trap 'rm -rf "$work"' EXIT

# "pattern maxent" of the migration data flow (TCP dst port 49152-49215) in a capture.
verdict() {
  "$build/shroud" analyze --json "$1" | python3 -c '
import json, sys
best = None
for line in sys.stdin:
    f = json.loads(line)
    dport = int(f["flow"].split(">")[1].split("/")[0].rsplit(":", 1)[1])
    if 49152 <= dport <= 49215 and (best is None or f["packets"] > best["packets"]):
        best = f
print("missing" if best is None else "%s %.3f %d" % ("yes" if best["pattern"] else "no", best["maxent"], best["packets"]))'
}

printf '%-28s %-9s %-22s %-22s\n' capture seed "native: pattern maxent" "shaped: pattern maxent"
total=0 hidden=0
for spec in "${captures[@]}"; do
  cap=${spec%%:*} inside=${spec##*:}
  name=$(basename "$cap")
  python3 "$here/scripts/pcap-prepare.py" -q --inside "$inside" \
    --inside-out "$work/in.pcap" --outside-out "$work/out.pcap" "$cap"
  read -r np nm _ <<<"$(verdict "$cap")"
  for seed in $seeds; do
    shroud_replay "$build" "$config" "$seed" "$work/in.pcap" "$work/out.pcap" "$work" || exit 1
    read -r sp sm _ <<<"$(verdict "$work/wan.pcap")"
    total=$((total + 1))
    if [ "$sp" = no ] && python3 -c "import sys; sys.exit(0 if float('$sm') < 0.5 else 1)"; then
      hidden=$((hidden + 1))
    fi
    printf '%-28s %-9s %-22s %-22s\n' "$name" "$seed" "$np $nm" "$sp $sm"
  done
done
echo "hidden from both detectors (pattern no, maxent < 0.5): $hidden of $total runs"
