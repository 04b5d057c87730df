#!/usr/bin/env bash
# The background's bulk activities, paced (the default) and unpaced
# (BG_BULK=unpaced: scripts/testbed background --bulk, scripts/evaluate
# --bg-bulk), as scripts/lib/bg-user.sh runs them:
#   tests/background_test.sh
#
# Two network namespaces (names end in this script's PID), one veth pair:
#
#   USERS 192.0.2.1/24 --veth-- SERVERS 192.0.2.2/24 (nginx :8080, iperf3 :5201+)
#
# Four Markov users start in the bulk state (BG_FIRST_STATE=bulk, fixed
# seeds, so each makes the same choices in both modes) and run for 14 s. Each
# user's first bulk activity is read back from its log: the note that starts
# it and the user's next note, which comes when it ended.
#   paced:   every one is a paced kind (no "-unpaced"), and lasts its time
#            t (curl --limit-rate stopped by --max-time t, iperf3 -t t),
#            at least t - 0.5 s;
#   unpaced: every one is an unpaced kind whose bytes are its rate x t (the
#            16 MiB file at most for HTTP) and ends well before t: under
#            t / 2 (a few MB over a veth take well under a second; a paced
#            one cannot end before t);
#            and the veth carried at least those bytes;
#   and BG_BULK or BG_FIRST_STATE with a bad value is refused (exit 2).
#
# Needs root, ip, ethtool, nginx, iperf3, curl, timeout; exits 77 ("skipped: ...")
# without them. Exit 0 all checks passed, 1 any failed.
set -uo pipefail
export LC_ALL=C

