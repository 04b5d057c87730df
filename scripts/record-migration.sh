#!/usr/bin/env bash
# record-migration.sh - record a REAL QEMU live migration between two network
# namespaces, with real background TCP traffic, into a pcap.
#
# Needs root and these Debian packages (also in SHROUD_CAPTURE_PACKAGES in
# scripts/lib/netns.sh):
#   qemu-system-x86 qemu-system-data seabios iproute2 ethtool tcpdump tshark
#   wireshark-common iperf3 nginx-light curl python3 gcc binutils coreutils procps
#
# Topology: namespace SRC (198.51.100.1) <-- one veth pair, MTU 1500, all
# offloads off, a tc tbf "WAN link" of --link-mbit (default 100 Mbit/s) on the
# egress of both ends --> namespace DST (198.51.100.2). tcpdump captures SRC's
# end (egress after the qdisc, i.e. wire timing).
# See scripts/CAPTURES.md for the load model, RAM filling and the corpus.
set -euo pipefail

SHROUD_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHROUD_LIB="$SHROUD_SCRIPTS/lib"
export SHROUD_SCRIPTS SHROUD_LIB
# shellcheck source=lib/netns.sh
source "$SHROUD_LIB/netns.sh"
# shellcheck source=lib/background.sh
source "$SHROUD_LIB/background.sh"
# shellcheck source=lib/guest.sh
source "$SHROUD_LIB/guest.sh"

usage() {
    cat <<'EOF'
usage: record-migration.sh [options] -o OUT.pcap [--report OUT.json]

Records a real QEMU (TCG) live migration SRC -> DST over a veth "WAN" between
two network namespaces, with real background traffic, into OUT.pcap. The veth
is limited to --link-mbit in each direction (tc tbf on both ends).

options:
  --rate N          migration max-bandwidth, 2..12 (default 4), see --unit
  --unit mib|mb     unit of --rate: MiB/s (default; libvirt's migrate-setspeed
                    unit) or MB/s (10^6 bytes/s)
  --load L          background: none|light|medium|heavy (default medium);
                    light < 20 %, medium 40-50 %, heavy ~80 % of the link rate
                    (both directions summed; 60 Mbit/s nominal if unlimited)
  --link-mbit N     link capacity in Mbit/s per direction (default 100, the
                    paper's testbed; 0 = unlimited veth)
  --link-buffer-ms MS  queue of the link, in ms at the link rate (default 50)
  --cc NAME         TCP congestion control in both namespaces (default reno:
                    loss-based like the CUBIC of the paper's hosts; a
                    namespace may only use the host's
                    net.ipv4.tcp_allowed_congestion_control, here "reno bbr";
                    "inherit" keeps the host's default)
  --ram MiB         guest RAM (default 64, at least 24)
  --seed N          seed for RAM contents, guest and user model (default 1)
  --snaplen BYTES   tcpdump snaplen (default 96)
  --port P          migration port on DST (default 49152)
  --dirty PCT       guest dirty rate, % of the migration rate (default 10;
                    0 = guest does not write memory)
  --guest tiny|none tiny multiboot guest that dirties pages (default) or none
                    (VM idles in SeaBIOS, RAM only from the loader file)
  --warmup S        background runs S seconds before the capture starts
                    (default 3; not captured)
  --lead S          background-only seconds before the migration (default 4)
  --tail S          seconds recorded after the migration (default 2)
  --bg-only S       no migration: record S seconds of background only
  --bg-scale PCT    scale all background per-user rates (default 100)
  --max-time S      hard limit for the whole run (default 300)
  --keep-tmp        keep the temporary work directory
  -o FILE           output pcap (required)
  --report FILE     JSON report (default: OUT.pcap with .json)
  -h, --help        this help

Exit status 0 only if the migration completed (or, with --bg-only, if the
capture was written).
EOF
}

rate=4 unit=mib load=medium ram=64 seed=1 snaplen=96 port=49152 dirty=10
guest=tiny lead=4 tail=2 bg_only=0 bg_scale=100 max_time=300 keep_tmp=0
link_mbit=100 link_buffer_ms=50 cc=reno warmup=3
out="" report=""
orig_args=("$@")
while (($#)); do
    case $1 in
        --rate) rate=$2; shift 2 ;;
        --unit) unit=$2; shift 2 ;;
        --load) load=$2; shift 2 ;;
        --link-mbit) link_mbit=$2; shift 2 ;;
        --link-buffer-ms) link_buffer_ms=$2; shift 2 ;;
        --cc) cc=$2; shift 2 ;;
        --ram) ram=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --snaplen) snaplen=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --dirty) dirty=$2; shift 2 ;;
        --guest) guest=$2; shift 2 ;;
        --lead) lead=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --tail) tail=$2; shift 2 ;;
        --bg-only) bg_only=$2; shift 2 ;;
        --bg-scale) bg_scale=$2; shift 2 ;;
        --max-time) max_time=$2; shift 2 ;;
        --keep-tmp) keep_tmp=1; shift ;;
        -o) out=$2; shift 2 ;;
        --report) report=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

