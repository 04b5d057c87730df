#!/usr/bin/env python3
"""scripts/evaluate's report: the paper's tables and figures from the runs.

Reads OUT/runs/*/ (run.json, qemu.json, migrate.json, tap-flows.json,
wan.pcap), OUT/judge.json (shroud judge --json; without it, no verdicts) and
OUT/matrix.json (optional), and writes into OUT:
  summary.json      one record per run: QEMU's times, the judge's verdicts on
                    the migration flow, FPR over the run's background flows
  report.md         provenance, matrix, results, Tables II-V, what must hold
  table2-5.csv      the paper's Tables II-V (table2.png, table4.png: plots)
  fig1_native_throughput.png, fig6_stealth_throughput.png   from wan.pcap
  fig3/4 (native), fig7/8 (stealth): pattern and maxent detection per rate
  fig_ours.png/.csv every detector's TPR and FPR, native vs stealth
  detection.csv     TPR and FPR counts per mode and detector
Needs only numpy and matplotlib (Debian's python3-matplotlib).
"""
import argparse
import bisect
import csv
import datetime
import json
import math
import random
import re
import socket
import statistics
import struct
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402
import numpy as np  # noqa: E402

MODES = ("native", "stealth")
LOAD_ORDER = {"none": 0, "light": 1, "medium": 2, "heavy": 3}
DEFAULT_WINDOWS = [100, 200, 300, 500, 1000, 2000, 3000]
MIB = 1 << 20
ALPHA = 0.05
MIGRATION_SRC = "192.0.2.10"
MIGRATION_DPORT = 49152
ID_RE = re.compile(r"^(native|stealth)-r(\d+)-([a-z]+)-(\d+)$")
FLOW_RE = re.compile(r"^(.+):(\d+)>(.+):(\d+)/(\w+)$")
# The paper's numbers, shown next to ours (never used as results).
PAPER_CS_BUFLO = "2.7-3.4"
PAPER_STEALTH_RATIO = "1.1-1.3"
PAPER_EXTRA_DOWNTIME_S = 0.37
PAPER_TABLE3_P = {("native migration", "background"): 0.019, ("native migration", "bulk"): 0.038,
                  ("stealth migration", "background"): 0.999, ("stealth migration", "bulk"): 0.999}
# What must hold (report.md's last section).
NATIVE_MIN_TPR = {"pattern": 0.80, "maxent": 0.90}
NATIVE_MAX_FPR = 0.02
MAX_EXTRA_DOWNTIME_S = 0.37
MAX_TIME_RATIO = 1.3


class ReportError(Exception):
    pass


def warn(msg):
    print(f"evaluate_report: warning: {msg}", file=sys.stderr)


# --- input -------------------------------------------------------------------
def read_json(path, strict=False):
    """The parsed file, or None when it is missing (or, unless strict, broken)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ReportError(f"cannot read {path}: {e}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if strict:
            raise ReportError(f"{path} is not valid JSON: {e}")
        warn(f"{path} is not valid JSON ({e}); ignored")
        return None


def read_json_lines(path):
    """The objects of a JSON-lines file (shroud rttmon --json), [] when it is missing;
    broken lines are skipped (an rttmon killed mid-line)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ReportError(f"cannot read {path}: {e}")
    objs = []
    for line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            objs.append(obj)
    return objs


def run_order(run):
    return (MODES.index(run["mode"]) if run["mode"] in MODES else 9, run["rate_mib_s"] or 0,
            LOAD_ORDER.get(run["load"], 9), run["rep"] or 0, run["id"])


def load_run(d):
    meta = read_json(d / "run.json")
    if not isinstance(meta, dict):
        m = ID_RE.match(d.name)
        if not m:
            warn(f"{d} has no run.json and is not named like a run; skipped")
            return None
        meta = {"id": d.name, "mode": m[1], "rate_mib_s": int(m[2]), "load": m[3], "rep": int(m[4])}
        meta["incomplete"] = True
    return {"dir": d, "meta": meta, "id": meta.get("id", d.name), "mode": meta.get("mode"),
            "rate_mib_s": meta.get("rate_mib_s"), "load": meta.get("load"), "rep": meta.get("rep"),
            "qemu": read_json(d / "qemu.json"), "migrate": read_json(d / "migrate.json"),
            "tap": read_json(d / "tap-flows.json"), "qmp": read_json(d / "qmp-migrate.json"),
            "rttmon": read_json_lines(d / "rttmon.json")}


def load_runs(out):
    runs_dir = out / "runs"
    dirs = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    runs = [r for r in (load_run(d) for d in dirs) if r]
    if not runs:
        raise ReportError(f"no runs in {runs_dir} (run scripts/evaluate first)")
    return sorted(runs, key=run_order)


def load_judge(out):
    judge = read_json(out / "judge.json", strict=True)
    if judge is None:
        warn(f"{out / 'judge.json'} is missing: no detector verdicts, comparisons not measured")
        return {"detectors": [], "runs": [], "comparisons": []}
    if not isinstance(judge, dict) or not isinstance(judge.get("runs", []), list):
        raise ReportError(f"{out / 'judge.json'} does not look like shroud judge --json output")
    return judge


MAXENT_TRIPLE_FILE_RE = re.compile(r"^judge-maxent-w(\d+)_(\d+)_(\d+)\.json$")


def merge_maxent_triples(out, judge):
    """Adds the maxent verdicts of each judge-maxent-wA_B_C.json (shroud judge
    --feature_windows=A,B,C on the same runs: how scripts/evaluate judged the other
    window triples before judge took --more_feature_windows) to judge as detector
    maxent_wA_B_C, flow by flow; a flow or run the file lacks gets no verdict. A detector
    judge.json has already is kept as it is. Returns the names added."""
    added = []
    have = set(detector_names(judge))
    flows = {(jr.get("id"), f.get("flow")): f for jr in judge.get("runs", []) if isinstance(jr, dict)
             for f in jr.get("flows", []) if isinstance(f, dict)}
    found = []
    for path in out.glob("judge-maxent-w*.json"):
        m = MAXENT_TRIPLE_FILE_RE.match(path.name)
        other = read_json(path) if m else None
        if not isinstance(other, dict) or not isinstance(other.get("runs"), list):
            warn(f"{path} is not shroud judge --json output of a window triple; ignored")
            continue
        found.append((tuple(int(w) for w in m.groups()), m, other))
    for _, m, other in sorted(found, key=lambda x: x[0]):
        name = f"maxent_w{m[1]}_{m[2]}_{m[3]}"
        if name in have:
            continue
        for f in flows.values():
            f.setdefault("verdicts", {})[name] = None
        for jr in other["runs"]:
            for f in (jr.get("flows", []) if isinstance(jr, dict) else []):
                mine = flows.get((jr.get("id"), f.get("flow"))) if isinstance(f, dict) else None
                if mine is not None:
                    mine["verdicts"][name] = (f.get("verdicts") or {}).get("maxent")
        judge.setdefault("detectors", []).append(
            {"name": name, "description": f"Algorithm 2 as maxent, on the paper's window triple "
                                          f"{m[1]}/{m[2]}/{m[3]} packets (maxent's is 100/500/1000)"})
        added.append(name)
    return added


def detector_names(judge):
    return [d["name"] for d in judge.get("detectors", []) if isinstance(d, dict) and d.get("name")]


