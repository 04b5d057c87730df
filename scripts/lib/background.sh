# shellcheck shell=bash
# Background traffic for shroud's captures (sourced; needs lib/netns.sh).
#
# Real applications between two namespaces, in both directions:
#   - nginx (one per namespace, port 8080, own temporary config and root)
#   - curl clients (small pages, rate-limited video segments, bulk downloads)
#   - iperf3 (one server per user in the peer namespace, ports 5201+)
# driven by lib/bg-user.sh, one Markov-chain user per process. Users alternate
# between the two namespaces, so data flows both ways; iperf3 runs both
# directions (-R or not).
#
# Load levels are relative to the link rate BG_LINK_MBIT (record-migration.sh
# --link-mbit, default 100 Mbit/s, the paper's testbed), as in the paper
# (Table II): light < 20 %, medium 40-50 %, heavy ~80 % of the link, counting
# both directions together. The per-user rate caps in bg-user.sh (numbers at
# 100 %) are scaled by a per-level factor times link/100, calibrated on
# 60-120 s background-only captures over a 100 Mbit/s link (one user then
# averages ~2.1 Mbit/s at 100 % and ~8.8 at 600 %, see scripts/CAPTURES.md):
#   light  = 2 users at 350 % x link/100   (~11 % of the link)
#   medium = 5 users at 620 % x link/100   (~45 %)
#   heavy  = 9 users at 610 % x link/100   (~80 %)
# With an unlimited veth (BG_LINK_MBIT=0) the old nominal 60 Mbit/s setting
# is kept (light 80 %, medium/heavy 100 %); there curl's --limit-rate is not
# effective for short transfers (the receive buffer takes a 1 MiB segment at
# veth speed), so the real load is higher than the caps suggest.
# BG_SCALE_PCT (default 100) scales every per-user rate cap on top. BG_BULK
# (paced, the default, or unpaced) is how bg-user.sh sends a bulk activity.

BG_PORT_HTTP=8080
BG_PORT_IPERF=5201
BG_PIDS=()
BG_USER_PIDS=()
BG_DESC=""

# bg_users_for LOAD -> number of users
# bg_level_scale LOAD LINK_MBIT -> per-user rate scale in percent
bg_users_for() {
    local link=${BG_LINK_MBIT:-0}
    case $1 in
        none) echo 0 ;;
        light) if ((link > 0)); then echo 4; else echo 2; fi ;;
        medium) if ((link > 0)); then echo 14; else echo 5; fi ;;
        heavy) if ((link > 0)); then echo 24; else echo 9; fi ;;
        *) die "unknown load level '$1' (none|light|medium|heavy)" ;;
    esac
}
bg_level_scale() {
    local load=$1 link=${2:-0} pct
    if ((link > 0)); then
        case $load in
            light) pct=120 ;;
            medium) pct=145 ;;
            heavy) pct=150 ;;
            *) pct=100 ;;
        esac
        echo $((pct * link / 100))
    else
        case $load in
            light) echo 80 ;;
            *) echo 100 ;;
        esac
    fi
}

# bg_prepare WORKDIR SEED : document root with seeded incompressible files.
bg_prepare() {
    local work=$1 seed=$2
    mkdir -p "$work/www/f" "$work/nginx-tmp"
    "${PYTHON:-python3}" - "$work/www/f" "$seed" <<'EOF'
import os, random, sys
d, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed * 31 + 5)
sizes = {"1k": 1024, "2k": 2048, "4k": 4096, "8k": 8192, "16k": 16384,
         "32k": 32768, "64k": 65536, "128k": 131072, "256k": 262144,
         "512k": 524288, "seg1m": 1 << 20, "bulk16m": 16 << 20}
for name, n in sizes.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(r.randbytes(n))
EOF
}

# bg_nginx_conf WORKDIR NAME IP -> path of a config for an nginx on IP:8080
bg_nginx_conf() {
    local work=$1 name=$2 ip=$3 conf
    conf="$work/nginx-$name.conf"
    mkdir -p "$work/nginx-tmp/$name"
    cat >"$conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
user root;
pid $work/nginx-$name.pid;
error_log $work/nginx-$name.err warn;
events { worker_connections 512; }
http {
    access_log off;
    sendfile on;
    keepalive_timeout 5;
    keepalive_requests 50;
    default_type application/octet-stream;
    client_body_temp_path $work/nginx-tmp/$name/body;
    proxy_temp_path $work/nginx-tmp/$name/proxy;
    fastcgi_temp_path $work/nginx-tmp/$name/fastcgi;
    uwsgi_temp_path $work/nginx-tmp/$name/uwsgi;
    scgi_temp_path $work/nginx-tmp/$name/scgi;
    server {
        listen $ip:$BG_PORT_HTTP;
        root $work/www;
    }
}
EOF
    echo "$conf"
}

