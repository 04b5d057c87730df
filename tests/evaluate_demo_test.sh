#!/usr/bin/env bash
# The README's main job end to end: scripts/evaluate --demo on the namespace
# testbed, one native and one stealth real QEMU live migration (32 MiB guest,
# 4 MiB/s) across the gateway pair under light background load, then
# shroud judge and the report. Checks what the demo shows:
#   - both migrations completed, with QEMU's total time and downtime recorded;
#   - the native migration's flow is flagged by the shipped maxent attack
#     (the live tap's model) and by the live tap itself;
#   - the stealth migration's flow is flagged by neither paper attack nor the
#     live tap, and chaff crossed the WAN in the stealth run only;
#   - both guests answered 10 ms pings on their VM network before and after
#     the switch-over, and the downtime by pings (lost x interval) is recorded;
#   - the report, its tables and figures are written;
#   - a stealth QEMU multifd migration (2 channels, 24 MiB, no load, the
#     source with tcp_notsent_lowat, QEMU's max-bandwidth 12 MiB/s on an
#     8 MiB/s run) is judged as one migration in two channels; a bad
#     --multifd or --stealth-qemu-bandwidth is refused;
#   - the testbed is removed.
#
#   tests/evaluate_demo_test.sh BUILD_DIR
# Needs root, qemu-system-x86, tcpdump, nginx, iperf3, socat and
# python3-matplotlib; exits 77 ("skipped: ...") without them.
set -euo pipefail
build=$(cd "${1:?usage: evaluate_demo_test.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)

[[ $(id -u) -eq 0 ]] || { echo "skipped: the testbed needs root (network namespaces)"; exit 77; }
for t in qemu-system-x86_64 tcpdump nginx iperf3 curl jq gcc; do
    command -v "$t" >/dev/null || { echo "skipped: $t is not installed (scripts/setup.sh --with-capture-tools)"; exit 77; }
done
py=""
for p in python3 /usr/bin/python3; do
    if "$p" -c 'import matplotlib, numpy' 2>/dev/null; then py=$p; break; fi
done
[[ -n $py ]] || { echo "skipped: no python3 with matplotlib (apt-get install python3-matplotlib)"; exit 77; }

work=$(mktemp -d /tmp/shroud-evaluate-demo.XXXXXX)
export SHROUD_TESTBED_DIR=$work/testbed
cleanup() {
    "$root/scripts/testbed" down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
expect() {  # expect DESCRIPTION JQ_FILTER FILE : the filter must yield true
    if jq -e "$2" "$3" >/dev/null 2>&1; then ok "$1"; else bad "$1: $(jq -c "$2" "$3" 2>&1 | head -c 300)"; fi
}

ns_before=$(ip netns list | grep -c '^shroud-tb-' || true)
out=$work/out
# An 80 Mbit/s WAN rather than the default 100: the stealth gateways must
# get link rate and maxR 80 x 0.95 / 8 = 9.5 MB/s, not the shipped 11.875.
if ! "$root/scripts/evaluate" --demo --link-mbit 80 --out "$out" --build "$build" >"$work/evaluate.log" 2>&1; then
    bad "scripts/evaluate --demo failed"
    tail -n 40 "$work/evaluate.log"
    for f in "$out"/runs/*/migrate.log "$out"/testbed-up.log; do
        [[ -f $f ]] && { echo "--- $f"; tail -n 15 "$f"; }
    done
    exit 1
fi
ok "scripts/evaluate --demo finished"
grep -E 'qemu:|tap: flow 192' "$work/evaluate.log" | sed 's/^ */# /' | cut -c1-220

s=$out/summary.json
[[ -s $s ]] || { bad "no summary.json"; exit 1; }
expect "two runs, one per mode, at 4 MiB/s under light load" \
    '[.runs[] | [.mode, .rate_mib_s, .load]] | sort == [["native",4,"light"],["stealth",4,"light"]]' "$s"
expect "both migrations completed with QEMU's total time and downtime" \
    '[.runs[] | .status == "completed" and .total_time_s > 1 and .downtime_ms >= 0] | all' "$s"
expect "both: the guest answered 10 ms pings, and after the switch-over (source paused) the destination did" \
    '[.runs[] | .ping.received > 100 and .ping.after_received > 0 and .ping.target == "203.0.113.10"] | all' "$s"
expect "both: downtime by pings (lost x 10 ms) measured, at least one probe lost in the switch-over" \
    '[.runs[] | .ping_downtime_ms >= 10 and .ping_downtime_ms < 60000] | all' "$s"
native='.runs[] | select(.mode == "native")'
stealth='.runs[] | select(.mode == "stealth")'
expect "native: the migration flow is found on the WAN" "$native | .migration_flow | test(\":49152/tcp\$\")" "$s"
expect "native: flagged by the shipped maxent attack" "$native | .verdicts.maxent_shipped.flagged == true" "$s"
expect "native: flagged by the live tap (shroud-control)" "$native | .live_tap.migration == true" "$s"
expect "stealth: the migration flow is found on the WAN" "$stealth | .migration_flow | test(\":49152/tcp\$\")" "$s"
expect "stealth: not flagged by the pattern attack" "$stealth | .verdicts.pattern.flagged == false" "$s"
expect "stealth: not flagged by the shipped maxent attack" "$stealth | .verdicts.maxent_shipped.flagged == false" "$s"
expect "stealth: not flagged by the live tap" "$stealth | .live_tap.migration == false" "$s"
expect "evaluate's defaults: both sources ran with tcp_notsent_lowat 131072" \
    '[.runs[] | .src_notsent_lowat == 131072] | all' "$s"
expect "evaluate's defaults: the stealth switch-over drained at maxR (ctl exit 0) and the walk came back; native not" \
    "([$stealth | .switchover_drain.hook_rc == 0 and .switchover_drain.restored == true] | all) and ([$native | .switchover_drain == null] | all)" "$s"
expect "chaff crossed the WAN in the stealth run only" \
    "([$stealth | .chaff_flows] | .[0] > 0) and ([$native | .chaff_flows] | .[0] == 0)" "$s"
expect "judge: every detector named (maxent on the paper's other window triples too), one verdict per flow" \
    '(.detectors | map(.name)) == ["pattern","maxent","maxent_shipped","timing","timing_adaptive",
      "maxent_w100_200_300","maxent_w500_1000_2000","maxent_w1000_2000_3000"]
     and ([.runs[].flows[] | .verdicts | keys | length] | all(. == 8))' \
    "$out/judge.json"
# maxent is trained on the other native runs' flows: a demo's lone native run trains
# none, so what is checked here is that each triple was judged and reported like it.
expect "judge: each triple's model said, as maxent's is" \
    '[.runs[].models as $m | ["maxent_w100_200_300","maxent_w500_1000_2000","maxent_w1000_2000_3000"]
      | .[] | $m[.] == $m.maxent] | all' "$out/judge.json"
