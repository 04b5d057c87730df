#!/usr/bin/env bash
# One simulated user of shroud's background-traffic model (a Markov chain over
# activities), run inside a network namespace by lib/background.sh.
#
#   bg-user.sh ID SEED PEER_IP IPERF_PORT DURATION_S SCALE_PCT LOGFILE STOPFILE
#
# States: browse (several small HTTP fetches with think times), video
# (rate-limited chunked fetches of 1 MiB segments), bulk (rate-limited large
# HTTP download or iperf3, either direction), idle (think time, sometimes a
# tiny interactive request). Transitions use bash's RANDOM seeded with SEED+ID,
# so a run is reproducible in its sequence of choices. SCALE_PCT scales every
# rate limit (100 = nominal numbers documented in scripts/CAPTURES.md).
# BG_BULK=unpaced (environment; default paced): a bulk activity sends the same
# bytes (its rate x its time) as fast as TCP goes, as the paper's FTP client
# downloads did, instead of paced at its rate (curl --limit-rate, iperf3 -b).
# BG_FIRST_STATE (browse|video|bulk|idle): start there instead of a state
# drawn from the chain's stationary distribution (tests/background_test.sh).
# Every command is bounded by `timeout`; the loop is bounded by DURATION_S,
# by a maximum number of steps and by STOPFILE.
set -euo pipefail

id=$1 seed=$2 peer=$3 iport=$4 duration=$5 scale=$6 logf=$7 stopf=$8
bulk_pacing=${BG_BULK:-paced}
[[ $bulk_pacing =~ ^(paced|unpaced)$ ]] || { echo "bg-user.sh: BG_BULK must be paced or unpaced" >&2; exit 2; }
[[ ${BG_FIRST_STATE:-idle} =~ ^(browse|video|bulk|idle)$ ]] ||
    { echo "bg-user.sh: BG_FIRST_STATE must be browse, video, bulk or idle" >&2; exit 2; }
RANDOM=$((seed * 7919 + id * 104729))
url="http://$peer:8080/f"
start=$SECONDS
max_steps=2000

# No command substitution around RANDOM: a subshell would not advance (and
# would reseed) the generator. Helpers set globals instead.
# rnd LO HI : R = uniform integer in [LO, HI] (15-bit RANDOM pairs for range)
rnd() { R=$(($1 + ((RANDOM << 15) | RANDOM) % ($2 - $1 + 1))); }
# msleep LO HI : sleep a uniform number of milliseconds in [LO, HI]
msleep() {
    rnd "$1" "$2"
    sleep "$((R / 1000)).$(printf '%03d' $((R % 1000)))"
}
# scaled BYTES_PER_S : S = value scaled by SCALE_PCT (at least 8000)
scaled() {
    S=$(($1 * scale / 100))
    ((S >= 8000)) || S=8000
}
left() { L=$((duration - (SECONDS - start))); }
alive() { left; [[ ! -e $stopf ]] && ((L > 0)); }
note() { printf '%s user=%s %s\n' "$(date +%s.%N)" "$id" "$*" >>"$logf"; }

fetch() { # fetch MAXTIME [curl options...] URL...
    local mt=$1
    shift
    timeout $((mt + 2)) curl -s --max-time "$mt" "$@" >/dev/null 2>&1 || true
}

small_files=(1k 2k 4k 8k 16k 32k 64k 128k 256k 512k)

