#!/usr/bin/env bash
# End-to-end tests of the `shroud` CLI as a user runs it: real captures in,
# tables and JSON out, clear errors for bad input.
#   tests/cli_test.sh PATH/TO/shroud
set -uo pipefail
shroud=${1:?usage: cli_test.sh PATH/TO/shroud}
root=${SHROUD_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
traces=${SHROUD_SHARED_TRACES:-$root/../shared/traces/public}
data=$root/tests/data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
# expect NAME EXPECTED_EXIT PATTERN_IN_OUTPUT -- CMD...
expect() {
  local name=$1 want=$2 pattern=$3; shift 4
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" != "$want" ]; then bad "$name (exit $rc, wanted $want)" "$out"; return; fi
  if ! grep -qE -- "$pattern" <<<"$out"; then bad "$name (no /$pattern/ in output)" "$out"; return; fi
  ok "$name"
}

expect "top-level help" 0 "analyze .*per-flow" -- "$shroud" --help
expect "no command is a usage error" 2 "usage: shroud COMMAND" -- "$shroud"
expect "unknown command" 2 "unknown command 'frobnicate'" -- "$shroud" frobnicate
expect "analyze help lists its options" 0 "--json.*JSON" -- "$shroud" analyze --help
expect "analyze help lists the detector options" 0 "--pwin" -- "$shroud" analyze --help
expect "eval help" 0 "Table III" -- "$shroud" eval --help
expect "train help" 0 "--migration_filter" -- "$shroud" train --help
expect "analyze without captures" 2 "no capture given" -- "$shroud" analyze
expect "missing capture names the file" 1 "/nonexistent/cap.pcap: cannot read capture" -- "$shroud" analyze /nonexistent/cap.pcap
echo "this is not a capture" >"$tmp/text.pcap"
expect "text file is rejected" 1 "text.pcap: cannot read capture" -- "$shroud" analyze "$tmp/text.pcap"
expect "bad --windows value" 2 "--windows: 'abc' is not a whole number" -- "$shroud" analyze --windows=100,abc "$tmp/text.pcap"
expect "non-ascending --windows" 2 "strictly ascending" -- "$shroud" analyze --windows=500,100 "$tmp/text.pcap"
echo '{"format": "something-else", "version": 1}' >"$tmp/model.json"
expect "bad model file names file and problem" 2 "model.json.*format" -- "$shroud" analyze --model "$tmp/model.json" "$tmp/text.pcap"
expect "missing model file" 2 "nomodel.json" -- "$shroud" analyze --model "$tmp/nomodel.json" "$tmp/text.pcap"
# Options a command does not read are refused by name, not ignored.
expect "analyze refuses a training option" 2 "option --l2 \(train,eval,judge\) is not read by analyze" -- "$shroud" analyze --l2 0.5 "$tmp/text.pcap"
expect "ctl refuses detector options" 2 "options --pwin \(analyze,eval,judge\), --windows \(analyze,train,eval,judge\) are not read by ctl" -- "$shroud" ctl --windows 100 --pwin 10 ping
expect "train refuses Algorithm 1's --pwin" 2 "--pwin \(analyze,eval,judge\) is not read by train" -- "$shroud" train --pwin 500 --migration "$tmp/text.pcap" -o "$tmp/out.json"
expect "train refuses --model" 2 "--model \(analyze,eval,judge\) is not read by train" -- "$shroud" train --model "$tmp/model.json" --migration "$tmp/text.pcap" -o "$tmp/out.json"
expect "ratewalk refuses rttmon's options" 2 "--peak_k \(rttmon\) is not read by ratewalk" -- "$shroud" ratewalk --peak_k 3 "$root/conf/gateway-pair-a.toml"
expect "an option at its default value but set is refused too" 2 "--folds \(eval\) is not read by judge" -- "$shroud" judge --folds 5 "$tmp"
expect "ctl help lists no detector options" 0 "^0$" -- bash -c '"$1" ctl --help | grep -cE -- "--(pwin|l2|windows) "; true' _ "$shroud"
expect "eval help lists the shared detector options" 0 "--l2 .*train/eval" -- "$shroud" eval --help

anydesk=$traces/nfstream__anydesk.pcap
if [ -f "$anydesk" ]; then
  expect "analyze a real capture" 0 "51.83.238.219:80>192.168.149.129:43535/tcp +4001 +2618640" -- "$shroud" analyze "$anydesk"
  out=$("$shroud" analyze --json "$anydesk" 2>&1)
  if python3 - "$out" <<'PY'
import json, sys
lines = [l for l in sys.argv[1].splitlines() if l.strip()]
assert len(lines) == 2, f"expected 2 flows >= 1000 packets, got {len(lines)}"
for l in lines:
    row = json.loads(l)
    for k in ("flow", "packets", "bytes", "pattern", "maxent", "migration", "cov"):
        assert k in row, f"missing {k} in {row}"
    assert isinstance(row["pattern"], bool) and isinstance(row["migration"], bool)
    assert row["maxent"] is None or 0.0 <= row["maxent"] <= 1.0
    assert ">" in row["flow"] and row["flow"].endswith("/tcp")
rows = {json.loads(l)["flow"]: json.loads(l) for l in lines}
assert rows["51.83.238.219:80>192.168.149.129:43535/tcp"]["packets"] == 4001
PY
  then ok "analyze --json rows carry the documented fields"; else bad "analyze --json rows" "$out"; fi
  # A capture cut in the middle of a record: the error names the file and the damage.
  head -c 100001 "$anydesk" >"$tmp/cut.pcap"
  expect "truncated capture names file" 1 "cut.pcap: truncated or corrupt capture after [0-9]+ records" -- "$shroud" analyze "$tmp/cut.pcap"
  # One bad capture among good ones: the good ones are still analysed.
  expect "bad capture does not hide good ones" 1 "2 flows analysed" -- "$shroud" analyze "$tmp/cut.pcap" "$anydesk"
  expect "--min_packets filters flows" 0 "^0 flows analysed" -- "$shroud" analyze --min_packets 5000 "$anydesk"
  expect "dashed flag names work too" 0 "^1 flows analysed" -- "$shroud" analyze --min-packets 3000 "$anydesk"
else
  skip_check "real public captures not found at $traces"
fi

mig=$data/migration-r8-light.pcap
bgcap=$data/background-medium.pcap
if [ -f "$mig" ] && [ -f "$bgcap" ]; then
  out=$("$shroud" analyze --json "$mig" 2>&1)
  if python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
mig = [r for r in rows if r["flow"].split(">")[1].split(":")[-1].split("/")[0] == "49152"]
assert mig, "no migration flow to port 49152"
assert all(r["pattern"] for r in mig), mig
assert all(r["maxent"] is not None and r["maxent"] >= 0.5 for r in mig), mig
assert all(r["migration"] for r in mig), mig
PY
  then ok "real native migration is flagged by both detectors (built-in model)"; else bad "real native migration flagged" "$out"; fi
  expect "train writes a model" 0 "wrote .*trained on 1 migration" -- "$shroud" train --migration "$mig" --background "$bgcap" "$anydesk" -o "$tmp/trained.json"
  expect "trained model loads and is used" 0 "maxent model: .*trained.json" -- "$shroud" analyze --model "$tmp/trained.json" "$mig"
  expect "eval prints the paper's tables" 0 "Table III: migration flows \(n=1\)" -- "$shroud" eval --folds 2 --migration "$mig" --background "$bgcap" --csv_dir "$tmp/csv"
  if [ -s "$tmp/csv/table2.csv" ] && head -1 "$tmp/csv/table2.csv" | grep -q "cov100" && [ -s "$tmp/csv/detection.csv" ]; then
    ok "eval --csv_dir writes the tables"; else bad "eval --csv_dir" "$(ls -l "$tmp/csv" 2>&1)"; fi
  out=$("$shroud" eval --json --folds 2 --migration "$mig" --background "$bgcap" 2>/dev/null)
  if python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); assert {"table2","table3","detection"} <= d.keys(); assert d["table3"]["df"] >= 1' <<<"$out"; then
    ok "eval --json is one document with the three tables"; else bad "eval --json" "$out"; fi
  expect "eval when no flow matches the filter" 1 "matched --migration_filter 'tcp dst port 1'" -- "$shroud" eval --migration "$mig" --migration_filter "tcp dst port 1"
  expect "train without -o" 2 "need --migration CAPTURE... and -o MODEL" -- "$shroud" train --migration "$mig"
  expect "train with a bad filter" 1 "flow filter 'port nonsense'" -- "$shroud" train --migration "$mig" --migration_filter "port nonsense" -o "$tmp/x.json"