root=${SHROUD_SOURCE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
SHROUD_LIB=$root/scripts/lib
user_script=$SHROUD_LIB/bg-user.sh
USERS=4 DURATION_S=14 SEED=11

skip() { echo "skipped: $1"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root for network namespaces"
for t in ip ethtool nginx iperf3 curl timeout python3 awk; do
    command -v "$t" >/dev/null 2>&1 || skip "$t is not installed (scripts/setup.sh --with-capture-tools)"
done

# shellcheck source-path=SCRIPTDIR/.. source=scripts/lib/netns.sh
source "$SHROUD_LIB/netns.sh"
# shellcheck source-path=SCRIPTDIR/.. source=scripts/lib/background.sh
source "$SHROUD_LIB/background.sh"
# shellcheck disable=SC2034  # read by ns_name / ns_clean_stale in netns.sh
SHROUD_NS_PREFIX="shroud-bgt-"

NS_U=$(ns_name u)
NS_S=$(ns_name s)
IF_U="bgu$$" IF_S="bgs$$"
IP_U=192.0.2.1 IP_S=192.0.2.2
check_testnet "$IP_U" "$IP_S"

WORK="" PIDS=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    set +e
    for pid in "${PIDS[@]}"; do kill_wait "$pid" TERM 2; done
    ns_kill_and_delete "$NS_U"
    ns_kill_and_delete "$NS_S"
    [[ -n $WORK && -d $WORK ]] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "# interrupted"; exit 130' INT
trap 'echo "# terminated"; exit 143' TERM

source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

ns_clean_stale
WORK=$(mktemp -d /tmp/shroud-background-test.XXXXXX)
wan_setup "$NS_U" "$IP_U" "$NS_S" "$IP_S" "$IF_U" "$IF_S" ||
    skip "cannot create two network namespaces joined by a veth pair"

# The servers: nginx with background.sh's files and config, an iperf3 per user.
bg_prepare "$WORK" "$SEED"
conf=$(bg_nginx_conf "$WORK" s "$IP_S")
ip netns exec "$NS_S" timeout 120 nginx -e "$WORK/nginx-s.err" -c "$conf" &
PIDS+=($!)
for ((u = 0; u < USERS; u++)); do
    ip netns exec "$NS_S" timeout 120 iperf3 -s -p $((BG_PORT_IPERF + u)) -B "$IP_S" >/dev/null 2>&1 &
    PIDS+=($!)
done
bg_wait_http "$NS_U" "http://$IP_S:$BG_PORT_HTTP/f/1k"
sleep 0.5

# run_users MODE: the users in MODE, their notes in $WORK/MODE.log.
run_users() {
    local mode=$1 u pids=()
    : >"$WORK/$mode.log"
    for ((u = 0; u < USERS; u++)); do
        BG_BULK=$mode BG_FIRST_STATE=bulk ip netns exec "$NS_U" timeout -k 3 $((DURATION_S + 20)) \
            bash "$user_script" "$u" "$SEED" "$IP_S" $((BG_PORT_IPERF + u)) "$DURATION_S" 100 \
            "$WORK/$mode.log" "$WORK/$mode.stop" &
        pids+=($!)
    done
    for u in "${pids[@]}"; do wait "$u"; done
}

# first_bulks MODE: per user, its first bulk note's kind, bytes, rate, t and
# how long until the user's next note ("-" when none came).
first_bulks() {
    awk '
        { u = ""; for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
          u = f["user"] }
        u in open && !(u in done) { print u, kind[u], bytes[u], rate[u], t[u], $1 - open[u]; done[u] = 1 }
        f["state"] == "bulk" && !(u in open) {
            open[u] = $1; kind[u] = f["kind"]; bytes[u] = f["bytes"] == "" ? "-" : f["bytes"]
            rate[u] = f["rate"]; t[u] = f["t"] }
        { delete f }
        END { for (u in open) if (!(u in done)) print u, kind[u], bytes[u], rate[u], t[u], "-" }
    ' "$WORK/$1.log" | sort -n
}

# veth_bytes: bytes the servers' veth end has received and sent.
veth_bytes() {
    ip netns exec "$NS_S" cat "/sys/class/net/$IF_S/statistics/rx_bytes" \
        "/sys/class/net/$IF_S/statistics/tx_bytes" | awk '{ n += $1 } END { print n }'
}

run_users paced
paced=$(first_bulks paced)
before=$(veth_bytes)
run_users unpaced
moved=$(($(veth_bytes) - before))
unpaced=$(first_bulks unpaced)
echo "# user kind bytes rate t seconds-to-next-note"
echo "# paced:"; while IFS= read -r l; do echo "#   $l"; done <<<"$paced"
echo "# unpaced:"; while IFS= read -r l; do echo "#   $l"; done <<<"$unpaced"

if (($(wc -l <<<"$paced") == USERS)) && (($(wc -l <<<"$unpaced") == USERS)); then
    ok "every user started with a bulk activity in both modes"
else
    bad "not every user logged a bulk activity" "$(cat "$WORK/paced.log" "$WORK/unpaced.log")"
fi
# awk exits 1 on the first line that breaks the rule.
if awk '$2 ~ /unpaced/ || $6 == "-" || $6 < $5 - 0.5 { exit 1 }' <<<"$paced"; then
    ok "paced: paced kinds, each lasting its time t"
else
    bad "paced: an unpaced kind or an activity shorter than its t" "$paced"
fi
if awk '$2 !~ /-unpaced$/ || $6 == "-" || $6 >= $5 / 2 { exit 1 }
        $2 == "http-unpaced" && $3 != ($4 * $5 < 16777216 ? $4 * $5 : 16777216) { exit 1 }
        $2 != "http-unpaced" && $3 != $4 * $5 { exit 1 }' <<<"$unpaced"; then
    ok "unpaced: unpaced kinds of rate x t bytes, each over in under t / 2"
else
    bad "unpaced: a paced kind, other bytes than rate x t, or not over in t / 2" "$unpaced"
fi
# A transfer that failed at once would also be over quickly: the bytes must
# have crossed the veth.
want=$(awk '{ n += $3 } END { print n + 0 }' <<<"$unpaced")
if ((moved >= want)); then
    ok "unpaced: the veth carried $moved bytes, at least the $want the first bulk activities send"
else
    bad "unpaced: the veth carried $moved bytes, less than the $want the activities should send" "$unpaced"
fi
# The same seeds make the same choices: the same kinds in both modes.
if [[ $(awk '{ sub(/-unpaced$/, "", $2); print $1, $2, $4, $5 }' <<<"$unpaced") == \
      $(awk '{ print $1, $2, $4, $5 }' <<<"$paced") ]]; then
    ok "the same users chose the same kinds, rates and times in both modes"
else
    bad "the modes' choices differ" "$paced"$'\n'"$unpaced"
fi

for bad_env in "BG_BULK=fast" "BG_FIRST_STATE=sleep"; do
    rc=0
    err=$(env "$bad_env" bash "$user_script" 0 1 "$IP_S" 5201 1 100 "$WORK/bad.log" "$WORK/bad.stop" 2>&1) || rc=$?
    if ((rc == 2)) && [[ $err == *"must be"* ]]; then
        ok "$bad_env refused: $err"
    else
        bad "$bad_env: exit $rc" "$err"
    fi
done

echo "$passed passed, $failed failed"
((failed == 0))
