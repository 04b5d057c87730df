#!/usr/bin/env python3
"""Tests of scripts/lib/evaluate_report.py on a synthetic scripts/evaluate output.

Two native and two stealth runs with tiny generated pcaps and a synthetic
judge.json in a temporary directory; the report is run as scripts/evaluate
runs it and its summary.json, CSVs, PNGs and report.md are checked.

    /usr/bin/python3 tests/evaluate_report_test.py
"""
import csv
import importlib.util
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "lib" / "evaluate_report.py"
DETECTORS = ["pattern", "maxent", "timing", "timing_adaptive"]
PNGS = ["fig1_native_throughput.png", "fig3_pattern_native.png", "fig4_maxent_native.png",
        "fig6_stealth_throughput.png", "fig7_pattern_stealth.png", "fig8_maxent_stealth.png",
        "fig_ours.png", "table2.png", "table4.png"]
MIG_PACKETS, MIG_LEN = 1000, 1514
BG_PACKETS, BG_LEN = 200, 600


# --- synthetic captures ---------------------------------------------------------
def frame(src, sport, dst, dport, vlan=None, proto=6, snap=96):
    """An Ethernet/IPv4/TCP frame cut at snap bytes."""
    eth = b"\x02" * 6 + b"\x04" * 6
    if vlan is not None:
        eth += struct.pack("!HH", 0x8100, vlan)
    eth += struct.pack("!H", 0x0800)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1500, 0, 0, 64, proto, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    l4 = struct.pack("!HH", sport, dport) + b"\x00" * 16
    return (eth + ip + l4).ljust(snap, b"\x00")[:snap]


def write_pcap(path, mig_sport=40000):
    """1000 migration packets over 2 s, 200 VLAN-tagged background packets, one ARP, a cut record."""
    recs = []
    for i in range(MIG_PACKETS):
        recs.append((1000 + i * 0.002, MIG_LEN, frame("192.0.2.10", mig_sport, "198.51.100.10", 49152)))
    for i in range(BG_PACKETS):
        recs.append((1000.5 + i * 0.01, BG_LEN, frame("198.51.100.11", 8080, "192.0.2.11", 38000, vlan=7)))
    recs.append((1001.0, 60, b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\x00" * 28))
    recs.sort(key=lambda r: r[0])
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 96, 1))
        for t, orig, data in recs:
            f.write(struct.pack("<IIII", int(t), round((t % 1) * 1e6), len(data), orig) + data)
        f.write(struct.pack("<IIII", 1003, 0, 96, 1514) + b"\x00" * 10)  # tcpdump killed mid-record


# --- synthetic runs and judge ---------------------------------------------------
GOOD = {
    # id: (total-time ms, downtime ms, migration flagged by {detector}, background flagged by {detector})
    "native-r4-light-1": (10000, 200, {"pattern": True, "maxent": True, "timing": True}, {"pattern": 1}),
    "native-r8-light-1": (6000, 150, {"pattern": True, "maxent": True, "timing": True}, {}),
    "stealth-r4-light-1": (11000, 300, {}, {"pattern": 1, "maxent": 1}),
    "stealth-r8-light-1": (6600, 250, {}, {}),
}
BAD = {
    "native-r4-light-1": (10000, 200, {"pattern": False, "maxent": True}, {"pattern": 1}),
    "native-r8-light-1": (6000, 150, {"pattern": True, "maxent": True}, {}),
    "stealth-r4-light-1": (20000, 1500, {"maxent": True}, {}),
    "stealth-r8-light-1": (12000, 1250, {"maxent": True}, {}),
}
BG_FLOWS = {"native": 50, "stealth": 40}


def mig_flow(rid):
    """The synthetic migration flow of a run: a port per rate and mode."""
    mode, rate = rid.split("-")[0], int(rid.split("-")[1][1:])
    return f"192.0.2.10:{40000 + rate * 10 + (mode == 'stealth')}>198.51.100.10:49152/tcp"


def flow_entry(name, label, packets, flagged, mode, cov=0.5, b2b=0.3, ack=False):
    verdicts = {d: {"flagged": bool(flagged.get(d)), "score": 7.0 if flagged.get(d) else 0.5, "decided": True}
                for d in DETECTORS}
    if mode == "native":
        verdicts["timing_adaptive"] = None  # only trained on stealth runs
    return {"flow": name, "label": label, "bulk": False, "ack_direction": ack,
            "packets": packets, "bytes": packets * 1000,
            "duration_s": 5.0, "cov": {str(w): cov for w in (100, 200, 300, 500, 1000, 2000, 3000)},
            "timing_features": {"ipt_back_to_back_share": b2b,
                                "log_bytes_per_s": None if label == "chaff" else 14.0},
            "verdicts": verdicts}


def judge_run(rid, mig_flagged, bg_flagged):
    mode = rid.split("-")[0]
    flows = [flow_entry(mig_flow(rid), "migration", 30000,
                        mig_flagged, mode, cov=0.01 if mode == "native" else 0.7),
             # An ACK direction labelled migration and flagged: never one of the migration's
             # channels, never in the features table.
             flow_entry("192.0.2.10:1>198.51.100.10:49152/tcp", "migration", 1200, {"pattern": True}, mode,
                        ack=True)]
    for i in range(BG_FLOWS[mode]):
        flagged = {d: i < n for d, n in bg_flagged.items()}
        flows.append(flow_entry(f"192.0.2.11:{5000 + i}>198.51.100.11:80/tcp", "background",
                                2000 + i, flagged, mode, cov=0.8 + i / 100, b2b=0.5 + i / 100))
    if mode == "stealth":
        for i in range(3):
            flows.append(flow_entry(f"192.0.2.137:443>198.51.100.{i}:5000/tcp", "chaff", 1500,
                                    {"maxent": i == 0}, mode))
    return {"id": rid, "mode": mode, "capture": f"runs/{rid}/wan.pcap", "stream_packets": 99999,
            "models": {}, "flows": flows}


