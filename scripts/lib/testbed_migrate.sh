# shellcheck shell=bash
# `scripts/testbed migrate` and `scripts/testbed background` (sourced by
# scripts/testbed; needs its STATE, ns_of, node_exec, st, log, die,
# need_value).
#
# migrate: one real QEMU (TCG) live migration src (192.0.2.10) -> dst
#   (198.51.100.10:PORT) across gwa, the WAN emulator and gwb, with the tiny
#   guest of scripts/guest dirtying RAM (scripts/lib/guest.sh) and QMP driven
#   by scripts/qmp.py, as scripts/record-migration.sh does between two plain
#   namespaces. PORT is in 49152-49215, so the stealth gateways' rules class
#   the flow as migration. Prints QEMU's query-migrate (total time, downtime)
#   and then the tap's verdict on the flow (shroud-control's /api/flows).
#   --ping: the guest also answers ARP and ICMP echo on an RTL8139 NIC at
#   203.0.113.10 on a VM network of its own (tap vm0 on a bridge in src and
#   in dst, both bridged in namespace vmn, which is the prober at
#   203.0.113.1), and `shroud rttmon` pings it every 10 ms from vmn for the
#   whole migration: downtime as the stealth-migration paper measures it,
#   lost probes x interval, beside QEMU's own figure. The VM network is an L2
#   segment stretched over both sites (as a VLAN or VXLAN would be), not the
#   WAN: the pings never cross the gateways or the tap, so the capture is the
#   same with or without them. After the switch-over the destination QEMU's
#   self-announce (RARP) moves the guest's MAC in the bridges.
# background: the Markov users of scripts/lib/background.sh between bga
#   (192.0.2.11) and bgb (198.51.100.11), for --duration seconds.

SHROUD_SCRIPTS=$ROOT/scripts
SHROUD_LIB=$ROOT/scripts/lib
export SHROUD_SCRIPTS SHROUD_LIB
# shellcheck source=scripts/lib/guest.sh
source "$SHROUD_LIB/guest.sh"       # guest_build, guest_ram_file, guest_wait_ready
# shellcheck source=scripts/lib/background.sh
source "$SHROUD_LIB/background.sh"  # bg_start, bg_stop, bg_summary

TB_SRC_IP=192.0.2.10
TB_DST_IP=198.51.100.10
TB_BGA_IP=192.0.2.11
TB_BGB_IP=198.51.100.11

# Seconds left before the testbed's own bound (--max-s) removes everything.
tb_seconds_left() {
    local dl
    dl=$(st deadline)
    [[ $dl =~ ^[0-9]+$ ]] || { echo 0; return; }
    echo $((dl - $(date +%s)))
}

tb_need_up() {
    [[ -f $STATE/namespaces ]] || die "no testbed is up at $STATE (scripts/testbed up first)"
    local nd
    for nd in gwa gwb tap wan; do
        kill -0 "$(st "pids/$nd")" 2>/dev/null || die "testbed process $nd is not running (scripts/testbed status)"
    done
}

# --- migrate --------------------------------------------------------------
TB_MIG_WORK="" TB_QEMU_SRC="" TB_QEMU_DST="" TB_MIG_PID="" TB_BG_OUT="" TB_RTTMON_PID="" TB_VMNET=0
TB_GUEST_IP=203.0.113.10
TB_PROBER_IP=203.0.113.1
TB_GUEST_MAC=52:54:00:cb:00:0a
tb_migrate_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [[ -n $TB_MIG_PID ]] && kill_wait "$TB_MIG_PID" TERM 3
    [[ -n $TB_RTTMON_PID ]] && kill_wait "$TB_RTTMON_PID" TERM 3
    [[ -n $TB_QEMU_SRC ]] && kill_wait "$TB_QEMU_SRC" TERM 5
    [[ -n $TB_QEMU_DST ]] && kill_wait "$TB_QEMU_DST" TERM 5
    ((TB_VMNET)) && tb_vmnet_down
    tb_drain_restore
    tb_walk_mean_restore
    if [[ -n $TB_MIG_WORK && -d $TB_MIG_WORK ]]; then
        rm -f "$TB_MIG_WORK/ram.bin"  # large; the logs and JSON stay until `down`
    fi
    exit "$rc"
}

# --switchover-drain: gateway A's settings that the pre-switchover hook
# changes, and the ctl commands that change and restore them. Once the guest
# is paused every byte still queued is downtime, and Algorithm 3's walk may
# sit near minR then (0.1 MB/s: a 128 KiB socket buffer takes 1.3 s).
TB_DRAIN_SET=() TB_DRAIN_RESTORE=() TB_DRAIN_RESTORED=null