# bg_wait_http NS URL : wait until nginx answers (bounded).
bg_wait_http() {

    for _ in $(seq 1 50); do
        if ip netns exec "$1" timeout 2 curl -s -o /dev/null --max-time 1 "$2"; then
            return 0
        fi
        sleep 0.2
    done
    die "nginx did not answer on $2"
}

# bg_start WORK LOAD SEED DURATION NS_A IP_A NS_B IP_B
# Starts servers and users; users stop after DURATION seconds at the latest.
bg_start() {
    local work=$1 load=$2 seed=$3 dur=$4 nsa=$5 ipa=$6 nsb=$7 ipb=$8
    local nusers u ns peer peer_ns port conf bound=$((dur + 30)) scale
    nusers=$(bg_users_for "$load")
    local budget=60
    ((${BG_LINK_MBIT:-0} > 0)) && budget=$BG_LINK_MBIT
    scale=$(($(bg_level_scale "$load" "${BG_LINK_MBIT:-0}") * ${BG_SCALE_PCT:-100} / 100))
    BG_DESC="load=$load users=0"
    ((nusers > 0)) || return 0
    bg_prepare "$work" "$seed"
    : >"$work/bg-users.log"
    rm -f "$work/bg-stop"
    # nginx in both namespaces
    conf=$(bg_nginx_conf "$work" a "$ipa")
    ip netns exec "$nsa" timeout "$bound" nginx -e "$work/nginx-a.err" -c "$conf" &
    BG_PIDS+=($!)
    conf=$(bg_nginx_conf "$work" b "$ipb")
    ip netns exec "$nsb" timeout "$bound" nginx -e "$work/nginx-b.err" -c "$conf" &
    BG_PIDS+=($!)
    bg_wait_http "$nsb" "http://$ipa:$BG_PORT_HTTP/f/1k"
    bg_wait_http "$nsa" "http://$ipb:$BG_PORT_HTTP/f/1k"
    # iperf3 servers: user u's server lives in the peer namespace
    for ((u = 0; u < nusers; u++)); do
        if ((u % 2 == 0)); then peer_ns=$nsb peer=$ipb; else peer_ns=$nsa peer=$ipa; fi
        port=$((BG_PORT_IPERF + u))
        ip netns exec "$peer_ns" timeout "$bound" iperf3 -s -p "$port" -B "$peer" >/dev/null 2>&1 &
        BG_PIDS+=($!)
    done
    sleep 0.5
    # users: even ones live in A (fetch from B), odd ones in B (fetch from A)
    for ((u = 0; u < nusers; u++)); do
        if ((u % 2 == 0)); then ns=$nsa peer=$ipb; else ns=$nsb peer=$ipa; fi
        port=$((BG_PORT_IPERF + u))
        # timeout puts the user in its own process group: killing the
        # timeout PID also stops its running curl/iperf3.
        ip netns exec "$ns" timeout -k 3 $((dur + 15)) bash "$SHROUD_LIB/bg-user.sh" \
            "$u" "$seed" "$peer" "$port" "$dur" "$scale" \
            "$work/bg-users.log" "$work/bg-stop" &
        BG_USER_PIDS+=($!)
    done
    BG_DESC="load=$load users=$nusers scale_pct=$scale budget_mbit_s=$budget bulk=${BG_BULK:-paced}"
    log "background: $BG_DESC started"
}

bg_stop() {
    local pid
    [[ -n ${BG_WORK:-} ]] && touch "$BG_WORK/bg-stop" 2>/dev/null
    for pid in "${BG_USER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${BG_USER_PIDS[@]}"; do kill_wait "$pid" TERM 4; done
    for pid in "${BG_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${BG_PIDS[@]}"; do kill_wait "$pid" TERM 4; done
    BG_USER_PIDS=()
    BG_PIDS=()
}

# bg_summary WORK : JSON object with counts of activities from the user log.
bg_summary() {
    local work=$1
    "${PYTHON:-python3}" - "$work/bg-users.log" "$BG_DESC" <<'EOF'
import collections, json, sys
path, desc = sys.argv[1], sys.argv[2]
d = dict(kv.split("=", 1) for kv in desc.split())
states, kinds = collections.Counter(), collections.Counter()
try:
    for line in open(path):
        f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        if "state" in f:
            states[f["state"]] += 1
        if "kind" in f:
            kinds[f["kind"]] += 1
except FileNotFoundError:
    pass
for k, v in list(d.items()):
    if v.isdigit():
        d[k] = int(v)
d["users"] = int(d.get("users", 0))
d["activities"] = dict(states)
d["bulk_kinds"] = dict(kinds)
d["apps"] = "nginx+curl (http :8080), iperf3 (:5201+), Markov users in both namespaces" if d["users"] else "none"
print(json.dumps(d, sort_keys=True))
EOF
}
