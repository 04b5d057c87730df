#!/usr/bin/env bash
# Cost of one rate change: the paper's `tc class change` on an HTB class
# against shroud's in-process change (shaper_bench). Builds nothing.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench-rate-change.sh [options] [BUILD_DIR]

The paper changed the migration class's rate every 10 ms with a Linux `tc`
command. This script measures what one such change costs and prints it next to
shroud's in-process rate change, with the ratio:

  tc (process)  N separate `tc class change ... htb rate X` commands, rates
                alternating 32mbit / 64mbit (4 / 8 MB/s, the paper's migration
                rates): fork + exec + netlink + the qdisc lock, as the paper did
  tc (batch)    the same N changes in one `tc -batch` run: the netlink and
                kernel part alone, a lower bound for any tc-based shaper
  shroud        BUILD_DIR/shaper_bench BM_RateChange (Algorithm 3 step +
                SetRate, what the gateway does every 10 ms) and BM_SetRate (the
                store alone)

The HTB qdisc lives on a veth pair inside a private network namespace
shroud-bench-<pid> (192.0.2.1/24 and 192.0.2.2/24, TEST-NET-1), deleted on exit.
No traffic is sent. Build first, e.g.
  meson compile -C build shaper_bench

options:
  --count N        rate changes per tc measurement (default 1000)
  -h, --help       this text

Needs root (network namespaces), iproute2's ip and tc with the HTB scheduler,
and python3 for the arithmetic. Without root it prints "skipped: needs root"
and exits 0.
EOF
}

die() { echo "bench-rate-change: $*" >&2; exit 2; }

source_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir=""
count=1000

while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --count) (($# >= 2)) || die "--count needs a number"; count="$2"; shift 2 ;;
    --count=*) count="${1#*=}"; shift ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z "$build_dir" ]] || die "more than one BUILD_DIR given"; build_dir="$1"; shift ;;
  esac
done
[[ "$count" =~ ^[1-9][0-9]*$ ]] || die "--count must be a positive integer, got '$count'"
build_dir="${build_dir:-${source_root}/build}"

if [[ $(id -u) -ne 0 ]]; then
  echo "skipped: needs root (network namespace and tc qdisc)"
  exit 0
fi
for tool in ip tc python3; do
  command -v "$tool" >/dev/null 2>&1 || die "missing $tool (apt-get install iproute2 python3)"
done

ns="shroud-bench-$$"
workdir="$(mktemp -d)"
cleanup() {
  ip netns delete "$ns" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$ns"
ip -n "$ns" link add veth0 type veth peer name veth1
ip -n "$ns" addr add 192.0.2.1/24 dev veth0
ip -n "$ns" addr add 192.0.2.2/24 dev veth1
ip -n "$ns" link set veth0 up
ip -n "$ns" link set veth1 up
# r2q 1000 keeps every class's quantum (rate / r2q) within HTB's limits, or
# each change warns "quantum of class is big".
if ! tc -n "$ns" qdisc add dev veth0 root handle 1: htb default 10 r2q 1000 2>"$workdir/err"; then
  echo "skipped: HTB qdisc not available: $(cat "$workdir/err")"
  exit 0
fi
tc -n "$ns" class add dev veth0 parent 1: classid 1:1 htb rate 1gbit
tc -n "$ns" class add dev veth0 parent 1:1 classid 1:10 htb rate 32mbit ceil 64mbit

now_ns() { date +%s%N; }
rate_of() { if (($1 % 2)); then echo 64mbit; else echo 32mbit; fi; }

# One process per change, as the paper's system command did.
start=$(now_ns)
for ((i = 0; i < count; i++)); do
  tc -n "$ns" class change dev veth0 parent 1:1 classid 1:10 htb rate "$(rate_of "$i")" ceil 64mbit
done
process_ns=$(($(now_ns) - start))

# All changes through one netlink socket.
for ((i = 0; i < count; i++)); do
  echo "class change dev veth0 parent 1:1 classid 1:10 htb rate $(rate_of "$i") ceil 64mbit"
done >"$workdir/batch"
start=$(now_ns)
tc -n "$ns" -batch "$workdir/batch"
batch_ns=$(($(now_ns) - start))

# The class really took the changes: it ends at the last rate set.
final_rate="$(tc -n "$ns" class show dev veth0 classid 1:10)"
[[ "$final_rate" == *"rate $(rate_of $((count - 1)) | sed 's/mbit/Mbit/')"* ]] ||
  die "the HTB class does not show the last rate: $final_rate"

bench="${build_dir}/shaper_bench"
bench_json=""
if [[ -x "$bench" ]]; then
  "$bench" --benchmark_filter='^BM_(RateChange|SetRate)$' --benchmark_repetitions=5 \
    --benchmark_report_aggregates_only=true --benchmark_format=json >"$workdir/bench.json"
  bench_json="$workdir/bench.json"
else
  echo "note: $bench not found; build it (meson compile -C $build_dir shaper_bench) for the ratio" >&2
fi

python3 - "$count" "$process_ns" "$batch_ns" "$bench_json" <<'EOF'
import json, sys
count, process_ns, batch_ns, bench_json = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tc_proc = process_ns / count
tc_batch = batch_ns / count
shroud = {}
if bench_json:
    for b in json.load(open(bench_json))["benchmarks"]:
        if b.get("aggregate_name") == "median":
            unit = {"ns": 1, "us": 1e3, "ms": 1e6}[b["time_unit"]]
            shroud[b["run_name"]] = b["cpu_time"] * unit
print(f"rate change cost, {count} changes alternating 32mbit/64mbit on an HTB class:")
print(f"  tc class change, one process each : {tc_proc:12.0f} ns per change")
print(f"  tc -batch, one netlink socket     : {tc_batch:12.0f} ns per change")
for name, label in (("BM_RateChange", "shroud Algorithm 3 step + SetRate"),
                    ("BM_SetRate", "shroud SetRate alone")):
    if name in shroud:
        ns = shroud[name]
        print(f"  {label:34s}: {ns:12.2f} ns per change"
              f"   (tc process / this = {tc_proc / ns:,.0f}x, tc batch / this = {tc_batch / ns:,.0f}x)")
print("  budget: one change per 10 ms = 10,000,000 ns; tc process uses "
      f"{100 * tc_proc / 1e7:.2f} % of it on one core, shroud "
      + (f"{100 * shroud['BM_RateChange'] / 1e7:.6f} %" if "BM_RateChange" in shroud else "n/a"))
EOF