# --- per-run records ---------------------------------------------------------
def number(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def scaled(x, factor):
    return None if number(x) is None else x * factor


def testbed_setting(meta, key):
    """An integer from run.json's testbed field, scripts/testbed's settings line
    ("delay_ms=10 ... src_notsent_lowat=131072"); None when absent or not a number."""
    m = re.search(rf"(?:^|\s){re.escape(key)}=(\d+)(?:\s|$)", str(meta.get("testbed") or ""))
    return int(m[1]) if m else None


def run_status(run, qemu, mig):
    if run["meta"].get("incomplete"):
        return "incomplete (no run.json)"
    status = qemu.get("status") or mig.get("status") or "no result"
    rc = run["meta"].get("migrate_exit")
    if status == "completed" and rc not in (0, None):
        status = f"failed (exit {rc})"
    return status


def flow_dport(flow):
    m = FLOW_RE.match(flow or "")
    return int(m[4]) if m else None


def verdict(flow, det):
    v = (flow.get("verdicts") or {}).get(det)
    if not isinstance(v, dict) or v.get("flagged") is None:
        return None
    return {"flagged": bool(v["flagged"]), "score": number(v.get("score"))}


def count_flagged(flows, detectors):
    """Per detector: flows with a verdict, and of those flagged."""
    judged = {d: 0 for d in detectors}
    flagged = {d: 0 for d in detectors}
    for f in flows:
        for d in detectors:
            v = verdict(f, d)
            if v:
                judged[d] += 1
                flagged[d] += v["flagged"]
    return judged, flagged


def migration_flows(judge_run):
    """The migration's data flows, biggest first: one for a plain migration, one per channel
    for multifd (the judge lists flows of at least --min_packets; an ACK direction is never
    a channel)."""
    flows = [f for f in (judge_run or {}).get("flows", [])
             if f.get("label") == "migration" and not f.get("ack_direction")]
    return sorted(flows, key=lambda f: -(f.get("packets") or 0))


def migration_verdict(channels, det):
    """The adversary spots a migration when it flags any of its channels; the score is the
    highest channel's (what a threshold on it would see first)."""
    vs = [v for v in (verdict(f, det) for f in channels) if v]
    if not vs:
        return None
    scores = [v["score"] for v in vs if v["score"] is not None]
    return {"flagged": any(v["flagged"] for v in vs), "score": max(scores) if scores else None}


def live_tap(tap, channel_flows, dport):
    """The live tap's view of the migration: its flow for the judge's biggest channel, and
    whether it flagged any of the channels (multifd) as migration."""
    flows = tap.get("flows") if isinstance(tap, dict) else None
    cands = [f for f in flows or [] if isinstance(f, dict) and flow_dport(f.get("flow")) == dport]
    if not cands:
        return None
    # The tap may still list an earlier run's migration: the judge's flows win.
    exact = [f for name in channel_flows for f in cands if f.get("flow") == name]
    best = exact[0] if exact else max(cands, key=lambda f: f.get("packets") or 0)
    flagged = [f.get("migration") for f in exact] if exact else [best.get("migration")]
    return {"flow": best.get("flow"), "pattern": best.get("pattern"), "maxent": best.get("maxent"),
            "migration": any(bool(m) for m in flagged) if any(m is not None for m in flagged) else None}


def run_record(run, judge_run, detectors):
    qemu = run["qemu"] if isinstance(run["qemu"], dict) else {}
    mig = run["migrate"] if isinstance(run["migrate"], dict) else {}
    # scripts/testbed migrate --ping: 10 ms pings to the guest; downtime_ms is
    # lost x interval, the paper's measure.
    ping = mig.get("ping") if isinstance(mig.get("ping"), dict) else None
    ram = qemu.get("ram") or {}
    flows = (judge_run or {}).get("flows", [])
    channels = migration_flows(judge_run)
    mflow = channels[0] if channels else None
    background = [f for f in flows if f.get("label") == "background"]
    chaff = [f for f in flows if f.get("label") == "chaff"]
    bg_judged, bg_flagged = count_flagged(background, detectors)
    _, chaff_flagged = count_flagged(chaff, detectors)
    empty = {"flagged": None, "score": None}
    return {
        "id": run["id"], "mode": run["mode"], "rate_mib_s": run["rate_mib_s"], "load": run["load"],
        "rep": run["rep"], "ram_mb": run["meta"].get("ram_mb", mig.get("ram_mb")),
        "status": run_status(run, qemu, mig), "migrate_exit": run["meta"].get("migrate_exit"),
        "total_time_s": scaled(qemu.get("total-time"), 1e-3),
        "downtime_ms": number(qemu.get("downtime")),
        "ping_downtime_ms": number((ping or {}).get("downtime_ms")),
        "ping": ping,
        "ping_outage": ping_outage(run["rttmon"], run["qmp"], run["qemu"]),
        "transferred_mib": scaled(ram.get("transferred"), 1 / MIB),
        "achieved_mib_s": scaled(ram.get("mbps"), 1e6 / 8 / MIB),
        "judged": judge_run is not None,
        "migration_flow": mflow.get("flow") if mflow else None,
        "migration_packets": mflow.get("packets") if mflow else None,
        "multifd_channels": run["meta"].get("multifd_channels", mig.get("multifd_channels", 0)),
        # scripts/testbed migrate --qemu-bandwidth-mib: QEMU's max-bandwidth when it is
        # not the run's rate (older runs did not record it: then it was the rate).
        "qemu_max_bandwidth_mib_s": number(mig.get("qemu_max_bandwidth_mib_s", run["rate_mib_s"])),
        "src_notsent_lowat": testbed_setting(run["meta"], "src_notsent_lowat"),
        # scripts/testbed migrate --switchover-drain: gateway A ran the migration at maxR
        # from QEMU's pre-switchover pause; the hook's ctl exit status and time.
        "switchover_drain": switchover_drain(mig),
        "migration_channels": len(channels),
        "verdicts": {d: migration_verdict(channels, d) or dict(empty) for d in detectors},
        "background_flows": len(background),
        "background_judged": bg_judged, "background_flagged": bg_flagged,
        "fpr": {d: (bg_flagged[d] / bg_judged[d] if bg_judged[d] else None) for d in detectors},
        "chaff_flows": len(chaff), "chaff_flagged": chaff_flagged,
        "live_tap": live_tap(run["tap"], [f.get("flow") for f in channels],
                             mig.get("dport", MIGRATION_DPORT)),
    }


def switchover_drain(mig):
    """migrate.json's switchover_drain as {hook_rc, hook_ms, qemu_wait_ms, restored}, or None
    when the run had none. hook_ms: from QEMU's pause to the gateway's answer; qemu_wait_ms:
    how much of it QEMU waited (the rest overlapped the last state's transfer). A hook of
    null (QEMU never paused: the migration failed first) gives None for those; restored:
    whether Algorithm 3 was put back on gateway A afterwards."""
    d = mig.get("switchover_drain")
    if not isinstance(d, dict):
        return None
    hook = d.get("hook") if isinstance(d.get("hook"), dict) else {}
    return {"hook_rc": hook.get("rc"), "hook_ms": scaled(hook.get("seconds"), 1e3),
            "qemu_wait_ms": scaled(hook.get("qemu_waited_s"), 1e3), "restored": d.get("restored")}


def ping_outage(rttmon, qmp, qemu):
    """The run's switch-over outage: shroud rttmon's red event nearest QEMU's stop of the
    guest, placed on the wall clock both keep (rttmon's started_unix + an event's start;
    qmp.py's wall_start + QEMU's total-time) as {ms, start_s, end_s, stop_s, pause_s},
    seconds from QEMU's completion (negative: before it). end_s: the first reply after the
    outage; stop_s: QEMU's stop (completion - its downtime); pause_s: when qmp.py saw the
    pre-switchover pause (drain runs only, else None). None without such an outage (within
    1 s of the stop) or the clocks. QEMU's times come from qemu.json (queried after the
    run): qmp.py's own last query-migrate can say completed before QEMU filled them in."""
    if not isinstance(qmp, dict) or not isinstance(qemu, dict):
        return None
    summary = next((o for o in rttmon if o.get("summary") is True), None)
    t0, start = number((summary or {}).get("started_unix")), number(qmp.get("wall_start"))
    total = number(qemu.get("total-time"))
    if t0 is None or start is None or not total:
        return None
    done = start + total / 1e3
    down = number(qemu.get("downtime"))
    stop = done - (down or 0) / 1e3

    def span(e):
        """(begin, end) on the wall clock, or None. A red event may open with an RTT peak
        (outage_start is where the replies stopped) and close on later peaks (its end): the
        outage is its longest silence, from outage_start."""
        b = number(e.get("outage_start"))
        b = number(e.get("start")) if b is None else b
        silence = number(e.get("max_silence_ms"))
        if b is None or silence is None:
            return None
        return t0 + b, t0 + b + silence / 1e3

    outages = [(e, span(e)) for e in rttmon
               if e.get("state") == "red" and e.get("summary") is not True]
    outages = [(e, sp) for e, sp in outages if sp]
    if not outages:
        return None

    def distance(sp):  # from QEMU's stop of the guest to the outage, 0 inside it
        return max(sp[0] - stop, stop - sp[1], 0.0)

    # The switch-over's outage: the one nearest QEMU's stop (a pre-copy stall can be longer);
    # none within a second of it: the switch-over's stayed below rttmon's red threshold.
    worst, (begin, end) = min(
        outages, key=lambda o: (distance(o[1]), -(number(o[0].get("downtime_ms")) or 0)))
    if distance((begin, end)) > 1.0:
        return None
    hook = qmp.get("switchover_hook") if isinstance(qmp.get("switchover_hook"), dict) else {}
    pause = number(hook.get("wall"))
    return {"ms": number(worst.get("downtime_ms")), "start_s": round(begin - done, 3),
            "end_s": round(end - done, 3),
            "stop_s": None if down is None else round(-down / 1e3, 3),
            "pause_s": None if pause is None else round(pause - done, 3)}


# --- statistics over runs ----------------------------------------------------
def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def ratio(k, n):
    return k / n if n else None


def ranking_auc(positives, negatives):
    """P(a migration's score > a background flow's), ties counted half (Mann-Whitney)."""
    if not positives or not negatives:
        return None
    neg = sorted(negatives)
    wins = 0.0
    for p in positives:
        below = bisect.bisect_left(neg, p)
        wins += below + 0.5 * (bisect.bisect_right(neg, p) - below)
    return wins / (len(positives) * len(neg))


def tpr_at_fpr(positives, negatives, max_fpr):
    """The highest TPR any threshold on the score reaches while flagging at most max_fpr of the
    negatives (flagged = score above the threshold); None without both groups."""
    if not positives or not negatives:
        return None
    neg = sorted(negatives, reverse=True)
    allowed = math.floor(max_fpr * len(neg) + 1e-9)  # negatives the threshold may let through
    if allowed >= len(neg):
        return 1.0
    cut = neg[allowed]  # flagging this score (or a tie with it) would flag one negative too many
    return sum(p > cut for p in positives) / len(positives)


def score_groups(records, judge_runs, mode, det):
    """The detector's scores of the migrations and of the background flows of the same runs,
    pooled as the pooled FPR is."""
    pos, neg = [], []
    for r in records:
        jr = judge_runs.get(r["id"]) if r["mode"] == mode else None
        score = r["verdicts"].get(det, {}).get("score")  # run_record's verdict on the migration
        if not jr or score is None:
            continue
        pos.append(score)
        for f in jr.get("flows", []):
            v = verdict(f, det) if f.get("label") == "background" else None
            if v and v["score"] is not None:
                neg.append(v["score"])
    return pos, neg


def detection_stats(records, mode, det, rate=None, judge_runs=None):
    rs = [r for r in records if r["mode"] == mode and (rate is None or r["rate_mib_s"] == rate)]
    judged = [r for r in rs if r["verdicts"].get(det, {}).get("flagged") is not None]
    detected = sum(r["verdicts"][det]["flagged"] for r in judged)
    bg_n = sum(r["background_judged"].get(det, 0) for r in rs)
    bg_k = sum(r["background_flagged"].get(det, 0) for r in rs)
    chaff_n = sum(r["chaff_flows"] for r in rs)
    chaff_k = sum(r["chaff_flagged"].get(det, 0) for r in rs)
    pos, neg = score_groups(rs, judge_runs or {}, mode, det)
    return {"mode": mode, "detector": det, "runs": len(rs), "runs_judged": len(judged),
            "detected": detected, "tpr": ratio(detected, len(judged)),
            "background_judged": bg_n, "background_flagged": bg_k, "pooled_fpr": ratio(bg_k, bg_n),
            "mean_fpr": mean([r["fpr"].get(det) for r in rs]),
            "chaff_flows": chaff_n, "chaff_flagged": chaff_k,
            "auc": ranking_auc(pos, neg),
            "tpr_at_max_fpr": tpr_at_fpr(pos, neg, NATIVE_MAX_FPR)}


def completed(records, mode, rate=None):
    return [r for r in records if r["mode"] == mode and r["status"] == "completed"
            and (rate is None or r["rate_mib_s"] == rate)]


# --- formatting and writing --------------------------------------------------
def fmt(x, nd=3):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.2e}" if 0 < abs(x) < 10 ** -nd else f"{x:.{nd}f}"
    return str(x)


