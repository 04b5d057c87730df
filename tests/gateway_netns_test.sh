#!/usr/bin/env bash
# End-to-end test of the gateway with real kernel TCP:
#   tests/gateway_netns_test.sh BUILD_DIR
#
# Three network namespaces (names end in this script's PID):
#
#   INSIDE 192.0.2.1/24 --veth-- [GW: shroud-dataplane, net_af_packet on
#   both gateway-side veth ends] --veth-- OUTSIDE 192.0.2.2/24
#
# The gateway is a transparent bump in the wire: one subnet, no routing, ARP
# passes through it like any other frame. Offloads are off on both ends of
# every veth (kernel TCP through af_packet otherwise carries partial
# checksums). iperf3 runs INSIDE -> OUTSIDE, i.e. through the shaped
# direction, once to a migration port (49152, shaped to [0.25, 8] MB/s by
# conf/gateway.example.toml) and once to 5201 (unshaped).
#
# Needs root, ip (netns, veth), iperf3, ethtool, jq, timeout; exits 77
# ("skipped: ...") without them. Exit 0 all checks passed, 1 any failed.
# SHROUD_GW_TEST_KEEP_LOGS=1 keeps the work directory (logs, JSON).
set -euo pipefail
export LC_ALL=C  # the readiness probe matches bash's "Connection refused"

build=${1:?usage: gateway_netns_test.sh BUILD_DIR}
root=${SHROUD_SOURCE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
dp=$build/shroud-dataplane
config=$root/conf/gateway.example.toml

# Example config's shaping bounds (minR, maxR), MB/s = 10^6 bytes/s.
MIN_R=0.25 MAX_R=8  # rate_variation bounds of conf/gateway.example.toml
SEED=42
MIG_PORT=49152   # libvirt migration port: shaped
PLAIN_PORT=5201  # iperf3's default: not a migration port, unshaped
IPERF_T=8

skip() { echo "skipped: $1"; exit 77; }

# --- prerequisites (skip, never pass silently) ---
[[ $(id -u) -eq 0 ]] || skip "needs root (network namespaces, veth)"
for t in ip iperf3 ethtool jq timeout awk ss; do
    command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"
done
[[ -x $dp ]] || { echo "FAIL - $dp not found or not executable (build first)"; echo "0 passed, 1 failed"; exit 1; }
[[ -r $config ]] || { echo "FAIL - $config not readable"; echo "0 passed, 1 failed"; exit 1; }

# shellcheck source-path=SCRIPTDIR/.. source=scripts/lib/netns.sh
source "$root/scripts/lib/netns.sh"
# shellcheck disable=SC2034  # read by ns_name / ns_clean_stale in netns.sh
SHROUD_NS_PREFIX="shroud-gwt-"  # ns_name/ns_clean_stale: our own prefix

NS_IN=$(ns_name in)
NS_GW=$(ns_name gw)
NS_OUT=$(ns_name out)
IN_H="gti$$h" IN_G="gti$$g"    # INSIDE host end, gateway end
OUT_G="gto$$g" OUT_H="gto$$h"  # gateway end, OUTSIDE host end
IP_IN=192.0.2.1 IP_OUT=192.0.2.2
check_testnet "$IP_IN" "$IP_OUT"

WORK="" DP_PID="" SRV_PID="" PROBE_NS=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [[ -n $SRV_PID ]] && kill_wait "$SRV_PID" TERM 2
    [[ -n $DP_PID ]] && kill_wait "$DP_PID" TERM 5
    for ns in "$NS_IN" "$NS_GW" "$NS_OUT" $PROBE_NS; do ns_kill_and_delete "$ns"; done
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${SHROUD_GW_TEST_KEEP_LOGS:-0} == 1 ]]; then echo "# kept $WORK"; else rm -rf "$WORK"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "# interrupted"; exit 130' INT
trap 'echo "# terminated"; exit 143' TERM

# Can we create a namespace, a veth pair in it, and switch its offloads off?
PROBE_NS=$(ns_name probe)
ip netns add "$PROBE_NS" 2>/dev/null || { PROBE_NS=""; skip "ip netns add failed (no network namespace support?)"; }
ip -n "$PROBE_NS" link add pa type veth peer name pb 2>/dev/null || skip "cannot create a veth pair (no veth support?)"
ip netns exec "$PROBE_NS" ethtool -K pa tx off rx off tso off gso off gro off >/dev/null 2>&1 ||
    skip "ethtool -K cannot switch veth offloads off"
ns_kill_and_delete "$PROBE_NS"
PROBE_NS=""

source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
finish() {
    echo "$passed passed, $failed failed"
    ((failed == 0)) || exit 1
    exit 0
}
dp_log() { [[ -f $WORK/dataplane.log ]] && tail -n 25 "$WORK/dataplane.log"; }