def comparisons(stealth_p):
    comp = [{"a": "native migration", "b": "background", "n_a": 2, "n_b": 100, "chi2": 30.1, "df": 9,
             "chi2_p": 0.001, "categories_us": [123, 7, 369] + list(range(20, 27)),
             "percent_a": [94.6, 0.0, 2.7] + [0.39] * 7, "percent_b": [80.9, 13.0, 1.6] + [0.64] * 7,
             "ks_window": 1000, "ks_d": 0.9, "ks_p": 0.002},
            {"a": "native migration", "b": "bulk", "error": "no bulk flows"},
            {"a": "chaff", "b": "background", "n_a": 6, "n_b": 80, "chi2": 5.0, "df": 9, "chi2_p": 0.8,
             "ks_window": 1000, "ks_d": 0.1, "ks_p": 0.9}]
    for b in ("background", "bulk"):
        comp.append({"a": "stealth migration", "b": b, "n_a": 2, "n_b": 80, "chi2": 4.0, "df": 9,
                     "chi2_p": stealth_p, "ks_window": 1000, "ks_d": 0.2, "ks_p": stealth_p})
    return comp


def make_out(base, scenario, stealth_p):
    out = Path(base)
    for rid, (total, down, _, _) in scenario.items():
        mode, rate = rid.split("-")[0], int(rid.split("-")[1][1:])
        d = out / "runs" / rid
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps(
            {"id": rid, "mode": mode, "rate_mib_s": rate, "load": "light", "rep": 1, "ram_mb": 32,
             "migrate_exit": 0, "started": 1.0, "wall_s": 20.0, "testbed": "synthetic"}))
        (d / "qemu.json").write_text(json.dumps(
            {"status": "completed", "total-time": total, "downtime": down, "setup-time": 1,
             "ram": {"transferred": 40 * (1 << 20), "mbps": 33.554432, "dirty-sync-count": 4}}))
        (d / "migrate.json").write_text(json.dumps(
            {"status": "completed", "wall_s": total / 1000, "rate_mib_s": rate, "ram_mb": 32,
             "src": "192.0.2.10", "dst": "198.51.100.10", "dport": 49152}))
        (d / "tap-flows.json").write_text(json.dumps({"flows": [
            {"flow": "192.0.2.10:39998>198.51.100.10:49152/tcp", "packets": 50000, "pattern": True,
             "maxent": 0.99, "migration": True},  # an earlier run's, bigger: the judge's flow wins
            {"flow": mig_flow(rid), "packets": 30000,
             "pattern": False, "maxent": 0.42, "migration": mode == "native"},
            {"flow": "192.0.2.11:5000>198.51.100.11:80/tcp", "packets": 90000, "pattern": False,
             "maxent": 0.1, "migration": False}]}))
        write_pcap(d / "wan.pcap")
    judge = {"tool": "shroud judge", "min_packets": 1000,
             "feature_config": {"windows": [100, 200, 300, 500, 1000, 2000, 3000], "pwin": 1000,
                                "delta": 0.05, "pct": 3, "burst_gap_ms": 10},
             "detectors": [{"name": d, "description": f"synthetic {d}"} for d in DETECTORS],
             "runs": [judge_run(rid, mig, bg) for rid, (_, _, mig, bg) in scenario.items()],
             "comparisons": comparisons(stealth_p)}
    (out / "judge.json").write_text(json.dumps(judge))
    (out / "matrix.json").write_text(json.dumps(
        {"started": 0, "ended": 3725, "duration_s": 3725, "machine": "2 CPUs, synthetic",
         "command": "scripts/evaluate --rates 4,8 --loads light --reps 1"}))
    return out


def run_report(out):
    return subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True)


def checks_of(report):
    """{check id: [results]} from report.md's What must hold section."""
    section = report.split("## What must hold", 1)[1]
    found = {}
    for m in re.finditer(r"^- (\*\*PASS\*\*|\*\*FAIL\*\*|\*not measured\*) \((\w)\)", section, re.M):
        found.setdefault(m[2], []).append(m[1].strip("*"))
    return found


