#!/usr/bin/env bash
# Tap + control against `shroud analyze` (issue 5): real captures replayed
# through `shroud-dataplane --mode=tap` (net_pcap rx, no tx port), records
# mirrored to `shroud-control` (paired with no naming flags: both follow the
# "default" instance of one runtime directory), and the per-flow verdicts
# compared with `shroud analyze --json` on the same file: the same flows, the
# same pattern and maxent verdicts, the same maxent scores and CoVs.
#
#   tests/tap_control_test.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: tap_control_test.sh BUILD_DIR}
root=${SHROUD_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
work=$(mktemp -d "${TMPDIR:-/tmp}/shroud-tapctl.XXXXXX")
cpid=""
cleanup() { [ -n "$cpid" ] && kill -9 "$cpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
# A capture cut at a snaplen (wire lengths come back from the IP headers), a
# migration the attacks flag, and a medium background.
captures=(data/captures/mig-r8-light-s12.pcap data/captures/mig-r4-medium-s16.pcap
          data/captures/bg-medium-s2.pcap)

for rel in "${captures[@]}"; do
  capture="$root/$rel"
  name=$(basename "$rel" .pcap)
  rt="$work/$name/run"   # a fresh runtime dir: no earlier run's mirror to attach to
  mkdir -p "$work/$name"
  # Control first: it waits for the dataplane, as an operator would start it.
  timeout 120 "$build/shroud-control" --runtime_dir="$rt" --http=off --exit_when_dataplane_stops \
    --flows_json="$work/$name/flows.json" 2>"$work/$name/control.log" &
  cpid=$!
  rc=0
  timeout 120 "$build/shroud-dataplane" --no-huge -m 512 --no-shconf --no-pci --no-telemetry \
    --file-prefix="shroud-tapctl-$$" -l 0-1 --vdev="net_pcap0,rx_pcap=$capture" \
    -- --mode=tap --config="$root/conf/tap.example.toml" --runtime_dir="$rt" \
    --exit_when_idle_ms=500 --stats_interval_s=0 --counters_json="$work/$name/tap.json" \
    2>"$work/$name/tap.log" || rc=$?
  if [ "$rc" != 0 ]; then
    if grep -q "EAL initialisation failed" "$work/$name/tap.log"; then echo "skipped: EAL cannot start here"; exit 77; fi
    bad "$name: tap exited $rc" "$(cat "$work/$name/tap.log")"
    continue
  fi
  crc=0; wait "$cpid" || crc=$?; cpid=""
  if [ "$crc" != 0 ] || [ ! -s "$work/$name/flows.json" ]; then
    bad "$name: shroud-control exited $crc without its flows" "$(cat "$work/$name/control.log")"
    continue
  fi
  "$build/shroud" analyze --json "$capture" >"$work/$name/analyze.jsonl"
  if out=$(python3 - "$work/$name/analyze.jsonl" "$work/$name/flows.json" "$work/$name/tap.json" <<'PY'
import json, math, sys
offline = {}
for line in open(sys.argv[1]):
    row = json.loads(line)
    offline[row["flow"]] = row
live = {f["flow"]: f for f in json.load(open(sys.argv[2]))["flows"]}
tap = json.load(open(sys.argv[3]))
problems = []
if tap["mirror"]["ring_dropped"] != 0:
    problems.append(f"tap dropped {tap['mirror']['ring_dropped']} records")
if set(offline) != set(live):
    problems.append(f"flows only offline: {sorted(set(offline) - set(live))[:5]}, "
                    f"only live: {sorted(set(live) - set(offline))[:5]}")
def same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
flagged = 0
for flow, a in offline.items():
    b = live.get(flow)
    if b is None:
        continue
    for k in ("packets", "bytes", "pattern", "pattern_counter", "pattern_windows", "migration"):
        if a[k] != b[k]:
            problems.append(f"{flow}: {k} offline {a[k]} live {b[k]}")
    for k in ("maxent", "duration_s"):
        if not same(a[k], b[k]):
            problems.append(f"{flow}: {k} offline {a[k]} live {b[k]}")
    for w, v in a["cov"].items():
        if not same(v, b["cov"].get(w)):
            problems.append(f"{flow}: cov{w} offline {v} live {b['cov'].get(w)}")
    flagged += a["migration"]
if problems:
    print("\n".join(problems[:20]))
    sys.exit(1)
print(f"{len(offline)} flows, {flagged} flagged by both")
PY
  ); then
    ok "$name: tap + shroud-control give shroud analyze's verdicts ($out)"
  else
    bad "$name: tap + shroud-control differ from shroud analyze" "$out"
  fi
done

# The migration capture must actually be flagged: an equality of two empty or
# all-negative tables would prove little.
if python3 -c "
import json,sys
f=json.load(open('$work/mig-r8-light-s12/flows.json'))['flows']
sys.exit(0 if any(x['migration'] for x in f) else 1)" 2>/dev/null; then
  ok "the native migration is flagged live, as offline"
else
  bad "the native migration in mig-r8-light-s12 was not flagged live"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
