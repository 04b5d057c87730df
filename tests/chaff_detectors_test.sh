#!/usr/bin/env bash
# Chaff flows pass the adversary's detectors as ordinary traffic: one gateway
# with conf/gateway-pair-a.toml sends chaff while a real light background
# capture (data/captures/bg-light-s1.pcap, 20 s) is replayed through it at its
# own pace; `shroud analyze` on the WAN side must flag none of the chaff flows
# (>= 1000 packets), and there must be some. A shorter form of
# scripts/evaluate-chaff.sh (one seed, one capture).
#
#   tests/chaff_detectors_test.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: chaff_detectors_test.sh BUILD_DIR}
root=${SHROUD_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
capture=$root/data/captures/bg-light-s1.pcap
[ -r "$capture" ] || { echo "skipped: $capture not found"; exit 77; }
out=$("$root/scripts/evaluate-chaff.sh" --seeds 7 "$build" "$capture" 2>&1) || {
  echo "FAIL - evaluate-chaff.sh failed:"; echo "$out"; exit 1; }
echo "$out"
summary=$(tail -1 <<<"$out")
if [[ $summary =~ flagged\ by\ either\ detector:\ ([0-9]+)\ of\ ([0-9]+) ]]; then
  flagged=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]}
  if ((total >= 3 && flagged == 0)); then
    echo "ok - $total chaff flows, none flagged"; echo "1 passed, 0 failed"; exit 0
  fi
  echo "FAIL - $flagged of $total chaff flows flagged (need >= 3 flows, 0 flagged)"
else
  echo "FAIL - no summary line from evaluate-chaff.sh"
fi
echo "0 passed, 1 failed"
exit 1