def frac(k, n, nd=3):
    return f"{k / n:.{nd}f} ({k}/{n})" if n else "–"


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([["" if c is None else c for c in row] for row in rows])


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def placeholder(path, title, message):
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12)
    save(fig, path)


# --- Tables II and IV: variation coefficients --------------------------------
def cov_row(kind, run_id, flow, windows, load="", rate=""):
    cov = flow.get("cov") or {}
    return [kind, run_id, flow.get("flow"), flow.get("packets")] + \
        [number(cov.get(str(w))) for w in windows] + [load, rate]


def cov_table(records, judge_runs, mode, windows):
    """Three biggest background TCP flows, the background median, the migrations."""
    ids = {r["id"]: r for r in records if r["mode"] == mode}
    bg = [(rid, f) for rid in ids for f in (judge_runs.get(rid) or {}).get("flows", [])
          if f.get("label") == "background" and f.get("cov")]
    tcp = sorted((x for x in bg if (x[1].get("flow") or "").endswith("/tcp")),
                 key=lambda x: -(x[1].get("packets") or 0))
    rows = [cov_row("TCP", rid, f, windows) for rid, f in tcp[:3]]
    if bg:
        med = {}
        for w in windows:
            vals = [number(f["cov"].get(str(w))) for _, f in bg]
            vals = [v for v in vals if v is not None]
            med[str(w)] = statistics.median(vals) if vals else None
        rows.append(cov_row(f"Background median ({len(bg)} flows)", "all", {"cov": med}, windows))
    kind = "Nat. Mig." if mode == "native" else "Ste. Mig."
    for rid, r in ids.items():
        for mflow in migration_flows(judge_runs.get(rid)):  # multifd: a row per channel
            rows.append(cov_row(kind, rid, mflow, windows, r["load"], r["rate_mib_s"]))
    return rows


