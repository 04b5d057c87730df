#!/usr/bin/env python3
"""scripts/lib/demo_table.py, the side-by-side table scripts/demo.sh prints.

What it checks: each row shows the run's own value in its mode's column
(verdicts with their scores, QEMU's figures, the source's lowat, the drain);
missing runs, fields and verdicts show as such instead of failing; a summary
that cannot be read is an error with a message, not a traceback.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "lib", "demo_table.py")
sys.path.insert(0, os.path.dirname(SCRIPT))
import demo_table  # noqa: E402


def native_run():
    return {
        "mode": "native", "status": "completed", "total_time_s": 17.46,
        "downtime_ms": 14, "ping_downtime_ms": 70, "achieved_mib_s": 4.03,
        "qemu_max_bandwidth_mib_s": 4, "src_notsent_lowat": 0,
        "switchover_drain": None,
        "verdicts": {"pattern": {"flagged": True, "score": 45.0},
                     "maxent_shipped": {"flagged": True, "score": 0.613}},
        "live_tap": {"migration": True},
        "background_flagged": {"maxent_shipped": 1},
        "background_judged": {"maxent_shipped": 9},
        "chaff_flows": 0,
    }


def stealth_run():
    return {
        "mode": "stealth", "status": "completed", "total_time_s": 30.04,
        "downtime_ms": 80, "ping_downtime_ms": 150, "achieved_mib_s": 2.1,
        "qemu_max_bandwidth_mib_s": 100, "src_notsent_lowat": 131072,
        "switchover_drain": {"hook_rc": 0, "hook_ms": 4.2, "restored": True},
        "verdicts": {"pattern": {"flagged": False, "score": 0},
                     "maxent_shipped": {"flagged": False, "score": 0.118}},
        "live_tap": {"migration": False},
        "background_flagged": {"maxent_shipped": 0},
        "background_judged": {"maxent_shipped": 15},
        "chaff_flows": 48,
    }


def rows(text):
    """{row name: (native cell, stealth cell)} of the table."""
    out = {}
    for line in text.splitlines():
        name = line[:38].strip()
        if name and len(line) > 38 and not line.startswith(("Our", "scripts/")):
            rest = line[39:]
            out[name] = (rest[:22].strip(), rest[23:].strip())
    return out


class SideBySide(unittest.TestCase):
    def test_each_run_in_its_column(self):
        t = rows(demo_table.side_by_side({"runs": [stealth_run(), native_run()]}))
        self.assertEqual(t["QEMU status"], ("completed", "completed"))
        self.assertEqual(t["QEMU total time"], ("17.5 s", "30.0 s"))
        self.assertEqual(t["downtime by 10 ms pings (as the paper)"], ("70 ms", "150 ms"))
        self.assertEqual(t["QEMU max-bandwidth"], ("4 MiB/s", "100 MiB/s"))
        self.assertEqual(t["source tcp_notsent_lowat"], ("kernel's (0)", "131072 bytes"))
        self.assertEqual(t["switch-over drain at maxR"], ("-", "applied +4 ms"))
        self.assertEqual(t["pattern (Algorithm 1)"], ("FLAGGED (seen 45x)", "hidden (seen 0x)"))
        self.assertEqual(t["maxent (Algorithm 2, shipped model)"], ("FLAGGED (0.61)", "hidden (0.12)"))
        self.assertEqual(t["live tap (shroud-control)"], ("FLAGGED", "hidden"))
        self.assertEqual(t["background flows flagged (maxent)"], ("1/9", "0/15"))
        self.assertEqual(t["chaff flows on the WAN"], ("0", "48"))

    def test_missing_run_fields_and_verdicts(self):
        s = stealth_run()
        s["switchover_drain"] = {"hook_rc": 1, "restored": True}
        s["verdicts"] = {"pattern": {"flagged": None}}
        for k in ("total_time_s", "live_tap", "src_notsent_lowat"):
            del s[k]
        t = rows(demo_table.side_by_side({"runs": [s]}))
        self.assertEqual(t["QEMU status"], ("(no run)", "completed"))
        self.assertEqual(t["QEMU total time"], ("(no run)", "-"))
        self.assertEqual(t["switch-over drain at maxR"][1], "not applied")
        self.assertEqual(t["pattern (Algorithm 1)"][1], "n/a")
        self.assertEqual(t["maxent (Algorithm 2, shipped model)"][1], "n/a")
        self.assertEqual(t["live tap (shroud-control)"][1], "-")
        self.assertEqual(t["source tcp_notsent_lowat"][1], "-")
        t = rows(demo_table.side_by_side({"runs": []}))
        self.assertEqual(t["QEMU status"], ("(no run)", "(no run)"))

    def test_command_line(self):
        with tempfile.TemporaryDirectory() as d:
            good = os.path.join(d, "summary.json")
            with open(good, "w") as f:
                json.dump({"runs": [native_run(), stealth_run()]}, f)
            p = subprocess.run([sys.executable, SCRIPT, good], capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(rows(p.stdout)["QEMU downtime"], ("14 ms", "80 ms"))
            for content, why in (("{not json", "cannot read"), ("[1, 2]", "not a scripts/evaluate summary")):
                bad = os.path.join(d, "bad.json")
                with open(bad, "w") as f:
                    f.write(content)
                p = subprocess.run([sys.executable, SCRIPT, bad], capture_output=True, text=True)
                self.assertEqual(p.returncode, 1)
                self.assertIn(why, p.stderr)
                self.assertNotIn("Traceback", p.stderr)
            p = subprocess.run([sys.executable, SCRIPT, os.path.join(d, "missing.json")],
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 1)
            self.assertIn("cannot read", p.stderr)
            p = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True)
            self.assertEqual(p.returncode, 2)
            self.assertIn("SUMMARY_JSON", p.stderr)


if __name__ == "__main__":
    unittest.main()
