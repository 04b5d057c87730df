#!/usr/bin/env bash
# record-corpus.sh - record a corpus of migration and background-only captures
# with scripts/record-migration.sh, one recording at a time.
#
# Needs root and the Debian packages listed in record-migration.sh
# (SHROUD_CAPTURE_PACKAGES in scripts/lib/netns.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<'USAGE'
usage: record-corpus.sh [options] OUTDIR

Records background-only captures, then migrations for every (load, rate) pair
of the matrix, into OUTDIR as bg-<LOAD>-s<SEED>.pcap / mig-r<RATE>-<LOAD>-s<SEED>.pcap,
each with its .json report, plus OUTDIR/index.tsv (rebuilt from all reports
in OUTDIR). Every recording runs over a --link-mbit link (default 100 Mbit/s,
the paper's testbed). Stops starting new recordings once the time budget is
spent.

options:
  --quick             a handful: (4,light) (8,medium) (10,heavy) (2,medium)
                      and one 15 s bg-medium capture
  --matrix "L:R,R.. L:R,R.."  migrations per load (default
                      "light:2,3,4,5,6,8,10 medium:2,3,4,5,6,8,10 heavy:4,5,6,8,10,12",
                      20 migrations; heavy 2 and 3 are left out for size and
                      12 MiB/s, more than a 100 Mbit/s link carries, is the
                      stress point)
  --rates "R..."      instead of --matrix: these rates ...
  --loads "L..."      ... for each of these loads (default "light medium heavy")
  --bg "L..."         background-only captures (default
                      "light medium heavy light medium light")
  --bg-seconds S      length of each background-only capture (default 20)
  --ram MiB           guest RAM (default 32)
  --snaplen BYTES     snaplen (default 68)
  --link-mbit N       link rate per direction, passed on (default 100; 0 =
                      unlimited veth)
  --lead S / --tail S background seconds before / after each migration
                      (default 2 / 1)
  --seed N            first seed; each recording uses the next one (default 1)
  --budget S          wall-time budget for the whole corpus (default 2700)
  --unit mib|mb       rate unit, passed on (default mib)
  --index-only        only rebuild OUTDIR/index.tsv from the reports
  -h, --help          this help
USAGE
}

matrix="light:2,3,4,5,6,8,10 medium:2,3,4,5,6,8,10 heavy:4,5,6,8,10,12"
rates="" loads="light medium heavy" bgs="light medium heavy light medium light"
bg_seconds=20 ram=32 snaplen=68 seed=1 budget=2700 unit=mib quick=0 outdir=""
link_mbit=100 lead=2 tail=1 index_only=0
while (($#)); do
    case $1 in
        --quick) quick=1; shift ;;
        --matrix) matrix=$2; shift 2 ;;
        --rates) rates=$2; shift 2 ;;
        --loads) loads=$2; shift 2 ;;
        --link-mbit) link_mbit=$2; shift 2 ;;
        --lead) lead=$2; shift 2 ;;
        --tail) tail=$2; shift 2 ;;
        --index-only) index_only=1; shift ;;
        --bg) bgs=$2; shift 2 ;;
        --bg-seconds) bg_seconds=$2; shift 2 ;;
        --ram) ram=$2; shift 2 ;;
        --snaplen) snaplen=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --budget) budget=$2; shift 2 ;;
        --unit) unit=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; echo "error: unknown option '$1'" >&2; exit 1 ;;
        *) [[ -z $outdir ]] || { echo "error: one OUTDIR only" >&2; exit 1; }; outdir=$1; shift ;;
    esac
done
[[ -n $outdir ]] || { usage >&2; echo "error: OUTDIR is required" >&2; exit 1; }
for v in bg_seconds ram snaplen seed budget link_mbit lead tail; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "error: --${v//_/-} must be an integer" >&2; exit 1; }
done