def plot_cov(path, title, rows, windows):
    if not rows:
        return placeholder(path, title, "not measured: no judged flows")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in rows:
        ys = [np.nan if v is None else v for v in row[4:4 + len(windows)]]
        mig = row[0].endswith("Mig.")
        label = f"{row[0]} {row[1]}" if mig else f"{row[0]} {row[2] or ''}".strip()
        ax.plot(windows, ys, marker="o" if mig else "s", linestyle="-" if mig else "--", label=label)
    ax.set_xscale("log")
    ax.set_xticks(windows, [str(w) for w in windows])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("packet window (packets)")
    ax.set_ylabel("coefficient of variation (std/mean)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    save(fig, path)


# --- Table III: chi-square and KS --------------------------------------------
TABLE3_CSV_HEADER = ["compared", "n_a", "n_b", "chi2", "df", "chi2_p", "chi2_result", "ks_window", "ks_d",
                     "ks_p", "ks_result", "paper_p", "note", "top_categories"]


def top_categories(c, k=3):
    """The comparison's k most common 1 us categories: "123 us 93.8/93.5 %; ..." (a/b)."""
    cats, pa, pb = c.get("categories_us") or [], c.get("percent_a") or [], c.get("percent_b") or []
    return "; ".join(f"{cat} us {a:.1f}/{b:.1f} %" for cat, a, b in list(zip(cats, pa, pb))[:k])


def verdict_word(p):
    if p is None:
        return "not computed"
    return "Indistinguishable" if p > ALPHA else "Distinguishable"


def table3_rows(judge):
    rows = []
    for c in judge.get("comparisons", []):
        chi_p, ks_p = number(c.get("chi2_p")), number(c.get("ks_p"))
        note = f"not computed: {c['error']}" if c.get("error") else ""
        rows.append([f"{c.get('a')} <> {c.get('b')}", c.get("n_a"), c.get("n_b"), number(c.get("chi2")),
                     c.get("df"), chi_p, verdict_word(chi_p), c.get("ks_window"), number(c.get("ks_d")),
                     ks_p, verdict_word(ks_p), PAPER_TABLE3_P.get((c.get("a"), c.get("b"))), note,
                     top_categories(c)])
    return rows


# --- Table V: time and downtime ----------------------------------------------
TABLE5_CSV_HEADER = ["rate_mib_s", "n_native", "n_stealth", "total_native_s", "total_stealth_s", "ratio",
                     "downtime_native_s", "downtime_stealth_s", "extra_downtime_s", "paper_cs_buflo_ratio",
                     "paper_stealth_ratio", "paper_extra_downtime_s", "ping_downtime_native_s",
                     "ping_downtime_stealth_s", "extra_ping_downtime_s"]


def table5_rows(records):
    rows, ratios, extras = [], [], []
    for rate in sorted({r["rate_mib_s"] for r in records if r["rate_mib_s"] is not None}):
        nat, ste = completed(records, "native", rate), completed(records, "stealth", rate)
        tn, ts = mean([r["total_time_s"] for r in nat]), mean([r["total_time_s"] for r in ste])
        dn = mean([scaled(r["downtime_ms"], 1e-3) for r in nat])
        ds = mean([scaled(r["downtime_ms"], 1e-3) for r in ste])
        pn = mean([scaled(r.get("ping_downtime_ms"), 1e-3) for r in nat])
        ps = mean([scaled(r.get("ping_downtime_ms"), 1e-3) for r in ste])
        rt = ts / tn if tn and ts is not None else None
        ex = ds - dn if dn is not None and ds is not None else None
        pex = ps - pn if pn is not None and ps is not None else None
        ratios.append(rt)
        extras.append(ex)
        rows.append([rate, len(nat), len(ste), tn, ts, rt, dn, ds, ex,
                     PAPER_CS_BUFLO, PAPER_STEALTH_RATIO, f"+{PAPER_EXTRA_DOWNTIME_S}", pn, ps, pex])
    rows.append(["mean over rates", "", "", mean(r[3] for r in rows), mean(r[4] for r in rows),
                 mean(ratios), mean(r[6] for r in rows), mean(r[7] for r in rows), mean(extras),
                 PAPER_CS_BUFLO, PAPER_STEALTH_RATIO, f"+{PAPER_EXTRA_DOWNTIME_S}",
                 mean(r[12] for r in rows), mean(r[13] for r in rows), mean(r[14] for r in rows)])
    return rows


# Table V's uncertainty: a percentile bootstrap over runs. Fixed seed: the same runs give
# the same report.
BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 1
T5_INTERVALS = {5: "ratio", 8: "extra_downtime", 14: "extra_ping_downtime"}  # column: CSV name
TABLE5_CSV_HEADER += [f"{name}_ci95_{end}" for name in T5_INTERVALS.values() for end in ("low", "high")]


def table5_intervals(records, draws=BOOTSTRAP_DRAWS, seed=BOOTSTRAP_SEED):
    """95 % intervals of Table V's ratio and extra downtimes, by rate and over rates: each draw
    takes every mode x rate x load cell's completed runs again with replacement (the matrix's
    design: a cell's runs differ only in their repetition) and recomputes Table V. None (no
    interval) when a cell has a single run, whose spread the runs cannot show.
    Returns {(Table V row label, column): (low, high)}."""
    cells = {}
    for r in records:
        if r["status"] == "completed" and r["rate_mib_s"] is not None:
            cells.setdefault((r["mode"], r["rate_mib_s"], r["load"]), []).append(r)
    if not cells or min(len(rs) for rs in cells.values()) < 2:
        return None
    rng = random.Random(seed)
    samples = {}
    for _ in range(draws):
        resampled = [rng.choice(rs) for rs in cells.values() for _ in rs]
        for row in table5_rows(resampled):
            for col in T5_INTERVALS:
                if row[col] is not None:
                    samples.setdefault((row[0], col), []).append(row[col])
    return {k: tuple(float(x) for x in np.percentile(v, [2.5, 97.5]))
            for k, v in samples.items() if len(v) == draws}


def with_intervals(t5, intervals):
    """Table V's rows with the intervals' bounds appended (empty without them), as in table5.csv."""
    return [row + [(intervals or {}).get((row[0], col), (None, None))[i]
                   for col in T5_INTERVALS for i in (0, 1)] for row in t5]


def interval_text(intervals, label, col, nd=3):
    lo_hi = (intervals or {}).get((label, col))
    return f"[{lo_hi[0]:.{nd}f}, {lo_hi[1]:.{nd}f}]" if lo_hi else "–"


# --- Figures 1 and 6: throughput from the WAN capture ------------------------
PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
              b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9)}


def packet_key(data, off, end):
    """(src, sport, dst, dport, proto) of an Ethernet frame, or None if not IPv4."""
    p = off + 12
    if p + 2 > end:
        return None
    etype = int.from_bytes(data[p:p + 2], "big")
    p += 2
    while etype in (0x8100, 0x88A8) and p + 4 <= end:  # 802.1Q / 802.1ad tags
        etype = int.from_bytes(data[p + 2:p + 4], "big")
        p += 4
    if etype != 0x0800 or p + 20 > end:
        return None
    ihl, proto = (data[p] & 0x0F) * 4, data[p + 9]
    fragment = int.from_bytes(data[p + 6:p + 8], "big") & 0x1FFF
    sport = dport = None
    if proto in (6, 17) and fragment == 0 and p + ihl + 4 <= end:
        sport, dport = struct.unpack_from("!HH", data, p + ihl)
    return (bytes(data[p + 12:p + 16]), sport, bytes(data[p + 16:p + 20]), dport, proto)


def read_pcap(path):
    """Times (s), original lengths (bytes) and flow numbers of a classic pcap's
    packets, and {flow key: flow number}."""
    data = path.read_bytes()
    if len(data) < 24 or data[:4] not in PCAP_MAGIC:
        raise ValueError("not a classic pcap file")
    endian, tick = PCAP_MAGIC[data[:4]]
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0xFFFF
    if linktype != 1:
        raise ValueError(f"link type {linktype}, not Ethernet")
    rec = struct.Struct(endian + "IIII")
    times, lengths, ids, flows, off = [], [], [], {}, 24
    while off + 16 <= len(data):
        sec, sub, incl, orig = rec.unpack_from(data, off)
        off += 16
        if off + incl > len(data):
            break  # the capture was cut mid-record
        times.append(sec + sub * tick)
        lengths.append(orig)
        ids.append(flows.setdefault(packet_key(data, off, off + incl), len(flows)))
        off += incl
    return np.array(times, dtype=float), np.array(lengths, dtype=float), np.array(ids, dtype=int), flows


def capture_series(path, src=MIGRATION_SRC, dport=MIGRATION_DPORT):
    """The capture with a mask of the migration flow (most bytes, TCP src -> dport)."""
    times, lengths, ids, flows = read_pcap(path)
    if not len(times):
        raise ValueError("no packets")
    per_flow = np.bincount(ids, weights=lengths, minlength=len(flows))
    src_b = socket.inet_aton(src)
    cands = [k for k in flows if k and k[4] == 6 and k[0] == src_b and k[3] == dport]
    if not cands:
        raise ValueError(f"no TCP flow from {src} to port {dport}")
    mk = max(cands, key=lambda k: per_flow[flows[k]])
    name = f"{socket.inet_ntoa(mk[0])}:{mk[1]}>{socket.inet_ntoa(mk[2])}:{mk[3]}/tcp"
    return {"t": times - times.min(), "len": lengths, "mig": ids == flows[mk], "flow": name}


