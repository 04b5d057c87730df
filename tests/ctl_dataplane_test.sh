#!/usr/bin/env bash
# Run-time control of a forwarding gateway (issue 5) as users drive it:
# `shroud ctl` over the control socket, bad requests of every kind refused
# with a clear error and nothing changed, a [classify] rules reload, a reload
# that needs a restart refused, the socket closed to other local users, the
# counters in DPDK telemetry, and shroud-control's /api/gateway and /metrics.
#
#   tests/ctl_dataplane_test.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: ctl_dataplane_test.sh BUILD_DIR}
root=${SHROUD_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
work=$(mktemp -d "${TMPDIR:-/tmp}/shroud-ctl.XXXXXX")
chmod 0755 "$work"   # lets another user reach the socket's directory (which stays 0700)
pid="" cpid=""
prefix="shroud-ctl-$$"
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  [ -n "$cpid" ] && kill -9 "$cpid" 2>/dev/null
  rm -rf "$work" "/var/run/dpdk/$prefix" 2>/dev/null || true
}
trap cleanup EXIT
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
rt="$work/run"
ctl() { "$build/shroud" ctl --runtime_dir="$rt" "$@"; }
expect_refused() {  # DESCRIPTION PATTERN ARGS...: exit 1, stderr matches, settings unchanged
  local what=$1 pattern=$2; shift 2
  local before after rc=0 err
  before=$(ctl get)
  err=$(ctl "$@" 2>&1 >/dev/null) || rc=$?
  after=$(ctl get)
  if [ "$rc" = 1 ] && grep -q -- "$pattern" <<<"$err" && [ "$before" = "$after" ]; then
    ok "$what: refused ($err), nothing changed"
  else
    bad "$what: exit $rc, message '$err', changed: $([ "$before" = "$after" ] && echo no || echo yes)"
  fi
}

cp "$root/conf/gateway.example.toml" "$work/gw.toml"
"$build/shroud-dataplane" --no-huge -m 512 --no-shconf --no-pci --file-prefix="$prefix" -l 0-1 \
  --vdev=net_null0 --vdev=net_null1 \
  -- --config="$work/gw.toml" --runtime_dir="$rt" --seed=3 --duration_s=60 --stats_interval_s=0 \
  --counters_json="$work/c.json" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do ctl ping >/dev/null 2>&1 && break; sleep 0.1; done
if ! ctl ping >/dev/null 2>&1; then
  if grep -q "EAL initialisation failed" "$work/log"; then echo "skipped: EAL cannot start here"; exit 77; fi
  bad "the dataplane's control socket never answered" "$(cat "$work/log")"
  echo "$passed passed, $failed failed"; exit 1
fi
ok "shroud ctl ping reaches the dataplane ($(ctl ping))"

# A good change, applied while forwarding.
if out=$(ctl set rate_variation.min_rate_mbyte_s=2 rate_variation.max_rate_mbyte_s=2 \
           rate_variation.start_rate_mbyte_s=2) && grep -q "max_rate_mbyte_s=2" <<<"$out" &&
   [ "$(ctl get | grep '^rate_variation.max_rate_mbyte_s=')" = "rate_variation.max_rate_mbyte_s=2.0" ]; then
  ok "set: Algorithm 3 pinned to 2 MB/s ($out)"
else
  bad "set of good values" "$out"
fi

# Bad requests: each refused with a message, nothing changed.
expect_refused "out of range" "rate_variation.max_rate_mbyte_s" set rate_variation.max_rate_mbyte_s=-5
expect_refused "unknown key" "unknown key" set rate_variation.bogus=1
expect_refused "wrong type" "rate_variation.window" set rate_variation.window=lots
expect_refused "one bad value among good ones" "c_percent" set rate_variation.d=0.1 rate_variation.c_percent=500
expect_refused "chaff policy without a chaff key" "chaff" set chaff.policy=constant
if out=$(python3 - "$rt/default/ctl.sock" <<'PY'
import json, socket, sys
def ask(payload):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1]); s.sendall(payload); s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk: break
        data += chunk
    return json.loads(data.splitlines()[0])
for payload, word in [(b"{not json\n", "parse"), (b"[1,2]\n", "object"),
                      (b'{"cmd":"launch"}\n', "unknown"), (b'{"cmd":"get","x":1}\n', "x"),
                      (b'{"cmd":"set","values":7}\n', "object"),
                      (b'{"cmd":"set","values":{"rate_variation.window":' + b"9" * 70000 + b"}}\n", "too large")]:
    r = ask(payload)
    assert r["ok"] is False and word in r["error"], (payload[:40], r)
