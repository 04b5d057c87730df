#!/usr/bin/env bash
# Fault tests of the dataplane/control split (issue 5), on a real capture
# replayed through the gateway (net_pcap ports, its own pace at 2x):
#
#  1. shroud-control is killed (SIGKILL) while traffic flows and started
#     again: the gateway forwards every frame it would have forwarded anyway
#     (the capture is background traffic: all of it), the restarted control
#     re-attaches by itself and ends up with every flow's final record.
#  2. shroud-control is stalled (SIGSTOP) with a small mirror ring: the ring
#     overflows, the drops are counted (dataplane and control agree on them),
#     and the gateway still forwards every frame.
#  3. The dataplane restarts under a running control: control follows the new
#     run by itself (zero-configuration pairing).
#
#   tests/control_fault_test.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: control_fault_test.sh BUILD_DIR}
root=${SHROUD_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
work=$(mktemp -d "${TMPDIR:-/tmp}/shroud-fault.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

capture="$root/data/captures/bg-light-s1.pcap"   # 19480 frames over 20 s, no migration
python3 "$root/scripts/pcap-prepare.py" --inside 198.51.100.2 "$capture" \
  --inside-out "$work/in.pcap" --outside-out "$work/out.pcap" 2>/dev/null
frames_in=$(python3 -c "
import struct,sys
def n(p):
    b=open(p,'rb').read(); o=24; c=0
    while o+16<=len(b): o+=16+struct.unpack('<I',b[o+8:o+12])[0]; c+=1
    return c
print(n('$work/in.pcap'), n('$work/out.pcap'))")
read -r n_inside n_outside <<<"$frames_in"

start_gateway() {  # NAME RUNTIME_DIR EXTRA...: replay in the background, pid in $gw
  local name=$1 rt=$2; shift 2
  "$build/shroud-dataplane" --no-huge -m 512 --no-shconf --no-pci --no-telemetry \
    --file-prefix="shroud-fault-$name-$$" -l 0-1 \
    --vdev="net_pcap0,rx_pcap=$work/in.pcap,tx_pcap=$work/$name-to-inside.pcap" \
    --vdev="net_pcap1,rx_pcap=$work/out.pcap,tx_pcap=$work/$name-to-wan.pcap" \
    -- --config="$root/conf/gateway.example.toml" --seed=5 --replay_speed=2 \
    --exit_when_idle_ms=1000 --stats_interval_s=0 --runtime_dir="$rt" \
    --counters_json="$work/$name.json" "$@" 2>"$work/$name.log" &
  gw=$!
  pids+=("$gw")
}
start_control() {  # NAME RUNTIME_DIR EXTRA...: pid in $ctl
  local name=$1 rt=$2; shift 2
  "$build/shroud-control" --runtime_dir="$rt" --http=off --min_packets=0 "$@" \
    2>"$work/$name.log" &
  ctl=$!
  pids+=("$ctl")
}
wait_for() {  # FILE PATTERN SECONDS
  for _ in $(seq $((${3:-10} * 10))); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
all_forwarded() {  # NAME: every frame out the other port, none dropped
  python3 - "$work/$1.json" "$n_inside" "$n_outside" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
n_in, n_out = int(sys.argv[2]), int(sys.argv[3])
io, oi = c["inside_to_outside"], c["outside_to_inside"]
assert io["rx_packets"] == n_in and oi["rx_packets"] == n_out, (io["rx_packets"], oi["rx_packets"])
assert io["tx_packets"] == n_in, f"to WAN {io['tx_packets']} of {n_in}"
assert oi["tx_packets"] == n_out, f"to inside {oi['tx_packets']} of {n_out}"
assert io["tx_dropped"] == 0 and oi["tx_dropped"] == 0
print(c["mirror"])
PY
}

# --- 1. kill and restart shroud-control while traffic flows ---
rt="$work/run1"
start_control c1 "$rt"
c1=$ctl
start_gateway kill "$rt"
if ! wait_for "$work/c1.log" "attached" 15; then
  if grep -q "EAL initialisation failed" "$work/kill.log"; then echo "skipped: EAL cannot start here"; exit 77; fi
  bad "shroud-control did not attach to the gateway" "$(cat "$work/c1.log" "$work/kill.log")"
fi
sleep 2
kill -9 "$c1"
wait "$c1" 2>/dev/null || true
sleep 1
kill -0 "$gw" 2>/dev/null && ok "gateway still running after shroud-control was killed" \
  || bad "gateway died with shroud-control" "$(cat "$work/kill.log")"
start_control c2 "$rt" --exit_when_dataplane_stops --flows_json="$work/c2-flows.json"
c2=$ctl
rc=0; wait "$gw" || rc=$?
[ "$rc" = 0 ] || bad "gateway exit $rc" "$(cat "$work/kill.log")"
rc=0; timeout 30 tail --pid="$c2" -f /dev/null || true
wait "$c2" || rc=$?
if out=$(all_forwarded kill 2>&1); then
  ok "control killed mid-replay: every frame forwarded both ways, none dropped ($out)"
else
  bad "control killed mid-replay: frames lost" "$out"
fi
if [ "$rc" = 0 ] && python3 - "$work/c2-flows.json" "$capture" "$build" <<'PY'
import json, subprocess, sys
live = {f["flow"]: f for f in json.load(open(sys.argv[1]))["flows"]}
rows = subprocess.run([sys.argv[3] + "/shroud", "analyze", "--json", "--min_packets=0", sys.argv[2]],
                      capture_output=True, text=True, check=True).stdout.splitlines()
offline = {r["flow"]: r for r in map(json.loads, rows)}
missing = set(offline) - set(live)
assert not missing, f"restarted control lacks {len(missing)} flows: {sorted(missing)[:3]}"
wrong = [f for f in offline if offline[f]["packets"] != live[f]["packets"]]
assert not wrong, f"packet counts differ: {wrong[:3]}"
assert all(live[f]["state"] == "ended" for f in offline), "flows not ended after the stop"
PY
then
  ok "restarted control re-attached by itself and has every flow with its final packet count"
else
  bad "restarted control (exit $rc) is missing flows or counts" "$(tail -5 "$work/c2.log")"
fi

# --- 2. a stalled control: the ring overflows, drops are counted, forwarding unaffected ---
rt="$work/run2"
start_control c3 "$rt"
c3=$ctl
start_gateway stall "$rt" --mirror_ring_records=16 --export_interval_ms=10
if wait_for "$work/c3.log" "attached" 15; then
  kill -STOP "$c3"
  rc=0; wait "$gw" || rc=$?
  kill -CONT "$c3"
  [ "$rc" = 0 ] || bad "gateway exit $rc with a stalled control" "$(cat "$work/stall.log")"
  if out=$(all_forwarded stall 2>&1) && python3 - "$work/stall.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["mirror"]
assert m["ring_dropped"] > 0, f"no record dropped with a stalled reader: {m}"
assert m["ring_dropped"] == m["dropped"], m
PY
  then
    ok "stalled control: ring overflowed, drops counted, every frame still forwarded ($out)"
  else
    bad "stalled control" "$out $(cat "$work/stall.json" 2>/dev/null | head -5)"
  fi
  sleep 0.5
  kill -TERM "$c3"; wait "$c3" || true
  if grep -Eq "dropped[^0-9]*[1-9]|ring drops[^0-9]*[1-9]" "$work/c3.log"; then
    ok "shroud-control reports the ring drops it saw"
  else
    bad "shroud-control's log does not mention the drops" "$(tail -5 "$work/c3.log")"
  fi
else
  bad "control did not attach (stall case)" "$(cat "$work/c3.log")"
fi

# --- 3. the dataplane restarts under a running control ---
rt="$work/run3"
start_control c4 "$rt"
c4=$ctl
start_gateway first "$rt" --duration_s=2
wait "$gw" || true
start_gateway second "$rt" --duration_s=2
wait "$gw" || true
sleep 1.5
kill -TERM "$c4"; wait "$c4" || true
attaches=$(grep -c "attached" "$work/c4.log" || true)
if [ "$attaches" -ge 2 ]; then
  ok "control followed the restarted dataplane by itself ($attaches attaches)"
else
  bad "control did not re-attach to the restarted dataplane" "$(cat "$work/c4.log")"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