def binned(t, lengths, bin_s, span):
    nbins = max(1, int(math.ceil(span / bin_s)))
    idx = np.minimum((t / bin_s).astype(int), nbins - 1)
    sums = np.bincount(idx, weights=lengths, minlength=nbins)
    return np.arange(nbins) * bin_s, sums / bin_s / MIB


def pick_run(records, mode, rate=4):
    rs = [r for r in records if r["mode"] == mode]
    preferred = [r for r in rs if r["rate_mib_s"] == rate and r["status"] == "completed"]
    return (preferred or [r for r in rs if r["status"] == "completed"] or rs or [None])[0]


def plot_throughput(out, records, mode, path, fine_bin_s=None):
    label = "Fig. 1: native" if mode == "native" else "Fig. 6: stealth"
    run = pick_run(records, mode)
    if run is None:
        return placeholder(path, f"{label} migration throughput", f"not measured: no {mode} runs")
    mig = read_json(out / "runs" / run["id"] / "migrate.json") or {}
    try:
        s = capture_series(out / "runs" / run["id"] / "wan.pcap", mig.get("src", MIGRATION_SRC),
                           mig.get("dport", MIGRATION_DPORT))
    except (OSError, ValueError) as e:
        warn(f"{run['id']}/wan.pcap: {e}")
        return placeholder(path, f"{label} migration throughput", f"not measured: {run['id']}: {e}")
    span = float(s["t"].max()) + 1e-9
    fig, ax = plt.subplots(figsize=(10, 4.5))
    if fine_bin_s:
        x, y = binned(s["t"][s["mig"]], s["len"][s["mig"]], fine_bin_s, span)
        ax.plot(x, y, lw=0.5, alpha=0.6, color="tab:blue",
                label=f"migration flow, {fine_bin_s * 1000:.0f} ms bins")
    x, y = binned(s["t"][s["mig"]], s["len"][s["mig"]], 0.1, span)
    ax.plot(x, y, lw=1.5, color="tab:red" if fine_bin_s else "tab:blue",
            label="migration flow, 100 ms bins")
    x, y = binned(s["t"][~s["mig"]], s["len"][~s["mig"]], 0.1, span)
    ax.plot(x, y, lw=1, color="tab:gray", zorder=1, label="all other traffic, 100 ms bins")
    ax.set_xlabel("time since capture start (s)")
    ax.set_ylabel("throughput (MiB/s)")
    ax.set_title(f"{label} migration {run['id']} ({run['rate_mib_s']} MiB/s limit, "
                 f"{run['load']} load)\nWAN capture, flow {s['flow']}")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    save(fig, path)


# --- Figures 3, 4, 7, 8 and ours: detection ----------------------------------
def plot_detection(records, detectors, mode, det, path, title):
    rates = sorted({r["rate_mib_s"] for r in records if r["mode"] == mode})
    if not rates or det not in detectors:
        why = f"no {mode} runs" if not rates else f"detector {det} not in judge.json"
        return placeholder(path, title, f"not measured: {why}")
    stats = [detection_stats(records, mode, det, rate) for rate in rates]
    x, w = np.arange(len(rates)), 0.2
    fig, ax = plt.subplots(figsize=(9, 4.8))
    ax2 = ax.twinx()
    left = [("migrations", "runs_judged", "tab:blue"), ("migrations detected", "detected", "tab:red"),
            ("false positives", "background_flagged", "tab:orange")]
    for i, (name, key, color) in enumerate(left):
        ax.bar_label(ax.bar(x + (i - 1.5) * w, [s[key] for s in stats], w, label=name, color=color))
    bg = ax2.bar(x + 1.5 * w, [s["background_judged"] for s in stats], w, color="lightgray",
                 edgecolor="gray", hatch="//", label="background flows (right axis)")
    ax2.bar_label(bg)
    top = max([s[k] for s in stats for _, k, _ in left] + [1])
    ax.set_ylim(0, top * 1.25 + 0.5)
    ax2.set_ylim(0, max([s["background_judged"] for s in stats] + [1]) * 1.25)
    ax.set_xticks(x, [str(r) for r in rates])
    ax.set_xlabel("migration rate limit (MiB/s)")
    ax.set_ylabel("migrations / flagged flows (count)")
    ax2.set_ylabel("background flows (count)")
    total = detection_stats(records, mode, det)
    ax.set_title(f"{title}\n{rates_text(total)}")
    handles = ax.get_legend_handles_labels()[0] + [bg]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    save(fig, path)


def plot_ours(stats, detectors, path):
    if not detectors:
        return placeholder(path, "Detection by every detector", "not measured: no judge.json")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    x, w = np.arange(len(detectors)), 0.38
    panels = ((axes[0], "tpr", "detection rate (TPR)", "fraction of migrations flagged"),
              (axes[1], "pooled_fpr", "pooled FPR", "fraction of background flows flagged"))
    for ax, key, what, unit in panels:
        vals = {m: [stats[(m, d)][key] for d in detectors] for m in MODES}
        for i, mode in enumerate(MODES):
            bars = ax.bar(x + (i - 0.5) * w, [v or 0 for v in vals[mode]], w, label=mode)
            ax.bar_label(bars, labels=["n/m" if v is None else f"{v:.3f}" for v in vals[mode]], fontsize=7)
        top = max([v for m in MODES for v in vals[m] if v is not None] + [0])
        ax.set_ylim(0, 1.1 if key == "tpr" else max(0.05, top * 1.3))
        ax.set_xticks(x, detectors, rotation=20)
        ax.set_xlabel("detector (n/m: not measured)")
        ax.set_ylabel(unit)
        ax.set_title(f"{what}: native vs stealth")
        ax.legend()
    save(fig, path)


def detection_csv_rows(stats, detectors):
    """detection.csv: one row per mode and detector."""
    keys = ["runs", "runs_judged", "detected", "tpr", "background_judged", "background_flagged",
            "pooled_fpr", "mean_fpr", "chaff_flows", "chaff_flagged", "auc", "tpr_at_max_fpr"]
    rows = [[m, d] + [stats[(m, d)][k] for k in keys] for m in MODES for d in detectors]
    return ["mode", "detector"] + keys, rows


def ours_csv_rows(stats, detectors):
    """fig_ours.csv: one row per detector, native and stealth side by side."""
    keys = ("detected", "runs_judged", "tpr", "background_flagged", "background_judged", "pooled_fpr")
    rows = [[d] + [stats[(m, d)][k] for m in MODES for k in keys] for d in detectors]
    return ["detector"] + [f"{m}_{k}" for m in MODES for k in keys], rows


# --- What must hold ----------------------------------------------------------
def check(cid, text, ok, detail):
    result = "not measured" if ok is None else ("PASS" if ok else "FAIL")
    return {"id": cid, "text": text, "result": result, "detail": detail}


def rates_text(s):
    return (f"TPR {frac(s['detected'], s['runs_judged'])}, "
            f"pooled FPR {frac(s['background_flagged'], s['background_judged'], 4)}")


def rate_check(cid, text, s, test, best=False):
    """A check on one mode x detector's TPR and pooled FPR; not measured without both. best:
    say also what the best threshold on these runs would have reached."""
    if not s or s["tpr"] is None or s["pooled_fpr"] is None:
        return check(cid, text, None, "no judged migrations or no judged background flows")
    detail = rates_text(s)
    if best and s.get("tpr_at_max_fpr") is not None:
        detail += (f"; the best threshold on these runs: TPR {s['tpr_at_max_fpr']:.3f} at pooled "
                   f"FPR <= {NATIVE_MAX_FPR}")
    return check(cid, text, test(s["tpr"], s["pooled_fpr"]), detail)


