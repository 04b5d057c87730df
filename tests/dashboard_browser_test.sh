#!/usr/bin/env bash
# shroud-control's live dashboard (issue 6) in a real headless browser:
#   tests/dashboard_browser_test.sh BUILD_DIR [SCREENSHOT_DIR]
#
# Two network namespaces (names end in this script's PID), one veth pair:
#
#   MONITOR 192.0.2.1/24 --veth-- TARGET 192.0.2.2/24
#
# In MONITOR: `shroud-control --http=127.0.0.1:9610 --rttmon=192.0.2.2
# --rttmon_interval=10ms` (no dataplane at all) and Debian's chromium
# (--headless=new), driven over the DevTools protocol on a pipe
# (--remote-debugging-pipe: no port, no websocket library; python3 only).
# The namespace's own loopback keeps the page and its polls off the host's.
#
#   (a) the page loads: the light turns green, the RTT graph has samples, the
#       rate and flows panels stay hidden (no dataplane);
#   (b) the graph updates: its newest probe (#rtt-graph[data-last-seq]) grows
#       by at least 30 probes in a second (the monitor sends 100/s);
#   (c) the target's veth end goes down for 1.5 s: the light
#       (#light[data-state]) turns red while it is down, and a screenshot of
#       the red dashboard is saved as SCREENSHOT_DIR/dashboard-red.png
#       (default: BUILD_DIR);
#   (d) the outage ends: the light goes back to green and the event list
#       shows one red event whose downtime is the outage's (1.5 s; 1.2-2.5 s
#       accepted: the link flap is timed by `ip` processes, not to the ms;
#       tests/rttmon_netns_test.sh checks the monitor's accuracy) -- a second
#       screenshot, dashboard-after.png;
#   (e) the page threw no JavaScript exception and logged no console error;
#   (f) --rttmon errors exit as `shroud rttmon`'s do, with its messages: a
#       name that does not resolve and no permission for an ICMP socket (as
#       uid 65534; the namespace's ping_group_range is the default "1 0")
#       exit 1, a bad interval exits 2.
#
# Needs root, ip, python3, timeout and chromium; exits 77 ("skipped: ...")
# without them. Exit 0: all checks passed; 1: any failed. Bounded: the
# browser session is killed after 60 s, shroud-control after 90 s.
# SHROUD_DASH_TEST_KEEP=1 keeps the work directory (logs, browser profile).
set -uo pipefail
export LC_ALL=C

build=${1:?usage: dashboard_browser_test.sh BUILD_DIR [SCREENSHOT_DIR]}
shots=${2:-${MESON_BUILD_ROOT:-$build}}
root=${SHROUD_SOURCE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
control=$build/shroud-control

skip() { echo "skipped: $1"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root for network namespaces"
for t in ip python3 timeout; do
    command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"
done
chromium=$(command -v chromium || command -v chromium-browser || true)
[[ -n $chromium ]] || skip "chromium is not installed (apt-get install chromium; scripts/setup.sh lists it)"
[[ -x $control ]] || { echo "FAIL - $control not found (build first)"; echo "0 passed, 1 failed"; exit 1; }
mkdir -p "$shots" || { echo "FAIL - cannot create $shots"; exit 1; }

# shellcheck source-path=SCRIPTDIR/.. source=scripts/lib/netns.sh
source "$root/scripts/lib/netns.sh"
# shellcheck disable=SC2034  # read by ns_name / ns_clean_stale in netns.sh
SHROUD_NS_PREFIX="shroud-dash-"

NS_M=$(ns_name m)
NS_T=$(ns_name t)
IF_M="dbm$$" IF_T="dbt$$"
IP_M=192.0.2.1 IP_T=192.0.2.2
PORT=9610
check_testnet "$IP_M" "$IP_T"

WORK="" CONTROL_PID=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    kill_wait "$CONTROL_PID" TERM 3
    # Takes chromium and anything else still running in there with it.
    ns_kill_and_delete "$NS_M"
    ns_kill_and_delete "$NS_T"
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${SHROUD_DASH_TEST_KEEP:-0} == 1 ]]; then echo "# kept $WORK"; else rm -rf "$WORK"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "# interrupted"; exit 130' INT
trap 'echo "# terminated"; exit 143' TERM

