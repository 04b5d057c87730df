#!/usr/bin/env python3
"""The demo's side-by-side table: one native and one stealth run of
scripts/evaluate's summary.json, QEMU's times and the adversary's verdicts.

    scripts/lib/demo_table.py SUMMARY_JSON

scripts/demo.sh prints it after `scripts/evaluate --demo`. A run missing from
the summary shows as "(no run)", a field missing from a run as "-" (or "n/a"
for a verdict), so a demo whose stealth run failed still prints what it has.
Exit 1 with a message when SUMMARY_JSON cannot be read.
"""

import json
import sys

MODES = ("native", "stealth")


def verdict(det):
    def cell(r):
        v = (r.get("verdicts") or {}).get(det)
        if not v or v.get("flagged") is None:
            return "n/a"
        s = v.get("score")
        if s is None:
            detail = ""
        elif det == "pattern":  # Algorithm 1's score is its pattern counter
            detail = f" (seen {int(s)}x)"
        else:
            detail = f" ({s:.2f})"
        return ("FLAGGED" if v["flagged"] else "hidden") + detail
    return cell


def number(key, fmt):
    return lambda r: "-" if r.get(key) is None else fmt.format(r[key])


def background_flagged(det):
    def cell(r):
        k = (r.get("background_flagged") or {}).get(det, 0)
        n = (r.get("background_judged") or {}).get(det, 0)
        return f"{k}/{n}"
    return cell


def notsent_lowat(r):
    v = r.get("src_notsent_lowat")
    if v is None:
        return "-"
    return "kernel's (0)" if v == 0 else f"{v} bytes"


def drain(r):
    d = r.get("switchover_drain")
    if not d:
        return "-"
    if d.get("hook_rc") != 0:
        return "not applied"
    return "applied" + ("" if d.get("hook_ms") is None else f" +{d['hook_ms']:.0f} ms")


def live_tap(r):
    t = r.get("live_tap")
    if not t:
        return "-"
    return "FLAGGED" if t.get("migration") else "hidden"


ROWS = [
    ("QEMU status", lambda r: r.get("status", "?")),
    ("QEMU total time", number("total_time_s", "{:.1f} s")),
    ("QEMU downtime", number("downtime_ms", "{:.0f} ms")),
    ("downtime by 10 ms pings (as the paper)", number("ping_downtime_ms", "{:.0f} ms")),
    ("achieved rate", number("achieved_mib_s", "{:.2f} MiB/s")),
    ("QEMU max-bandwidth", number("qemu_max_bandwidth_mib_s", "{:g} MiB/s")),
    ("source tcp_notsent_lowat", notsent_lowat),
    ("switch-over drain at maxR", drain),
    ("pattern (Algorithm 1)", verdict("pattern")),
    ("maxent (Algorithm 2, shipped model)", verdict("maxent_shipped")),
    ("live tap (shroud-control)", live_tap),
    ("background flows flagged (maxent)", background_flagged("maxent_shipped")),
    ("chaff flows on the WAN", lambda r: str(r.get("chaff_flows", 0))),
]


def side_by_side(summary):
    """The table as text, from a parsed summary.json ({"runs": [...]})."""
    runs = {}
    for r in summary.get("runs") or []:
        runs.setdefault(r.get("mode"), r)  # the demo has one run per mode
    lines = ["", f"{'':38} {'native':>22} {'stealth':>22}"]
    for name, cell in ROWS:
        cells = ["(no run)" if m not in runs else cell(runs[m]) for m in MODES]
        lines.append(f"{name:38} {cells[0]:>22} {cells[1]:>22}")
    lines += ["",
              "Our timing attacks and the leave-one-run-out maxent need several runs per mode:",
              "scripts/evaluate (the full matrix; results/report.md has the last one)."]
    return "\n".join(lines)


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr if len(argv) != 2 else sys.stdout)
        return 0 if len(argv) == 2 else 2
    try:
        with open(argv[1]) as f:
            summary = json.load(f)
    except (OSError, ValueError) as e:
        print(f"demo_table.py: cannot read {argv[1]}: {e}", file=sys.stderr)
        return 1
    if not isinstance(summary, dict):
        print(f"demo_table.py: {argv[1]} is not a scripts/evaluate summary (no runs)", file=sys.stderr)
        return 1
    print(side_by_side(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