# Gateway A's ctl command (array TB_GWA_CTL) and its Algorithm 3 settings,
# read once per caller: TB_GWA_START, TB_GWA_MIN, TB_GWA_MAX (MB/s). Fails,
# logging why under OPTION, unless the walk is on (a --stealth testbed).
tb_gwa_walk() {
    local shroud=$1 option=$2 got enabled
    TB_GWA_CTL=("$shroud" ctl --runtime_dir="$STATE/run/gwa" --instance=gwa)
    [[ -x $shroud ]] || { log "migrate $option: no $shroud (shroud ctl)"; return 1; }
    got=$("${TB_GWA_CTL[@]}" get 2>&1) || { log "migrate $option: shroud ctl get on gateway A failed: $got"; return 1; }
    enabled=$(sed -n 's/^rate_variation\.enabled=//p' <<<"$got")
    TB_GWA_START=$(sed -n 's/^rate_variation\.start_rate_mbyte_s=//p' <<<"$got")
    TB_GWA_MIN=$(sed -n 's/^rate_variation\.min_rate_mbyte_s=//p' <<<"$got")
    TB_GWA_MAX=$(sed -n 's/^rate_variation\.max_rate_mbyte_s=//p' <<<"$got")
    [[ -n $TB_GWA_START && -n $TB_GWA_MIN && -n $TB_GWA_MAX ]] ||
        { log "migrate $option: gateway A's ctl get lacks rate_variation.*: $got"; return 1; }
    if [[ $enabled != true ]]; then
        log "migrate $option: gateway A does not vary the migration's rate (rate_variation.enabled=$enabled; bring the testbed up with --stealth)"
        return 1
    fi
}

tb_drain_prepare() {
    tb_gwa_walk "$1" --switchover-drain || return 1
    local ctl=("${TB_GWA_CTL[@]}") start=$TB_GWA_START max=$TB_GWA_MAX
    # qmp.py sends the set itself (--switchover-ctl): on a busy 2-core testbed
    # starting `shroud ctl` in the pause took 0.04-2 s (load average ~19 under
    # heavy load; session 15), and QEMU goes on after --switchover-hook-wait,
    # so the last state leaves at the walk's rate until the gateway hears.
    local sock=$STATE/run/gwa/gwa/ctl.sock
    [[ -S $sock ]] || { log "migrate --switchover-drain: no control socket $sock"; return 1; }
    # With --walk-mean maxR is scaled down for this migration; the paused
    # guest's last state goes at the config's maxR (the WAN's), not at it.
    local drain_max=$max back=()
    if [[ -n $TB_WALK_CONFIG_MAX ]]; then
        drain_max=$TB_WALK_CONFIG_MAX
        back=("rate_variation.max_rate_mbyte_s=$max")
    fi
    TB_DRAIN_SET=(--switchover-ctl "$sock" --switchover-set rate_variation.enabled=false
        --switchover-set "rate_variation.max_rate_mbyte_s=$drain_max"
        --switchover-set "rate_variation.start_rate_mbyte_s=$drain_max")
    TB_DRAIN_RESTORE=("${ctl[@]}" set rate_variation.enabled=true "${back[@]}" "rate_variation.start_rate_mbyte_s=$start")
    log "migrate: switchover drain armed: gateway A runs the migration at maxR $drain_max MB/s from QEMU's pre-switchover pause until the destination runs (then Algorithm 3 again, start rate $start MB/s${back:+, maxR $max MB/s})"
}