ns_clean_stale
WORK=$(mktemp -d /tmp/shroud-dashboard-test.XXXXXX)

# --- topology ---
wan_setup "$NS_M" "$IP_M" "$NS_T" "$IP_T" "$IF_M" "$IF_T" ||
    skip "cannot create two network namespaces joined by a veth pair"
static_neighbours "$NS_M" "$IF_M" "$IP_M" "$NS_T" "$IF_T" "$IP_T"
echo "# namespaces $NS_M ($IP_M, shroud-control + chromium) and $NS_T ($IP_T, the target)"

# --- (f) errors: exit status and message, before anything is served ---
f_passed=0 f_failed=0
expect_exit() {  # NAME RC PATTERN ARGS...
    local name=$1 want=$2 pattern=$3 out rc
    shift 3
    out=$(ip netns exec "$NS_M" timeout 20 "$@" --http=off --runtime_dir="$WORK/run-err" 2>&1)
    rc=$?
    if [[ $rc == "$want" ]] && grep -q -- "$pattern" <<<"$out"; then
        echo "ok   - $name: exit $rc, $(grep -m1 -- "$pattern" <<<"$out")"
        f_passed=$((f_passed + 1))
    else
        echo "FAIL - $name: exit $rc (want $want), output:"
        head -5 <<<"$out" | sed 's/^/       /'
        f_failed=$((f_failed + 1))
    fi
}
expect_exit "unresolvable target" 1 "cannot resolve 'no-such-host.invalid'" \
    "$control" --rttmon=no-such-host.invalid
expect_exit "interval below 10 ms" 2 "rttmon_interval=5ms: interval 5 ms is too small" \
    "$control" --rttmon="$IP_T" --rttmon_interval=5ms
expect_exit "interval without a unit" 2 "rttmon_interval=10 has no unit" \
    "$control" --rttmon="$IP_T" --rttmon_interval=10
if command -v setpriv >/dev/null 2>&1; then
    mkdir -p "$WORK/run-err" && chmod 777 "$WORK/run-err" && chmod 755 "$WORK"
    expect_exit "no permission for an ICMP socket" 1 "needs root or CAP_NET_RAW" \
        setpriv --reuid=65534 --regid=65534 --clear-groups "$control" --rttmon="$IP_T"
fi

# --- shroud-control with the RTT monitor, no dataplane ---
ip netns exec "$NS_M" timeout 90 "$control" --http="127.0.0.1:$PORT" --rttmon="$IP_T" \
    --rttmon_interval=10ms --runtime_dir="$WORK/run" >"$WORK/control.log" 2>&1 &
CONTROL_PID=$!

# --- the browser session ---
ip netns exec "$NS_M" timeout -k 5 60 python3 - "$chromium" "http://127.0.0.1:$PORT/" "$WORK" \
    "$shots" "$NS_T" "$IF_T" "$f_passed" "$f_failed" <<'PY'
"""Drives headless chromium over the DevTools protocol on a pipe
(--remote-debugging-pipe: requests on the browser's fd 3, answers and events
on its fd 4, each message JSON terminated by a NUL byte)."""
import base64, json, os, select, subprocess, sys, time, urllib.request

chromium, url, work, shots, ns_t, if_t = sys.argv[1:7]
passed, failed = int(sys.argv[7]), int(sys.argv[8])  # (f), checked before


def ok(name):
    global passed
    passed += 1
    print(f"ok   - {name}", flush=True)


def bad(name, detail=""):
    global failed
    failed += 1
    print(f"FAIL - {name}", flush=True)
    for line in str(detail).splitlines()[:20]:
        print(f"       {line}", flush=True)