def load_report_module():
    """scripts/lib/evaluate_report.py as a module, for its pure functions."""
    spec = importlib.util.spec_from_file_location("evaluate_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="evaluate-report-test-")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def report(self, scenario=GOOD, stealth_p=0.5, edit=None):
        out = make_out(self.tmp, scenario, stealth_p)
        if edit:
            edit(out)
        r = run_report(out)
        self.assertEqual(r.returncode, 0, r.stderr)
        summary = json.loads((out / "summary.json").read_text())
        return out, {rec["id"]: rec for rec in summary["runs"]}, summary, (out / "report.md").read_text()

    def test_summary_records(self):
        out, runs, summary, _ = self.report()
        self.assertEqual(summary["matrix"]["duration_s"], 3725)
        self.assertEqual(len(summary["runs"]), 4)
        r = runs["native-r4-light-1"]
        self.assertEqual(r["status"], "completed")
        self.assertAlmostEqual(r["total_time_s"], 10.0)
        self.assertEqual(r["downtime_ms"], 200)
        self.assertAlmostEqual(r["transferred_mib"], 40.0)
        self.assertAlmostEqual(r["achieved_mib_s"], 4.0)  # 33.554432 Mbit/s
        self.assertEqual(r["migration_flow"], "192.0.2.10:40040>198.51.100.10:49152/tcp")
        self.assertEqual(r["verdicts"]["pattern"], {"flagged": True, "score": 7.0})
        self.assertEqual(r["verdicts"]["timing_adaptive"], {"flagged": None, "score": None})
        self.assertEqual(r["background_flows"], 50)
        self.assertAlmostEqual(r["fpr"]["pattern"], 1 / 50)
        self.assertEqual(r["fpr"]["maxent"], 0.0)
        self.assertIsNone(r["fpr"]["timing_adaptive"])
        self.assertEqual(r["chaff_flows"], 0)
        self.assertEqual(r["qemu_max_bandwidth_mib_s"], 4)  # migrate.json without it: the rate
        self.assertIsNone(r["src_notsent_lowat"])  # run.json's testbed has no settings line
        self.assertIsNone(r["switchover_drain"])  # migrate.json without it: no drain
        self.assertEqual(r["live_tap"], {"flow": r["migration_flow"], "pattern": False, "maxent": 0.42,
                                         "migration": True})
        s = runs["stealth-r4-light-1"]
        self.assertAlmostEqual(s["total_time_s"], 11.0)
        self.assertEqual(s["verdicts"]["maxent"], {"flagged": False, "score": 0.5})
        self.assertEqual(s["background_flows"], 40)
        self.assertAlmostEqual(s["fpr"]["maxent"], 1 / 40)
        self.assertEqual(s["chaff_flows"], 3)
        self.assertEqual(s["chaff_flagged"], {"pattern": 0, "maxent": 1, "timing": 0, "timing_adaptive": 0})

    def test_matrix_in_parts(self):
        # --first-rep appends its invocation to matrix.json's parts; the
        # report gives the sum and each part's command.
        def parts(out):
            m = json.loads((out / "matrix.json").read_text())
            m["parts"] = [{"started": 0, "ended": 1000, "duration_s": 1000,
                           "command": "scripts/evaluate --reps 1"},
                          {"started": 2000, "ended": 4725, "duration_s": 2725,
                           "command": "scripts/evaluate --reps 2 --first-rep 2"}]
            (out / "matrix.json").write_text(json.dumps(m))
        out, _, _, report = self.report(edit=parts)
        self.assertIn("- duration: 1 h 02 min 05 s, in 2 invocations (--first-rep):", report)
        self.assertIn("  - `scripts/evaluate --reps 2 --first-rep 2`: 45 min 25 s", report)
        m = json.loads((out / "matrix.json").read_text())
        del m["parts"]
        (out / "matrix.json").write_text(json.dumps(m))
        self.assertEqual(run_report(out).returncode, 0)
        self.assertIn("- duration: 1 h 02 min 05 s\n- machine:", (out / "report.md").read_text())

    def test_pooled_rates_and_tables(self):
        out, _, _, report = self.report()
        det = {(row["mode"], row["detector"]): row for row in read_csv(out / "detection.csv")}
        self.assertEqual(det[("native", "pattern")]["background_flagged"], "1")
        self.assertEqual(det[("native", "pattern")]["background_judged"], "100")
        self.assertAlmostEqual(float(det[("native", "pattern")]["pooled_fpr"]), 0.01)
        self.assertAlmostEqual(float(det[("native", "pattern")]["mean_fpr"]), 0.01)
        self.assertEqual(det[("native", "timing_adaptive")]["tpr"], "")
        self.assertEqual(float(det[("stealth", "maxent")]["tpr"]), 0.0)
        # native pattern: both migrations 7.0; 100 background, one at 7.0 (a tie), 99 at 0.5
        self.assertAlmostEqual(float(det[("native", "pattern")]["auc"]), (2 * 99 + 0.5 * 2) / 200)
        # stealth maxent: both migrations 0.5 = 79 of 80 background flows, one above them
        self.assertAlmostEqual(float(det[("stealth", "maxent")]["auc"]), 0.5 * 79 * 2 / 160)
        self.assertEqual(det[("native", "timing_adaptive")]["auc"], "")
        self.assertIn("| stealth | maxent | 0.000 (0/2) |", report)
        self.assertRegex(report, r"\| native \| pattern \|[^\n]*\| 0\.995 \| 1\.000 \|\n")
        # The best threshold: native pattern flags both migrations (7.0) above 99 of 100
        # background flows; 2 % of 100 may be flagged, so 7.0 passes.
        self.assertEqual(float(det[("native", "pattern")]["tpr_at_max_fpr"]), 1.0)
        self.assertEqual(float(det[("stealth", "maxent")]["tpr_at_max_fpr"]), 0.0)
        self.assertIn("pooled FPR 0.0100 (1/100); the best threshold on these runs: TPR 1.000 at "
                      "pooled FPR <= 0.02", report)
        t5 = read_csv(out / "table5.csv")
        self.assertEqual([row["rate_mib_s"] for row in t5], ["4", "8", "mean over rates"])
        self.assertAlmostEqual(float(t5[0]["ratio"]), 1.1)
        self.assertAlmostEqual(float(t5[2]["extra_downtime_s"]), 0.1)
        # One run a cell: no interval, and the report says why.
        self.assertEqual(t5[2]["ratio_ci95_low"], "")
        self.assertIn("No 95 % intervals: some mode x rate x load cell has fewer than two", report)
        self.assertIn("(4 MiB/s: 1.100, 8 MiB/s: 1.100; paper 1.1-1.3)\n", report)
        t3 = read_csv(out / "table3.csv")
        self.assertEqual(t3[0]["chi2_result"], "Distinguishable")
        self.assertEqual(t3[0]["top_categories"], "123 us 94.6/80.9 %; 7 us 0.0/13.0 %; 369 us 2.7/1.6 %")
        self.assertEqual(t3[2]["top_categories"], "")  # no categories in judge.json: nothing made up
        self.assertEqual(t3[-1]["ks_result"], "Indistinguishable")
        t2 = read_csv(out / "table2.csv")
        self.assertEqual([row["type"] for row in t2][:3], ["TCP"] * 3)
        self.assertEqual(t2[0]["packets"], "2049")  # the biggest background flow first
        self.assertEqual(sum(row["type"] == "Nat. Mig." for row in t2), 2)
        self.assertIn("scripts/evaluate --rates 4,8", report)
        self.assertIn("1 h 02 min 05 s", report)

    def test_timing_features_by_group(self):
        out, _, _, report = self.report()
        rows = {(r["mode"], r["flows"]): r for r in read_csv(out / "features.csv")}
        # Two runs per mode, one migration flow each (and an ACK direction, left out);
        # background 0.50..0.99 in both runs.
        self.assertEqual(rows[("native", "migration")]["n"], "2")
        self.assertEqual(rows[("native", "migration")]["ipt_back_to_back_share"], "0.300")
        self.assertEqual(rows[("native", "background")]["n"], "100")
        self.assertEqual(rows[("native", "background")]["ipt_back_to_back_share"], "0.745")
        self.assertEqual(rows[("stealth", "chaff")]["n"], "6")
        self.assertEqual(rows[("stealth", "chaff")]["log_bytes_per_s"], "–")  # all null
        self.assertNotIn(("native", "chaff"), rows)
        self.assertIn("## Timing features by flow group", report)
        self.assertIn("| stealth | migration | 2 | 0.300 | 14.000 |", report)

    def test_must_hold_pass(self):
        _, _, _, report = self.report()
        checks = checks_of(report)
        self.assertEqual(checks["a"], ["PASS", "PASS"])
        self.assertEqual(checks["b"], ["PASS"] * len(DETECTORS))
        self.assertEqual(checks["c"], ["PASS", "PASS"])
        self.assertEqual(checks["d"], ["PASS"])
        self.assertEqual(checks["e"], ["PASS"])

    def test_must_hold_fail(self):
        _, _, _, report = self.report(BAD, stealth_p=0.01)
        checks = checks_of(report)
        self.assertEqual(checks["a"], ["FAIL", "PASS"])  # pattern TPR 1/2
        self.assertEqual(checks["b"], ["PASS", "FAIL", "PASS", "PASS"])  # maxent caught the stealth runs
        self.assertEqual(checks["c"], ["FAIL", "FAIL"])
        self.assertEqual(checks["d"], ["FAIL"])
        self.assertEqual(checks["e"], ["FAIL"])
        self.assertIn("TPR 1.000 (2/2)", report)

    def test_not_measured_without_stealth(self):
        def drop_stealth(out):
            for d in (out / "runs").glob("stealth-*"):
                shutil.rmtree(d)
            judge = json.loads((out / "judge.json").read_text())
            judge["runs"] = [r for r in judge["runs"] if r["mode"] == "native"]
            judge["comparisons"] = [c if not c["a"].startswith("stealth") else
                                    {"a": c["a"], "b": c["b"], "error": "no stealth migrations"}
                                    for c in judge["comparisons"]]
            (out / "judge.json").write_text(json.dumps(judge))
        out, runs, _, report = self.report(edit=drop_stealth)
        self.assertEqual(len(runs), 2)
        checks = checks_of(report)
        self.assertEqual(checks["a"], ["PASS", "PASS"])
        for cid in "bcde":
            self.assertTrue(checks[cid] and set(checks[cid]) == {"not measured"}, (cid, checks[cid]))
        for png in PNGS:  # placeholders for what was not measured
            self.assertTrue((out / png).exists(), png)

    def test_multifd_any_channel_decides(self):
        """A multifd migration is N flows: spotted when any channel is, scored by its highest."""
        def add_channels(out):
            judge = json.loads((out / "judge.json").read_text())
            for jr in judge["runs"]:
                if jr["id"] == "stealth-r4-light-1":
                    jr["flows"].insert(1, flow_entry("192.0.2.10:45002>198.51.100.10:49152/tcp", "migration",
                                                     20000, {"maxent": True}, "stealth", cov=1.3))
                    jr["flows"].insert(1, flow_entry("192.0.2.10:45003>198.51.100.10:49152/tcp", "migration",
                                                     25000, {}, "stealth", cov=1.1))
            (out / "judge.json").write_text(json.dumps(judge))
            for rid in ("stealth-r4-light-1",):
                run = json.loads((out / "runs" / rid / "run.json").read_text())
                run["multifd_channels"] = 4
                (out / "runs" / rid / "run.json").write_text(json.dumps(run))
        out, runs, _, report = self.report(edit=add_channels)
        s = runs["stealth-r4-light-1"]
        self.assertEqual(s["migration_channels"], 3)
        self.assertEqual(s["multifd_channels"], 4)
        self.assertEqual(s["migration_flow"], mig_flow("stealth-r4-light-1"))  # the biggest
        self.assertEqual(s["verdicts"]["maxent"], {"flagged": True, "score": 7.0})
        self.assertEqual(s["verdicts"]["pattern"], {"flagged": False, "score": 0.5})
        self.assertEqual(runs["stealth-r8-light-1"]["migration_channels"], 1)
        self.assertEqual(runs["stealth-r8-light-1"]["verdicts"]["maxent"]["flagged"], False)
        checks = checks_of(report)
        self.assertEqual(checks["b"], ["PASS", "FAIL", "PASS", "PASS"])  # maxent caught one channel
        self.assertIn("QEMU multifd: 0, 4 channels requested", report)
        t4 = read_csv(out / "table4.csv")  # Table IV: a row per channel
        self.assertEqual(sum(row["flow"].startswith("192.0.2.10:4500") for row in t4), 2)

    def test_qemu_bandwidth_and_lowat_recorded(self):
        """Stealth runs with QEMU's max-bandwidth lifted off the rate and the source's
        tcp_notsent_lowat set: both per run in summary.json and said in the report."""
        def lift(out):
            for rid in ("stealth-r4-light-1", "stealth-r8-light-1"):
                mig = json.loads((out / "runs" / rid / "migrate.json").read_text())
                mig["qemu_max_bandwidth_mib_s"] = 100
                (out / "runs" / rid / "migrate.json").write_text(json.dumps(mig))
            for d in (out / "runs").iterdir():
                run = json.loads((d / "run.json").read_text())
                run["testbed"] = "delay_ms=10 jitter_ms=1 loss_pct=0 rate_mbit=100 tap_at=a max_s=900 " \
                                 "src_notsent_lowat=131072"
                (d / "run.json").write_text(json.dumps(run))
        _, runs, _, report = self.report(edit=lift)
        self.assertEqual(runs["stealth-r4-light-1"]["qemu_max_bandwidth_mib_s"], 100)
        self.assertEqual(runs["native-r4-light-1"]["qemu_max_bandwidth_mib_s"], 4)  # not recorded: the rate
        self.assertEqual(runs["native-r8-light-1"]["src_notsent_lowat"], 131072)
        self.assertIn("Stealth migrations ran at QEMU max-bandwidth 100 MiB/s, not the rate", report)
        self.assertNotIn("Native migrations ran at QEMU max-bandwidth", report)
        self.assertIn("tcp_notsent_lowat: 131072 bytes", report)

    def test_switchover_drain_recorded(self):
        """Stealth runs with --switchover-drain: the hook's exit status and time per run,
        a failed hook counted apart, nothing said for the runs without it."""
        def drain(out):
            hooks = {"stealth-r4-light-1": ({"rc": 0, "seconds": 0.031, "qemu_waited_s": 0.031}, True),
                     "stealth-r8-light-1": ({"rc": 1, "seconds": 0.02}, False)}
            for rid, (hook, restored) in hooks.items():
                mig = json.loads((out / "runs" / rid / "migrate.json").read_text())
                mig["switchover_drain"] = {"hook": hook, "restored": restored}
                (out / "runs" / rid / "migrate.json").write_text(json.dumps(mig))
        _, runs, _, report = self.report(edit=drain)
        self.assertEqual(runs["stealth-r4-light-1"]["switchover_drain"],
                         {"hook_rc": 0, "hook_ms": 31.0, "qemu_wait_ms": 31.0, "restored": True})
        self.assertEqual(runs["stealth-r8-light-1"]["switchover_drain"]["hook_rc"], 1)
        self.assertIsNone(runs["native-r4-light-1"]["switchover_drain"])
        self.assertIn("Stealth migrations with the switch-over drain", report)
        self.assertIn("1/2 hooks applied, 31-31 ms after the pause (median 31); QEMU held the paused "
                      "guest for at most 31 ms of that", report)
        self.assertIn("Algorithm 3 was not restored after `stealth-r8-light-1`", report)
        self.assertNotIn("not restored after `stealth-r4-light-1`", report)
        self.assertNotIn("Native migrations with the switch-over drain", report)

    def test_ping_downtime(self):
        """Runs that pinged the guest: the paper's downtime (lost x 10 ms) beside QEMU's."""
        pings = {"native-r4-light-1": 120, "native-r8-light-1": 80,
                 "stealth-r4-light-1": 300}  # stealth-r8: no ping result (rttmon failed)
        def add_ping(out):
            path = out / "runs" / "stealth-r8-light-1" / "migrate.json"
            mig = json.loads(path.read_text())
            mig["ping"] = "rttmon: no summary"  # not an object: no result, no crash
            path.write_text(json.dumps(mig))
            for rid, ms in pings.items():
                path = out / "runs" / rid / "migrate.json"
                mig = json.loads(path.read_text())
                mig["ping"] = {"target": "203.0.113.10", "interval_ms": 10.0, "sent": 2000,
                               "received": 2000 - ms // 10, "lost": ms // 10, "downtime_ms": ms,
                               "after_sent": 50, "after_received": 50}
                path.write_text(json.dumps(mig))
        out, runs, _, report = self.report(edit=add_ping)
        self.assertEqual(runs["native-r4-light-1"]["ping_downtime_ms"], 120)
        self.assertEqual(runs["native-r4-light-1"]["ping"]["after_received"], 50)
        self.assertIsNone(runs["stealth-r8-light-1"]["ping_downtime_ms"])
        self.assertIsNone(runs["stealth-r8-light-1"]["ping"])
        t5 = read_csv(out / "table5.csv")
        self.assertAlmostEqual(float(t5[0]["ping_downtime_native_s"]), 0.12)
        self.assertAlmostEqual(float(t5[0]["extra_ping_downtime_s"]), 0.18)
        self.assertEqual(t5[1]["ping_downtime_stealth_s"], "")  # nothing made up
        self.assertAlmostEqual(float(t5[2]["ping_downtime_native_s"]), 0.1)
        self.assertIn("extra downtime by 10 ms pings (the paper's measure) stealth - native "
                      "(mean over rates) < 0.37 s: +0.180 s (4 MiB/s: 0.180 s;", report)
        self.assertEqual(checks_of(report)["d"], ["PASS", "PASS"])
        # Pings that tell another story than QEMU's report fail on their own line.
        pings.update({"stealth-r4-light-1": 900})
        shutil.rmtree(self.tmp)
        self.tmp = tempfile.mkdtemp(prefix="evaluate-report-test-")
        _, _, _, report = self.report(edit=add_ping)
        self.assertEqual(checks_of(report)["d"], ["PASS", "FAIL"])
        # Without pings: the columns stay empty and the check says nothing of them.
        shutil.rmtree(self.tmp)
        self.tmp = tempfile.mkdtemp(prefix="evaluate-report-test-")
        _, runs, _, report = self.report()
        self.assertIsNone(runs["native-r4-light-1"]["ping_downtime_ms"])
        self.assertNotIn("by 10 ms pings", report)
        self.assertEqual(checks_of(report)["d"], ["PASS"])

    def test_ping_outage_against_switchover(self):
        """rttmon's outage nearest QEMU's stop, on qmp.py's wall clock: seconds from QEMU's completion
        (qemu.json's total-time, not qmp.py's last query, which can still say 0)."""
        def add_timeline(out):
            d = out / "runs" / "stealth-r4-light-1"
            # qemu.json: total-time 11000 ms, downtime 300 ms
            (d / "qmp-migrate.json").write_text(json.dumps(
                {"status": "completed", "wall_start": 1000.0, "wall_end": 1011.2,
                 "query_migrate": {"status": "completed", "total-time": 0, "downtime": 0},
                 "switchover_hook": {"rc": 0, "wall": 1010.95}}))
            events = [
                # A longer outage in pre-copy, then the switch-over's: a peak first (start),
                # the replies stop at outage_start, later peaks (end).
                {"event": 1, "state": "red", "reason": "outage", "start": 3.0, "end": 4.0,
                 "outage_start": 3.0, "downtime_ms": 900.0, "max_silence_ms": 950.0},
                {"event": 2, "state": "red", "reason": "peak+outage", "start": 29.0, "end": 40.0,
                 "outage_start": 31.95, "downtime_ms": 600.0, "max_silence_ms": 650.0},
                {"event": 3, "state": "yellow", "reason": "peak", "start": 35.0, "end": 35.5,
                 "outage_start": None, "downtime_ms": 0.0, "max_silence_ms": 40.0}]
            lines = [json.dumps(e) for e in events] + ["{broken", json.dumps(
                {"summary": True, "started_unix": 979.0, "downtime_ms": 700.0, "state": "green"})]
            (d / "rttmon.json").write_text("\n".join(lines) + "\n")
            # A run whose only outage is not the switch-over's, one without rttmon's summary.
            d = out / "runs" / "native-r4-light-1"
            (d / "qmp-migrate.json").write_text(json.dumps({"status": "completed", "wall_start": 1.0}))
            # Only a pre-copy outage, 7 s before QEMU's stop (completion at 1 + 10 s).
            (d / "rttmon.json").write_text(json.dumps(events[0]) + "\n" + json.dumps(
                {"summary": True, "started_unix": 0.5}) + "\n")
            d = out / "runs" / "native-r8-light-1"
            (d / "qmp-migrate.json").write_text(json.dumps({"status": "completed", "wall_start": 1.0}))
            (d / "rttmon.json").write_text(json.dumps(events[1]) + "\n")
        _, runs, _, report = self.report(edit=add_timeline)
        po = runs["stealth-r4-light-1"]["ping_outage"]
        # completion at 1000 + 11 = 1011; the outage from 979 + 31.95 = 1010.95 for 0.65 s
        self.assertEqual(po, {"ms": 600.0, "start_s": -0.05, "end_s": 0.6, "stop_s": -0.3,
                              "pause_s": -0.05})
        self.assertIsNone(runs["native-r4-light-1"]["ping_outage"])
        self.assertIsNone(runs["native-r8-light-1"]["ping_outage"])
        self.assertIsNone(runs["stealth-r8-light-1"]["ping_outage"])  # no files at all
        self.assertIn("stealth 1 run(s): the pings stopped a median +250 ms from QEMU's stop of the "
                      "guest (range +250 to +250 ms) and answered again a median 0.60 s after QEMU's "
                      "completion (range 0.60 to 0.60 s)", report)
        self.assertNotIn("native 1 run(s)", report)
        # Without any timeline the sentence is left out.
        shutil.rmtree(self.tmp)
        self.tmp = tempfile.mkdtemp(prefix="evaluate-report-test-")
        _, _, _, report = self.report()
        self.assertNotIn("Ping outages against", report)

    def test_run_missing_in_judge(self):
        def forget_run(out):
            judge = json.loads((out / "judge.json").read_text())
            judge["runs"] = [r for r in judge["runs"] if r["id"] != "native-r8-light-1"]
            (out / "judge.json").write_text(json.dumps(judge))
        _, runs, _, _ = self.report(edit=forget_run)
        r = runs["native-r8-light-1"]
        self.assertIsNone(r["migration_flow"])
        self.assertEqual(r["verdicts"]["pattern"], {"flagged": None, "score": None})
        self.assertEqual(r["fpr"]["pattern"], None)
        self.assertAlmostEqual(r["total_time_s"], 6.0)

    def test_pngs(self):
        out, _, _, report = self.report()
        for png in PNGS:
            self.assertEqual((out / png).read_bytes()[:8], b"\x89PNG\r\n\x1a\n", png)
            self.assertIn(f"({png})", report)
        for name in ("table2.csv", "table3.csv", "table4.csv", "table5.csv", "fig_ours.csv", "detection.csv"):
            self.assertTrue((out / name).stat().st_size > 0, name)

    def test_pcap_parser(self):
        mod = load_report_module()
        path = Path(self.tmp) / "t.pcap"
        write_pcap(path, mig_sport=41000)
        s = mod.capture_series(path)
        self.assertEqual(s["flow"], "192.0.2.10:41000>198.51.100.10:49152/tcp")
        self.assertEqual(len(s["t"]), MIG_PACKETS + BG_PACKETS + 1)  # the cut record is dropped
        self.assertEqual(s["len"][s["mig"]].sum(), MIG_PACKETS * MIG_LEN)
        self.assertEqual(s["len"][~s["mig"]].sum(), BG_PACKETS * BG_LEN + 60)
        t, mib_s = mod.binned(s["t"][s["mig"]], s["len"][s["mig"]], 0.1, 2.0)
        self.assertEqual(len(t), 20)
        self.assertAlmostEqual(mib_s[5], 50 * MIG_LEN / 0.1 / (1 << 20), places=6)

    def test_ranking_auc(self):
        mod = load_report_module()
        self.assertEqual(mod.ranking_auc([3.0], [1.0, 2.0]), 1.0)
        self.assertEqual(mod.ranking_auc([0.0], [1.0, 2.0]), 0.0)
        self.assertEqual(mod.ranking_auc([1.0, 2.0], [1.0, 2.0]), 0.5)
        self.assertAlmostEqual(mod.ranking_auc([2.0, 0.0], [1.0, 1.0, 3.0]), 2 / 6)
        self.assertIsNone(mod.ranking_auc([], [1.0]))
        self.assertIsNone(mod.ranking_auc([1.0], []))

    def test_live_tap_without_its_records(self):
        # Runs copied without tap-flows.json: the live tap column says not measured, not 0/0.
        def drop_tap(out):
            for f in out.glob("runs/*/tap-flows.json"):
                f.unlink()
        _, _, _, report = self.report(edit=drop_tap)
        self.assertIn("| native | 2 | 2 | 2 | 8.000 | 0.175 | – | – |", report)
        shutil.rmtree(self.tmp)
        self.tmp = tempfile.mkdtemp(prefix="evaluate-report-test-")
        _, _, _, report = self.report()
        self.assertIn("| native | 2 | 2 | 2 | 8.000 | 0.175 | – | 2/2 |", report)

    def test_tpr_at_fpr(self):
        mod = load_report_module()
        neg = [i / 100 for i in range(100)]  # 0.00 .. 0.99: two may be flagged at 2 %
        self.assertAlmostEqual(mod.tpr_at_fpr([0.99, 0.98, 0.5], neg, 0.02), 2 / 3)
        self.assertEqual(mod.tpr_at_fpr([0.975], neg, 0.02), 1.0)
        self.assertEqual(mod.tpr_at_fpr([0.97], neg, 0.02), 0.0)  # a tie with the third
        # Ties among the top negatives: a threshold flagging 1.0 flags all three.
        self.assertEqual(mod.tpr_at_fpr([1.0, 2.0], [1.0] * 3 + [0.0] * 97, 0.02), 0.5)
        self.assertEqual(mod.tpr_at_fpr([0.5], [0.1] * 10, 0.02), 1.0)  # 10 flows: none may be flagged
        self.assertEqual(mod.tpr_at_fpr([0.1], [0.1] * 10, 0.02), 0.0)
        self.assertEqual(mod.tpr_at_fpr([0.0], [1.0], 1.0), 1.0)
        self.assertIsNone(mod.tpr_at_fpr([], [1.0], 0.02))
        self.assertIsNone(mod.tpr_at_fpr([1.0], [], 0.02))

    def test_table5_intervals(self):
        # Two runs a cell. 4 MiB/s: native 10 or 12 s, stealth 11 or 15 s, so a draw's ratio
        # lies in [11/12, 15/10], each end with probability 1/16 (> 2.5 %): the interval is
        # those ends. 8 MiB/s: equal runs, no spread. Over rates: the mean of the two.
        scenario = {}
        for rid, total in (("native-r4-light-1", 10000), ("native-r4-light-2", 12000),
                           ("stealth-r4-light-1", 11000), ("stealth-r4-light-2", 15000),
                           ("native-r8-light-1", 6000), ("native-r8-light-2", 6000),
                           ("stealth-r8-light-1", 6600), ("stealth-r8-light-2", 6600)):
            base = GOOD[rid[:-1] + "1"]
            scenario[rid] = (total,) + base[1:]
        out, _, _, report = self.report(scenario=scenario)
        t5 = read_csv(out / "table5.csv")
        self.assertAlmostEqual(float(t5[0]["ratio"]), 13 / 11)
        self.assertAlmostEqual(float(t5[0]["ratio_ci95_low"]), 11 / 12)
        self.assertAlmostEqual(float(t5[0]["ratio_ci95_high"]), 1.5)
        self.assertAlmostEqual(float(t5[1]["ratio_ci95_low"]), 1.1)
        self.assertAlmostEqual(float(t5[1]["ratio_ci95_high"]), 1.1)
        self.assertAlmostEqual(float(t5[2]["ratio_ci95_low"]), (11 / 12 + 1.1) / 2)
        self.assertAlmostEqual(float(t5[2]["ratio_ci95_high"]), 1.3)
        # Equal downtimes in both runs of a cell: a zero-width interval at the point.
        self.assertAlmostEqual(float(t5[2]["extra_downtime_ci95_low"]), 0.1)
        self.assertAlmostEqual(float(t5[2]["extra_downtime_ci95_high"]), 0.1)
        self.assertEqual(t5[2]["extra_ping_downtime_ci95_low"], "")  # no pings: nothing made up
        self.assertIn("| 4 | 2 | 2 | 11.000 | 13.000 | 1.182 | [0.917, 1.500] |", report)
        self.assertIn("paper 1.1-1.3; 95 % bootstrap interval over runs [1.008, 1.300])", report)
        self.assertIn("95 % intervals: percentile bootstrap over runs (2000 draws, seed 1)", report)
        first = (out / "table5.csv").read_text()
        self.assertEqual(run_report(out).returncode, 0)
        self.assertEqual((out / "table5.csv").read_text(), first)  # the same runs, the same intervals

    def test_maxent_window_triples(self):
        # judge.json's maxent_wA_B_C (shroud judge --more_feature_windows) and the older
        # judge-maxent-wA_B_C.json (maxent verdicts only) alike: each is a detector (the
        # files' in window order), held to check (b); a run or flow a file lacks has no
        # verdict; a file that is not one is ignored with a warning, and one whose detector
        # judge.json has already is not used.
        def triples(out):
            judge = json.loads((out / "judge.json").read_text())
            judge["detectors"].append({"name": "maxent_w1000_2000_3000",
                                       "description": "Algorithm 2 as maxent, on the window "
                                                      "triple 1000/2000/3000 packets"})
            for jr in judge["runs"]:
                for f in jr["flows"]:
                    f["verdicts"]["maxent_w1000_2000_3000"] = {"decided": True, "score": 0.1,
                                                               "flagged": False}
            (out / "judge.json").write_text(json.dumps(judge))

            def reduced(flag_stealth_migration, skip_run=None):
                runs = []
                for jr in judge["runs"]:
                    if jr["id"] == skip_run:
                        continue
                    runs.append({"id": jr["id"], "flows": [
                        {"flow": f["flow"], "verdicts": {"maxent": {
                            "decided": True, "score": 0.9 if flagged else 0.1,
                            "flagged": flagged}}}
                        for f in jr["flows"]
                        for flagged in [flag_stealth_migration and jr["mode"] == "stealth"
                                        and f["label"] == "migration" and not f["ack_direction"]]]})
                return json.dumps({"feature_windows": "x", "runs": runs})
            (out / "judge-maxent-w100_200_300.json").write_text(reduced(True))
            # judge.json's own verdicts (none flagged) stand; this file's would flag two.
            (out / "judge-maxent-w1000_2000_3000.json").write_text(reduced(True))
            (out / "judge-maxent-w500_1000_2000.json").write_text(reduced(True, "stealth-r8-light-1"))
            (out / "judge-maxent-wbad.json").write_text(reduced(True))
            (out / "judge-maxent-w1_2_3.json").write_text("[]")
        out, runs, _, report = self.report(edit=triples)
        r = run_report(out)
        self.assertIn("judge-maxent-w1_2_3.json is not shroud judge --json output", r.stderr)
        self.assertIn("judge-maxent-wbad.json is not shroud judge --json output", r.stderr)
        rows = re.findall(r"^\| stealth \| (maxent_w\w+) \| ([^|]+) \|", report, re.M)
        # judge.json's detectors first, then the files' in window order.
        self.assertEqual(rows, [("maxent_w1000_2000_3000", "0.000 (0/2)"),
                                ("maxent_w100_200_300", "1.000 (2/2)"),
                                ("maxent_w500_1000_2000", "1.000 (1/1)")])
        self.assertEqual(runs["stealth-r4-light-1"]["verdicts"]["maxent_w100_200_300"],
                         {"flagged": True, "score": 0.9})
        self.assertEqual(runs["stealth-r8-light-1"]["verdicts"]["maxent_w500_1000_2000"],
                         {"flagged": None, "score": None})
        checks = re.findall(r"^- \*\*(PASS|FAIL)\*\* \(b\) stealth (maxent_w\w+):", report, re.M)
        self.assertEqual(checks, [("PASS", "maxent_w1000_2000_3000"), ("FAIL", "maxent_w100_200_300"),
                                  ("FAIL", "maxent_w500_1000_2000")])
        self.assertIn("Algorithm 2 as maxent, on the paper's window triple 100/200/300 packets", report)
        self.assertIn("Algorithm 2 as maxent, on the window triple 1000/2000/3000 packets", report)
        self.assertEqual(len(re.findall(r"detector `maxent_w1000_2000_3000`", report)), 1)

    def test_errors(self):
        r = run_report(self.tmp)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no runs", r.stderr)
        out = make_out(self.tmp, GOOD, 0.5)
        (out / "judge.json").write_text("{not json")
        r = run_report(out)
        self.assertEqual(r.returncode, 1)
        self.assertIn("judge.json is not valid JSON", r.stderr)


if __name__ == "__main__":
    try:
        import matplotlib  # noqa: F401  (the report's plots)
        import numpy  # noqa: F401
    except ImportError as e:
        print(f"skipped: {e} (apt-get install python3-matplotlib python3-numpy)")
        sys.exit(77)
    unittest.main()