expect "summary: each triple's verdict on the migrations where maxent has one, none where it has none" \
    '[.runs[] | .verdicts as $v | [$v.maxent_w100_200_300, $v.maxent_w500_1000_2000, $v.maxent_w1000_2000_3000]
      | all(. != null and (.flagged | type) == ($v.maxent.flagged | type))] | all' "$s"
expect "judge: every flow's timing features (what our attacks see), numbers for the migrations" \
    '([.runs[].flows[] | .timing_features | keys | length] | all(. == 16)) and ([.runs[].flows[] | select(.label == "migration") | .timing_features.ipt_back_to_back_share | type] | all(. == "number"))' \
    "$out/judge.json"
for r in "$out"/runs/*/; do
    expect "$(basename "$r"): QEMU ran with downtime-limit 100 ms (evaluate's default)" \
        '.downtime_limit == 100' "$r/qmp-migrate.json"
done
gw_ok=1
for side in gwa gwb; do
    for key in link_rate_mbyte_s max_rate_mbyte_s; do
        grep -q "^$key = 9.500\b" "$out/gateways-stealth/$side.toml" 2>/dev/null || gw_ok=0
    done
done
if ((gw_ok)); then
    ok "stealth gateways ran with link rate and maxR at 95 % of the 80 Mbit/s WAN (9.5 MB/s)"
else
    bad "stealth gateway configs in $out/gateways-stealth lack link_rate/max_rate = 9.500: $(grep -h '^link_rate\|^max_rate' "$out"/gateways-stealth/*.toml 2>&1 | tr '\n' ' ')"
fi

# The side-by-side table scripts/demo.sh prints after this run.
table=$("$py" "$root/scripts/lib/demo_table.py" "$s" 2>&1) || true
if grep -Eq '^QEMU status +completed +completed$' <<<"$table" &&
   grep -Eq '^maxent \(Algorithm 2, shipped model\) +FLAGGED \([0-9.]+\) +hidden \([0-9.]+\)$' <<<"$table" &&
   grep -Eq '^switch-over drain at maxR +- +applied \+[0-9]+ ms$' <<<"$table"; then
    ok "demo.sh's side-by-side table: both completed, maxent flags native only, drain applied to stealth only"
else
    bad "demo.sh's side-by-side table is not what the summary says:"; echo "$table" | sed 's/^/#   /'
fi

if grep -q '^## What must hold' "$out/report.md" && grep -q '^## Table V' "$out/report.md"; then
    ok "report.md has the tables and the checks"
else
    bad "report.md lacks its sections"
fi
missing=""
for f in fig1_native_throughput fig3_pattern_native fig4_maxent_native fig6_stealth_throughput \
    fig7_pattern_stealth fig8_maxent_stealth fig_ours; do
    [[ $(head -c 4 "$out/$f.png" 2>/dev/null | od -An -tx1 | tr -d ' ') == 89504e47 ]] || missing+=" $f.png"
done
for f in table2 table3 table4 table5; do [[ -s $out/$f.csv ]] || missing+=" $f.csv"; done
if [[ -z $missing ]]; then ok "figures (PNG) and tables (CSV) written"; else bad "missing or not PNG:$missing"; fi

# QEMU multifd through the stealth pair: one small migration in two
# connections, each judged as a channel of the one migration.
if "$root/scripts/evaluate" --multifd 1 --out "$work/bad" --build "$build" >"$work/bad.log" 2>&1; then
    bad "scripts/evaluate --multifd 1 was accepted"
elif grep -q -- "--multifd must be 0 (one stream) or 2..16 channels" "$work/bad.log"; then
    ok "scripts/evaluate --multifd 1 is refused with the reason"
else
    bad "scripts/evaluate --multifd 1: unexpected error: $(tail -n 3 "$work/bad.log")"
fi
if "$root/scripts/evaluate" --stealth-qemu-bandwidth 20000 --out "$work/bad" --build "$build" >"$work/bad.log" 2>&1; then
    bad "scripts/evaluate --stealth-qemu-bandwidth 20000 was accepted"
elif grep -q -- "--stealth-qemu-bandwidth must be 0 (the run's rate) or 1..10000 MiB/s" "$work/bad.log"; then
    ok "scripts/evaluate --stealth-qemu-bandwidth 20000 is refused with the reason"
else
    bad "scripts/evaluate --stealth-qemu-bandwidth 20000: unexpected error: $(tail -n 3 "$work/bad.log")"
fi
# The same run leaves QEMU's limit to the shaper (--stealth-qemu-bandwidth)
# and drains the switch-over at maxR (--switchover-drain).
mf=$work/multifd
if "$root/scripts/evaluate" --modes stealth --multifd 2 --rates 8 --loads none --ram-mb 24 \
    --src-notsent-lowat 131072 --stealth-qemu-bandwidth 12 --switchover-drain \
    --out "$mf" --build "$build" >"$work/multifd.log" 2>&1; then
    ok "scripts/evaluate --multifd 2 (stealth, 24 MiB) finished"
    r='.runs[0]'
    expect "multifd: the migration completed, two channels asked for" \
        "$r | .status == \"completed\" and .multifd_channels == 2" "$mf/summary.json"
    expect "multifd: the judge saw both data channels as the migration" \
        "$r | .migration_channels >= 2" "$mf/summary.json"
    expect "multifd: QEMU ran with multifd on both sides (the channels' ports differ)" \
        '[.runs[0].flows[] | select(.label == "migration" and (.ack_direction | not)) | .flow] | unique | length >= 2' \
        "$mf/judge.json"
    expect "the source host ran with tcp_notsent_lowat 131072 (--src-notsent-lowat)" \
        '.testbed | test("src_notsent_lowat=131072")' "$(ls "$mf"/runs/*/run.json | head -n 1)"
    expect "the stealth migration ran at QEMU max-bandwidth 12 MiB/s, rate axis 8 (--stealth-qemu-bandwidth)" \
        '.max_bandwidth == 12582912' "$(ls "$mf"/runs/*/qmp-migrate.json | head -n 1)"
    expect "migrate.json records both: rate 8, QEMU 12 MiB/s" \
        '.rate_mib_s == 8 and .qemu_max_bandwidth_mib_s == 12' "$(ls "$mf"/runs/*/migrate.json | head -n 1)"
    expect "switch-over drain: QEMU paused before the switch-over, gateway A took maxR (ctl exit 0), the walk came back" \
        '.runs[0].switchover_drain.hook_rc == 0 and .runs[0].switchover_drain.restored == true' "$mf/summary.json"
    expect "switch-over drain: QEMU ran with pause-before-switchover and went on to complete" \
        '.switchover_hook.rc == 0 and .query_migrate.status == "completed"' "$(ls "$mf"/runs/*/qmp-migrate.json | head -n 1)"
    expect "matrix.json's command reruns the matrix with every setting it ran with" \
        '.command | test("--modes stealth .*--multifd 2 --src-notsent-lowat 131072 --stealth-qemu-bandwidth 12 --switchover-drain ")' \
        "$mf/matrix.json"
    grep -q "QEMU multifd: 2 channels requested" "$mf/report.md" &&
        ok "multifd: report.md says so" || bad "multifd: report.md does not mention the channels"
else
    bad "scripts/evaluate --multifd 2 failed"
    tail -n 30 "$work/multifd.log"
    for f in "$mf"/runs/*/migrate.log; do [[ -f $f ]] && { echo "--- $f"; tail -n 15 "$f"; }; done
fi

ns_after=$(ip netns list | grep -c '^shroud-tb-' || true)
if ((ns_after <= ns_before)) && [[ ! -e $SHROUD_TESTBED_DIR/namespaces ]]; then
    ok "the testbed is removed"
else
    bad "shroud-tb- namespaces left: $ns_after (before: $ns_before)"
fi
echo "$passed passed, $failed failed"
((failed == 0))
