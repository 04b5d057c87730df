#!/usr/bin/env bash
# The main job: set up (apt-get) and build shroud, then a short version of its
# evaluation on the namespace testbed (scripts/evaluate --demo): one native and
# one stealth real QEMU live migration (32 MiB guest, 4 MiB/s limit) from
# 192.0.2.10 to 198.51.100.10 across gateway A, an emulated WAN (10 ms each
# way) watched by the adversary's tap, and gateway B, under light background
# traffic; then QEMU's own times and the adversary's verdicts side by side.
# While the migrations run (about 3 minutes), the tap's live view is at
# http://127.0.0.1:9610/ (shroud-control's dashboard and /api).
#
#   scripts/demo.sh [--out DIR] [--dashboard 127.0.0.1:PORT]
#
# Needs root (network namespaces). Without root it says so and runs
# scripts/demo-offline.sh instead (recorded captures, no QEMU).
# Output: DIR (default build/demo): report.md, summary.json, figures.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=build/demo
dashboard=127.0.0.1:9610
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --dashboard) dashboard=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: the testbed needs root (network namespaces); running scripts/demo-offline.sh instead" >&2
  exec scripts/demo-offline.sh
fi
scripts/setup.sh --build-dir build --with-capture-tools >&2
# A dashboard port someone else holds is not worth failing the demo for.
if (exec 3<>"/dev/tcp/127.0.0.1/${dashboard#*:}") 2>/dev/null; then
  echo "demo.sh: $dashboard is taken; the dashboard stays inside the tap's namespace" >&2
  dashboard=""
fi
[ -z "$dashboard" ] || echo "== the adversary's live view while the migrations run: http://$dashboard/ ==" >&2
rm -rf "$out"
scripts/evaluate --demo --out "$out" --build build ${dashboard:+--dashboard "$dashboard"}

# Side by side, from the report's summary.
python3 - "$out/summary.json" <<'EOF'
import json, sys
runs = {r["mode"]: r for r in json.load(open(sys.argv[1]))["runs"]}
def cell(mode, f):
    r = runs.get(mode)
    return "(no run)" if r is None else f(r)
def verdict(det):
    def f(r):
        v = (r.get("verdicts") or {}).get(det)
        if not v or v.get("flagged") is None:
            return "n/a"
        s = v.get("score")
        if s is None:
            detail = ""
        elif det == "pattern":  # the score is Algorithm 1's pattern counter
            detail = f" (seen {int(s)}x)"
        else:
            detail = f" ({s:.2f})"
        return ("FLAGGED" if v["flagged"] else "hidden") + detail
    return f
def num(key, fmt):
    return lambda r: "-" if r.get(key) is None else fmt.format(r[key])
def bg(det):
    def f(r):
        k = (r.get("background_flagged") or {}).get(det, 0)
        n = (r.get("background_judged") or {}).get(det, 0)
        return f"{k}/{n}"
    return f
def drain(r):
    d = r.get("switchover_drain")
    if not d:
        return "-"
    if d.get("hook_rc") != 0:
        return "not applied"
    return "applied" + ("" if d.get("hook_ms") is None else f" +{d['hook_ms']:.0f} ms")
rows = [
    ("QEMU status", lambda r: r.get("status", "?")),
    ("QEMU total time", num("total_time_s", "{:.1f} s")),
    ("QEMU downtime", num("downtime_ms", "{:.0f} ms")),
    ("downtime by 10 ms pings (as the paper)", num("ping_downtime_ms", "{:.0f} ms")),
    ("achieved rate", num("achieved_mib_s", "{:.2f} MiB/s")),
    ("source tcp_notsent_lowat", lambda r: "-" if r.get("src_notsent_lowat") is None else
        ("kernel's (0)" if r["src_notsent_lowat"] == 0 else f"{r['src_notsent_lowat']} bytes")),
    ("switch-over drain at maxR", drain),
    ("pattern (Algorithm 1)", verdict("pattern")),
    ("maxent (Algorithm 2, shipped model)", verdict("maxent_shipped")),
    ("live tap (shroud-control)", lambda r: "-" if not r.get("live_tap") else
        ("FLAGGED" if r["live_tap"].get("migration") else "hidden")),
    ("background flows flagged (maxent)", bg("maxent_shipped")),
    ("chaff flows on the WAN", lambda r: str(r.get("chaff_flows", 0))),
]
print()
print(f"{'':38} {'native':>22} {'stealth':>22}")
for name, f in rows:
    print(f"{name:38} {cell('native', f):>22} {cell('stealth', f):>22}")
print()
print("Our timing attacks and the leave-one-run-out maxent need several runs per mode:")
print("scripts/evaluate (the full matrix; results/report.md has the last one).")
EOF
echo "report: $out/report.md, figures and summary.json beside it" >&2