else
  skip_check "tests/data migration/background captures not present"
fi

# ratewalk: Algorithm 3 of a real config, simulated.
pair=$root/conf/gateway-pair-a.toml
expect "ratewalk help" 0 "--offered_mib_s" -- "$shroud" ratewalk --help
expect "ratewalk needs a config" 2 "need exactly one GATEWAY_CONFIG" -- "$shroud" ratewalk
expect "ratewalk: missing config names the file" 1 "/nonexistent/gw.toml" -- "$shroud" ratewalk /nonexistent/gw.toml
expect "ratewalk: bad --offered_mib_s" 2 "'fast' is not a number of MiB/s" -- "$shroud" ratewalk --offered_mib_s 2,fast "$pair"
expect "ratewalk: an --offered_mib_s beyond any link" 2 "'1e308' is not a number of MiB/s in \(0, 1000000\]" -- "$shroud" ratewalk --offered_mib_s 1e308 "$pair"
expect "ratewalk: an empty --offered_mib_s" 2 "give at least one rate" -- "$shroud" ratewalk --offered_mib_s= "$pair"
expect "ratewalk: bad --walk_seconds" 2 "--walk_seconds must be in" -- "$shroud" ratewalk --walk_seconds 0 "$pair"
sed 's/^enabled = true *#.*Algorithm 3.*/enabled = false/' "$pair" >"$tmp/fixed.toml"
expect "ratewalk: a config without the walk" 1 "rate_variation.enabled is false" -- "$shroud" ratewalk "$tmp/fixed.toml"
expect "ratewalk prints the walk's mean" 0 "mean rate +[0-9.]+ MB/s \(0\.[0-9]+ x maxR\)" -- "$shroud" ratewalk --walk_seconds 60 "$pair"
expect "ratewalk finds the maxR for a mean" 0 "a mean of 2 MiB/s \(2.097 MB/s\): maxR [45]\.[0-9]+ MB/s" -- "$shroud" ratewalk --walk_seconds 120 --target_mean_mib_s 2 "$pair"
expect "ratewalk: a mean beyond the config's maxR" 0 "a mean of 8 MiB/s .* needs more than this maxR" -- "$shroud" ratewalk --walk_seconds 120 --target_mean_mib_s 8 "$pair"
expect "ratewalk: a mean at minR" 1 "not above minR" -- "$shroud" ratewalk --target_mean_mib_s 0.05 "$pair"
expect "ratewalk: a negative mean" 2 "--target_mean_mib_s must be in" -- "$shroud" ratewalk --target_mean_mib_s -1 "$pair"
out=$("$shroud" ratewalk --json --walk_seconds 120 --offered_mib_s 2,12 --trace_csv "$tmp/walk.csv" "$pair" 2>&1)
if python3 - "$out" "$tmp/walk.csv" <<'PY'
import csv, json, sys
d = json.loads(sys.argv[1])
assert d["steps"] == 12000 and abs(d["seconds"] - 120) < 1e-6, d
assert d["min_rate_mbyte_s"] == 0.1 and d["max_rate_mbyte_s"] == 11.875, d
assert 0 < d["mean_over_max"] < 1 and 0 < d["share_at_min"] < 1 and 0 < d["share_at_max"] < 1, d
low, high = d["offered"]
assert abs(low["offered_mbyte_s"] - 2 * 1.048576) < 1e-9, low
assert low["mean_delivered_mbyte_s"] <= low["offered_mbyte_s"], low
assert high["share_of_steps_below"] > low["share_of_steps_below"], d
rows = list(csv.DictReader(open(sys.argv[2])))
assert len(rows) == 12000, len(rows)
rates = [float(r["rate_mbyte_s"]) for r in rows]
assert abs(sum(rates) / len(rates) - d["mean_rate_mbyte_s"]) < 1e-3, (sum(rates) / len(rates), d)
assert min(rates) >= 0.1 - 1e-9 and max(rates) <= 11.875 + 1e-9
assert rows[1]["t_ms"] == "10.000" and {r["direction"] for r in rows} == {"up", "down"}
PY
then ok "ratewalk --json and --trace_csv agree with each other and the config"; else bad "ratewalk --json/--trace_csv" "$out"; fi
a=$("$shroud" ratewalk --json --walk_seconds 30 --walk_seed 7 "$pair" 2>&1)
b=$("$shroud" ratewalk --json --walk_seconds 30 --walk_seed 7 "$pair" 2>&1)
c=$("$shroud" ratewalk --json --walk_seconds 30 --walk_seed 8 "$pair" 2>&1)
if [ "$a" = "$b" ] && [ "$a" != "$c" ]; then ok "ratewalk: a seed replays the same walk, another does not"
else bad "ratewalk seeds" "$a / $c"; fi