isint() { [[ $1 =~ ^[0-9]+$ ]]; }
[[ -n $out ]] || { usage >&2; die "-o OUT.pcap is required"; }
for v in rate ram seed snaplen port dirty lead tail bg_only bg_scale max_time link_mbit link_buffer_ms warmup; do
    isint "${!v}" || die "--${v//_/-} must be a non-negative integer (got '${!v}')"
done
((rate >= 2 && rate <= 12)) || die "--rate must be in 2..12"
[[ $unit == mib || $unit == mb ]] || die "--unit must be mib or mb"
((ram >= 24 && ram <= 1024)) || die "--ram must be in 24..1024 MiB"
((snaplen >= 54 && snaplen <= 65535)) || die "--snaplen must be in 54..65535"
((port >= 1024 && port <= 65535)) || die "--port must be in 1024..65535"
((dirty <= 50)) || die "--dirty must be in 0..50 (percent of the migration rate)"
[[ $guest == tiny || $guest == none ]] || die "--guest must be tiny or none"
bg_users_for "$load" >/dev/null
((max_time >= 30)) || die "--max-time must be at least 30"
((link_mbit <= 10000)) || die "--link-mbit must be in 0..10000 (0 = unlimited)"
((link_mbit == 0 || link_mbit >= 10)) || die "--link-mbit below 10 is not supported"
((link_buffer_ms >= 1 && link_buffer_ms <= 1000)) || die "--link-buffer-ms must be in 1..1000"
[[ $cc =~ ^[a-z0-9_]+$ ]] || die "--cc must be a congestion control name or inherit"
BG_SCALE_PCT=$bg_scale
BG_LINK_MBIT=$link_mbit
export BG_SCALE_PCT BG_LINK_MBIT
[[ $out == /* ]] || out="$PWD/$out"
[[ -n $report ]] || report="${out%.pcap}.json"
[[ $report == /* ]] || report="$PWD/$report"
mkdir -p "$(dirname "$out")" "$(dirname "$report")"

# Hard overall time limit: re-run ourselves under timeout(1). --foreground
# keeps Ctrl-C working; on expiry we get SIGTERM and the trap cleans up.
if [[ -z ${SHROUD_REC_WRAPPED:-} ]]; then
    export SHROUD_REC_WRAPPED=1
    exec timeout --foreground -k 20 "$max_time" "$0" "${orig_args[@]}"
fi

require_root
require_tools ip tc ethtool tcpdump tshark capinfos qemu-system-x86_64 iperf3 nginx curl \
    "${PYTHON:-python3}" timeout gcc sysctl

SRC_IP=198.51.100.1
DST_IP=198.51.100.2
check_testnet "$SRC_IP" "$DST_IP"
NS_SRC=$(ns_name src)
NS_DST=$(ns_name dst)
IF_SRC="sr$$s"
IF_DST="sr$$d"
if [[ $unit == mib ]]; then bw=$((rate * 1024 * 1024)); else bw=$((rate * 1000 * 1000)); fi

WORK=""
QEMU_SRC_PID="" QEMU_DST_PID="" TCPDUMP_PID="" MIG_PID=""
# nap S : interruptible sleep (traps run during `wait`, not during `sleep`)
nap() {
    sleep "$1" &
    wait $!
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [[ -n $MIG_PID ]] && kill_wait "$MIG_PID" TERM 3
    bg_stop 2>/dev/null
    [[ -n $TCPDUMP_PID ]] && kill_wait "$TCPDUMP_PID" INT 5
    kill_wait "$QEMU_SRC_PID" TERM 5
    kill_wait "$QEMU_DST_PID" TERM 5
    ns_kill_and_delete "$NS_SRC"
    ns_kill_and_delete "$NS_DST"
    if [[ -n $WORK && -d $WORK ]]; then
        if ((keep_tmp)); then log "kept work dir $WORK"; else rm -rf "$WORK"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated (time limit?)"; exit 143' TERM

ns_clean_stale
WORK=$(mktemp -d /tmp/shroud-rec.XXXXXX)
BG_WORK=$WORK
log "namespaces $NS_SRC ($SRC_IP) <-> $NS_DST ($DST_IP), work dir $WORK"
wan_setup "$NS_SRC" "$SRC_IP" "$NS_DST" "$DST_IP" "$IF_SRC" "$IF_DST"
if [[ $cc != inherit ]]; then
    wan_set_cc "$NS_SRC" "$cc"
    wan_set_cc "$NS_DST" "$cc"
fi
cc_used=$(ip netns exec "$NS_SRC" sysctl -n net.ipv4.tcp_congestion_control)
link_burst=0 link_limit=0
if ((link_mbit > 0)); then
    shape=$(wan_shape "$NS_SRC" "$IF_SRC" "$link_mbit" "$link_buffer_ms")
    wan_shape "$NS_DST" "$IF_DST" "$link_mbit" "$link_buffer_ms" >/dev/null
    link_burst=$(sed -n 's/.*burst=\([0-9]*\).*/\1/p' <<<"$shape")
    link_limit=$(sed -n 's/.*limit=\([0-9]*\).*/\1/p' <<<"$shape")
    log "link: tbf ${link_mbit} Mbit/s per direction, burst $link_burst B, queue $link_limit B (${link_buffer_ms} ms), tcp cc $cc_used"
else
    log "link: unlimited veth, tcp cc $cc_used"
fi

# ---------------------------------------------------------------- QEMU
# A limited link may slow the migration below its rate cap (heavy background
# shares it): allow for a quarter of the link at worst.
eff_bw=$bw
if ((link_mbit > 0 && eff_bw > link_mbit * 1000000 / 8 / 4)); then eff_bw=$((link_mbit * 1000000 / 8 / 4)); fi
mig_timeout=$((2 * ram * 1024 * 1024 / eff_bw + 40))
if ((!bg_only)); then
    log "preparing guest: ram=${ram}MiB seed=$seed guest=$guest dirty=${dirty}%"
    guest_ram_file "$WORK/ram.bin" "$ram" "$seed"
    qargs=(-accel tcg -machine pc -m "$ram" -smp 1 -nodefaults -no-user-config -display none
        -device "loader,file=$WORK/ram.bin,addr=0x1000000,force-raw=on")
    if [[ $guest == tiny ]]; then
        guest_build "$WORK/guest.elf"
        dirty_bps=$((bw * dirty / 100))
        hot=0
        ((dirty > 0)) && hot=8
        qargs+=(-kernel "$WORK/guest.elf" -append "seed=$seed dirty=$dirty_bps hot=$hot hz=250")
    fi
    ip netns exec "$NS_DST" timeout "$max_time" qemu-system-x86_64 -name shroud-dst "${qargs[@]}" \
        -serial "file:$WORK/serial-dst.log" -qmp "unix:$WORK/dst.qmp,server=on,wait=off" \
        -incoming "tcp:$DST_IP:$port" 2>"$WORK/qemu-dst.err" &
    QEMU_DST_PID=$!
    ip netns exec "$NS_SRC" timeout "$max_time" qemu-system-x86_64 -name shroud-src "${qargs[@]}" \
        -serial "file:$WORK/serial-src.log" -qmp "unix:$WORK/src.qmp,server=on,wait=off" \
        2>"$WORK/qemu-src.err" &
    QEMU_SRC_PID=$!
    "${PYTHON:-python3}" "$SHROUD_SCRIPTS/qmp.py" "$WORK/dst.qmp" wait --timeout 20 >/dev/null ||
        die "destination QEMU did not start: $(cat "$WORK/qemu-dst.err")"
    "${PYTHON:-python3}" "$SHROUD_SCRIPTS/qmp.py" "$WORK/src.qmp" wait --timeout 20 >/dev/null ||
        die "source QEMU did not start: $(cat "$WORK/qemu-src.err")"
    [[ $guest != tiny ]] || guest_wait_ready "$WORK/serial-src.log"
fi

# ---------------------------------------------------------------- background
# Started before the capture and given --warmup seconds, so that the capture
# begins in the middle of ongoing traffic (as a real one does), not with every
# user starting at once.
if ((bg_only)); then bg_dur=$((warmup + bg_only + 5)); else bg_dur=$((warmup + lead + mig_timeout + tail + 5)); fi
bg_start "$WORK" "$load" "$seed" "$bg_dur" "$NS_SRC" "$SRC_IP" "$NS_DST" "$DST_IP"
if [[ $load != none ]] && ((warmup > 0)); then
    log "background warm-up ${warmup}s (not captured)"
    nap "$warmup"
fi

# ---------------------------------------------------------------- capture
rm -f "$out"
ip netns exec "$NS_SRC" timeout "$max_time" tcpdump -i "$IF_SRC" -s "$snaplen" -B 16384 -n -U \
    -Z root -w "$out" 2>"$WORK/tcpdump.err" &
TCPDUMP_PID=$!
for _ in $(seq 1 50); do
    grep -q 'listening on' "$WORK/tcpdump.err" 2>/dev/null && break
    sleep 0.1
done
grep -q 'listening on' "$WORK/tcpdump.err" || die "tcpdump did not start: $(cat "$WORK/tcpdump.err")"
cap_start=$(date +%s.%N)

status="background-only"
if ((bg_only)); then
    log "recording $bg_only s of background only"
    nap "$bg_only"
else
    nap "$lead"
    log "migrating: max-bandwidth=$bw B/s ($rate $unit/s) to tcp:$DST_IP:$port (timeout ${mig_timeout}s)"
    set +e
    # in the background + wait, so that INT/TERM traps run at once
    "${PYTHON:-python3}" "$SHROUD_SCRIPTS/qmp.py" "$WORK/src.qmp" migrate \
        --uri "tcp:$DST_IP:$port" --bandwidth "$bw" --timeout "$mig_timeout" \
        >"$WORK/migrate.json" 2>"$WORK/migrate.err" &
    MIG_PID=$!
    wait "$MIG_PID"
    MIG_PID=""
    set -e
    status=$("${PYTHON:-python3}" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("status"))' \
        "$WORK/migrate.json" 2>/dev/null || echo error)
    log "migration status: $status $(cat "$WORK/migrate.err" 2>/dev/null)"
    nap "$tail"
    # QEMU sets "completed" a moment before it fills in total-time/downtime
    # (seen under load: 0 ms in the last poll); ask the source once more.
    "${PYTHON:-python3}" "$SHROUD_SCRIPTS/qmp.py" "$WORK/src.qmp" exec query-migrate \
        >"$WORK/migrate-final.json" 2>/dev/null || true
fi
bg_stop
sleep 0.3
kill_wait "$TCPDUMP_PID" INT 10
TCPDUMP_PID=""
cap_end=$(date +%s.%N)
drops=$(sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p' "$WORK/tcpdump.err" | head -1)
[[ -n $drops ]] || drops=-1
# link queue statistics: sent bytes, packets, drops, overlimits per direction
qd_src="0 0 0 0" qd_dst="0 0 0 0"
if ((link_mbit > 0)); then
    qd_src=$(wan_qdisc_stats "$NS_SRC" "$IF_SRC")
    qd_dst=$(wan_qdisc_stats "$NS_DST" "$IF_DST")
fi
read -r qs_bytes qs_pkts qs_drop qs_over <<<"$qd_src"
read -r qd_bytes qd_pkts qd_drop qd_over <<<"$qd_dst"

# destination state after the migration
dst_state="n/a" dst_beats=0
if ((!bg_only)); then
    dst_state=$("${PYTHON:-python3}" "$SHROUD_SCRIPTS/qmp.py" "$WORK/dst.qmp" exec query-status 2>/dev/null |
        "${PYTHON:-python3}" -c 'import json,sys; print(json.load(sys.stdin).get("status"))' 2>/dev/null || echo unknown)
    dst_beats=$(grep -c 'shroud-guest: beat' "$WORK/serial-dst.log" 2>/dev/null || true)
    [[ -n $dst_beats ]] || dst_beats=0
fi

# ---------------------------------------------------------------- analysis
[[ -s $out ]] || die "capture $out is empty"
cap_packets=$(capinfos -M -c -T "$out" | awk -F'\t' 'NR==2{print $2}')
cap_bytes=$(stat -c %s "$out")
# One tshark pass; awk finds the migration flow (SYN to $port) and measures it:
# data frames, full-size frames, payload bytes, 10 ms buckets -> bursts.
tshark -r "$out" -T fields -E separator=' ' -e frame.time_epoch -e ip.src -e tcp.srcport \
    -e ip.dst -e tcp.dstport -e frame.len -e tcp.len -e tcp.flags.syn -e tcp.flags.ack \
    2>/dev/null | awk -v port="$port" -v srcip="$SRC_IP" -f <(cat <<'AWK'
NF >= 9 {
    t = $1; key = $2 ":" $3 ">" $4 ":" $5
    if (tfirst == "") tfirst = t
    tlast = t
    # all traffic per direction in 10 ms buckets (wire bytes): link load
    wb = int((t - tfirst) * 100)
    if ($2 == srcip) { wfwd[wb] += $6; wfwd_tot += $6 } else { wrev[wb] += $6; wrev_tot += $6 }
    if (wb > wbmax) wbmax = wb
    if ($5 != "" && $3 != "") flows[($2 < $4 ? $2 ":" $3 "-" $4 ":" $5 : $4 ":" $5 "-" $2 ":" $3)] = 1
    if (mig == "" && $5 == port && $8 == "1" && $9 == "0") { mig = key; mig_sport = $3; msrc = $2; mdst = $4 }
    if (mig != "" && key == mig) {
        mpk++
        if ($7 > 0) {
            mdata++; mbytes += $7
            if ($6 >= 1514) mfull++
            if (mfirst == "") mfirst = t
            mlast = t
            if (t0 == "") t0 = t
            b = int((t - t0) * 100)     # 10 ms bucket (relative: mawk prints big numbers as %.6g)
            if (!(b in bucket)) bfirst[b] = t - t0
            blast[b] = t - t0
            bucket[b] += $7
            if (bmin == "" || b < bmin) bmin = b
            if (b > bmax) bmax = b
        }
    } else if (mig != "" && $2 == mdst && $4 == msrc && $3 == port && $5 == mig_sport) {
        mrev++
    } else {
        bgp++; bgbytes += $6
        if ($2 == srcip) bgfwd += $6; else bgrev += $6
    }
}
function median(a, n,    i, j, x) {   # sorts a[0..n-1] in place (mawk has no asort)
    for (i = 1; i < n; i++) {
        x = a[i]; j = i - 1
        while (j >= 0 && a[j] > x) { a[j + 1] = a[j]; j-- }
        a[j + 1] = x
    }
    return n ? (n % 2 ? a[(n - 1) / 2] : (a[n / 2 - 1] + a[n / 2]) / 2) : 0
}
function autocorr(lag,    i, n, m, v, c) {  # of the 10 ms migration byte series
    n = bmax - bmin + 1
    if (n <= lag + 1) return 0
    m = 0; for (i = bmin; i <= bmax; i++) m += bucket[i] + 0
    m /= n
    v = 0; for (i = bmin; i <= bmax; i++) v += (bucket[i] - m) ^ 2
    if (v <= 0) return 0
    c = 0; for (i = bmin; i + lag <= bmax; i++) c += (bucket[i] - m) * (bucket[i + lag] - m)
    return c / v
}
END {
    # bursts = runs of non-empty 10 ms buckets separated by >= 1 empty bucket
    nb = 0; prev = -100; nbusy = 0
    for (b = bmin; b != "" && b <= bmax; b++) {
        if (bucket[b] > 0) {
            nbusy++
            if (b - prev > 1) { if (nb) blen[nb - 1] = (bend - bstart) * 1000; starts[nb++] = b; bstart = bfirst[b] }
            bend = blast[b]
            prev = b
        }
    }
    if (nb) blen[nb - 1] = (bend - bstart) * 1000
    ni = 0; sum = 0; sum2 = 0; near = 0
    for (i = 1; i < nb; i++) {
        d = (starts[i] - starts[i-1]) * 10; iv[ni++] = d; sum += d; sum2 += d * d
        if (d >= 90 && d <= 110) near++
    }
    mean = ni ? sum / ni : 0
    sd = ni ? sqrt(sum2 / ni - mean * mean) : 0
    med = median(iv, ni)
    # burst durations without the first and last burst (setup, switch-over)
    nl = 0; for (i = 1; i < nb - 1; i++) bl[nl++] = blen[i]
    bmed = median(bl, nl)
    bmax90 = nl ? bl[int(0.9 * (nl - 1))] : 0
    # link load: peak over 10 ms buckets and over sliding 100 ms windows
    pf10 = 0; pr10 = 0; pf100 = 0; pr100 = 0; sf = 0; sr = 0
    for (b = 0; b <= wbmax; b++) {
        if (wfwd[b] > pf10) pf10 = wfwd[b]
        if (wrev[b] > pr10) pr10 = wrev[b]
        sf += wfwd[b]; sr += wrev[b]
        if (b >= 10) { sf -= wfwd[b - 10]; sr -= wrev[b - 10] }
        if (b >= 9 && sf > pf100) pf100 = sf
        if (b >= 9 && sr > pr100) pr100 = sr
    }
    dur = tlast > tfirst ? tlast - tfirst : 0
    nflows = 0; for (f in flows) nflows++
    printf "mig_flow=%s\nmig_packets=%d\nmig_rev_packets=%d\nmig_data_packets=%d\nmig_full_frames=%d\n", mig, mpk, mrev, mdata, mfull
    printf "mig_payload_bytes=%d\nmig_first=%s\nmig_last=%s\nbg_packets=%d\ntcp_flows=%d\n", mbytes, mfirst, mlast, bgp, nflows
    printf "bg_bytes=%d\nbg_mbit_s=%.2f\n", bgbytes, (dur ? bgbytes * 8 / dur / 1e6 : 0)
    printf "bg_mbit_s_fwd=%.2f\nbg_mbit_s_rev=%.2f\n", (dur ? bgfwd * 8 / dur / 1e6 : 0), (dur ? bgrev * 8 / dur / 1e6 : 0)
    printf "wire_mbit_s_fwd=%.2f\nwire_mbit_s_rev=%.2f\n", (dur ? wfwd_tot * 8 / dur / 1e6 : 0), (dur ? wrev_tot * 8 / dur / 1e6 : 0)
    printf "wire_peak10_mbit_s_fwd=%.1f\nwire_peak10_mbit_s_rev=%.1f\n", pf10 * 8 / 0.01 / 1e6, pr10 * 8 / 0.01 / 1e6
    printf "wire_peak100_mbit_s_fwd=%.1f\nwire_peak100_mbit_s_rev=%.1f\n", pf100 * 8 / 0.1 / 1e6, pr100 * 8 / 0.1 / 1e6
    printf "bursts=%d\nburst_interval_median_ms=%.1f\nburst_interval_mean_ms=%.1f\nburst_interval_cv=%.3f\nburst_intervals_90_110_pct=%.1f\n", nb, med, mean, (mean ? sd / mean : 0), (ni ? 100 * near / ni : 0)
    printf "burst_duration_median_ms=%.1f\nburst_duration_p90_ms=%.1f\n", bmed, bmax90
    printf "busy_10ms_buckets_pct=%.1f\n", (bmax != "" && bmax >= bmin ? 100 * nbusy / (bmax - bmin + 1) : 0)
    printf "autocorr_100ms=%.3f\nautocorr_50ms=%.3f\n", autocorr(10), autocorr(5)
}
AWK
) >"$WORK/analysis.txt"

bg_json=$(bg_summary "$WORK")
"${PYTHON:-python3}" - "$report" "$WORK/analysis.txt" "$WORK/migrate.json" "$bg_json" "$WORK/migrate-final.json" <<EOF
import json, sys
report, analysis, migfile, bg, finalfile = sys.argv[1:6]
a = {}
for line in open(analysis):
    k, _, v = line.strip().partition("=")
    try:
        a[k] = int(v)
    except ValueError:
        try:
            a[k] = float(v)
        except ValueError:
            a[k] = v
m = {}
try:
    m = json.load(open(migfile))
except (OSError, ValueError):
    pass
q = m.get("query_migrate", {})
try:
    qf = json.load(open(finalfile))
    if qf.get("status") == "completed" and q.get("status") == "completed" and qf.get("total-time"):
        q = qf
except (OSError, ValueError, AttributeError):
    pass
ram = q.get("ram", {})
r = {
    "kind": "background-only" if $bg_only else "migration",
    "rate_mb_s": $rate,
    "rate_unit": "MiB/s" if "$unit" == "mib" else "MB/s",
    "max_bandwidth_bytes_per_s": $bw,
    "load": "$load",
    "ram_mib": $ram,
    "seed": $seed,
    "background_warmup_s": $warmup,
    "snaplen": $snaplen,
    "guest": "$guest",
    "guest_dirty_pct_of_rate": $dirty,
    "status": "$status",
    "total_time_ms": q.get("total-time"),
    "downtime_ms": q.get("downtime"),
    "setup_time_ms": q.get("setup-time"),
    "transferred_bytes": ram.get("transferred"),
    "normal_pages": ram.get("normal"),
    "normal_bytes": ram.get("normal-bytes"),
    "duplicate_pages": ram.get("duplicate"),
    "dirty_sync_count": ram.get("dirty-sync-count"),
    "migration_wall_start": m.get("wall_start"),
    "migration_wall_end": m.get("wall_end"),
    "migration_port": $port,
    "migration_flow": a.get("mig_flow") or None,
    "migration_packets": a.get("mig_packets"),
    "migration_ack_packets": a.get("mig_rev_packets"),
    "migration_data_packets": a.get("mig_data_packets"),
    "migration_full_size_frames": a.get("mig_full_frames"),
    "migration_payload_bytes": a.get("mig_payload_bytes"),
    "migration_first_data": a.get("mig_first") or None,
    "migration_last_data": a.get("mig_last") or None,
    "bursts": {
        "count": a.get("bursts"),
        "interval_median_ms": a.get("burst_interval_median_ms"),
        "interval_mean_ms": a.get("burst_interval_mean_ms"),
        "interval_cv": a.get("burst_interval_cv"),
        "intervals_within_90_110ms_pct": a.get("burst_intervals_90_110_pct"),
        "duration_median_ms": a.get("burst_duration_median_ms"),
        "duration_p90_ms": a.get("burst_duration_p90_ms"),
        "busy_10ms_buckets_pct": a.get("busy_10ms_buckets_pct"),
        "autocorr_100ms": a.get("autocorr_100ms"),
        "autocorr_50ms": a.get("autocorr_50ms"),
    },
    "destination_status_after": "$dst_state",
    "destination_guest_heartbeats": $dst_beats,
    "capture_start": $cap_start,
    "capture_end": $cap_end,
    "capture_packets": $cap_packets,
    "capture_bytes": $cap_bytes,
    "capture_kernel_drops": $drops,
    "background_packets": a.get("bg_packets"),
    "background_bytes": a.get("bg_bytes"),
    "background_mbit_s_avg": a.get("bg_mbit_s"),
    "background_mbit_s_src_to_dst": a.get("bg_mbit_s_fwd"),
    "background_mbit_s_dst_to_src": a.get("bg_mbit_s_rev"),
    "link_mbit": $link_mbit,
    "link": {
        "rate_mbit_s_per_direction": $link_mbit,
        "qdisc": "tbf on the egress of both veth ends" if $link_mbit else "none (unlimited veth)",
        "burst_bytes": $link_burst,
        "queue_limit_bytes": $link_limit,
        "buffer_ms": $link_buffer_ms if $link_mbit else None,
        "tcp_congestion_control": "$cc_used",
        "wire_mbit_s_src_to_dst": a.get("wire_mbit_s_fwd"),
        "wire_mbit_s_dst_to_src": a.get("wire_mbit_s_rev"),
        "wire_peak_mbit_s_10ms_src_to_dst": a.get("wire_peak10_mbit_s_fwd"),
        "wire_peak_mbit_s_10ms_dst_to_src": a.get("wire_peak10_mbit_s_rev"),
        "wire_peak_mbit_s_100ms_src_to_dst": a.get("wire_peak100_mbit_s_fwd"),
        "wire_peak_mbit_s_100ms_dst_to_src": a.get("wire_peak100_mbit_s_rev"),
        "qdisc_src_to_dst": dict(zip(("sent_bytes", "sent_packets", "dropped", "overlimits"), ($qs_bytes, $qs_pkts, $qs_drop, $qs_over))),
        "qdisc_dst_to_src": dict(zip(("sent_bytes", "sent_packets", "dropped", "overlimits"), ($qd_bytes, $qd_pkts, $qd_drop, $qd_over))),
    },
    "tcp_flows": a.get("tcp_flows"),
    "background": json.loads(bg),
    "topology": {"src": "$SRC_IP", "dst": "$DST_IP", "capture_on": "src veth (egress after the qdisc)",
                 "link": "veth, MTU 1500, offloads off" + (", tbf $link_mbit Mbit/s per direction" if $link_mbit else ", unlimited")},
}
if r["migration_flow"]:
    r["migration_5tuple"] = {"proto": "tcp", "src": r["migration_flow"].split(">")[0], "dst": r["migration_flow"].split(">")[1]}
with open(report, "w") as f:
    json.dump(r, f, indent=2, sort_keys=True)
    f.write("\n")
EOF

# shellcheck disable=SC1090
source <(sed 's/^\([a-z_0-9]*\)=\(.*\)$/A_\1="\2"/' "$WORK/analysis.txt")
if ((bg_only)); then
    printf 'background-only load=%s link=%sMbit/s seconds=%s packets=%s size=%s bytes flows=%s bg=%sMbit/s (%s/%s) drops=%s qdrops=%s/%s -> %s\n' \
        "$load" "$link_mbit" "$bg_only" "$cap_packets" "$cap_bytes" "${A_tcp_flows:-0}" "${A_bg_mbit_s:-0}" \
        "${A_bg_mbit_s_fwd:-0}" "${A_bg_mbit_s_rev:-0}" "$drops" "$qs_drop" "$qd_drop" "$out"
    exit 0
fi
tt=$(grep -o '"total_time_ms": [0-9]*' "$report" | grep -o '[0-9]*$' || echo '?')
dt=$(grep -o '"downtime_ms": [0-9]*' "$report" | grep -o '[0-9]*$' || echo '?')
printf 'rate=%s%s/s load=%s link=%sMbit/s ram=%sMiB status=%s total_time=%sms downtime=%sms packets=%s (migration %s, full-size %s) size=%s bytes bg=%sMbit/s bursts=%s median=%sms burst_len=%sms ac100=%s drops=%s qdrops=%s/%s -> %s\n' \
    "$rate" "$([[ $unit == mib ]] && echo MiB || echo MB)" "$load" "$link_mbit" "$ram" "$status" "$tt" "$dt" \
    "$cap_packets" "${A_mig_packets:-0}" "${A_mig_full_frames:-0}" "$cap_bytes" "${A_bg_mbit_s:-0}" "${A_bursts:-0}" \
    "${A_burst_interval_median_ms:-0}" "${A_burst_duration_median_ms:-0}" "${A_autocorr_100ms:-0}" "$drops" "$qs_drop" "$qd_drop" "$out"
[[ $status == completed ]]