print("6 malformed/oversized requests refused")
PY
); then ok "raw socket: $out"; else bad "raw malformed requests" "$out"; fi
[ "$(ctl get | grep '^rate_variation.max_rate_mbyte_s=')" = "rate_variation.max_rate_mbyte_s=2.0" ] \
  && ok "after all the bad requests the settings are still the good ones" \
  || bad "settings changed by bad requests" "$(ctl get)"

# Reload: rules change live; a section that needs a restart is refused.
cat >>"$work/gw.toml" <<'EOF'

[[classify.rule]]
name = "test-added"
class = "migration"
dst = "203.0.113.0/24"
dst_ports = "7000-7001"
protocol = "tcp"
EOF
if out=$(ctl reload 2>&1) && wait_log=$(for _ in $(seq 50); do grep -q "rules reloaded" "$work/log" && break; sleep 0.1; done; grep "rules reloaded" "$work/log"); then
  ok "reload: rules swapped in the running worker ($out / ${wait_log##*] })"
else
  bad "reload with a new rule" "$out $(tail -3 "$work/log")"
fi
cp "$work/gw.toml" "$work/gw.good"
sed -i 's/^max_flows = .*/max_flows = 4096/' "$work/gw.toml"
expect_refused "reload of [flows]" "flows.max_flows" reload
cp "$work/gw.good" "$work/gw.toml"

# Other local users: the socket is closed to them.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  rc=0; err=$(setpriv --reuid=65534 --regid=65534 --clear-groups \
      "$build/shroud" ctl --runtime_dir="$rt" ping 2>&1) || rc=$?
  if [ "$rc" = 3 ] && grep -qi "permission denied" <<<"$err"; then
    ok "another user (uid 65534) is refused: $err"
  else
    bad "another user reached the control socket (exit $rc)" "$err"
  fi
else
  echo "ok - # SKIP other-user check needs root and setpriv"
fi

# DPDK telemetry shows the gateway's counters.
if out=$(python3 - "/var/run/dpdk/$prefix/dpdk_telemetry.v2" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1]); s.recv(1024)
s.send(b"/shroud/gateway")
g = json.loads(s.recv(16384))["/shroud/gateway"]
assert g["inside_rx_packets"] > 0 and g["outside_tx_packets"] > 0, g
# The reload put the file's Algorithm 3 bounds back (0.25-8 MB/s).
assert 250_000 <= g["rate_bytes_per_sec"] <= 8_000_000, g["rate_bytes_per_sec"]
assert g["runtime_updates"] >= 2, g["runtime_updates"]
s.send(b"/")
assert "/shroud/mirror" in json.loads(s.recv(16384))["/"]
print(f"rx {g['inside_rx_packets']}, rate {g['rate_bytes_per_sec']} B/s")
PY
); then ok "telemetry /shroud/gateway: $out"; else bad "telemetry" "$out"; fi

# shroud-control proxies the status and serves metrics.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$build/shroud-control" --runtime_dir="$rt" --http="127.0.0.1:$port" 2>"$work/control.log" &
cpid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/metrics" >/dev/null 2>&1 && break; sleep 0.1; done
if out=$(python3 - "$port" <<'PY'
import json, sys, urllib.request, urllib.error
base = f"http://127.0.0.1:{sys.argv[1]}"
g = json.load(urllib.request.urlopen(base + "/api/gateway", timeout=5))
text = json.dumps(g)
assert "rate_variation.max_rate_mbyte_s" in text and "inside_to_outside" in text, text[:300]
m = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
assert "shroud_control_dataplane_up 1" in m, m[:500]
for bad_path, code in [("/api/flows?limit=abc", 400), ("/nope", 404)]:
    try:
        urllib.request.urlopen(base + bad_path, timeout=5)
        raise AssertionError(bad_path + " answered 200")
    except urllib.error.HTTPError as e:
        assert e.code == code, (bad_path, e.code)
        assert "error" in json.loads(e.read()), bad_path
print("/api/gateway, /metrics, 400 and 404 as expected")
PY
); then ok "shroud-control HTTP: $out"; else bad "shroud-control HTTP" "$out $(tail -5 "$work/control.log")"; fi
kill -TERM "$cpid"; wait "$cpid" || true; cpid=""

kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?; pid=""
[ "$rc" = 0 ] && ok "clean exit after SIGTERM" || bad "exit status $rc after SIGTERM" "$(tail -5 "$work/log")"
python3 - "$work/c.json" <<'PY' && ok "counters: updates applied, rules reloaded once, traffic forwarded" || bad "counters JSON" "$(head -c 600 "$work/c.json")"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["runtime_updates"] == 2, c["runtime_updates"]  # one set, one reload
assert c["rules_reloaded"] == 1, c["rules_reloaded"]
assert c["inside_to_outside"]["forwarded_packets"] > 0
PY
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