# Session spread: each simulated session draws its own minR and win.
grep -v '^session_spread\|^bursty_\|^session_gap_ms' "$pair" |
  sed 's/^\[rate_variation\]/[rate_variation]\nsession_spread = true\nbursty_min_rate_mbyte_s = 0.02\nbursty_window = 10/' >"$tmp/spread.toml"
expect "ratewalk: bad --session_seconds" 2 "--session_seconds must be in" -- "$shroud" ratewalk --session_seconds 0 "$tmp/spread.toml"
out=$("$shroud" ratewalk --json --walk_seconds 300 --session_seconds 30 --offered_mib_s 4 --trace_csv "$tmp/spread.csv" "$tmp/spread.toml" 2>&1)
if python3 - "$out" "$tmp/spread.csv" <<'PY'
import csv, json, sys
d = json.loads(sys.argv[1])
assert d["session_spread"] is True and d["sessions"] == 10, d
lo, hi = d["session_min_rate_mbyte_s"]
assert 0.02 - 1e-9 <= lo < hi <= d["min_rate_mbyte_s"] + 1e-9, d
wlo, whi = d["session_window"]
assert 10 <= wlo < whi <= 50, d
q = d["offered"][0]["session_cov_100ms"]
assert 0 < q["p10"] <= q["p50"] <= q["p90"], q
rows = list(csv.DictReader(open(sys.argv[1 + 1])))
sessions = [int(r["session"]) for r in rows]
assert sessions[0] == 0 and sessions[-1] == 9 and sessions == sorted(sessions), sessions[-1]
assert sessions.count(3) == 3000, sessions.count(3)
assert {r["paused"] for r in rows} == {"0"}, "no pauses configured"
PY
then ok "ratewalk: session spread draws a minR and win per session and reports the CoV spread"; else bad "ratewalk session spread" "$out"; fi
expect "ratewalk: text shows the session spread" 0 "session spread +10 sessions of 30 s" -- "$shroud" ratewalk --walk_seconds 300 "$tmp/spread.toml"