def wait_for(pred, timeout_s, step_s=0.05):
    end = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v or time.monotonic() >= end:
            return v
        time.sleep(step_s)


# shroud-control answers and has probe results (so a failure below is the page's).
def rtt_ready():
    try:
        with urllib.request.urlopen(url + "api/rtt", timeout=2) as r:
            d = json.load(r)
        return d.get("enabled") and d.get("next") is not None and d
    except OSError:
        return None


d = wait_for(rtt_ready, 10, 0.1)
if not d:
    bad("shroud-control serves /api/rtt with samples within 10 s",
        open(os.path.join(work, "control.log")).read()[-2000:])
    print(f"{passed} passed, {failed} failed")
    sys.exit(1)


class Browser:
    def __init__(self):
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()

        def fds():
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.log = open(os.path.join(work, "chromium.log"), "w")
        self.proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
             f"--user-data-dir={os.path.join(work, 'chrome-profile')}",
             "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             "--window-size=1280,1000", "about:blank"],
            pass_fds=(3, 4), preexec_fn=fds, stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buf = b""
        self.next_id = 0
        self.events = []
        self.session = None

    def _read(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no DevTools message in time")
            r, _, _ = select.select([self.from_child], [], [], left)
            if r:
                chunk = os.read(self.from_child, 1 << 20)
                if not chunk:
                    raise EOFError("chromium closed the DevTools pipe")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=True, timeout_s=10):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            m = self._read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def drain_events(self):
        try:
            while True:
                r, _, _ = select.select([self.from_child], [], [], 0)
                if not r and b"\0" not in self.buf:
                    return
                self.events.append(self._read(time.monotonic() + 1))
        except (TimeoutError, EOFError):
            return

    def eval(self, expression):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self, path):
        r = self.call("Page.captureScreenshot", {"format": "png"}, timeout_s=20)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))

    def close(self):
        try:
            self.call("Browser.close", session=False, timeout_s=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# null until the dashboard's document is there (navigation in progress).
STATE_JS = """!document.getElementById('light') ? 'null' : JSON.stringify({
  light: document.getElementById('light').dataset.state,
  body: document.body.dataset.rttState,
  lastSeq: Number(document.getElementById('rtt-graph').dataset.lastSeq),
  samples: Number(document.getElementById('rtt-graph').dataset.samples),
  polls: Number(document.body.dataset.polls),
  ratePanelHidden: document.getElementById('rate-panel').hidden,
  flowsPanelHidden: document.getElementById('flows-panel').hidden,
  events: Array.from(document.querySelectorAll('#events tbody tr')).map(
      tr => Array.from(tr.cells).map(c => c.textContent)),
})"""


def state(b):
    return json.loads(b.eval(STATE_JS)) or {"light": "not loaded", "samples": 0, "lastSeq": -1,
                                            "events": [], "body": None, "polls": 0,
                                            "ratePanelHidden": None, "flowsPanelHidden": None}


def ip_link(updown):
    t = time.monotonic()
    subprocess.run(["ip", "-n", ns_t, "link", "set", if_t, updown], check=True, timeout=5)
    return t


b = Browser()
try:
    # The page target the browser opened, in a session of its own. A cold
    # start on a loaded 2-core machine can take a while: up to 25 s.
    targets = b.call("Target.getTargets", session=False, timeout_s=25)["targetInfos"]
    page = next(t for t in targets if t["type"] == "page")
    b.session = b.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                       session=False)["sessionId"]
    b.call("Page.enable")
    b.call("Runtime.enable")
    b.call("Log.enable")
    t0 = time.monotonic()
    b.call("Page.navigate", {"url": url})

    # (a) loaded: green with samples in the graph, no dataplane panels.
    s = wait_for(lambda: (lambda x: x if x["light"] == "green" and x["samples"] > 0 else None)(state(b)), 15, 0.1)
    if s:
        ok(f"the page loads: light green, {s['samples']} samples in the graph after "
           f"{time.monotonic() - t0:.1f} s")
    else:
        bad("the page loads and the light turns green within 15 s", json.dumps(state(b)))
    s = state(b)
    if s["ratePanelHidden"] and s["flowsPanelHidden"] and s["body"] == s["light"]:
        ok("without a dataplane the rate and flows panels are hidden")
    else:
        bad("rate/flows panels hidden without a dataplane", json.dumps(s))

    # (b) the graph updates.
    first = state(b)["lastSeq"]
    time.sleep(1.0)
    second = state(b)["lastSeq"]
    if first >= 0 and second - first >= 30:
        ok(f"the graph updates: newest probe {first} -> {second} in 1 s")
    else:
        bad("the graph's newest probe grows by >= 30 in 1 s", f"{first} -> {second}")

    # (c) an induced outage turns the light red; screenshot while red.
    down = ip_link("down")
    red_at = None
    try:
        while time.monotonic() - down < 1.5:
            if red_at is None and state(b)["light"] == "red":
                red_at = time.monotonic()
            time.sleep(0.03)
    finally:
        up = ip_link("up")
    if red_at is not None:
        ok(f"the light turns red {1000 * (red_at - down):.0f} ms into a {1000 * (up - down):.0f} ms outage")
        path = os.path.join(shots, "dashboard-red.png")
        # Still red: the episode closes only after quiet_s (2 s) of replies.
        still = state(b)["light"]
        b.screenshot(path)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            png = f.read(8) == b"\x89PNG\r\n\x1a\n"
        if png and size > 10000 and still == "red":
            ok(f"screenshot of the red dashboard: {path} ({size} bytes)")
        else:
            bad("screenshot of the red dashboard", f"{path}: png={png} size={size} light={still}")
    else:
        bad("the light turns red during a 1.5 s outage", json.dumps(state(b)))

    # (d) back to green; the event list shows the red event with its downtime.
    def closed_red_event():
        x = state(b)
        rows = [r for r in x["events"] if len(r) > 5 and r[1].startswith("red") and "now" not in r[1]]
        return x if x["light"] == "green" and rows else None

    s = wait_for(closed_red_event, 8, 0.1)
    if s:
        row = next(r for r in s["events"] if r[1].startswith("red"))
        downtime = row[5]
        try:
            ms = float(downtime.split()[0])
        except ValueError:
            ms = -1
        if 1200 <= ms <= 2500:
            ok(f"back to green; the event list shows red event {row[0]} ({row[2]}), downtime {downtime}")
        else:
            bad("the red event's downtime is about the outage's 1.5 s", json.dumps(row))
        b.screenshot(os.path.join(shots, "dashboard-after.png"))
    else:
        bad("back to green within 8 s with a closed red event in the list", json.dumps(state(b)))

    # (e) no script errors.
    b.drain_events()
    errors = [e for e in b.events if e["method"] == "Runtime.exceptionThrown" or
              (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error") or
              (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")]
    if not errors:
        ok(f"no JavaScript exceptions or console errors ({state(b)['polls']} polls of /api/rtt)")
    else:
        bad("JavaScript exceptions or console errors", json.dumps(errors[:3])[:1500])
except Exception as e:  # a protocol failure is a failed test, with the browser's log
    log = [l for l in open(os.path.join(work, "chromium.log")).read().splitlines()
           if "dbus" not in l]  # headless chromium always complains about the missing bus
    bad(f"browser session: {type(e).__name__}: {e}", "\n".join(log[-15:]))
finally:
    b.close()
print(f"{passed} passed, {failed} failed", flush=True)
sys.exit(1 if failed else 0)
PY
rc=$?
if ((rc != 0)); then
    echo "# shroud-control log (tail):"
    tail -20 "$WORK/control.log" | sed 's/^/#   /'
    ((rc == 124 || rc == 137)) && echo "FAIL - the browser session exceeded 60 s"
    exit 1
fi
exit 0
