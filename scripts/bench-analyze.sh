#!/usr/bin/env bash
# Throughput of `shroud analyze` against tshark on a large real capture, plus
# the in-memory per-packet path (feature_bench). Builds nothing.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench-analyze.sh [options] [BUILD_DIR]

Measures packets per second of the offline analysis on one large capture made
by concatenating a real public capture COPIES times (mergecap -a):

  shroud   BUILD_DIR/shroud analyze --min_packets 1000000000 FILE
           (reads, parses and computes every flow's features; prints no flow)
  tshark   tshark -q -z conv,tcp -r FILE
           (Wireshark's TCP conversation table over the same file)

Each command runs RUNS times (hyperfine if installed, else a timing loop; one
untimed warm-up run first) and the median wall time gives packets/s. Then it
runs BUILD_DIR/feature_bench --benchmark_filter=FeatureExtraction (parse +
flow features over the capture held in memory, no file I/O) and prints its
packets/s. Nothing is built: build BUILD_DIR (default ./build) first, e.g.
  meson compile -C build shroud feature_bench

options:
  --capture FILE   capture to replicate (default:
                   SOURCE/../shared/traces/public/RequetDataSet__baseline_Jan17_exp_41.pcap,
                   44,439 packets)
  --copies N       copies to concatenate (default 10)
  --runs N         timed runs per command (default 3)
  --no-feature-bench   skip feature_bench
  -h, --help       this text

Needs mergecap, capinfos and tshark (Wireshark); python3 for the arithmetic.
Temporary files go to a mktemp directory that is removed on exit.
EOF
}

die() { echo "bench-analyze: $*" >&2; exit 2; }

source_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir=""
capture="${source_root}/../shared/traces/public/RequetDataSet__baseline_Jan17_exp_41.pcap"
copies=10
runs=3
feature_bench=1

while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --capture) (($# >= 2)) || die "--capture needs a file"; capture="$2"; shift 2 ;;
    --capture=*) capture="${1#*=}"; shift ;;
    --copies) (($# >= 2)) || die "--copies needs a number"; copies="$2"; shift 2 ;;
    --copies=*) copies="${1#*=}"; shift ;;
    --runs) (($# >= 2)) || die "--runs needs a number"; runs="$2"; shift 2 ;;
    --runs=*) runs="${1#*=}"; shift ;;
    --no-feature-bench) feature_bench=0; shift ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z "$build_dir" ]] || die "more than one BUILD_DIR given"; build_dir="$1"; shift ;;
  esac
done
build_dir="${build_dir:-./build}"
[[ "$copies" =~ ^[1-9][0-9]*$ ]] || die "--copies must be a positive integer, got '$copies'"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got '$runs'"

shroud="${build_dir}/shroud"
bench="${build_dir}/feature_bench"
[[ -x "$shroud" ]] || die "$shroud not found or not executable (build it: meson compile -C $build_dir shroud)"
if ((feature_bench)) && [[ ! -x "$bench" ]]; then
  die "$bench not found (build it: meson compile -C $build_dir feature_bench, or pass --no-feature-bench)"
fi
[[ -r "$capture" ]] || die "capture $capture not readable (use --capture FILE)"
for tool in mergecap capinfos tshark python3; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/setup.sh --with-bench-tools installs it)"
done

tmp="$(mktemp -d "${TMPDIR:-/tmp}/shroud-bench-analyze.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

big="$tmp/big.pcap"
inputs=()
for ((i = 0; i < copies; i++)); do inputs+=("$capture"); done
mergecap -a -F pcap -w "$big" "${inputs[@]}"
packets="$(capinfos -c -M -T -r "$big" | cut -f2)"
[[ "$packets" =~ ^[0-9]+$ ]] || die "capinfos could not count $big"
size_mb="$(python3 -c "import os,sys; print(f'{os.path.getsize(sys.argv[1]) / 1e6:.1f}')" "$big")"

echo "capture: $copies x $(basename "$capture") = $packets packets, $size_mb MB (pcap, in $tmp)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) online)"
echo

shroud_cmd=("$shroud" analyze --min_packets 1000000000 "$big")
tshark_cmd=(tshark -q -z conv,tcp -r "$big")

# Untimed warm-up, which also checks that both commands succeed (and warms the
# page cache so both read the file from memory).
"${shroud_cmd[@]}" >"$tmp/shroud.out" 2>"$tmp/shroud.err" ||
  { cat "$tmp/shroud.err" >&2; die "shroud analyze failed"; }
"${tshark_cmd[@]}" >"$tmp/tshark.out" 2>"$tmp/tshark.err" ||
  { cat "$tmp/tshark.err" >&2; die "tshark failed"; }
grep -m1 '^capture ' "$tmp/shroud.out" | sed 's/^/shroud: /' || true

quote() { local out="" a; for a in "$@"; do out+="$(printf '%q' "$a") "; done; echo "${out% }"; }

# Median wall time in seconds of running "$@" $runs times.
median_seconds_loop() {
  local times=() i start end
  for ((i = 0; i < runs; i++)); do
    start="$(date +%s%N)"
    "$@" >/dev/null 2>&1
    end="$(date +%s%N)"
    times+=("$(((end - start) / 1000))")  # microseconds
  done
  python3 -c "import statistics,sys; print(statistics.median(int(x) for x in sys.argv[1:]) / 1e6)" "${times[@]}"
}

if command -v hyperfine >/dev/null; then
  echo "timing with $(hyperfine --version), $runs runs each"
  hyperfine --runs "$runs" --warmup 0 --style basic --export-json "$tmp/hyperfine.json" \
    -n shroud "$(quote "${shroud_cmd[@]}")" \
    -n tshark "$(quote "${tshark_cmd[@]}")"
  read -r shroud_s tshark_s < <(python3 - "$tmp/hyperfine.json" <<'EOF'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
print(results["shroud"]["median"], results["tshark"]["median"])
EOF
)
else
  echo "timing with a shell loop (hyperfine not installed), $runs runs each"
  shroud_s="$(median_seconds_loop "${shroud_cmd[@]}")"
  tshark_s="$(median_seconds_loop "${tshark_cmd[@]}")"
fi

echo
python3 - "$packets" "$shroud_s" "$tshark_s" <<'EOF'
import sys
packets, shroud_s, tshark_s = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
shroud_pps, tshark_pps = packets / shroud_s, packets / tshark_s
print(f"shroud analyze : median {shroud_s:8.3f} s  {shroud_pps / 1e6:8.3f} M packets/s")
print(f"tshark conv,tcp: median {tshark_s:8.3f} s  {tshark_pps / 1e6:8.3f} M packets/s")
print(f"ratio shroud/tshark (packets/s): {shroud_pps / tshark_pps:.1f}x")
EOF

if ((feature_bench)); then
  echo
  echo "feature_bench (in-memory parse + flow features over $(basename "$capture")):"
  SHROUD_BENCH_CAPTURE="$capture" SHROUD_SOURCE_ROOT="$source_root" \
    "$bench" --benchmark_filter=FeatureExtraction --benchmark_out="$tmp/bench.json" \
    --benchmark_out_format=json 2>&1
  python3 - "$tmp/bench.json" <<'EOF'
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b.get("run_type", "iteration") != "iteration" or "items_per_second" not in b:
        continue
    pps = b["items_per_second"]
    print(f"{b['name']:40s} {pps / 1e6:8.2f} M packets/s  {1e9 / pps:7.1f} ns/packet")
EOF
fi