# Input that is not what the user meant: an error naming it, never defaults,
# an empty result with exit 0, or a crash.
mkdir -p "$tmp/confdir"
expect "ratewalk: a directory as the config" 1 "confdir: is a directory" -- "$shroud" ratewalk "$tmp/confdir"
: >"$tmp/empty.toml"
expect "ratewalk: an empty config" 1 "empty.toml: the config is empty" -- "$shroud" ratewalk "$tmp/empty.toml"
expect "ratewalk: /dev/zero as the config" 1 "/dev/zero: not a regular file" -- "$shroud" ratewalk /dev/zero
{ printf 'x = '; head -c 20000 /dev/zero | tr '\0' '['; head -c 20000 /dev/zero | tr '\0' ']'; echo; } >"$tmp/deep.toml"
expect "ratewalk: 20000 nested arrays are an error, not a crash" 1 "deep.toml:1: invalid TOML: arrays or inline tables nested deeper than 32" -- "$shroud" ratewalk "$tmp/deep.toml"
printf '[rate_variation]\nseed = 99999999999999999999\n' >"$tmp/bigseed.toml"
expect "ratewalk: an integer beyond int64" 1 "rate_variation.seed: out of range" -- "$shroud" ratewalk "$tmp/bigseed.toml"
expect "analyze: --model /dev/zero" 2 "/dev/zero: not a regular file" -- "$shroud" analyze --model /dev/zero "$data/small.pcap"
expect "analyze: --max_flows 0" 2 "--max_flows must be at least 1" -- "$shroud" analyze --max_flows=0 "$data/small.pcap"
expect "analyze: flows beyond --max_flows are reported" 0 "warning: .*small.pcap: [0-9]+ packets of flows beyond the first 1 were not tracked" -- "$shroud" analyze --max_flows=1 --min_packets=1 "$data/small.pcap"
echo '{"runs": [{"id": "a", "mode": "native", "capture": "a.pcap"}, {"id": "a", "mode": "stealth", "capture": "b.pcap"}]}' >"$tmp/dup.json"
expect "judge: a run id twice, before any capture is read" 2 "dup.json: runs\[1\]: id \"a\" appears twice" -- "$shroud" judge "$tmp/dup.json"
echo '{"runs": [{"id": "a", "mode": "fast", "capture": "a.pcap"}]}' >"$tmp/mode.json"
expect "judge: a bad mode names the run list" 2 "mode.json: runs\[0\] \(a\): mode must be" -- "$shroud" judge "$tmp/mode.json"
expect "judge: /dev/zero as the run list" 2 "/dev/zero: not a regular file" -- "$shroud" judge /dev/zero
echo '{"runs": [{"id": "a", "mode": "native", "capture": "a.pcap"}]}' >"$tmp/runs.json"
expect "judge: --l2 below 0" 2 "--l2 must be a number >= 0, got -1" -- "$shroud" judge --l2=-1 "$tmp/runs.json"
expect "judge: --timing_l2 inf" 2 "--timing_l2 must be a number > 0, got inf" -- "$shroud" judge --timing_l2=inf "$tmp/runs.json"
expect "judge: --feature_windows outside --windows" 2 "--feature_windows: 999 is not one of --windows" -- "$shroud" judge --feature_windows=100,500,999 "$tmp/runs.json"
expect "judge: --ks_window outside --windows" 2 "--ks_window 7 is not one of --windows" -- "$shroud" judge --ks_window=7 "$tmp/runs.json"
expect "judge: --more_feature_windows outside --windows" 2 "--more_feature_windows: maxent window triple 100,200,250: 250 is not one of the feature windows" -- "$shroud" judge --more_feature_windows="100,200,300;100,200,250" "$tmp/runs.json"
expect "judge: --more_feature_windows repeating --feature_windows" 2 "--more_feature_windows: maxent window triple 100,500,1000 is given twice or is maxent's own" -- "$shroud" judge --more_feature_windows="100,500,1000" "$tmp/runs.json"
expect "judge: --more_feature_windows not a triple" 2 "--more_feature_windows takes three window sizes like 100,500,1000, got '100,200'" -- "$shroud" judge --more_feature_windows="100,200" "$tmp/runs.json"
expect "eval: --alpha 5" 2 "--alpha must be between 0 and 1" -- "$shroud" eval --alpha=5 --migration "$data/small.pcap"
expect "eval: --alpha nan" 2 "--alpha must be between 0 and 1" -- "$shroud" eval --alpha=nan --migration "$data/small.pcap"
expect "eval: --folds 0" 2 "--folds must be at least 2, got 0" -- "$shroud" eval --folds=0 --migration "$data/small.pcap"
expect "eval: --ks_window outside --windows" 2 "--ks_window 7 is not one of --windows" -- "$shroud" eval --ks_window=7 --migration "$data/small.pcap"
expect "train: --l2 nan, before any capture is read" 2 "--l2 must be a number >= 0, got nan" -- "$shroud" train --l2=nan -o "$tmp/m.json" --migration /nonexistent.pcap

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