def check_detection(stats, detectors):
    out = [rate_check("a", f"native {det}: TPR >= {min_tpr:.2f} at pooled FPR <= {NATIVE_MAX_FPR}",
                      stats.get(("native", det)), lambda t, f, m=min_tpr: t >= m and f <= NATIVE_MAX_FPR,
                      best=True)
           for det, min_tpr in NATIVE_MIN_TPR.items()]
    out += [rate_check("b", f"stealth {det}: TPR <= pooled FPR", stats[("stealth", det)],
                       lambda t, f: t <= f) for det in detectors]
    if not detectors:
        out.append(check("b", "stealth: every detector's TPR <= its pooled FPR", None, "no detectors"))
    return out


def check_comparisons(judge):
    out = []
    for c in judge.get("comparisons", []):
        if not str(c.get("a", "")).startswith("stealth"):
            continue
        text = f"{c.get('a')} <> {c.get('b')}: chi-square p and KS p > {ALPHA}"
        chi_p, ks_p = number(c.get("chi2_p")), number(c.get("ks_p"))
        if chi_p is None or ks_p is None:
            out.append(check("c", text, None, c.get("error") or "p-values missing"))
            continue
        out.append(check("c", text, chi_p > ALPHA and ks_p > ALPHA,
                         f"chi-square p {chi_p:.3g}, KS p {ks_p:.3g}"))
    return out or [check("c", f"stealth migration <> background: p > {ALPHA}", None,
                         "no stealth comparisons in judge.json")]


def interval_note(intervals, col):
    """The mean-over-rates interval of a Table V column, for a check's detail."""
    text = interval_text(intervals, "mean over rates", col)
    return "" if text == "–" else f"; 95 % bootstrap interval over runs {text}"


def check_costs(t5, intervals=None):
    per_rate, mean_row = t5[:-1], t5[-1]
    extra, rt = mean_row[8], mean_row[5]
    ex_detail = ", ".join(f"{r[0]} MiB/s: {fmt(r[8])} s" for r in per_rate if r[8] is not None)
    rt_detail = ", ".join(f"{r[0]} MiB/s: {fmt(r[5])}" for r in per_rate if r[5] is not None)
    return [
        check("d", f"extra downtime stealth - native (mean over rates) < {MAX_EXTRA_DOWNTIME_S} s",
              None if extra is None else extra < MAX_EXTRA_DOWNTIME_S,
              "no rate with completed native and stealth runs" if extra is None
              else f"{extra:+.3f} s ({ex_detail}; paper +{PAPER_EXTRA_DOWNTIME_S} s"
                   f"{interval_note(intervals, 8)})"),
        check("e", f"total-time ratio stealth/native (mean over rates) < {MAX_TIME_RATIO}",
              None if rt is None else rt < MAX_TIME_RATIO,
              "no rate with completed native and stealth runs" if rt is None
              else f"{rt:.3f} ({rt_detail}; paper {PAPER_STEALTH_RATIO}{interval_note(intervals, 5)})"),
    ] + check_ping_downtime(per_rate, mean_row, intervals)


def check_ping_downtime(per_rate, mean_row, intervals=None):
    """The paper measured downtime with 10 ms pings (lost x interval), not from QEMU's
    report: the same check on that measure, when the runs pinged the guest."""
    extra = mean_row[14]
    if extra is None:
        return []
    detail = ", ".join(f"{r[0]} MiB/s: {fmt(r[14])} s" for r in per_rate if r[14] is not None)
    return [check("d", f"extra downtime by 10 ms pings (the paper's measure) stealth - native "
                       f"(mean over rates) < {MAX_EXTRA_DOWNTIME_S} s",
                  extra < MAX_EXTRA_DOWNTIME_S,
                  f"{extra:+.3f} s ({detail}; native {fmt(mean_row[12])} s, stealth "
                  f"{fmt(mean_row[13])} s; paper +{PAPER_EXTRA_DOWNTIME_S} s"
                  f"{interval_note(intervals, 14)})")]


def all_checks(stats, detectors, judge, t5, t5_intervals=None):
    return (check_detection(stats, detectors) + check_comparisons(judge)
            + check_costs(t5, t5_intervals))


def check_line(c):
    mark = "*not measured*" if c["result"] == "not measured" else f"**{c['result']}**"
    return f"- {mark} ({c['id']}) {c['text']}: {c['detail']}"


# --- report.md ---------------------------------------------------------------
def duration_text(s):
    if number(s) is None:
        return "unknown"
    h, rest = divmod(int(s), 3600)
    return f"{h} h {rest // 60:02d} min {rest % 60:02d} s" if h else f"{rest // 60} min {rest % 60:02d} s"


def provenance_md(matrix, judge, n_runs):
    if isinstance(matrix, dict):
        lines = [f"- command: `{matrix.get('command', '?')}`",
                 f"- duration: {duration_text(matrix.get('duration_s'))}",
                 f"- machine: {matrix.get('machine', '?')}"]
        parts = matrix.get("parts")
        if isinstance(parts, list) and len(parts) > 1:
            lines[1] += f", in {len(parts)} invocations (--first-rep):"
            lines[2:2] = [f"  - `{p.get('command', '?')}`: {duration_text(p.get('duration_s'))}"
                          for p in parts if isinstance(p, dict)]
    else:
        lines = ["- matrix.json missing (report-only run on existing runs): command, duration and "
                 "machine unknown"]
    lines.append(f"- runs: {n_runs}; judge: {judge.get('tool', 'not run')}, min_packets "
                 f"{judge.get('min_packets', '–')}, features {json.dumps(judge.get('feature_config', {}))}")
    lines += [f"- detector `{d['name']}`: {d.get('description', '')}" for d in judge.get("detectors", [])
              if isinstance(d, dict) and d.get("name")]
    return "\n".join(lines)


def matrix_md(records):
    rates = sorted({r["rate_mib_s"] for r in records if r["rate_mib_s"] is not None})
    loads = sorted({r["load"] for r in records if r["load"]}, key=lambda x: LOAD_ORDER.get(x, 9))
    rows = []
    for m in MODES:
        for load in loads:
            cells = []
            for rate in rates:
                rs = [r for r in records if r["mode"] == m and r["load"] == load and r["rate_mib_s"] == rate]
                cells.append(f"{sum(r['status'] == 'completed' for r in rs)}/{len(rs)}" if rs else "–")
            rows.append([m, load] + cells)
    text = "Completed / runs per mode, load and rate limit:\n\n" + md_table(
        ["mode", "load"] + [f"{r} MiB/s" for r in rates], rows)
    rams = sorted({r["ram_mb"] for r in records if r["ram_mb"]})
    text += f"\n\nGuest RAM: {', '.join(f'{x} MiB' for x in rams) or 'unknown'}."
    multifd = sorted({r["multifd_channels"] or 0 for r in records})
    if multifd != [0]:
        seen = sorted({r["migration_channels"] for r in records if r["judged"]})
        text += (f" QEMU multifd: {', '.join(str(m) for m in multifd)} channels requested; data "
                 f"channels the judge saw per run (>= min_packets): {', '.join(map(str, seen)) or '–'}; "
                 "the rate limit holds for the channels together.")
    for m in MODES:
        lifted = sorted({r["qemu_max_bandwidth_mib_s"] for r in records if r["mode"] == m
                         and r["qemu_max_bandwidth_mib_s"] not in (None, r["rate_mib_s"])})
        if lifted:
            text += (f" {m.capitalize()} migrations ran at QEMU max-bandwidth "
                     f"{', '.join(f'{q:g}' for q in lifted)} MiB/s, not the rate: their rate sets only "
                     "the guest's dirty rate and the time bounds.")
    lowat = sorted({r["src_notsent_lowat"] for r in records if r["src_notsent_lowat"]})
    if lowat:
        text += f" Source host's tcp_notsent_lowat: {', '.join(map(str, lowat))} bytes (kernel default 0)."
    for m in MODES:
        drained = [r for r in records if r["mode"] == m and r.get("switchover_drain")]
        if drained:
            ok = [r for r in drained if r["switchover_drain"]["hook_rc"] == 0]
            ms = [r["switchover_drain"]["hook_ms"] for r in ok if r["switchover_drain"]["hook_ms"] is not None]
            waits = [r["switchover_drain"]["qemu_wait_ms"] for r in ok
                     if r["switchover_drain"]["qemu_wait_ms"] is not None]
            text += (f" {m.capitalize()} migrations with the switch-over drain (`scripts/testbed migrate "
                     f"--switchover-drain`: gateway A at maxR from QEMU's pre-switchover pause until the "
                     f"destination ran): {len(ok)}/{len(drained)} hooks applied"
                     + (f", {min(ms):.0f}-{max(ms):.0f} ms after the pause (median {statistics.median(ms):.0f})"
                        if ms else "")
                     + (f"; QEMU held the paused guest for at most {max(waits):.0f} ms of that" if waits else "")
                     + ".")
            unrestored = [f"`{r['id']}`" for r in drained if r["switchover_drain"]["restored"] is False]
            if unrestored:
                text += (" Algorithm 3 was not restored after " + ", ".join(unrestored)
                         + ": later runs on those gateways may have run at maxR.")
    failed = [f"`{r['id']}` ({r['status']})" for r in records if r["status"] != "completed"]
    if failed:
        text += " Not completed: " + ", ".join(failed) + "."
    return text


