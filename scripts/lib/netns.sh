# shellcheck shell=bash
# Common helpers for shroud's capture scripts (sourced, not executed).
#
# Network namespaces are named "shroud-rec-<pid>-<role>" where <pid> is the
# PID of the recording script that created them, so parallel runs never
# collide and leftovers of a crashed run can be recognised (dead <pid>).
# Only TEST-NET addresses are used (198.51.100.0/24 here).

# Debian packages needed by record-migration.sh / record-corpus.sh
# (the lead adds these to scripts/setup.sh).
SHROUD_CAPTURE_PACKAGES="qemu-system-x86 qemu-system-data seabios iproute2 ethtool tcpdump tshark wireshark-common iperf3 nginx-light curl python3 gcc binutils coreutils procps"
export SHROUD_CAPTURE_PACKAGES

SHROUD_NS_PREFIX="shroud-rec-"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, veth, tcpdump)"
}

# require_tools TOOL... : fail with a clear message naming the package list.
require_tools() {
    local t missing=()
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    if ((${#missing[@]})); then
        die "missing tools: ${missing[*]} (apt-get install ${SHROUD_CAPTURE_PACKAGES})"
    fi
}

# ns_name ROLE -> shroud-rec-<pid>-ROLE
ns_name() { printf '%s%s-%s' "$SHROUD_NS_PREFIX" "$$" "$1"; }

# Kill every process inside namespace NS (all started by us), then delete it.
ns_kill_and_delete() {
    local ns=$1 pids pid i
    if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$ns"; then
        for i in 1 2 3 4 5 6 7 8 9 10; do
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            [[ -z $pids ]] && break
            for pid in $pids; do
                if ((i < 6)); then kill -TERM "$pid" 2>/dev/null || true
                else kill -KILL "$pid" 2>/dev/null || true; fi
            done
            sleep 0.3
        done
        ip netns del "$ns" 2>/dev/null || true
    fi
}

# Remove namespaces left by crashed runs (creator PID no longer alive).
ns_clean_stale() {
    local ns owner
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${SHROUD_NS_PREFIX}" || true); do
        owner=${ns#"$SHROUD_NS_PREFIX"}
        owner=${owner%%-*}
        [[ $owner =~ ^[0-9]+$ ]] || continue
        if ! kill -0 "$owner" 2>/dev/null; then
            log "removing stale namespace $ns (owner $owner is gone)"
            ns_kill_and_delete "$ns"
        fi
    done
}

# veth_offloads_off NS IF : the wire must carry real MTU-sized frames.
veth_offloads_off() {
    ip netns exec "$1" ethtool -K "$2" tx off rx off tso off gso off gro off >/dev/null 2>&1 ||
        die "ethtool -K $2 (in $1) failed"
}

# wan_setup NS_A IP_A NS_B IP_B IF_A IF_B : two namespaces joined by one veth
# pair, /24, MTU 1500 (no capacity limit; see wan_shape). Returns 1 when the
# namespaces or the pair cannot be made (a test can skip on it).
wan_setup() {
    local nsa=$1 ipa=$2 nsb=$3 ipb=$4 ifa=$5 ifb=$6
    ip netns add "$nsa" || return 1
    ip netns add "$nsb" || return 1
    ip link add "$ifa" netns "$nsa" type veth peer name "$ifb" netns "$nsb" || return 1
    ip -n "$nsa" link set lo up
    ip -n "$nsb" link set lo up
    ip -n "$nsa" link set "$ifa" mtu 1500 up
    ip -n "$nsb" link set "$ifb" mtu 1500 up
    ip -n "$nsa" addr add "$ipa/24" dev "$ifa"
    ip -n "$nsb" addr add "$ipb/24" dev "$ifb"
    veth_offloads_off "$nsa" "$ifa"
    veth_offloads_off "$nsb" "$ifb"
    # Wait until the link answers (no ping dependency: use bash /dev/tcp? no:
    # simply wait for carrier on both ends).
    local i
    for i in $(seq 1 50); do
        if ip -n "$nsa" link show "$ifa" | grep -q 'state UP' &&
            ip -n "$nsb" link show "$ifb" | grep -q 'state UP'; then
            return 0
        fi
        sleep 0.1
    done
    die "veth $ifa/$ifb did not come up"
}

# static_neighbours NS_A IF_A IP_A NS_B IF_B IP_B : permanent ARP entries both
# ways across a veth pair. With ARP, a link-down looks longer than it is: the
# probes after it wait for ARP's next retransmission.
static_neighbours() {
    local mac_a mac_b
    mac_a=$(ip -n "$1" -br link show "$2" | awk '{print $3}')
    mac_b=$(ip -n "$4" -br link show "$5" | awk '{print $3}')
    ip -n "$1" neigh replace "$6" lladdr "$mac_b" dev "$2" nud permanent
    ip -n "$4" neigh replace "$3" lladdr "$mac_a" dev "$5" nud permanent
}

# wan_shape NS IF MBIT BUFFER_MS : make IF (in NS) a MBIT Mbit/s link on its
# egress with a token bucket (tc tbf): burst = 1 ms at the link rate but at
# least 4 full frames (4 x 1514 B), queue limit = BUFFER_MS of the link rate
# (a router-like FIFO, tail drop) but at least 10 frames. Prints
# "burst=BYTES limit=BYTES" for the report. No netem on this kernel; tbf works
# inside a namespace. AF_PACKET taps (tcpdump) see egress packets after the
# qdisc, i.e. at their wire times.
wan_shape() {
    local ns=$1 ifc=$2 mbit=$3 buf_ms=$4 bps burst limit
    bps=$((mbit * 1000000 / 8))
    burst=$((bps / 1000))
    ((burst >= 4 * 1514)) || burst=$((4 * 1514))
    limit=$((bps * buf_ms / 1000))
    ((limit >= 10 * 1514)) || limit=$((10 * 1514))
    ip netns exec "$ns" tc qdisc replace dev "$ifc" root tbf rate "${mbit}mbit" \
        burst "$burst" limit "$limit" >/dev/null ||
        die "tc tbf on $ifc (in $ns) failed (sch_tbf missing?)"
    printf 'burst=%s limit=%s\n' "$burst" "$limit"
}

# wan_qdisc_stats NS IF -> "sent_bytes sent_packets dropped overlimits"
# of IF's root qdisc ("0 0 0 0" if there is none or tc fails).
wan_qdisc_stats() {
    ip netns exec "$1" tc -s qdisc show dev "$2" 2>/dev/null | awk '
        / Sent / && !done { for (i = 1; i < NF; i++) {
              if ($i == "Sent") b = $(i + 1)
              if ($i == "bytes") p = $(i + 1)
              if ($i == "(dropped") { d = $(i + 1); sub(",", "", d) }
              if ($i == "overlimits") o = $(i + 1) }
          done = 1 }
        END { printf "%d %d %d %d\n", b, p, d, o }'
}

# wan_set_cc NS CC : TCP congestion control inside NS (per-namespace sysctl;
# new namespaces inherit the host's default, which is bbr on some hosts). A
# namespace may only choose one of the host's
# net.ipv4.tcp_allowed_congestion_control (the host setting is left alone).
wan_set_cc() {
    ip netns exec "$1" sysctl -q -w "net.ipv4.tcp_congestion_control=$2" >/dev/null 2>&1 ||
        die "cannot set tcp_congestion_control=$2 in $1 (a namespace may use: $(cat /proc/sys/net/ipv4/tcp_allowed_congestion_control 2>/dev/null))"
}

# check_testnet IP... : refuse anything outside TEST-NET-1/2/3.
check_testnet() {
    local ip
    for ip in "$@"; do
        case $ip in
            192.0.2.* | 198.51.100.* | 203.0.113.*) ;;
            *) die "address $ip is not in TEST-NET (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24)" ;;
        esac
    done
}

# kill_wait PID [SIGNAL] [SECONDS] : signal a process we started, wait for it,
# escalate to SIGKILL.
kill_wait() {
    local pid=$1 sig=${2:-TERM} secs=${3:-5} i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
