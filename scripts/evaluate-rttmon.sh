#!/usr/bin/env bash
# How well does `shroud rttmon` see outages? Repeated induced outages of a
# target in a network namespace: detection delay (outage start -> red) and
# downtime error (estimate - truth) for both estimates (lost x interval, as the
# stealth-migration paper defines downtime, and the reply gap).
#
#   scripts/evaluate-rttmon.sh [--count 20] [--min-ms 300] [--max-ms 2000]
#       [--seed 1] [--gap-s 4] [--interval 10ms] [--responder kernel|jitter]
#       [--realtime] [BUILD_DIR]
#
# Topology as in tests/rttmon_netns_test.sh: PROBER 192.0.2.1 --veth-- TARGET
# 192.0.2.2, permanent neighbour entries (a link-down then drops the probes;
# with ARP the first probes after it would wait for ARP's 1 s retransmission).
# scripts/lib/link_flap.py takes TARGET's veth end down for each of --count
# durations drawn uniformly from [--min-ms, --max-ms] (seeded), --gap-s apart,
# timing each change over rtnetlink to ~0.2 ms; one `shroud rttmon --json`
# probes throughout. --responder=jitter answers from user space after
# 20 +- 10 ms instead of the target's kernel (scripts/lib/icmp_responder.py);
# answers it holds when the link goes down are lost too, so both estimates then
# exceed the link's downtime by about that delay. --realtime runs the prober
# with `shroud rttmon --realtime` (SCHED_FIFO): on a loaded host, slots the
# prober skips (the stall_ms column) are time neither estimate can count.
#
# Prints one row per outage and mean / median / p95 / max of the detection
# delay and of the errors, plus red events that match no outage (false alarms).
# Needs root. Leaves nothing behind (namespaces deleted on exit).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
count=20 min_ms=300 max_ms=2000 seed=1 gap_s=4 interval=10ms responder=kernel realtime=
build=$here/build
while [ $# -gt 0 ]; do
  case "$1" in
    --count) count=$2; shift 2 ;;
    --min-ms) min_ms=$2; shift 2 ;;
    --max-ms) max_ms=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --gap-s) gap_s=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --responder) responder=$2; shift 2 ;;
    --realtime) realtime=--realtime; shift ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "evaluate-rttmon: unknown option $1" >&2; exit 2 ;;
    *) build=$1; shift ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "evaluate-rttmon: needs root (network namespaces)" >&2; exit 2; }
[[ -x $build/shroud ]] || { echo "evaluate-rttmon: $build/shroud missing; build first" >&2; exit 2; }
case $responder in kernel | jitter) ;; *) echo "evaluate-rttmon: --responder kernel or jitter" >&2; exit 2 ;; esac
((count >= 1 && count <= 500)) || { echo "evaluate-rttmon: --count in [1, 500]" >&2; exit 2; }

