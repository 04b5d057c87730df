# Replays a capture, split by scripts/pcap-prepare.py, through shroud-dataplane
# on net_pcap ports at the capture's own pace, and merges what leaves both
# ports into one WAN-side capture (what a tap on the outside link sees).
#
#   shroud_replay BUILD_DIR CONFIG SEED INSIDE_PCAP OUTSIDE_PCAP WORK_DIR [EXTRA_FLAG...]
#
# Writes WORK_DIR/to-wan.pcap, WORK_DIR/to-inside.pcap, WORK_DIR/wan.pcap and
# WORK_DIR/dataplane.log; returns non-zero (after printing the log's tail) when
# the dataplane fails. Needs SHROUD_SOURCE_ROOT or the caller's scripts/ dir.
shroud_replay() {
  local build=$1 config=$2 seed=$3 inside=$4 outside=$5 work=$6
  shift 6
  local root=${SHROUD_SOURCE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
  rm -f "$work/to-wan.pcap" "$work/to-inside.pcap" "$work/wan.pcap"
  # One lcore that may float over both CPUs: two pinned busy threads stall
  # each other on a 2-core machine.
  if ! timeout 300 "$build/shroud-dataplane" --no-huge -m 512 --no-shconf --no-pci --no-telemetry \
      --file-prefix="shroud-replay-$$" --lcores='0@(0-1)' \
      --vdev="net_pcap0,rx_pcap=$inside,tx_pcap=$work/to-inside.pcap" \
      --vdev="net_pcap1,rx_pcap=$outside,tx_pcap=$work/to-wan.pcap" \
      -- --config="$config" --seed="$seed" --replay_speed=1 --exit_when_idle_ms=1500 \
      --runtime_dir="$work/run" \
      --stats_interval_s=0 "$@" 2>"$work/dataplane.log"; then
    echo "shroud-dataplane failed (config $config, seed $seed); its log ends:" >&2
    tail -5 "$work/dataplane.log" >&2
    return 1
  fi
  python3 "$root/scripts/pcap-merge.py" "$work/wan.pcap" "$work/to-wan.pcap" "$work/to-inside.pcap"
}