do_browse() {
    local n i k urls
    rnd 2 6; n=$R
    note "state=browse pages=$n"
    for ((i = 0; i < n; i++)); do
        alive || return 0
        # a "page": 1-4 objects over one connection (keep-alive)
        urls=()
        rnd 1 4
        for ((k = R; k > 0; k--)); do
            rnd 0 $((${#small_files[@]} - 1))
            urls+=("$url/${small_files[R]}")
        done
        fetch 10 "${urls[@]}"
        msleep 200 1500
    done
}

do_video() {
    local n i rate
    rnd 2 6; n=$R
    rnd 200000 350000; scaled "$R"; rate=$S
    note "state=video chunks=$n rate=$rate"
    for ((i = 0; i < n; i++)); do
        alive || return 0
        fetch 8 --limit-rate "$rate" "$url/seg1m"
        msleep 100 800
    done
}

bulk16m_bytes=$((16 << 20))

# bulk_http RATE T: the bulk file, paced at RATE for at most T s, or unpaced
# its first RATE x T bytes (the whole file at most)
bulk_http() {
    local rate=$1 t=$2 bytes
    if [[ $bulk_pacing == paced ]]; then
        note "state=bulk kind=http rate=$rate t=$t"
        fetch "$t" --limit-rate "$rate" "$url/bulk16m"
        return
    fi
    bytes=$((rate * t))
    ((bytes <= bulk16m_bytes)) || bytes=$bulk16m_bytes
    note "state=bulk kind=http-unpaced bytes=$bytes rate=$rate t=$t"
    fetch $((t + 10)) -r "0-$((bytes - 1))" "$url/bulk16m"
}

# bulk_iperf3 KIND RATE T [-R]: iperf3 paced at RATE for T s, or unpaced RATE x T bytes
bulk_iperf3() {
    local kind=$1 rate=$2 t=$3
    shift 3
    if [[ $bulk_pacing == paced ]]; then
        note "state=bulk kind=$kind rate=$rate t=$t"
        timeout $((t + 6)) iperf3 -c "$peer" -p "$iport" -t "$t" -b "$((rate * 8))" "$@" >/dev/null 2>&1 || true
        return
    fi
    note "state=bulk kind=$kind-unpaced bytes=$((rate * t)) rate=$rate t=$t"
    timeout $((t + 10)) iperf3 -c "$peer" -p "$iport" -n "$((rate * t))" "$@" >/dev/null 2>&1 || true
}

do_bulk() {
    local t rate mode
    rnd 3 8; t=$R
    left
    ((L >= t)) || t=$L
    ((t >= 1)) || return 0
    rnd 0 5; mode=$R
    case $mode in
        0 | 1)
            rnd 400000 900000; scaled "$R"; rate=$S
            bulk_http "$rate" "$t"
            ;;
        2 | 3)
            rnd 400000 900000; scaled "$R"; rate=$S
            bulk_iperf3 iperf3-down "$rate" "$t" -R
            ;;
        4)
            rnd 400000 900000; scaled "$R"; rate=$S
            bulk_iperf3 iperf3-up "$rate" "$t"
            ;;
        5)
            # short and fast (capped): 1 s at ~2.5 MB/s
            scaled 2500000; rate=$S
            bulk_iperf3 iperf3-burst "$rate" 1
            ;;
    esac
}

do_idle() {
    note "state=idle"
    rnd 0 1
    if ((R)); then
        fetch 5 "$url/1k"
    fi
    msleep 500 4000
}

# Transition matrix (percent), rows: from browse, video, bulk, idle;
# columns: to browse, video, bulk, idle.
# next_state: sets the global `state`.
next_state() {
    local r row
    rnd 0 99; r=$R
    case $state in
        browse) row=(35 15 10 40) ;;
        video) row=(20 40 5 35) ;;
        bulk) row=(25 10 25 40) ;;
        *) row=(40 20 15 25) ;;
    esac
    if ((r < row[0])); then state=browse
    elif ((r < row[0] + row[1])); then state=video
    elif ((r < row[0] + row[1] + row[2])); then state=bulk
    else state=idle; fi
}

# start after a random offset so users do not align, in a state drawn from
# the chain's stationary distribution (browse 32 %, video 21 %, bulk 13 %,
# idle 34 %), so the aggregate starts near its long-run mean
msleep 0 1500
rnd 0 99
if ((R < 32)); then state=browse
elif ((R < 53)); then state=video
elif ((R < 66)); then state=bulk
else state=idle; fi
state=${BG_FIRST_STATE:-$state}
for ((step = 0; step < max_steps; step++)); do
    alive || break
    "do_$state"
    next_state
done
note "done steps=$step"