# shellcheck source=scripts/lib/netns.sh
source "$here/scripts/lib/netns.sh"
# shellcheck disable=SC2034  # read by ns_name / ns_clean_stale in netns.sh
SHROUD_NS_PREFIX="shroud-rte-"
NS_P=$(ns_name p) NS_T=$(ns_name t)
IF_P="rep$$" IF_T="ret$$"
IP_P=192.0.2.1 IP_T=192.0.2.2
check_testnet "$IP_P" "$IP_T"
work=$(mktemp -d "${TMPDIR:-/tmp}/shroud-evalrtt.XXXXXX")
RESP=""
cleanup() {
  trap - EXIT INT TERM
  set +e
  [[ -n $RESP ]] && kill_wait "$RESP" TERM 2
  ns_kill_and_delete "$NS_P"
  ns_kill_and_delete "$NS_T"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ns_clean_stale

ip netns add "$NS_P"
ip netns add "$NS_T"
ip link add "$IF_P" netns "$NS_P" type veth peer name "$IF_T" netns "$NS_T"
ip -n "$NS_P" link set lo up
ip -n "$NS_T" link set lo up
ip -n "$NS_P" addr add "$IP_P/24" dev "$IF_P"
ip -n "$NS_T" addr add "$IP_T/24" dev "$IF_T"
ip -n "$NS_P" link set "$IF_P" up
ip -n "$NS_T" link set "$IF_T" up
ip -n "$NS_P" neigh replace "$IP_T" lladdr "$(ip -n "$NS_T" -br link show "$IF_T" | awk '{print $3}')" dev "$IF_P" nud permanent
ip -n "$NS_T" neigh replace "$IP_P" lladdr "$(ip -n "$NS_P" -br link show "$IF_P" | awk '{print $3}')" dev "$IF_T" nud permanent
sleep 0.3

durations=$(python3 -c "
import random
r = random.Random($seed)
print(','.join(str(r.randint($min_ms, $max_ms)) for _ in range($count)))")
lead_s=3
total_s=$(python3 -c "print(int($lead_s + sum(int(x) for x in '$durations'.split(',')) / 1000 + $count * $gap_s + 2))")
echo "# $count outages of $min_ms-$max_ms ms (seed $seed), $gap_s s apart, interval $interval, responder $responder${realtime:+, realtime prober}: ${total_s} s"

RT=()
if command -v chrt >/dev/null 2>&1 && chrt -f 10 true 2>/dev/null; then RT=(chrt -f 10); fi
if [[ $responder == jitter ]]; then
  ip netns exec "$NS_T" sysctl -qw net.ipv4.icmp_echo_ignore_all=1
  ip netns exec "$NS_T" "${RT[@]}" timeout $((total_s + 20)) python3 "$here/scripts/lib/icmp_responder.py" \
    --mode=jitter --delay-ms 20 --jitter-ms 10 --seed "$seed" --duration-s $((total_s + 10)) \
    --ready-file "$work/ready" >"$work/responder.json" &
  RESP=$!
  for _ in $(seq 1 50); do [[ -e $work/ready ]] && break; sleep 0.1; done
fi

ip netns exec "$NS_P" timeout $((total_s + 30)) "$build/shroud" rttmon --interval="$interval" \
  --duration="$total_s" $realtime --json "$IP_T" >"$work/rttmon.json" &
mon=$!
ip netns exec "$NS_T" python3 "$here/scripts/lib/link_flap.py" --ifname "$IF_T" --outages-ms "$durations" \
  --lead-s "$lead_s" --gap-s "$gap_s" >"$work/flaps.json"
wait "$mon"

python3 - "$work/rttmon.json" "$work/flaps.json" <<'EOF'
import json, math, statistics, sys

lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
summary = next(l for l in lines if l.get("summary"))
events = [l for l in lines if not l.get("summary")]
flaps = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
t0 = summary["started_unix"]
interval = summary["interval_ms"]

def stats(xs):
    xs = sorted(xs)
    if not xs:
        return "-"
    p95 = xs[max(0, math.ceil(0.95 * len(xs)) - 1)]  # nearest rank
    return "mean %8.2f  median %8.2f  p95 %8.2f  worst %8.2f" % (
        statistics.fmean(xs), statistics.median(xs), p95, max(xs, key=abs))

print("%3s %9s %6s %10s %9s %10s %9s %9s %8s %7s" % (
    "n", "truth_ms", "state", "downtime", "err_ms", "gap_ms", "gap_err", "delay_ms", "stall_ms", "events"))
delays, errs, gap_errs, stalls, matched = [], [], [], [], set()
missed = 0
for f in flaps:
    down, up = f["down_unix"] - t0, f["up_unix"] - t0
    truth = f["duration_ms"]
    ev = [e for e in events if e["start"] <= up + 0.05 and e["end"] >= down - 0.05]
    matched.update(id(e) for e in ev)
    red = [e for e in ev if e["state"] == "red"]
    if len(red) != 1:
        missed += 1
        print("%3d %9.1f %6s %10s %9s %10s %9s %9s %8s %7d" % (f["n"], truth, "MISS", "-", "-", "-", "-", "-", "-", len(ev)))
        continue
    e = red[0]
    delay = (e["detected"] - down) * 1000
    err = e["downtime_ms"] - truth
    gerr = e["downtime_gap_ms"] - truth
    delays.append(delay); errs.append(err); gap_errs.append(gerr)
    stalls.append(e["stall_ms"])
    print("%3d %9.1f %6s %10.1f %+9.2f %10.1f %+9.2f %9.1f %8.1f %7d" % (
        f["n"], truth, e["state"], e["downtime_ms"], err, e["downtime_gap_ms"], gerr, delay,
        e["stall_ms"], len(ev)))
false_red = [e for e in events if id(e) not in matched and e["state"] == "red"]
print()
print("outages detected (exactly one red event): %d of %d; red events matching no outage: %d" % (
    len(flaps) - missed, len(flaps), len(false_red)))
print("detection delay (ms, outage start -> red):   " + stats(delays))
print("downtime error, lost x interval (ms):        " + stats(errs))
print("  |error| (ms):                               " + stats([abs(x) for x in errs]))
print("downtime error, reply gap (ms):              " + stats(gap_errs))
print("  |error| (ms):                               " + stats([abs(x) for x in gap_errs]))
within = sum(1 for x in errs if abs(x) <= interval)
print("lost x interval within one interval (%g ms) of the truth: %d of %d" % (interval, within, len(errs)))
clean = [x for x, st in zip(errs, stalls) if st == 0]
print("  of the outages without a prober stall: %d of %d" % (
    sum(1 for x in clean if abs(x) <= interval), len(clean)))
print("prober: sent %d, lost %d, skipped slots %d, realtime %s, send lateness p99 %.2f ms max %.2f ms" % (
    summary["sent"], summary["lost"], summary["skipped_slots"], summary.get("realtime"),
    (summary.get("send_lateness_ms") or {}).get("p99", 0), (summary.get("send_lateness_ms") or {}).get("max", 0)))
EOF