def results_md(records, stats, detectors):
    rows = []
    for m in MODES:
        rs = [r for r in records if r["mode"] == m]
        tap = [r["live_tap"] for r in rs if r["live_tap"]]
        rows.append([m, len(rs), len(completed(records, m)), sum(r["judged"] for r in rs),
                     mean([r["total_time_s"] for r in completed(records, m)]),
                     mean([scaled(r["downtime_ms"], 1e-3) for r in completed(records, m)]),
                     mean([scaled(r.get("ping_downtime_ms"), 1e-3) for r in completed(records, m)]),
                     f"{sum(bool(t.get('migration')) for t in tap)}/{len(tap)}" if tap else "–"])
    text = md_table(["mode", "runs", "completed", "judged", "mean total time (s)", "mean downtime (s)",
                     "mean ping downtime (s)", "live tap flagged migration"], rows)
    text += ping_outage_md(records)
    rows = []
    for (m, d), s in stats.items():
        rows.append([m, d, frac(s["detected"], s["runs_judged"]), s["mean_fpr"],
                     frac(s["background_flagged"], s["background_judged"], 4),
                     frac(s["chaff_flagged"], s["chaff_flows"], 3), s["auc"], s["tpr_at_max_fpr"]])
    text += "\n\nTPR = fraction of runs whose migration was flagged (multifd: any of its " \
            "channels; its score is the highest channel's); mean FPR = mean over runs " \
            "of each run's flagged/background; pooled FPR = all flagged background flows / all " \
            "background flows (chaff excluded, shown apart). AUC ranks the detector's score rather " \
            "than its verdict: the chance that a migration flow scores above a background flow of " \
            "the same mode (ties half), 0.5 = no better than chance at any threshold, 1 = above " \
            "every one; the verdict is one threshold on that ranking. Best TPR at FPR <= " \
            f"{NATIVE_MAX_FPR}: the highest TPR any threshold on the score reaches while flagging at " \
            f"most {NATIVE_MAX_FPR:.0%} of the background flows, the threshold chosen on these runs " \
            "(an upper bound on what the detector could do here, not a verdict).\n\n"
    if not rows:
        return text + "\n\nDetection not measured: no detectors (judge.json missing or empty)."
    return text + md_table(["mode", "detector", "TPR", "mean FPR", "pooled FPR", "chaff flagged", "AUC",
                            f"best TPR at FPR <= {NATIVE_MAX_FPR}"], rows)


def ping_outage_md(records):
    """Where the pings' outage lies against QEMU's switch-over, per mode: what a gateway
    can change (the queue the paused guest waits on) against what it cannot (the guest's
    resume at the destination)."""
    parts = []
    for m in MODES:
        po = [r["ping_outage"] for r in completed(records, m) if r.get("ping_outage")]
        if not po:
            continue
        lead = [p["start_s"] - p["stop_s"] for p in po if p["stop_s"] is not None]
        ends = [p["end_s"] for p in po]
        text = f"{m} {len(po)} run(s): "
        if lead:
            text += (f"the pings stopped a median {statistics.median(lead) * 1e3:+.0f} ms from "
                     f"QEMU's stop of the guest (range {min(lead) * 1e3:+.0f} to "
                     f"{max(lead) * 1e3:+.0f} ms) and ")
        text += (f"answered again a median {statistics.median(ends):.2f} s after QEMU's "
                 f"completion (range {min(ends):.2f} to {max(ends):.2f} s)")
        parts.append(text)
    if not parts:
        return ""
    return ("\n\nPing outages against QEMU's switch-over (each run's outage event of shroud rttmon "
            "nearest QEMU's stop of the guest, on the wall clock it shares with qmp.py; runs whose "
            "outage stayed below rttmon's red threshold have none): " + "; ".join(parts) + ".")


FEATURE_GROUPS = [("native", "migration"), ("native", "background"), ("native", "bulk"),
                  ("stealth", "migration"), ("stealth", "background"), ("stealth", "bulk"),
                  ("stealth", "chaff")]


def feature_rows(judge):
    """Median of each timing feature (shroud judge's timing_features) per mode and flow
    group; bulk is the background's bulk part, also counted in background."""
    names, groups = [], {g: [] for g in FEATURE_GROUPS}
    for jr in judge.get("runs", []):
        if not isinstance(jr, dict):
            continue
        for f in jr.get("flows", []):
            tf = f.get("timing_features")
            if not isinstance(tf, dict) or f.get("ack_direction"):  # like with like, as Table III
                continue
            for n in tf:
                if n not in names:
                    names.append(n)
            label = f.get("label")
            groups.setdefault((jr.get("mode"), label), []).append(tf)
            if label == "background" and f.get("bulk"):
                groups.setdefault((jr.get("mode"), "bulk"), []).append(tf)
    rows = []
    for g in FEATURE_GROUPS:
        flows = groups.get(g, [])
        if not flows:
            continue
        meds = []
        for n in names:
            vals = [x[n] for x in flows if isinstance(x.get(n), (int, float))]
            meds.append(statistics.median(vals) if vals else None)
        rows.append([g[0], g[1], len(flows)] + [fmt(m) for m in meds])
    return names, rows