ns_clean_stale
WORK=$(mktemp -d /tmp/shroud-gwt.XXXXXX)

# --- topology ---
for ns in "$NS_IN" "$NS_GW" "$NS_OUT"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # No IPv6 chatter (router solicitations, DAD) on the test links.
    ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null
    # Keep ephemeral ports out of the migration range (49152-49215), so only
    # the connections to $MIG_PORT are migration flows.
    ip netns exec "$ns" sysctl -q -w net.ipv4.ip_local_port_range="32768 40000" >/dev/null
done
ip link add "$IN_H" netns "$NS_IN" type veth peer name "$IN_G" netns "$NS_GW"
ip link add "$OUT_G" netns "$NS_GW" type veth peer name "$OUT_H" netns "$NS_OUT"
for pair in "$NS_IN:$IN_H" "$NS_GW:$IN_G" "$NS_GW:$OUT_G" "$NS_OUT:$OUT_H"; do
    ns=${pair%%:*} ifc=${pair#*:}
    ip -n "$ns" link set "$ifc" mtu 1500 up
    veth_offloads_off "$ns" "$ifc"
done
ip -n "$NS_IN" addr add "$IP_IN/24" dev "$IN_H"
ip -n "$NS_OUT" addr add "$IP_OUT/24" dev "$OUT_H"
echo "# namespaces $NS_IN ($IP_IN) | $NS_GW | $NS_OUT ($IP_OUT), work dir $WORK"
# SHROUD_GW_TEST_CC=reno|bbr|...: TCP congestion control of both hosts
# (default: inherit the host's; namespaces start with the host default).
if [[ -n ${SHROUD_GW_TEST_CC:-} ]]; then
    wan_set_cc "$NS_IN" "$SHROUD_GW_TEST_CC"
    wan_set_cc "$NS_OUT" "$SHROUD_GW_TEST_CC"
fi
echo "# tcp congestion control: $(ip netns exec "$NS_IN" sysctl -n net.ipv4.tcp_congestion_control)"

# --- the gateway ---
COUNTERS=$WORK/counters.json
ip netns exec "$NS_GW" "$dp" --no-huge -m 512 --no-shconf --no-pci -l 0-1 \
    --file-prefix="shroud-gwt-$$" \
    --vdev="net_af_packet0,iface=$IN_G" --vdev="net_af_packet1,iface=$OUT_G" \
    -- --mode=gateway --config="$config" --seed="$SEED" \
    --counters_json="$COUNTERS" --stats_interval_s=0 \
    >"$WORK/dataplane.log" 2>&1 &
DP_PID=$!

# Wait until it forwards: a TCP connect INSIDE -> OUTSIDE to a closed port is
# answered by a RST ("Connection refused") only if ARP and TCP both cross the
# gateway in both directions (no ping on this system; this also tests TCP).
ready=0
for ((i = 0; i < 40; i++)); do
    if ! kill -0 "$DP_PID" 2>/dev/null; then break; fi
    out=$(ip netns exec "$NS_IN" timeout 1 bash -c "exec 3<>/dev/tcp/$IP_OUT/9" 2>&1 || true)
    if grep -q "refused" <<<"$out"; then ready=1; break; fi
    sleep 0.25
done
if ((ready)); then
    ok "gateway forwards ARP and TCP between $NS_IN and $NS_OUT (probe $((i + 1)) answered)"
else
    if kill -0 "$DP_PID" 2>/dev/null; then
        bad "gateway does not forward within 10 s (TCP probe $IP_IN -> $IP_OUT:9 got no RST)" "$(dp_log)"
    else
        rc=0; wait "$DP_PID" || rc=$?; DP_PID=""
        bad "shroud-dataplane exited during start-up (exit $rc)" "$(dp_log)"
    fi
    finish
fi

# run_iperf PORT NAME : iperf3 server in OUTSIDE on PORT (one test), client in
# INSIDE sending for $IPERF_T s; client JSON (with the server's) in $WORK/NAME.json.
run_iperf() {
    local port=$1 name=$2 i rc=0
    ip netns exec "$NS_OUT" timeout 40 iperf3 -s -1 -J -p "$port" -B "$IP_OUT" \
        >"$WORK/$name-server.log" 2>&1 &
    SRV_PID=$!
    for ((i = 0; i < 40; i++)); do
        ip netns exec "$NS_OUT" ss -Htln "sport = :$port" | grep -q . && break
        sleep 0.1
    done
    ip netns exec "$NS_IN" timeout $((IPERF_T + 20)) iperf3 -c "$IP_OUT" -p "$port" -B "$IP_IN" \
        -t "$IPERF_T" -J --get-server-output >"$WORK/$name.json" 2>"$WORK/$name-client.err" || rc=$?
    kill_wait "$SRV_PID" TERM 3
    SRV_PID=""
    return "$rc"
}

# iperf_ok NAME : the client's JSON has no error and the server's intervals.
iperf_ok() {
    jq -e '(.error == null) and ((.server_output_json.intervals // []) | length > 0)' \
        "$WORK/$1.json" >/dev/null 2>&1
}

# rates NAME : the receiver's (server's) per-interval rates in MB/s, one per
# line: "index seconds MBps". The receiver counts bytes that crossed the
# gateway; the sender's intervals count bytes written into its socket buffer
# (several MB in the first second), not what went on the wire.
rates() {
    jq -r '.server_output_json.intervals // [] | to_entries[]
           | "\(.key) \(.value.sum.seconds) \(.value.sum.bytes / .value.sum.seconds / 1e6)"' \
        "$WORK/$1.json"
}

# show_rates < rates: "3.11 3.52 ... 5.43(0.04s)" (short intervals marked)
show_rates() { awk '{ printf "%.2f%s ", $3, ($2 < 0.5 ? sprintf("(%.2fs)", $2) : "") }'; }

# --- a. migration port: shaped into [minR, maxR] ---
if run_iperf "$MIG_PORT" shaped && iperf_ok shaped; then
    ok "iperf3 to migration port $MIG_PORT completed"
    rates shaped >"$WORK/shaped.rates"
    # Intervals shorter than 0.5 s (iperf3's trailing sliver) carry too few
    # bytes to be a rate. The first interval is checked like the others (no
    # iperf3 -O): the receiver sees only what the shaper let through, so slow
    # start can only make it lower, and with an empty queue the RTT is well
    # under 1 ms, so the window reaches 8 MB/s x RTT within a few ms.
    # Tolerance: 5 % above maxR (token bucket burst, receiver read timing
    # moving a few packets across an interval boundary); 10 % below minR
    # (TCP recovering from a tail drop when the rate falls, e.g. 8 -> 1 MB/s,
    # with up to 100 ms queued).
    verdict=$(awk -v lo="$MIN_R" -v hi="$MAX_R" '
        $2 >= 0.5 { n++; b = $3; if (n == 1 || b < mn) mn = b; if (n == 1 || b > mx) mx = b
                    if (b < lo * 0.90 || b > hi * 1.05) out = out sprintf(" #%d=%.2f", $1, b) }
        END { printf "%d %.3f %.3f%s\n", n, mn, mx, (out == "" ? "" : " OUT:" out) }' "$WORK/shaped.rates")
    read -r n_int r_min r_max _ <<<"$verdict"
    echo "# shaped per-interval MB/s (receiver): $(show_rates <"$WORK/shaped.rates")"
    if ((n_int >= IPERF_T - 1)) && [[ $verdict != *OUT:* ]]; then
        ok "shaped per-interval rates within [$MIN_R, $MAX_R] MB/s (-10 %/+5 %): $n_int intervals, min $r_min, max $r_max MB/s"
    else
        bad "shaped per-interval rates outside [$MIN_R, $MAX_R] MB/s or too few intervals: $verdict" "$(cat "$WORK/shaped.rates")"
    fi
    # Average over the receiver's whole test (all intervals, bytes / seconds).
    shaped_avg=$(jq -r '[.server_output_json.intervals[].sum] | (map(.bytes) | add) / (map(.seconds) | add) / 1e6' "$WORK/shaped.json")
    shaped_bytes=$(jq -r '[.server_output_json.intervals[].sum.bytes] | add' "$WORK/shaped.json")
    if awk -v a="$shaped_avg" -v lo="$MIN_R" -v hi="$MAX_R" 'BEGIN { exit !(a >= lo && a <= hi) }'; then
        ok "shaped average $(printf %.2f "$shaped_avg") MB/s within [$MIN_R, $MAX_R] MB/s"
    else
        bad "shaped average $shaped_avg MB/s outside [$MIN_R, $MAX_R] MB/s"
    fi
else
    bad "iperf3 to migration port $MIG_PORT did not complete" \
        "$(jq -r '.error // empty' "$WORK/shaped.json" 2>/dev/null; cat "$WORK/shaped-client.err" "$WORK/shaped-server.log"; dp_log)"
    shaped_avg="" shaped_bytes=0
fi

# --- b. non-migration port: not shaped ---
if run_iperf "$PLAIN_PORT" plain && iperf_ok plain; then
    ok "iperf3 to non-migration port $PLAIN_PORT completed"
    plain_avg=$(jq -r '[.server_output_json.intervals[].sum] | (map(.bytes) | add) / (map(.seconds) | add) / 1e6' "$WORK/plain.json")
    plain_bytes=$(jq -r '[.server_output_json.intervals[].sum.bytes] | add' "$WORK/plain.json")
    echo "# unshaped per-interval MB/s (receiver): $(rates plain | show_rates)"
    # "Clearly faster": at least twice maxR. The veth + af_packet path ran
    # kernel TCP at ~240 MB/s through testpmd; on 2 shared cores with the
    # worker polling one, expect tens of MB/s at least.
    if awk -v a="$plain_avg" -v hi="$MAX_R" 'BEGIN { exit !(a >= 2 * hi) }'; then
        ok "unshaped average $(printf %.2f "$plain_avg") MB/s > 2 x maxR ($((2 * MAX_R)) MB/s): shaping is selective"
    else
        bad "unshaped average $plain_avg MB/s is not above 2 x maxR ($((2 * MAX_R)) MB/s)"
    fi
else
    bad "iperf3 to non-migration port $PLAIN_PORT did not complete" \
        "$(jq -r '.error // empty' "$WORK/plain.json" 2>/dev/null; cat "$WORK/plain-client.err" "$WORK/plain-server.log"; dp_log)"
    plain_bytes=0
fi

# --- c. clean stop and counters ---
if ! kill -0 "$DP_PID" 2>/dev/null; then
    bad "shroud-dataplane died before the SIGTERM (during the transfers)" "$(dp_log)"
fi
kill -TERM "$DP_PID" 2>/dev/null || true
dp_rc=""
for ((i = 0; i < 50; i++)); do
    kill -0 "$DP_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$DP_PID" 2>/dev/null; then
    bad "shroud-dataplane still running 5 s after SIGTERM" "$(dp_log)"
    kill_wait "$DP_PID" KILL 2
else
    dp_rc=0; wait "$DP_PID" || dp_rc=$?
    if [[ $dp_rc == 0 ]]; then
        ok "shroud-dataplane exited 0 within $(awk -v i="$i" 'BEGIN{printf "%.1f", i / 10}') s of SIGTERM"
    else
        bad "shroud-dataplane exited $dp_rc after SIGTERM" "$(dp_log)"
    fi
fi
DP_PID=""

if [[ -s $COUNTERS ]] && jq -e . "$COUNTERS" >/dev/null 2>&1; then
    read -r m_pkts m_bytes m_drop rv_min rv_max rv_steps d_bytes i2o_txdrop o2i_txdrop < <(jq -r '[
        .shaper.migration.sent_packets, .shaper.migration.sent_bytes,
        .shaper.migration.dropped_packets,
        .rate_variation.min_applied_bytes_per_sec, .rate_variation.max_applied_bytes_per_sec,
        .rate_variation.steps, .shaper.default.bytes,
        .inside_to_outside.tx_dropped, .outside_to_inside.tx_dropped] | map(tostring) | join(" ")' "$COUNTERS")
    echo "# counters: migration sent $m_pkts pkts / $m_bytes B, dropped $m_drop; default $d_bytes B;" \
        "rate_variation steps $rv_steps, applied [$rv_min, $rv_max] B/s; tx_dropped i2o $i2o_txdrop o2i $o2i_txdrop"
    # Every payload byte the migration-port receiver got went through the
    # migration shaper (the counters add headers, so >=).
    if [[ $m_pkts =~ ^[0-9]+$ ]] && ((m_pkts > 0 && m_bytes >= shaped_bytes)); then
        ok "counters: migration class sent $m_pkts packets, $m_bytes bytes (>= $shaped_bytes received by iperf3)"
    else
        bad "counters: migration sent_packets=$m_pkts sent_bytes=$m_bytes (iperf3 received $shaped_bytes)" "$(jq .shaper "$COUNTERS")"
    fi
    if awk -v a="$rv_min" -v b="$rv_max" -v lo="$MIN_R" -v hi="$MAX_R" \
        'BEGIN { exit !(a + 0 >= lo * 1e6 && b + 0 <= hi * 1e6 && a + 0 <= b + 0 && b + 0 > 0) }'; then
        ok "counters: applied rates [$rv_min, $rv_max] B/s within [${MIN_R}e6, ${MAX_R}e6] ($rv_steps steps)"
    else
        bad "counters: applied rates [$rv_min, $rv_max] B/s not within [${MIN_R}e6, ${MAX_R}e6]" "$(jq .rate_variation "$COUNTERS")"
    fi
    if [[ $d_bytes =~ ^[0-9]+$ ]] && ((d_bytes >= plain_bytes && plain_bytes > 0)); then
        ok "counters: default class forwarded $d_bytes bytes (>= $plain_bytes received by iperf3 on $PLAIN_PORT)"
    else
        bad "counters: default class bytes $d_bytes < $plain_bytes received on port $PLAIN_PORT" "$(jq .shaper "$COUNTERS")"
    fi
else
    bad "no counters JSON at $COUNTERS" "$(dp_log)"
fi

finish