# Restores gateway A's walk (idempotent; also from the EXIT trap).
tb_drain_restore() {
    ((${#TB_DRAIN_RESTORE[@]})) || return 0
    local out
    if out=$("${TB_DRAIN_RESTORE[@]}" 2>&1); then
        TB_DRAIN_RESTORED=true
    else
        TB_DRAIN_RESTORED=false
        log "migrate --switchover-drain: restoring gateway A's walk failed (it stays at maxR; shroud ctl set rate_variation.enabled=true by hand): $out"
    fi
    TB_DRAIN_RESTORE=()
}

# --walk-mean (--stealth): gateway A's maxR scaled for this migration so
# that Algorithm 3's walk averages the migration's nominal rate (--rate-mib),
# capped at the config's maxR (the WAN's rate). The walk's shape (its CoV per
# step, per 100 ms, per second) does not depend on maxR, only its scale; its
# mean is ~0.36-0.39 maxR (`shroud ratewalk`), so with QEMU's max-bandwidth
# lifted (--qemu-bandwidth-mib at the WAN's rate) a stealth migration can
# average what a native one at --rate-mib does instead of the walk's mean at
# the WAN's maxR, whatever the nominal rate: below ~4 MiB/s it went faster
# than native (session 14), above it slower. Above ~4.4 MiB/s on a 100 Mbit/s
# WAN the cap binds and nothing changes.
# TB_WALK_CONFIG_MAX: the maxR restored afterwards, set only while a scaled
# one is in force (the drain goes at it).
TB_WALK_RESTORE=() TB_WALK_JSON=null TB_WALK_CONFIG_MAX=""
tb_walk_mean_prepare() {
    local shroud=$1 rate=$2 got conf
    tb_gwa_walk "$shroud" --walk-mean || return 1
    local ctl=("${TB_GWA_CTL[@]}") start=$TB_GWA_START min=$TB_GWA_MIN max=$TB_GWA_MAX
    conf=$STATE/conf/gateway-pair-a.toml
    [[ -f $conf ]] || { log "migrate --walk-mean: no $conf"; return 1; }
    # `shroud ratewalk --target_mean_mib_s` finds the maxR at which this
    # config's walk averages the rate (capped at the config's maxR).
    local target m frac capped walk
    walk=$("$shroud" ratewalk "$conf" --json --walk_seconds=300 --offered_mib_s=1 --target_mean_mib_s="$rate" 2>"$STATE/walk-mean.err") ||
        { log "migrate --walk-mean: shroud ratewalk --target_mean_mib_s=$rate on $conf failed: $(head -c 500 "$STATE/walk-mean.err")"; return 1; }
    read -r target m capped frac < <(jq -r '.target_mean // empty
        | [.mbyte_s, (.max_rate_mbyte_s * 10000 | round / 10000), .capped, .mean_rate_mbyte_s / .max_rate_mbyte_s]
        | @tsv' <<<"$walk") || true
    [[ -n $m ]] || { log "migrate --walk-mean: no target_mean in shroud ratewalk's answer: $walk"; return 1; }
    # The running gateway's maxR caps it too (a ctl set may have lowered it).
    if awk -v m="$m" -v x="$max" 'BEGIN { exit !(m >= x) }'; then m=$max capped=true; fi
    local new_start
    # As the search ran the walk: the start rate halved below maxR, not below minR.
    new_start=$(awk -v s="$start" -v m="$m" -v lo="$min" 'BEGIN { r = (s < m ? s : m / 2); if (r < lo) r = lo; printf "%.4f", r }')
    TB_WALK_JSON=$(jq -nc --argjson target "$target" --argjson max "$m" --argjson frac "$frac" --argjson cap "$max" \
        --argjson capped "$capped" \
        '{target_mbyte_s: $target, max_rate_mbyte_s: $max, mean_over_max: $frac, config_max_rate_mbyte_s: $cap,
          capped: $capped}')
    if [[ $capped == true ]]; then
        log "migrate: walk mean: maxR stays $max MB/s (the walk's mean there, $(awk -v f="$frac" -v x="$max" 'BEGIN { printf "%.2f", f * x }') MB/s, is below the rate's $target MB/s)"
        return 0
    fi
    got=$("${ctl[@]}" set "rate_variation.max_rate_mbyte_s=$m" "rate_variation.start_rate_mbyte_s=$new_start" 2>&1) ||
        { log "migrate --walk-mean: shroud ctl set on gateway A refused: $got"; return 1; }
    TB_WALK_RESTORE=("${ctl[@]}" set "rate_variation.max_rate_mbyte_s=$max" "rate_variation.start_rate_mbyte_s=$start")
    TB_WALK_CONFIG_MAX=$max
    log "migrate: walk mean: gateway A's maxR $m MB/s (mean/maxR $frac: the walk averages the rate's $target MB/s) for this migration, then $max again"
}

# Restores gateway A's maxR (idempotent; also from the EXIT trap).
tb_walk_mean_restore() {
    ((${#TB_WALK_RESTORE[@]})) || return 0
    local out
    out=$("${TB_WALK_RESTORE[@]}" 2>&1) ||
        log "migrate --walk-mean: restoring gateway A's maxR failed (set it by hand: ${TB_WALK_RESTORE[*]:1}): $out"
    TB_WALK_RESTORE=()
}

# The guest's own network for --ping: tap vm0 + bridge vmbr in src and in
# dst, a veth from each to bridge br0 in namespace vmn (the prober). Listed in
# $STATE/namespaces, so `down` removes it even if migrate was killed.
tb_vmnet_up() {
    local vmn side
    vmn=$(ns_of vmn)
    check_testnet "$TB_GUEST_IP" "$TB_PROBER_IP"
    tb_vmnet_down  # what a killed migrate may have left
    ip netns add "$vmn" || die "migrate --ping: cannot create namespace $vmn"
    echo "$vmn" >>"$STATE/namespaces"
    TB_VMNET=1
    ip -n "$vmn" link set lo up
    ip netns exec "$vmn" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null
    ip -n "$vmn" link add br0 type bridge stp_state 0 forward_delay 0
    for side in src dst; do
        local s
        s=$(ns_of "$side")
        ip -n "$s" tuntap add dev vm0 mode tap || die "migrate --ping: cannot create tap vm0 in $side"
        ip -n "$s" link add vmbr type bridge stp_state 0 forward_delay 0
        ip link add "v-$side" netns "$s" type veth peer name "$side" netns "$vmn"
        ip -n "$s" link set vm0 master vmbr
        ip -n "$s" link set "v-$side" master vmbr
        ip -n "$vmn" link set "$side" master br0
        ip -n "$s" link set vm0 up
        ip -n "$s" link set "v-$side" up
        ip -n "$s" link set vmbr up
        ip -n "$vmn" link set "$side" up
    done
    ip -n "$vmn" link set br0 up
    ip -n "$vmn" addr add "$TB_PROBER_IP/24" dev br0
    # No ARP on the probe path: a lost ARP exchange around the switch-over
    # would wait for ARP's 1 s retry and count as downtime.
    ip -n "$vmn" neigh replace "$TB_GUEST_IP" lladdr "$TB_GUEST_MAC" dev br0 nud permanent
}

tb_vmnet_down() {
    local vmn side
    vmn=$(ns_of vmn)
    for side in src dst; do  # each may be gone already
        ip -n "$(ns_of "$side")" link del "v-$side" 2>/dev/null || true
        ip -n "$(ns_of "$side")" link del vmbr 2>/dev/null || true
        ip -n "$(ns_of "$side")" link del vm0 2>/dev/null || true
    done
    ns_kill_and_delete "$vmn" 2>/dev/null || true
    sed -i "\|^$vmn\$|d" "$STATE/namespaces" 2>/dev/null || true
    TB_VMNET=0
}

# tb_rttmon_probe SHROUD : one second of 20 ms probes to the guest from the
# prober, rttmon's JSON lines on stdout.
tb_rttmon_probe() {
    ip netns exec "$(ns_of vmn)" timeout 10 "$1" rttmon --json --duration=1 --interval=20ms "$TB_GUEST_IP" </dev/null
}

# tb_rttmon_wait_answer SHROUD : the guest answers pings (up to 20 s; a
# freshly started TCG guest can miss its first second of probes).
tb_rttmon_wait_answer() {
    local shroud=$1 i got
    for ((i = 0; i < 10; i++)); do
        got=$(tb_rttmon_probe "$shroud" 2>/dev/null | jq -r 'select(.summary == true) | .received' 2>/dev/null || true)
        [[ $got =~ ^[0-9]+$ ]] && ((got >= 40)) && return 0
        sleep 1
    done
    return 1
}

# tb_ping_summary WORK : what shroud rttmon saw, as one JSON object (null
# when it left no summary). downtime_ms is the paper's: lost probes x
# interval over the whole run (it starts once the guest answers, so only the
# migration loses probes). after_sent/after_received: a second, 1 s probe
# once the migration completed, when the source guest is paused: answers can
# only come from the destination (rttmon-after.json).
tb_ping_summary() {
    local work=$1 after
    [[ -s $work/rttmon.json ]] || { echo null; return; }
    after=$(jq -c 'select(.summary == true) | {sent, received}' "$work/rttmon-after.json" 2>/dev/null | tail -n 1 || true)
    [[ -n $after ]] || after=null
    jq -s -c --argjson after "$after" '
        (map(select(.summary == true)) | last) as $s
        | if $s == null then null else
          {target: $s.target, interval_ms: $s.interval_ms, sent: $s.sent, received: $s.received,
           lost: $s.lost, late: $s.late, downtime_ms: ($s.lost * $s.interval_ms),
           max_silence_ms: (($s.max_silence_ms // 0) * 10 | round / 10),
           rtt_median_ms: (($s.rtt_ms.median // 0) * 100 | round / 100),
           stall_slots: $s.skipped_slots, red_events: $s.red, yellow_events: $s.yellow,
           events: [.[] | select(.event != null) | {state, reason, start, duration_ms, downtime_ms,
                     downtime_gap_ms, lost, stall_ms}],
           after_sent: $after.sent, after_received: $after.received} end' \
        "$work/rttmon.json" 2>/dev/null | tail -n 1 | grep . || echo null
}

cmd_migrate() {
    local rate=8 ram=64 port=49152 dirty=10 seed=1 max_time=0 out="" downtime_limit=300 multifd=0 ping=0 qemu_bw=0
    local drain=0 walk_mean=0
    while (($#)); do
        case $1 in
            --ping) ping=1; shift ;;
            --walk-mean) walk_mean=1; shift ;;
            --switchover-drain) drain=1; shift ;;
            --out) need_value "$@"; out=$2; shift 2 ;;
            --rate-mib) need_value "$@"; rate=$2; shift 2 ;;
            --ram-mb) need_value "$@"; ram=$2; shift 2 ;;
            --port) need_value "$@"; port=$2; shift 2 ;;
            --dirty) need_value "$@"; dirty=$2; shift 2 ;;
            --seed) need_value "$@"; seed=$2; shift 2 ;;
            --max-time) need_value "$@"; max_time=$2; shift 2 ;;
            --downtime-limit) need_value "$@"; downtime_limit=$2; shift 2 ;;
            --multifd) need_value "$@"; multifd=$2; shift 2 ;;
            --qemu-bandwidth-mib) need_value "$@"; qemu_bw=$2; shift 2 ;;
            *) die "migrate: unknown option $1 (see scripts/testbed --help)" ;;
        esac
    done
    # Decimal, no leading zeros: bash arithmetic reads 010 as octal 8 and
    # 08 as an error.
    local v
    # The option each variable comes from (--rate-mib sets rate).
    local -A opt_of=([rate]=rate-mib [ram]=ram-mb [port]=port [dirty]=dirty [seed]=seed
        [max_time]=max-time [downtime_limit]=downtime-limit [multifd]=multifd)
    for v in rate ram port dirty seed max_time downtime_limit multifd; do
        [[ ${!v} =~ ^(0|[1-9][0-9]*)$ ]] || die "migrate: --${opt_of[$v]} must be a non-negative decimal integer without leading zeros (got '${!v}')"
    done
    ((rate >= 1 && rate <= 100)) || die "migrate: --rate-mib must be in 1..100"
    ((ram >= 24 && ram <= 1024)) || die "migrate: --ram-mb must be in 24..1024"
    ((port >= 49152 && port <= 65535)) || die "migrate: --port must be in 49152..65535 (49152-49215: classed as migration)"
    ((dirty <= 50)) || die "migrate: --dirty must be in 0..50"
    ((downtime_limit >= 1 && downtime_limit <= 60000)) || die "migrate: --downtime-limit must be in 1..60000 ms"
    ((multifd == 0 || (multifd >= 2 && multifd <= 16))) ||
        die "migrate: --multifd must be 0 (one stream) or 2..16 channels"
    [[ $qemu_bw =~ ^(0|[1-9][0-9]*)$ ]] && ((qemu_bw <= 10000)) ||
        die "migrate: --qemu-bandwidth-mib must be 0 (= --rate-mib) or 1..10000 MiB/s (got '$qemu_bw')"
    if [[ -n $out ]]; then
        mkdir -p "$out" || die "migrate: cannot create --out $out"
    fi
    tb_need_up
    local shroud
    shroud=$(st build)/shroud
    # From here on the cleanup restores what --walk-mean and the drain change.
    trap tb_migrate_cleanup EXIT
    trap 'log "interrupted"; exit 130' INT
    trap 'log "terminated"; exit 143' TERM
    local hook=()
    # Before the drain: the drain reads maxR and the start rate to restore.
    if ((walk_mean)); then
        tb_walk_mean_prepare "$shroud" "$rate" || exit 1
    fi
    if ((drain)); then
        tb_drain_prepare "$shroud" || exit 1
        hook=("${TB_DRAIN_SET[@]}")
    fi
    local bw=$((rate * 1024 * 1024))
    # QEMU's max-bandwidth; --rate-mib keeps sizing the guest's dirty rate
    # and the time bounds, so a migration left to the shaper dirties as one
    # at its nominal rate would.
    ((qemu_bw > 0)) || qemu_bw=$rate
    local qemu_bps=$((qemu_bw * 1024 * 1024))
    # Pre-copy sends at least the RAM once; allow twice that plus start-up.
    local mig_timeout=$((2 * ram * 1024 * 1024 / bw + 60))
    # Under heavy background load on a small machine a migration runs well
    # below its limit; give it at least 3 s per MiB of RAM.
    ((mig_timeout >= 3 * ram)) || mig_timeout=$((3 * ram))
    local left
    left=$(tb_seconds_left)
    ((max_time > 0)) || max_time=$((mig_timeout + 60))
    ((max_time < left - 5)) || max_time=$((left - 5))
    ((max_time >= 30)) || die "migrate: only $left s left before the testbed's bound (--max-s); bring it up again"
    ((mig_timeout < max_time - 20)) || mig_timeout=$((max_time - 20))

    TB_MIG_WORK=$(mktemp -d "$STATE/migrate.XXXXXX")
    local work=$TB_MIG_WORK
    local channels=""
    ((multifd == 0)) || channels=" in $multifd multifd channels"
    log "migrate: guest ram=${ram}MiB dirty=${dirty}% of $rate MiB/s, max-bandwidth $qemu_bw MiB/s, src $TB_SRC_IP -> tcp:$TB_DST_IP:$port$channels (migration timeout ${mig_timeout}s, bound ${max_time}s)"
    guest_ram_file "$work/ram.bin" "$ram" "$seed"
    guest_build "$work/guest.elf"
    local dirty_bps=$((bw * dirty / 100)) hot=0
    ((dirty > 0)) && hot=8
    local guest_args="seed=$seed dirty=$dirty_bps hot=$hot hz=250"
    local netargs=()
    if ((ping)); then
        [[ -x $shroud ]] || die "migrate --ping: no $shroud (shroud rttmon)"
        tb_vmnet_up
        guest_args+=" ip=$TB_GUEST_IP"
        netargs=(-netdev "tap,id=vmnet,ifname=vm0,script=no,downscript=no"
            -device "rtl8139,netdev=vmnet,mac=$TB_GUEST_MAC")
    fi
    local qargs=(-accel tcg -machine pc -m "$ram" -smp 1 -nodefaults -no-user-config -display none
        -device "loader,file=$work/ram.bin,addr=0x1000000,force-raw=on"
        -kernel "$work/guest.elf" -append "$guest_args" "${netargs[@]}")
    # Multifd: the destination waits for QMP (-incoming defer) so both sides
    # get the capability and channel count before the first connection.
    local incoming="tcp:$TB_DST_IP:$port"
    ((multifd == 0)) || incoming=defer
    # `ip netns exec` directly, not node_exec: $! must be the process that
    # becomes `timeout` (which passes TERM on to QEMU). A function run with &
    # is a subshell; TERM to it leaves QEMU running until --max-time.
    ip netns exec "$(ns_of dst)" timeout -k 5 "$max_time" qemu-system-x86_64 -name shroud-tb-dst "${qargs[@]}" \
        -serial "file:$work/serial-dst.log" -qmp "unix:$work/dst.qmp,server=on,wait=off" \
        -incoming "$incoming" >"$work/qemu-dst.err" 2>&1 </dev/null &
    TB_QEMU_DST=$!
    ip netns exec "$(ns_of src)" timeout -k 5 "$max_time" qemu-system-x86_64 -name shroud-tb-src "${qargs[@]}" \
        -serial "file:$work/serial-src.log" -qmp "unix:$work/src.qmp,server=on,wait=off" \
        >"$work/qemu-src.err" 2>&1 </dev/null &
    TB_QEMU_SRC=$!
    local qmp=(timeout 30 python3 "$ROOT/scripts/qmp.py")
    "${qmp[@]}" "$work/dst.qmp" wait --timeout 20 >/dev/null ||
        die "destination QEMU did not start: $(cat "$work/qemu-dst.err")"
    "${qmp[@]}" "$work/src.qmp" wait --timeout 20 >/dev/null ||
        die "source QEMU did not start: $(cat "$work/qemu-src.err")"
    if ((multifd)); then
        # max-bandwidth holds for the channels together, in whole multifd
        # packets: QEMU 7.2 hands out 512 KiB packets until the 100 ms slice's
        # budget is spent, so 2 and 4 MiB/s run at 5 MiB/s, 8 at 10.
        local side
        for side in dst src; do
            "${qmp[@]}" "$work/$side.qmp" exec migrate-set-capabilities \
                '{"capabilities":[{"capability":"multifd","state":true}]}' >/dev/null ||
                die "QEMU ($side) refused the multifd capability"
            "${qmp[@]}" "$work/$side.qmp" exec migrate-set-parameters "{\"multifd-channels\":$multifd}" >/dev/null ||
                die "QEMU ($side) refused multifd-channels $multifd"
        done
        "${qmp[@]}" "$work/dst.qmp" exec migrate-incoming "{\"uri\":\"tcp:$TB_DST_IP:$port\"}" >/dev/null ||
            die "destination QEMU refused migrate-incoming tcp:$TB_DST_IP:$port"
    fi
    guest_wait_ready "$work/serial-src.log"
    if ((ping)); then
        tb_rttmon_wait_answer "$shroud" ||
            die "migrate --ping: the guest does not answer pings at $TB_GUEST_IP (serial: $(grep -m1 'shroud-guest: net' "$work/serial-src.log"))"
        # Bounded by itself too: the migration's bound plus the tail below.
        ip netns exec "$(ns_of vmn)" timeout -k 5 "$((mig_timeout + 40))" "$shroud" rttmon --json --interval=10ms \
            --duration=$((mig_timeout + 30)) "$TB_GUEST_IP" >"$work/rttmon.json" 2>"$work/rttmon.err" </dev/null &
        TB_RTTMON_PID=$!
        sleep 0.5
    fi

    local t0 rc=0
    t0=$(date +%s.%N)
    timeout -k 5 $((mig_timeout + 15)) python3 "$ROOT/scripts/qmp.py" "$work/src.qmp" migrate \
        --uri "tcp:$TB_DST_IP:$port" --bandwidth "$qemu_bps" --downtime-limit "$downtime_limit" --timeout "$mig_timeout" \
        "${hook[@]}" >"$work/migrate.json" 2>"$work/migrate.err" &
    TB_MIG_PID=$!
    wait "$TB_MIG_PID" || rc=$?
    TB_MIG_PID=""
    if ((drain)); then
        # Back to Algorithm 3 as soon as the destination runs the guest: the
        # last state has crossed, and chaff would otherwise fill the whole
        # maxR envelope meanwhile. Only a completed migration (qmp.py exit 0)
        # leaves a destination to wait for, and only while its QEMU lives:
        # each query is bounded by 2 s, so a dead one costs no 50 x 20 s.
        local i
        for ((i = 0; rc == 0 && i < 50; i++)); do
            kill -0 "$TB_QEMU_DST" 2>/dev/null || break
            [[ $("${qmp[@]}" "$work/dst.qmp" exec query-status --timeout 2 2>/dev/null | jq -r '.status // ""' 2>/dev/null) == running ]] && break
            sleep 0.1
        done
        tb_drain_restore
    fi
    tb_walk_mean_restore
    local wall
    wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    sleep 1
    if [[ -n $TB_RTTMON_PID ]]; then
        # Probes for a while after the switch-over (the guest announces
        # itself, the bridges learn where it is now).
        sleep 2.5
        kill -TERM "$TB_RTTMON_PID" 2>/dev/null || true
        wait "$TB_RTTMON_PID" 2>/dev/null || true  # it prints its summary on TERM
        TB_RTTMON_PID=""
        tb_rttmon_probe "$shroud" >"$work/rttmon-after.json" 2>/dev/null || true
    fi
    # QEMU sets "completed" a moment before it fills in total-time/downtime.
    "${qmp[@]}" "$work/src.qmp" exec query-migrate >"$work/migrate-final.json" 2>/dev/null || true
    local dst_status
    # Bounded like the drain's queries: a destination QEMU that died (a failed
    # migration) answers nothing, and qmp.py's default would wait 20 s.
    dst_status=unknown
    if kill -0 "$TB_QEMU_DST" 2>/dev/null; then
        dst_status=$("${qmp[@]}" "$work/dst.qmp" exec query-status --timeout 2 2>/dev/null | jq -r '.status // "unknown"' 2>/dev/null || echo unknown)
    else
        dst_status=exited
    fi
    local drain_json=null
    if ((drain)); then
        drain_json=$(jq -c '.switchover_hook // null' "$work/migrate.json" 2>/dev/null || echo null)
        [[ -n $drain_json ]] || drain_json=null
        if [[ $drain_json == null ]]; then
            echo "switchover drain: QEMU never paused before the switch-over; gateway A's walk was left alone"
        else
            jq -r --arg restored "$TB_DRAIN_RESTORED" '"switchover drain: "
                + (if .rc == 0 then "from QEMU'"'"'s pre-switchover pause gateway A ran the migration at its maxR (ctl set, \(.seconds * 1000 | round) ms after the pause"
                   else "gateway A could not be told at QEMU'"'"'s pre-switchover pause (ctl set \(if .rc == 1 then "refused" else "unanswered" end): \(.output | gsub("\n"; " "))" end)
                + "; QEMU waited \(.qemu_waited_s * 1000 | round) ms); Algorithm 3 restored once the destination ran: \($restored)"' <<<"$drain_json"
        fi
    fi
    local q
    q=$(jq -c 'if (.status == "completed") then . else empty end' "$work/migrate-final.json" 2>/dev/null || true)
    [[ -n $q ]] || q=$(jq -c '.query_migrate // {}' "$work/migrate.json" 2>/dev/null || echo '{}')
    local status
    status=$(jq -r '.status // "error"' "$work/migrate.json" 2>/dev/null || echo error)
    echo "migration: status=$status (qmp.py exit $rc$([[ -s $work/migrate.err ]] && printf ', %s' "$(tr '\n' ' ' <"$work/migrate.err")"))" \
        "wall=${wall}s dst_after=$dst_status"
    jq -r --arg bw "$qemu_bw" '"qemu: total_time=\(.["total-time"] // "?") ms downtime=\(.downtime // "?") ms setup=\(.["setup-time"] // "?") ms transferred=\((.ram.transferred // 0) / 1048576 | . * 10 | floor / 10) MiB dirty_syncs=\(.ram["dirty-sync-count"] // "?") mbps=\(.ram.mbps // "?") (max-bandwidth \($bw) MiB/s)"' <<<"$q"
    kill_wait "$TB_QEMU_SRC" TERM 5
    TB_QEMU_SRC=""
    kill_wait "$TB_QEMU_DST" TERM 5
    TB_QEMU_DST=""
    local ping_json=null
    if ((ping)); then
        ping_json=$(tb_ping_summary "$work")  # an object or null
        [[ $ping_json != null ]] && jq -r --argjson q "$q" '"ping: \(.interval_ms) ms probes to the guest \(.target) on the VM network: sent \(.sent), answered \(.received), lost \(.lost) -> downtime \(.downtime_ms) ms (lost x interval; QEMU: \($q.downtime // "?") ms), longest silence \(.max_silence_ms) ms, RTT median \(.rtt_median_ms) ms, \(.red_events) red event(s); after the switch-over the destination answered \(.after_received // "?") of \(.after_sent // "?")"' \
            <<<"$ping_json" 2>/dev/null || echo "ping: no result from shroud rttmon ($(head -c 300 "$work/rttmon.err" 2>/dev/null))"
        tb_vmnet_down
    fi

    # The tap's verdict (shroud-control exports once a second).
    sleep 2
    local flows
    flows=$(node_exec tap timeout 10 curl -s --max-time 5 "http://$CONTROL_HTTP/api/flows?min_packets=1000" || true)
    echo "$flows" >"$work/tap-flows.json"
    local pat="198\\.51\\.100\\.10[^0-9]+$port([^0-9]|$)"
    local hit
    hit=$(jq -r --arg p "$pat" '[.flows[]? | select(.flow | tostring | test($p))] | sort_by(-.packets) | .[]
        | "tap: flow \(.flow) packets=\(.packets) bytes=\(.bytes) duration=\(.duration_s | . * 10 | floor / 10)s class=\(.class) state=\(.state) pattern=\(.pattern) (counter \(.pattern_counter)/\(.pattern_windows) windows) maxent=\(.maxent) migration=\(.migration)"' \
        <<<"$flows" 2>/dev/null || true)
    if [[ -n $hit ]]; then
        echo "$hit"
    else
        echo "tap: no flow to $TB_DST_IP:$port with >= 1000 packets in /api/flows ($(jq -r '.matched // "no answer"' <<<"$flows" 2>/dev/null) flows matched)"
    fi
    local others
    others=$(jq -r --arg p "$pat" '[.flows[]? | select(.flow | tostring | test($p) | not)] as $o
        | "tap: other flows >= 1000 packets: \($o | length), flagged as migration: \([$o[] | select(.migration == true)] | length)"' <<<"$flows" 2>/dev/null || true)
    [[ -n $others ]] && echo "$others"
    if [[ -n $out ]]; then
        # What scripts/evaluate keeps of the run: QEMU's report, the live
        # tap's flows, the logs.
        printf '%s\n' "$q" >"$out/qemu.json"
        cp "$work/tap-flows.json" "$out/tap-flows.json" 2>/dev/null || true
        cp "$work/migrate.json" "$out/qmp-migrate.json" 2>/dev/null || true
        cp "$work/serial-src.log" "$out/serial-src.log" 2>/dev/null || true
        # The gateways' counters after the run (cumulative since `up`; the
        # difference between two runs is one run's): whether the shaper
        # dropped or held frames back (tx_retried), what chaff sent.
        local gw
        for gw in gwa gwb; do
            "$shroud" ctl --runtime_dir="$STATE/run/$gw" --instance="$gw" --json status \
                >"$out/$gw-status.json" 2>/dev/null || rm -f "$out/$gw-status.json"
        done
        if ((ping)); then
            cp "$work/rttmon.json" "$out/rttmon.json" 2>/dev/null || true
            cp "$work/rttmon-after.json" "$out/rttmon-after.json" 2>/dev/null || true
            cp "$work/serial-dst.log" "$out/serial-dst.log" 2>/dev/null || true
        fi
        jq -n --arg status "$status" --argjson wall "$wall" --arg dst "$dst_status" --argjson ping "$ping_json" \
            --argjson rate "$rate" --argjson ram "$ram" --argjson port "$port" --argjson dirty "$dirty" \
            --argjson seed "$seed" --arg src "$TB_SRC_IP" --arg dstip "$TB_DST_IP" --argjson multifd "$multifd" \
            --argjson qbw "$qemu_bw" --argjson drain "$drain_json" --argjson drainon "$drain" \
            --argjson restored "$TB_DRAIN_RESTORED" --argjson walkmean "$TB_WALK_JSON" \
            '{status: $status, wall_s: $wall, dst_status_after: $dst, rate_mib_s: $rate,
              qemu_max_bandwidth_mib_s: $qbw, ram_mb: $ram,
              dirty_pct: $dirty, seed: $seed, src: $src, dst: $dstip, dport: $port,
              multifd_channels: $multifd, ping: $ping,
              switchover_drain: (if $drainon == 1 then {hook: $drain, restored: $restored} else null end),
              walk_mean: $walkmean}' >"$out/migrate.json"
    fi
    log "migrate: logs and JSON in $work"
    [[ $status == completed ]]
}

# --- background -----------------------------------------------------------
cmd_background() {
    local load=light duration=60 seed=1 out="" bulk=paced
    while (($#)); do
        case $1 in
            --out) need_value "$@"; out=$2; shift 2 ;;
            --load) need_value "$@"; load=$2; shift 2 ;;
            --duration) need_value "$@"; duration=$2; shift 2 ;;
            --seed) need_value "$@"; seed=$2; shift 2 ;;
            --bulk) need_value "$@"; bulk=$2; shift 2 ;;
            *) die "background: unknown option $1 (see scripts/testbed --help)" ;;
        esac
    done
    [[ $load =~ ^(light|medium|heavy)$ ]] || die "background: --load must be light, medium or heavy"
    [[ $duration =~ ^[1-9][0-9]*$ ]] || die "background: --duration must be a positive decimal integer"
    [[ $seed =~ ^(0|[1-9][0-9]*)$ ]] || die "background: --seed must be a non-negative decimal integer"
    [[ $bulk =~ ^(paced|unpaced)$ ]] || die "background: --bulk must be paced or unpaced"
    tb_need_up
    local left
    left=$(tb_seconds_left)
    if ((duration > left - 50)); then
        ((left > 60)) || die "background: only $left s left before the testbed's bound (--max-s)"
        duration=$((left - 50))
        log "background: --duration cut to $duration s (the testbed's bound)"
    fi
    # Load levels are relative to the WAN's rate (--rate-mbit; 0 = unlimited).
    local rate
    rate=$(sed -n 's/.*rate_mbit=\([0-9]*\).*/\1/p' "$STATE/settings")
    BG_LINK_MBIT=${rate:-0}
    BG_SCALE_PCT=${BG_SCALE_PCT:-100}
    BG_BULK=$bulk
    export BG_LINK_MBIT BG_SCALE_PCT BG_BULK
    BG_WORK=$(mktemp -d "$STATE/background.XXXXXX")
    TB_BG_OUT=$out TB_BG_SLEEP=""
    # shellcheck disable=SC2317
    tb_bg_cleanup() {
        local rc=$?
        trap - EXIT INT TERM
        set +e
        # The sleep below outlives a TERMed or interrupted script otherwise.
        [[ -n $TB_BG_SLEEP ]] && kill "$TB_BG_SLEEP" 2>/dev/null
        bg_stop 2>/dev/null
        # Stopped early (TERM, as scripts/evaluate does once the migration
        # is over) or not: the summary is written.
        [[ -n $TB_BG_OUT ]] && bg_summary "$BG_WORK" >"$TB_BG_OUT" 2>/dev/null
        exit "$rc"
    }
    trap tb_bg_cleanup EXIT
    trap 'log "interrupted"; exit 130' INT
    trap 'log "terminated"; exit 143' TERM
    bg_start "$BG_WORK" "$load" "$seed" "$duration" "$(ns_of bga)" "$TB_BGA_IP" "$(ns_of bgb)" "$TB_BGB_IP"
    sleep "$duration" &
    TB_BG_SLEEP=$!
    wait "$TB_BG_SLEEP"
    TB_BG_SLEEP=""
    bg_stop
    local summary
    summary=$(bg_summary "$BG_WORK")
    [[ -n $out ]] && printf '%s\n' "$summary" >"$out"
    TB_BG_OUT=""
    echo "background: $summary"
}
