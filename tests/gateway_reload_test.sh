#!/usr/bin/env bash
# Run-time control by SIGHUP: shroud-dataplane (net_null ports, two lcores)
# re-reads --config; a good change of [rate_variation] is applied while it
# forwards, a bad config changes nothing and says why, and the counters show it.
#
#   tests/gateway_reload_test.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: gateway_reload_test.sh BUILD_DIR}
root=${SHROUD_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
work=$(mktemp -d "${TMPDIR:-/tmp}/shroud-reload.XXXXXX")
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
wait_for_log() {  # PATTERN: up to 10 s
  for _ in $(seq 100); do grep -q -- "$1" "$work/log" && return 0; sleep 0.1; done
  return 1
}

cp "$root/conf/gateway.example.toml" "$work/gw.toml"
"$build/shroud-dataplane" --no-huge -m 512 --no-shconf --no-pci --no-telemetry \
  --file-prefix="shroud-reload-$$" -l 0-1 --vdev=net_null0 --vdev=net_null1 \
  -- --config="$work/gw.toml" --seed=3 --duration_s=30 --stats_interval_s=0 \
  --counters_json="$work/c.json" 2>"$work/log" &
pid=$!
if ! wait_for_log "worker on lcore"; then
  if grep -q "EAL initialisation failed" "$work/log"; then echo "skipped: EAL cannot start here"; exit 77; fi
  bad "dataplane did not start" "$(cat "$work/log")"
  echo "$passed passed, $failed failed"; exit 1
fi

# A good change: Algorithm 3 pinned to 2 MB/s.
sed -i -e 's/^min_rate_mbyte_s = [0-9.]*/min_rate_mbyte_s = 2/' \
       -e 's/^max_rate_mbyte_s = [0-9.]*/max_rate_mbyte_s = 2/' \
       -e 's/^start_rate_mbyte_s = [0-9.]*/start_rate_mbyte_s = 2/' "$work/gw.toml"
kill -HUP "$pid"
if wait_for_log "run-time update applied: migration Algorithm 3 \[2.000, 2.000\]"; then
  ok "SIGHUP applied the new [rate_variation] while forwarding"
else
  bad "SIGHUP: no 'run-time update applied' with [2, 2] MB/s" "$(cat "$work/log")"
fi

# A bad change: nothing applied, the reason logged.
cp "$work/gw.toml" "$work/good.toml"
sed -i 's/^min_rate_mbyte_s = 2/min_rate_mbyte_s = -1/' "$work/gw.toml"
kill -HUP "$pid"
if wait_for_log "SIGHUP: bad config, nothing changed"; then
  if grep -q "rate_variation.min_rate_mbyte_s: must be > 0" "$work/log"; then ok "a bad config on SIGHUP changes nothing and names the key"
  else bad "bad config message does not name the key" "$(cat "$work/log")"; fi
else
  bad "SIGHUP with a bad config: no 'bad config, nothing changed'" "$(cat "$work/log")"
fi
kill -0 "$pid" 2>/dev/null && ok "still forwarding after the bad reload" || bad "the dataplane died on a bad reload"

kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
pid=""
[ "$rc" = 0 ] && ok "clean exit after SIGTERM" || bad "exit status $rc after SIGTERM" "$(cat "$work/log")"
if python3 - "$work/c.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
assert c["runtime_updates"] == 1, c["runtime_updates"]
assert c["rate_variation"]["rate_bytes_per_sec"] == 2_000_000, c["rate_variation"]
assert c["inside_to_outside"]["forwarded_packets"] > 0
PY
then ok "counters: one run-time update, migration rate now 2 MB/s, traffic forwarded"
else bad "counters JSON" "$(cat "$work/c.json" 2>/dev/null)"; fi

# The chaff policy at run time (issue 4: runtime-selectable), on the shipped pair config.
cp "$root/conf/gateway-pair-a.toml" "$work/pair.toml"
: >"$work/log"
"$build/shroud-dataplane" --no-huge -m 512 --no-shconf --no-pci --no-telemetry \
  --file-prefix="shroud-reload2-$$" -l 0-1 --vdev=net_null0 --vdev=net_null1 \
  -- --config="$work/pair.toml" --seed=3 --duration_s=30 --stats_interval_s=0 2>"$work/log" &
pid=$!
if wait_for_log "worker on lcore"; then
  sed -i 's/^policy = "fill_to_envelope"/policy = "off"/' "$work/pair.toml"
  kill -HUP "$pid"
  if wait_for_log "run-time update applied: .*chaff policy off"; then
    ok "SIGHUP switched the chaff policy from fill_to_envelope to off while forwarding"
  else
    bad "SIGHUP: chaff policy not switched" "$(cat "$work/log")"
  fi
  kill -TERM "$pid"; wait "$pid" || true
else
  bad "dataplane with the pair config did not start" "$(cat "$work/log")"
fi
pid=""
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
