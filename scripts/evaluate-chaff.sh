#!/usr/bin/env bash
# Do the gateway's chaff flows pass the adversary's detectors as ordinary
# traffic? Replays real background captures through one shroud-dataplane with
# chaff on (conf/gateway-pair-a.toml) at their own pace and runs
# `shroud analyze` on the WAN side (both directions merged by time); prints the
# verdicts of every chaff flow (source in the chaff pool 192.0.2.128/25) with
# at least --min_packets packets, and of the migration when the capture has one.
#
#   scripts/evaluate-chaff.sh [--seeds "1 2"] [BUILD_DIR] [CAPTURE ...]
#
# One gateway has no peer to answer its chaff handshakes, so the config is run
# with peer_responds = false (the generator then does not wait for SYN-ACKs);
# everything else is as shipped. Default captures: data/captures/bg-light-s1.pcap,
# data/captures/bg-medium-s2.pcap (20 s each) and tests/data/migration-r8-light.pcap;
# their inside host is 198.51.100.1.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib/replay.sh
. "$here/scripts/lib/replay.sh"
seeds="1 2"
build=$here/build
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "evaluate-chaff: unknown option $1" >&2; exit 2 ;;
    *) if [ -d "$1" ]; then build=$1; shift; else break; fi ;;
  esac
done
captures=("$@")
[ ${#captures[@]} -gt 0 ] || captures=("$here/data/captures/bg-light-s1.pcap"
                                      "$here/data/captures/bg-medium-s2.pcap"
                                      "$here/tests/data/migration-r8-light.pcap")
for f in "$build/shroud-dataplane" "$build/shroud"; do
  [ -x "$f" ] || { echo "evaluate-chaff: $f missing; build first (scripts/setup.sh)" >&2; exit 2; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/shroud-evalchaff.XXXXXX")
trap 'rm -rf "$work"' EXIT
sed -e 's/^peer_responds = true/peer_responds = false/' "$here/conf/gateway-pair-a.toml" >"$work/a.toml"
grep -q '^peer_responds = false' "$work/a.toml" || { echo "evaluate-chaff: could not set peer_responds" >&2; exit 2; }

printf '%-26s %-5s %-44s %8s %8s %-8s\n' capture seed flow packets maxent pattern
chaff_total=0 chaff_flagged=0
for cap in "${captures[@]}"; do
  name=$(basename "$cap")
  python3 "$here/scripts/pcap-prepare.py" -q --inside 198.51.100.1 \
    --inside-out "$work/in.pcap" --outside-out "$work/out.pcap" "$cap"
  for seed in $seeds; do
    shroud_replay "$build" "$work/a.toml" "$seed" "$work/in.pcap" "$work/out.pcap" "$work" || exit 1
    "$build/shroud" analyze --json "$work/wan.pcap" >"$work/verdicts.json"
    read -r t f < <(python3 - "$work/verdicts.json" "$name" "$seed" <<'PY'
import ipaddress, json, sys
pool = ipaddress.ip_network("192.0.2.128/25")
total = flagged = 0
for line in open(sys.argv[1]):
    v = json.loads(line)
    src, rest = v["flow"].split(">")
    src_ip = ipaddress.ip_address(src.rsplit(":", 1)[0].strip("[]"))
    dport = int(rest.split("/")[0].rsplit(":", 1)[1])
    kind = "chaff" if src_ip in pool else "migration" if 49152 <= dport <= 49215 else None
    if kind is None:
        continue
    if kind == "chaff":
        total += 1
        flagged += bool(v["migration"])
    print("%-26s %-5s %-44s %8d %8.3f %-8s%s" % (sys.argv[2], sys.argv[3], v["flow"], v["packets"],
          v["maxent"], "yes" if v["pattern"] else "no", "  <- flagged" if v["migration"] else ""),
          file=sys.stderr)
print(total, flagged)
PY
    )
    chaff_total=$((chaff_total + t)) chaff_flagged=$((chaff_flagged + f))
  done
done 2>&1
echo "chaff flows flagged by either detector: $chaff_flagged of $chaff_total"