write_index() {
    # index of everything in OUTDIR (also earlier runs), from the JSON reports
    "${PYTHON:-python3}" - "$outdir" >"$outdir/index.tsv" <<'PY'
import glob, json, os, sys
cols = ["file", "kind", "rate_mb_s", "rate_unit", "load", "seed", "ram_mib", "snaplen", "status",
        "total_time_ms", "downtime_ms", "capture_packets", "capture_bytes", "migration_packets",
        "background_mbit_s_avg", "link_mbit", "background_mbit_s_src_to_dst",
        "burst_duration_median_ms", "autocorr_100ms"]
print("\t".join(cols))
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    try:
        r = json.load(open(path))
    except ValueError:
        continue
    r["file"] = os.path.basename(path)[:-5] + ".pcap"
    b = r.get("bursts") or {}
    r["burst_duration_median_ms"] = b.get("duration_median_ms")
    r["autocorr_100ms"] = b.get("autocorr_100ms")
    if r.get("kind") != "migration":
        for k in ("rate_mb_s", "rate_unit", "ram_mib", "total_time_ms", "downtime_ms", "migration_packets",
                  "burst_duration_median_ms", "autocorr_100ms"):
            r[k] = ""
    print("\t".join("" if r.get(c) is None else str(r.get(c)) for c in cols))
PY
}
if ((index_only)); then
    [[ -d $outdir ]] || { echo "error: no directory $outdir" >&2; exit 1; }
    write_index
    echo "corpus: rebuilt $outdir/index.tsv ($(($(wc -l <"$outdir/index.tsv") - 1)) captures)" >&2
    exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "error: must run as root" >&2; exit 1; }
mkdir -p "$outdir"

jobs=()
if ((quick)); then
    jobs=("mig 4 light" "mig 8 medium" "mig 10 heavy" "mig 2 medium")
    bgs="medium"
    bg_seconds=15
elif [[ -n $rates ]]; then
    for r in $rates; do
        for l in $loads; do jobs+=("mig $r $l"); done
    done
else
    for spec in $matrix; do
        l=${spec%%:*}
        [[ $spec == *:* && -n $l ]] || { echo "error: bad --matrix entry '$spec' (LOAD:R,R,...)" >&2; exit 1; }
        IFS=, read -r -a rs <<<"${spec#*:}"
        for r in "${rs[@]}"; do
            [[ $r =~ ^[0-9]+$ ]] || { echo "error: bad rate '$r' in --matrix" >&2; exit 1; }
            jobs+=("mig $r $l")
        done
    done
fi
# background-only captures first (short), so a spent budget cuts migrations
bgjobs=()
for l in $bgs; do bgjobs+=("bg 0 $l"); done
jobs=("${bgjobs[@]}" "${jobs[@]}")

start=$SECONDS
failed=0 done_n=0
for j in "${jobs[@]}"; do
    read -r kind rate load <<<"$j"
    if ((SECONDS - start > budget)); then
        echo "corpus: time budget ($budget s) spent, skipping the rest" >&2
        break
    fi
    if [[ $kind == mig ]]; then
        name="mig-r$rate-$load-s$seed"
        # migration of RAM at RATE, plus lead/tail and start-up, with margin
        mt=$((ram * 3 / rate + 90))
        args=(--rate "$rate" --unit "$unit" --load "$load" --ram "$ram" --seed "$seed"
            --snaplen "$snaplen" --lead "$lead" --tail "$tail" --link-mbit "$link_mbit" --max-time "$mt")
    else
        name="bg-$load-s$seed"
        args=(--bg-only "$bg_seconds" --load "$load" --seed "$seed" --snaplen "$snaplen"
            --link-mbit "$link_mbit" --max-time $((bg_seconds + 60)))
    fi
    echo "corpus: [$((SECONDS - start)) s] $name" >&2
    if ! "$here/record-migration.sh" "${args[@]}" -o "$outdir/$name.pcap" --report "$outdir/$name.json"; then
        echo "corpus: $name FAILED" >&2
        failed=$((failed + 1))
    fi
    done_n=$((done_n + 1))
    seed=$((seed + 1))
done
write_index
echo "corpus: $done_n recordings, $failed failed, $((SECONDS - start)) s, $(du -sh "$outdir" | cut -f1) in $outdir" >&2
((failed == 0))