def write_report(out, matrix, judge, records, stats, detectors, tables, checks):
    t2, t3, t4, t5, t5_intervals, windows, (feature_names, features) = tables
    cov_head = ["type", "run", "flow", "packets"] + [str(w) for w in windows] + ["load", "rate (MiB/s)"]
    counts = {k: sum(c["result"] == k for c in checks) for k in ("PASS", "FAIL", "not measured")}
    parts = [
        "# shroud evaluation report",
        f"Generated {datetime.datetime.now().astimezone().isoformat(timespec='seconds')} by "
        "`scripts/lib/evaluate_report.py` from the runs in `runs/` and `judge.json`.",
        "## How it was produced", provenance_md(matrix, judge, len(records)),
        "## Matrix", matrix_md(records),
        "## Results", results_md(records, stats, detectors),
        "## Table II: variation coefficients, native",
        "[table2.csv](table2.csv), plotted in [table2.png](table2.png). Coefficient of variation "
        "(Eq. 1) per packet window, as shroud judge computes it; the three background TCP flows with "
        "the most packets, the median of all background flows, then every native migration flow.",
        md_table(cov_head, t2) if t2 else "not measured",
        "## Table III: chi-square and KS of inter-packet times",
        f"[table3.csv](table3.csv). Distinguishable when p <= alpha = {ALPHA}; the paper reports "
        "chi-square p only. Chi-square: the paper's test on the ten most common 1 us inter-packet-time "
        "categories (top three shown, percent of group a / group b); KS: the flows' CoV at the KS window. "
        "Flows are one direction of a connection: the ACK directions of background and chaff connections "
        "(reverse carries 10x the bytes) are left out, as the migration's own is, so n_b counts data "
        "directions. The gaps are the capture's: with `--capture link` (the matrix command above) the "
        "emulated link's, where back-to-back full frames are 123 us apart at 100 Mbit/s.",
        md_table(["compared flows", "n_a", "n_b", "chi2", "df", "chi2 p", "chi2 result", "KS window",
                  "KS D", "KS p", "KS result", "paper p", "note", "top categories"], t3)
        if t3 else "not measured",
        "## Table IV: variation coefficients, stealth",
        "[table4.csv](table4.csv), plotted in [table4.png](table4.png); as Table II, stealth runs.",
        md_table(cov_head, t4) if t4 else "not measured",
        "## Table V: total migration time and downtime",
        "[table5.csv](table5.csv). Completed runs only; QEMU's total-time and downtime; ratio = "
        "stealth/native total time; the paper's numbers alongside for reference. Ping downtime: "
        "10 ms pings to the guest from a host on its VM network (`scripts/testbed migrate --ping`), "
        "lost pings x 10 ms, the paper's own measure (it includes the switch-over of the VM "
        "network after QEMU resumes the guest); empty when the runs did not ping. " + table5_interval_md(t5_intervals),
        md_table(["rate (MiB/s)", "n native", "n stealth", "total native (s)", "total stealth (s)",
                  "ratio", "ratio 95 % interval", "downtime native (s)", "downtime stealth (s)",
                  "extra downtime (s)", "extra downtime 95 % interval", "paper CS-BuFLO ratio",
                  "paper stealth ratio", "paper extra downtime (s)", "ping downtime native (s)",
                  "ping downtime stealth (s)", "extra ping downtime (s)",
                  "extra ping downtime 95 % interval"],
                 [r[:6] + [interval_text(t5_intervals, r[0], 5)] + r[6:9]
                  + [interval_text(t5_intervals, r[0], 8)] + r[9:]
                  + [interval_text(t5_intervals, r[0], 14)] for r in t5]),
        "## Timing features by flow group",
        "[features.csv](features.csv). Median of each feature our timing attacks use "
        "(`shroud judge --json`, `timing_features`) over the flows of each group; bulk = the "
        "background's bulk flows (also in background). Where stealth migrations sit apart from "
        "the background is what an adversary who learns shroud's output can use.",
        md_table(["mode", "flows", "n"] + feature_names, features) if features else "not measured",
        "## Figures",
        "\n".join(f"- [{t}]({f})" for f, t in FIGURES),
        "## What must hold",
        f"{counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['not measured']} not measured.",
        "\n".join(check_line(c) for c in checks),
    ]
    (out / "report.md").write_text("\n\n".join(parts) + "\n")


def table5_interval_md(intervals):
    if intervals is None:
        return ("No 95 % intervals: some mode x rate x load cell has fewer than two completed "
                "runs, whose spread one run cannot show.")
    return (f"95 % intervals: percentile bootstrap over runs ({BOOTSTRAP_DRAWS} draws, seed "
            f"{BOOTSTRAP_SEED}), each draw taking every mode x rate x load cell's runs again with "
            "replacement; with two runs a cell, the interval shows only the spread those runs "
            "showed (it is too narrow more often than 5 %), so read an interval that crosses a "
            "bound as not settled by this matrix, and two matrices whose intervals overlap as not "
            "told apart.")


FIGURES = [("fig1_native_throughput.png", "Fig. 1: native migration throughput"),
           ("fig3_pattern_native.png", "Fig. 3: pattern matching, native"),
           ("fig4_maxent_native.png", "Fig. 4: maximum entropy, native"),
           ("fig6_stealth_throughput.png", "Fig. 6: stealth migration throughput (10 ms and 100 ms)"),
           ("fig7_pattern_stealth.png", "Fig. 7: pattern matching, stealth"),
           ("fig8_maxent_stealth.png", "Fig. 8: maximum entropy, stealth"),
           ("fig_ours.png", "Every detector: detection rate and FPR, native vs stealth"),
           ("table2.png", "Table II as a plot"), ("table4.png", "Table IV as a plot")]


DETECTION_FIGURES = [
    ("fig3_pattern_native.png", "native", "pattern", "Fig. 3: pattern matching on native migrations"),
    ("fig4_maxent_native.png", "native", "maxent", "Fig. 4: maximum entropy on native migrations"),
    ("fig7_pattern_stealth.png", "stealth", "pattern", "Fig. 7: pattern matching on stealth migrations"),
    ("fig8_maxent_stealth.png", "stealth", "maxent", "Fig. 8: maximum entropy on stealth migrations")]


# --- main --------------------------------------------------------------------
def make_report(out):
    runs = load_runs(out)
    judge = load_judge(out)
    merge_maxent_triples(out, judge)
    matrix = read_json(out / "matrix.json")
    detectors = detector_names(judge)
    judge_runs = {jr.get("id"): jr for jr in judge.get("runs", []) if isinstance(jr, dict)}
    for rid in sorted(set(judge_runs) - {r["id"] for r in runs}):
        warn(f"judge.json has run {rid}, which is not in {out / 'runs'}; ignored")
    records = [run_record(r, judge_runs.get(r["id"]), detectors) for r in runs]
    generated = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    (out / "summary.json").write_text(json.dumps(
        {"generated": generated, "matrix": matrix, "runs": records}, indent=1) + "\n")

    windows = (judge.get("feature_config") or {}).get("windows") or DEFAULT_WINDOWS
    cov_head = ["type", "run", "flow", "packets"] + [f"cov_{w}" for w in windows] + ["load", "rate_mib_s"]
    t2 = cov_table(records, judge_runs, "native", windows)
    t4 = cov_table(records, judge_runs, "stealth", windows)
    t3, t5 = table3_rows(judge), table5_rows(records)
    t5_intervals = table5_intervals(records)
    write_csv(out / "table2.csv", cov_head, t2)
    write_csv(out / "table4.csv", cov_head, t4)
    write_csv(out / "table3.csv", TABLE3_CSV_HEADER, t3)
    write_csv(out / "table5.csv", TABLE5_CSV_HEADER, with_intervals(t5, t5_intervals))
    plot_cov(out / "table2.png", "Table II: variation coefficients, native runs", t2, windows)
    plot_cov(out / "table4.png", "Table IV: variation coefficients, stealth runs", t4, windows)

    stats = {(m, d): detection_stats(records, m, d, judge_runs=judge_runs)
             for m in MODES for d in detectors}
    write_csv(out / "detection.csv", *detection_csv_rows(stats, detectors))
    write_csv(out / "fig_ours.csv", *ours_csv_rows(stats, detectors))
    plot_throughput(out, records, "native", out / "fig1_native_throughput.png")
    plot_throughput(out, records, "stealth", out / "fig6_stealth_throughput.png", fine_bin_s=0.01)
    for name, mode, det, title in DETECTION_FIGURES:
        plot_detection(records, detectors, mode, det, out / name, title)
    plot_ours(stats, detectors, out / "fig_ours.png")

    feature_names, features = feature_rows(judge)
    write_csv(out / "features.csv", ["mode", "flows", "n"] + feature_names, features)

    checks = all_checks(stats, detectors, judge, t5, t5_intervals)
    write_report(out, matrix, judge, records, stats, detectors,
                 (t2, t3, t4, t5, t5_intervals, windows, (feature_names, features)), checks)
    return checks


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="report.md ends with the checks that must hold (PASS, FAIL or not measured). Exit "
               "status 0 when the report was written, whatever the checks say; 1 on an error (no runs "
               "in OUT/runs, judge.json unparsable), with the reason on stderr.")
    ap.add_argument("out", metavar="OUT", type=Path, help="scripts/evaluate's output directory")
    args = ap.parse_args(argv)
    try:
        if not args.out.is_dir():
            raise ReportError(f"{args.out} is not a directory")
        checks = make_report(args.out)
    except ReportError as e:
        print(f"evaluate_report: error: {e}", file=sys.stderr)
        return 1
    counts = {k: sum(c["result"] == k for c in checks) for k in ("PASS", "FAIL", "not measured")}
    print(f"evaluate_report: {args.out / 'report.md'}: {counts['PASS']} PASS, {counts['FAIL']} FAIL, "
          f"{counts['not measured']} not measured", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
