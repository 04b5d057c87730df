#!/usr/bin/env bash
# Tap benchmarks with ratios, in one run: (a) shroud-dataplane --mode=tap
# packets/s per core with ~1 M concurrent flows against dpdk-testpmd
# --forward-mode=rxonly on the same device, (b) where the tap's time goes
# (mirror off, 1 k flows), (c) mirror records/s that shroud-control consumes,
# (d) bench/mirror_bench (ring write/poll, FlowStore apply).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench-tap.sh [options] [BUILD_DIR]

(a) Receive rate per core with FLOWS (default 1,048,576) concurrent flows.
    In this one invocation, alternating (testpmd then tap, then the other way
    round), RUNS rounds (default 3; every run and the median are printed):
      testpmd  dpdk-testpmd --forward-mode=rxonly --nb-cores=1 --no-flush-rx
               (rx burst, free; nothing else)
      tap      shroud-dataplane --mode=tap (parse, rte_hash bulk lookup,
               FlowFeatures::Observe per packet, the paced sweep that exports
               changed flows to the mirror ring; no shroud-control attached,
               so the ring fills and further records are dropped and counted,
               as in a tap whose control process is absent)
    on the same device: net_pcap0,rx_pcap=FILE,infinite_rx=1 with the same
    EAL arguments (--no-huge -m MEM --no-shconf --no-pci -l LCORES), 1024 rx
    descriptors, burst 32 and the same mbuf count. FILE is made by
    scripts/gen-bench-pcap.py --flows FLOWS: one 60-byte frame (64 B on the
    wire) per flow, half TCP half UDP, flows in order; net_pcap replays it in
    a loop, so every flow gets one packet per FLOWS packets, and with
    flows.idle_timeout_ms = 1 h every flow stays in the table: FLOWS
    concurrent flows, every lookup a different entry (the worst case for the
    caches, and the case of a busy mirror port). A file with each flow
    several times would change nothing but memory: net_pcap's infinite_rx
    holds every frame of the file in its own mbuf, and with --no-huge each
    mbuf takes a 4 KB page of its own, which is why MEM is ~5 GB for 1 M
    frames.

    Counting: testpmd: RX-packets of its "Accumulated forward statistics"
    over the time from "Press enter to exit" to "Telling cores to stop"
    (stamped as the lines arrive); the tap: rx_packets / elapsed_s of
    --counters_json (elapsed from the worker's start, so the first pass that
    creates the FLOWS entries is in it), and, as "steady", the rate between
    its per-second stats lines once every flow exists. Per core: each program
    has one busy core (testpmd --nb-cores=1: lcore 0 waits on stdin, lcore 1
    polls; the tap with -l 0-1: its worker polls on lcore 1, the main lcore
    sleeps in the control-channel loop). Target: tap >= 60 % of testpmd.

    Packet times: net_pcap's infinite_rx path copies frames into fresh mbufs
    without the rx timestamp that its file-reading path sets, so the tap
    falls back to the TSC per packet (it says "packet times from the
    capture" at start-up because the driver is net_pcap; the script reads
    time_ns of a mirrored record to show which clock was used).

(b) Where the tap's time goes (skip with --no-breakdown), in the same rounds:
      tap --mirror=false on the FLOWS file (no exporter: the sweep only
      checks idleness), and testpmd + tap on a 1024-flow file with the same
      config (same table size, so the difference to (a) is the flow working
      set: rte_hash buckets and ~340-byte FlowEntries that no longer fit in
      the caches and, with --no-huge, in the TLB).

(c) Records/s the control process consumes (skip with --no-records): the
    tap on the FLOWS file with --export_interval_ms=EXPORT_MS (default 0:
    every changed flow the sweep passes, ~3 M visits/s, far more than a
    reader takes) and shroud-control --http=off attached (same --runtime_dir
    and --instance). The script maps the mirror file read-only and reads the
    ring header (head = published, tail = consumed, dropped) over a window
    of RECORDS_S seconds after a warm-up; consumed/s is the control
    process's rate, and drops in the window show that the ring was full, so
    the reader, not the tap, was the limit. shroud-control's own
    "records/s" log lines are shown too. shroud-control runs pinned
    (taskset) to the CPU of the first lcore of LCORES, where the tap's main
    thread mostly sleeps; the tap's worker polls on the second. On a 2-core
    machine that is the whole machine, shared with whatever else runs.

(d) BUILD_DIR/mirror_bench (skip with --no-mirror-bench): TryWrite, Poll,
    both on two threads, FlowStore::Apply with the paper's detectors (1 k and
    1 M flows), Poll + Apply: records/s in one process.

Build: BUILD_DIR is used as it is (a warning if it is not a release
build). Without BUILD_DIR the script uses SOURCE/build-release and sets it
up (meson setup --buildtype=release) and builds shroud-dataplane,
shroud-control and mirror_bench in it (-j JOBS) when they are missing or
stale (ninja decides).

Work directory: WORKDIR (default /tmp/shroud-bench-tap) keeps the generated
pcaps between invocations (regenerated when the generator changes); each
invocation's logs, configs and counters go to WORKDIR/last/ (replaced each
time), the runtime directory of the dataplane instances to
WORKDIR/last/runtime (never the machine's /run/shroud; removed at the end).

options:
  --duration S        seconds per run in (a)/(b) (default 8)
  --runs N            rounds (default 3; a median of 3 drops one disturbed run)
  --flows N           flows of the main file (default 1048576, at most 2^20)
  --lcores LIST       EAL -l of both programs (default 0-1)
  --export-ms MS      --export_interval_ms of (c) (default 0)
  --records-s S       measuring window of (c) (default 10; warm-up 4 s first)
  --workdir DIR       work directory (default /tmp/shroud-bench-tap)
  --testpmd PATH      testpmd binary (default: dpdk-testpmd from PATH)
  --jobs N            meson compile -j for the default build dir (default 1)
  --no-breakdown      skip (b)
  --no-records        skip (c)
  --no-mirror-bench   skip (d)
  -h, --help          this text

Needs dpdk-testpmd (scripts/setup.sh --with-bench-tools; Debian package
dpdk-dev; exit status 2 without it), DPDK's net_pcap PMD, python3, stdbuf and
timeout. About 5 GB of memory per program for 1 M flows (one runs at a time)
and ~6-7 minutes with the defaults. Every process runs under a time limit.
EOF
}

die() { echo "bench-tap: $*" >&2; exit 2; }

source_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
orig_args=("$@")
build_dir=""
duration=8
runs=3
flows=1048576
lcores="0-1"
export_ms=0
records_s=10
workdir="/tmp/shroud-bench-tap"
testpmd=""
jobs=1
breakdown=1
records=1
mirror_bench=1

need() { (($1 >= 2)) || die "$2 needs a value"; }
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --duration) need $# "$1"; duration="$2"; shift 2 ;;
    --duration=*) duration="${1#*=}"; shift ;;
    --runs) need $# "$1"; runs="$2"; shift 2 ;;
    --runs=*) runs="${1#*=}"; shift ;;
    --flows) need $# "$1"; flows="$2"; shift 2 ;;
    --flows=*) flows="${1#*=}"; shift ;;
    --lcores) need $# "$1"; lcores="$2"; shift 2 ;;
    --lcores=*) lcores="${1#*=}"; shift ;;
    --export-ms) need $# "$1"; export_ms="$2"; shift 2 ;;
    --export-ms=*) export_ms="${1#*=}"; shift ;;
    --records-s) need $# "$1"; records_s="$2"; shift 2 ;;
    --records-s=*) records_s="${1#*=}"; shift ;;
    --workdir) need $# "$1"; workdir="$2"; shift 2 ;;
    --workdir=*) workdir="${1#*=}"; shift ;;
    --testpmd) need $# "$1"; testpmd="$2"; shift 2 ;;
    --testpmd=*) testpmd="${1#*=}"; shift ;;
    --jobs) need $# "$1"; jobs="$2"; shift 2 ;;
    --jobs=*) jobs="${1#*=}"; shift ;;
    --no-breakdown) breakdown=0; shift ;;
    --no-records) records=0; shift ;;
    --no-mirror-bench) mirror_bench=0; shift ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z "$build_dir" ]] || die "more than one BUILD_DIR given"; build_dir="$1"; shift ;;
  esac
done
[[ "$duration" =~ ^[0-9]+(\.[0-9]+)?$ ]] && python3 -c "import sys; sys.exit(float(sys.argv[1]) < 2)" "$duration" ||
  die "--duration must be a number of seconds >= 2, got '$duration'"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got '$runs'"
if ! [[ "$flows" =~ ^[1-9][0-9]*$ ]] || ((flows > 1048576)); then
  die "--flows must be in [1, 1048576], got '$flows'"
fi
[[ "$lcores" =~ ^[0-9]+([,-][0-9]+)*$ ]] || die "--lcores takes an EAL core list like 0-1, got '$lcores'"
[[ "$export_ms" =~ ^[0-9]+$ ]] || die "--export-ms must be a whole number of milliseconds"
[[ "$records_s" =~ ^[1-9][0-9]*$ ]] || die "--records-s must be a positive whole number of seconds"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer"

# --- tools ---
if [[ -z "$testpmd" ]]; then
  testpmd="$(command -v dpdk-testpmd || true)"
  [[ -n "$testpmd" ]] || die "dpdk-testpmd not found: it is the baseline of this benchmark. Install it with scripts/setup.sh --with-bench-tools (Debian package dpdk-dev), or pass --testpmd PATH"
fi
[[ -x "$testpmd" ]] || die "$testpmd is not executable"
for tool in python3 stdbuf timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "missing $tool"
done

# --- build ---
targets=(shroud-dataplane shroud-control)
((mirror_bench)) && targets+=(mirror_bench)
if [[ -z "$build_dir" ]]; then
  build_dir="${source_root}/build-release"
  command -v meson >/dev/null 2>&1 || die "meson not found (scripts/setup.sh installs it)"
  if [[ ! -f "$build_dir/build.ninja" ]]; then
    echo "setting up a release build in $build_dir"
    meson setup "$build_dir" "$source_root" --buildtype=release >/dev/null ||
      die "meson setup $build_dir failed"
  fi
  echo "building ${targets[*]} in $build_dir (-j $jobs)"
  meson compile -C "$build_dir" -j "$jobs" "${targets[@]}" >"$build_dir/bench-tap-build.log" 2>&1 ||
    { tail -20 "$build_dir/bench-tap-build.log" >&2; die "build failed (log: $build_dir/bench-tap-build.log)"; }
fi
for t in "${targets[@]}"; do
  [[ -x "$build_dir/$t" ]] || die "$build_dir/$t not found (build it: meson compile -C $build_dir ${targets[*]})"
done
buildtype="$(python3 -c "
import json, sys
try:
    opts = json.load(open(sys.argv[1] + '/meson-info/intro-buildoptions.json'))
    print(next(o['value'] for o in opts if o['name'] == 'buildtype'))
except Exception:
    print('unknown')" "$build_dir")"
if [[ "$buildtype" != "release" ]]; then
  echo "WARNING: $build_dir is a '$buildtype' build, not release: the figures below understate shroud"
fi

# --- work directory ---
mkdir -p "$workdir"
workdir="$(cd "$workdir" && pwd)"
if [[ "$workdir" =~ [,[:space:]] ]]; then
  die "the work directory $workdir contains a comma or a space, which EAL's --vdev arguments cannot carry"
fi
run_dir="$workdir/last"
rm -rf "$run_dir"
mkdir -p "$run_dir/runtime"
chmod 0700 "$run_dir/runtime"

quote() {
  local out="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./=,:+@-]+$ ]]; then out+="$a "; else out+="$(printf '%q' "$a") "; fi
  done
  echo "${out% }"
}
rerun="cd $(printf '%q' "$source_root") && scripts/bench-tap.sh $(quote "${orig_args[@]}")"
rerun="${rerun% }"

echo "shroud tap benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) online); memory $(awk '/MemAvailable/ {printf "%.1f GB available", $2 / 1048576}' /proc/meminfo); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "testpmd: $testpmd (DPDK $(pkg-config --modversion libdpdk 2>/dev/null || echo '?'))"
echo "tap: $build_dir/shroud-dataplane ($buildtype build); work directory $run_dir"

# --- pcaps (cached; the generator's checksum is part of the name) ---
gen="${source_root}/scripts/gen-bench-pcap.py"
gen_sum="$(sha256sum "$gen" | cut -c1-12)"
make_pcap() {  # flows -> path
  local n="$1" path="$workdir/flows-$1-$gen_sum.pcap"
  if [[ ! -s "$path" ]]; then
    local t0=$SECONDS
    python3 "$gen" "$path.tmp" --flows "$n" >/dev/null || die "gen-bench-pcap.py --flows $n failed"
    mv "$path.tmp" "$path"
    echo "pcap: generated $path in $((SECONDS - t0)) s" >&2
  else
    echo "pcap: cached $path" >&2
  fi
  echo "$path"
}
pcap_main="$(make_pcap "$flows")"
pcap_small=""
((breakdown)) && pcap_small="$(make_pcap 1024)"
# Drop cached pcaps of other generator versions.
find "$workdir" -maxdepth 1 -name 'flows-*.pcap' ! -name "*-$gen_sum.pcap" -delete 2>/dev/null || true

echo
PYTHONPATH="$(dirname "$0")/lib" python3 - "$run_dir" "$testpmd" "$build_dir" "$pcap_main" "$pcap_small" "$flows" "$duration" "$runs" \
  "$lcores" "$breakdown" "$records" "$export_ms" "$records_s" "$mirror_bench" "$rerun" <<'PYEOF'
import json, math, mmap, os, queue, re, resource, shutil, signal, statistics, struct, subprocess, sys
import threading, time

(run_dir, testpmd, build_dir, pcap_main, pcap_small, flows, duration, runs, lcores, breakdown,
 do_records, export_ms, records_s, do_mirror_bench, rerun) = sys.argv[1:]
flows, duration, runs = int(flows), float(duration), int(runs)
breakdown, do_records, do_mirror_bench = breakdown == "1", do_records == "1", do_mirror_bench == "1"
export_ms, records_s = int(export_ms), int(records_s)
dataplane = os.path.join(build_dir, "shroud-dataplane")
control = os.path.join(build_dir, "shroud-control")
runtime_dir = os.path.join(run_dir, "runtime")
STARTUP_LIMIT = 180   # s for EAL, 1 M mbufs and the pcap load, on a busy machine
STOP_LIMIT = 60
TARGET = 0.60
SMALL_FLOWS = 1024

def pcap_frames(path):
    n = 0
    with open(path, "rb") as f:
        f.seek(24)
        while True:
            h = f.read(16)
            if len(h) < 16:
                return n
            f.seek(struct.unpack("<IIII", h)[2], 1)
            n += 1

frames = {pcap_main: flows}
if pcap_small:
    frames[pcap_small] = pcap_frames(pcap_small)

# Both programs get the same mbuf count: net_pcap's infinite_rx holds every
# frame of the file in an mbuf of the pool, plus rx descriptors, bursts and
# the pool's per-lcore caches.
mbufs = flows + 8192
# --no-huge memory: the pool, where an mbuf (2176-byte data room + 128-byte
# header + the pool's own ~64 bytes) may not cross a 4 KB page, so each takes
# a page of its own; the net_pcap ring; the tap's rte_hash (keys, buckets,
# extendable buckets) for max_flows; and room to spare.
max_flows = max(1_100_000, flows + flows // 8)
mem_mb = int(math.ceil(mbufs * 4096 / 2**20 + max_flows * 160 / 2**20)) + 512

# ---- the tap's config ----
def tap_config(name):
    path = os.path.join(run_dir, name)
    with open(path, "w") as f:
        f.write(f"""# scripts/bench-tap.sh: a tap with room for every flow, none idle within the run.
[dataplane]
mode = "tap"
rx_queues = 1
rx_descriptors = 1024
burst_size = 32
mempool_mbufs = {mbufs}

[flows]
max_flows = {max_flows}
idle_timeout_ms = 3600000
""")
    return path
config = tap_config("tap-bench.toml")

# ---- load from other processes during a run ----
from benchlib import Load, children_cpu_s, cpu_busy_s, kill_group  # scripts/lib/benchlib.py

class Lines:
    """A child's merged output, each line stamped (monotonic) as it arrives."""
    def __init__(self, p, log):
        self.q, self.lines, self.log = queue.Queue(), [], log
        def reader():
            for raw in p.stdout:
                self.q.put((time.monotonic(), raw.decode(errors="replace")))
            self.q.put(None)
        threading.Thread(target=reader, daemon=True).start()
    def wait_for(self, marker, limit):
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                item = self.q.get(timeout=left)
            except queue.Empty:
                return None
            if item is None:
                return "eof"
            self.lines.append(item)
            self.log.write(item[1])
            if marker is not None and any(m in item[1] for m in
                                          ((marker,) if isinstance(marker, str) else marker)):
                return item[0]
    def tail(self, n=6):
        return "".join("      " + l for _, l in self.lines[-n:])

run_no = [0]
commands = {}
def eal(pcap):
    run_no[0] += 1
    return ["--no-huge", "-m", str(mem_mb), "--no-shconf", "--no-pci", "-l", lcores,
            f"--file-prefix=shroud-bench-tap-{os.getpid()}-{run_no[0]}",
            f"--vdev=net_pcap0,rx_pcap={pcap},infinite_rx=1"]

def log_path(name):
    return os.path.join(run_dir, f"run{run_no[0]}-{name}.log")

# ---- testpmd ----
def run_testpmd(pcap, kind):
    args = eal(pcap)
    cmd = ["stdbuf", "-oL", "-eL", testpmd, *args, "--", "--forward-mode=rxonly", "--nb-cores=1",
           "--no-flush-rx", "--rxq=1", "--txq=1", "--rxd=1024", "--txd=1024", "--burst=32",
           f"--total-num-mbufs={mbufs}"]
    commands[kind] = cmd[3:]
    log = open(log_path("testpmd"), "w")
    log.write(" ".join(cmd) + "\n")
    with Load() as load:
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
        out = Lines(p, log)
        try:
            t_start = out.wait_for("Press enter to exit", STARTUP_LIMIT)
            if not isinstance(t_start, float):
                raise RuntimeError("testpmd did not start forwarding "
                                   + ("(exited)" if t_start == "eof" else f"within {STARTUP_LIMIT} s")
                                   + f"; its last lines:\n{out.tail()}")
            time.sleep(max(0.0, t_start + duration - time.monotonic()))
            p.stdin.write(b"\n")
            p.stdin.flush()
            t_stop = out.wait_for("Telling cores to stop", STOP_LIMIT)
            if not isinstance(t_stop, float):
                raise RuntimeError("testpmd did not stop")
            if out.wait_for(None, STOP_LIMIT) != "eof":
                raise RuntimeError("testpmd did not exit")
            p.wait(timeout=STOP_LIMIT)
        except Exception:
            kill_group(p)
            log.close()
            raise
    log.close()
    text = "".join(l for _, l in out.lines)
    acc = text.split("Accumulated forward statistics", 1)
    if len(acc) != 2:
        raise RuntimeError(f"no accumulated statistics in testpmd's output ({log_path('testpmd')})")
    rx = int(re.search(r"RX-packets:\s*(\d+)", acc[1]).group(1))
    missed = sum(int(x) for x in re.findall(r"RX-missed:\s*(\d+)", acc[1]))
    return dict(seconds=t_stop - t_start, rx=rx, missed=missed, other=load.other, own=load.own)

# ---- mirror file (include/shroud/mirror.h, version 1) ----
class Mirror:
    def __init__(self, path):
        self.f = open(path, "rb")
        self.m = mmap.mmap(self.f.fileno(), 0, prot=mmap.PROT_READ)
        (magic, version, header_bytes, ring_header_bytes, record_bytes, self.rings, self.capacity,
         self.ring_offset, self.ring_stride) = struct.unpack_from("<QIIIIIIQQ", self.m, 0)
        if magic != 0x5252494D44524853 or version != 1 or record_bytes != 320 or ring_header_bytes != 256:
            raise RuntimeError(f"{path}: not a version-1 mirror file this script can read "
                               f"(magic {magic:#x}, version {version}, record {record_bytes} B)")
    def state(self):
        return struct.unpack_from("<I", self.m, 264)[0]
    def rings_stats(self):
        out = []
        for k in range(self.rings):
            base = self.ring_offset + k * self.ring_stride
            head, dropped = struct.unpack_from("<QQ", self.m, base)
            tail, reader_beat = struct.unpack_from("<QQ", self.m, base + 64)
            out.append(dict(head=head, dropped=dropped, tail=tail, reader_beat=reader_beat))
        return out
    def total(self):
        s = self.rings_stats()
        return {k: sum(r[k] for r in s) for k in ("head", "dropped", "tail")}
    def record_time_ns(self):
        """time_ns of the newest record still in ring 0 (None if it is empty)."""
        s = self.rings_stats()[0]
        if s["head"] == 0:
            return None
        slot = (s["head"] - 1) % self.capacity
        return struct.unpack_from("<Q", self.m, self.ring_offset + 256 + slot * 320 + 16)[0]
    def close(self):
        self.m.close()
        self.f.close()

# ---- the tap ----
STATS_RE = re.compile(r"tap worker \d+: (\d+) packets, (\d+) flows live")

def run_tap(pcap, kind, extra=(), instance=None, during=None):
    args = eal(pcap)
    instance = instance or f"bench-{run_no[0]}"
    counters = os.path.join(run_dir, f"run{run_no[0]}-counters.json")
    mirror_path = os.path.join(runtime_dir, instance, "mirror")
    cmd = [dataplane, *args, "--", "--mode=tap", f"--config={config}", f"--duration_s={duration:g}",
           "--stats_interval_s=1", f"--runtime_dir={runtime_dir}", f"--instance={instance}",
           f"--counters_json={counters}", *extra]
    commands[kind] = cmd
    log = open(log_path("tap"), "w")
    log.write(" ".join(cmd) + "\n")
    log.flush()
    side = {}
    with Load() as load:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
        out = Lines(p, log)
        try:
            t_run = out.wait_for(("tap worker 0 on lcore", "tap worker on the main lcore"),
                                 STARTUP_LIMIT)
            if not isinstance(t_run, float):
                raise RuntimeError("the tap did not start its worker "
                                   + ("(exited)" if t_run == "eof" else f"within {STARTUP_LIMIT} s")
                                   + f"; its last lines:\n{out.tail()}")
            if during is not None:
                side = during(out, mirror_path, p.pid)
            if out.wait_for(None, duration + STOP_LIMIT) != "eof":
                raise RuntimeError("the tap did not stop in time")
            rc = p.wait(timeout=STOP_LIMIT)
        except Exception:
            kill_group(p)
            log.close()
            raise
    log.close()
    if rc != 0 or not os.path.exists(counters):
        raise RuntimeError(f"shroud-dataplane exited {rc}:\n{out.tail()}")
    c = json.load(open(counters))
    w = c["workers"][0]
    # Steady state: between stats lines once every flow of the file exists.
    want = frames[pcap]
    points = [(t, int(m.group(1)), int(m.group(2))) for t, l in out.lines
              for m in [STATS_RE.search(l)] if m]
    full = [pt for pt in points if pt[2] >= want]
    steady = None
    if len(full) >= 2:
        (t0, p0, _), (t1, p1, _) = full[0], full[-1]
        if t1 > t0:
            steady = (p1 - p0) / (t1 - t0)
    # Which clock stamped the packets: a mirrored record's time.
    clock = "?"
    if os.path.exists(mirror_path):
        try:
            m = Mirror(mirror_path)
            t = m.record_time_ns()
            m.close()
            if t is not None:
                clock = ("capture (pcap timestamps)" if t > 10**17 else
                         f"TSC (record time {t / 1e9:.1f} s after start)")
        except Exception as e:
            clock = f"? ({e})"
    return dict(seconds=w["elapsed_s"], rx=c["rx_packets"], steady=steady,
                flows=c["flows"]["active"], created=c["flows"]["created"],
                table_full=c["flows"]["table_full"], evicted=c["flows"]["evicted_idle"],
                parse=c["parse"], mirror=c["mirror"], clock=clock, other=load.other, own=load.own,
                side=side)

def mpps(r):
    return r["rx"] / r["seconds"] / 1e6

def show(name, r):
    line = (f"  {name:24s}: {r['rx']:>11d} pkts / {r['seconds']:6.3f} s = {mpps(r):6.2f} Mpps")
    if "flows" in r:
        line += f" (steady {r['steady'] / 1e6:5.2f})" if r["steady"] else " (steady   n/a)"
    line += f"  cores: own {r['own']:.2f}, other {r['other']:.2f}"
    if "flows" in r:
        line += f"; flows active {r['flows']:,}"
        if r["table_full"]:
            line += f", TABLE FULL {r['table_full']:,}"
        mi = r["mirror"]
        line += f"; mirror updates {mi['updates']:,}, dropped {mi['ring_dropped']:,}"
    print(line, flush=True)

# ---- (a) + (b) ----
print(f"=== (a) packets/s per core: tap vs dpdk-testpmd --forward-mode=rxonly, {flows:,} flows ===")
print(f"{runs} round(s) x {duration:g} s; EAL --no-huge -m {mem_mb} -l {lcores}; {mbufs:,} mbufs; "
      f"tap: max_flows {max_flows:,}, idle_timeout 1 h, mirror ring 65536 records, no reader")
if breakdown:
    print(f"(b) in the same rounds: tap --mirror=false ({flows:,} flows), testpmd and tap on "
          f"{SMALL_FLOWS} flows (same tap config)")
kinds = [("testpmd", lambda: run_testpmd(pcap_main, "testpmd")),
         ("tap", lambda: run_tap(pcap_main, "tap"))]
if breakdown:
    kinds += [("tap-nomirror", lambda: run_tap(pcap_main, "tap-nomirror", ["--mirror=false"])),
              ("testpmd-1k", lambda: run_testpmd(pcap_small, "testpmd-1k")),
              ("tap-1k", lambda: run_tap(pcap_small, "tap-1k"))]
results = {k: [] for k, _ in kinds}
for i in range(runs):
    print(f"round {i + 1}:", flush=True)
    order = kinds if i % 2 == 0 else kinds[::-1]
    for name, fn in order:
        try:
            r = fn()
        except Exception as e:
            print(f"  {name:24s}: FAILED: {e}", flush=True)
            continue
        results[name].append(r)
        show(name, r)
        if name.startswith("tap") and r["created"] > frames[pcap_main if "1k" not in name else pcap_small]:
            print(f"    note: {r['created']:,} flows created for a file of fewer flows (evictions?)")

def med(name, f=mpps):
    rs = results.get(name) or []
    return statistics.median(f(r) for r in rs) if rs else None

summary = dict(flows=flows, duration=duration, runs=runs, lcores=lcores, mem_mb=mem_mb, mbufs=mbufs,
               max_flows=max_flows, commands=commands)
for k in results:
    rs = results[k]
    summary[k] = None if not rs else dict(
        mpps=med(k), runs=[mpps(r) for r in rs], other=statistics.mean(r["other"] for r in rs),
        steady=(med(k, lambda r: r["steady"] / 1e6) if all(r.get("steady") for r in rs) else None)
        if k.startswith("tap") else None,
        flows=[r["flows"] for r in rs] if k.startswith("tap") else None,
        table_full=max(r["table_full"] for r in rs) if k.startswith("tap") else None,
        clock=rs[-1]["clock"] if k.startswith("tap") else None,
        mirror=rs[-1]["mirror"] if k.startswith("tap") else None)
tp, tap = summary.get("testpmd"), summary.get("tap")
if tp and tap:
    print(f"  median: testpmd {tp['mpps']:.2f} Mpps ({1e3 / tp['mpps']:.1f} ns/pkt), tap "
          f"{tap['mpps']:.2f} Mpps ({1e3 / tap['mpps']:.1f} ns/pkt): tap/testpmd = "
          f"{tap['mpps'] / tp['mpps']:.2f}; the tap adds {1e3 / tap['mpps'] - 1e3 / tp['mpps']:.1f} ns/pkt")
    print(f"  packet times in the tap: {tap['clock']}")

# ---- (c) records/s consumed by shroud-control ----
def records_phase():
    instance = "bench-records"
    warmup = 4.0
    ctl_log_path = os.path.join(run_dir, "control.log")
    ctl_cmd = [control, f"--runtime_dir={runtime_dir}", f"--instance={instance}", "--http=off",
               "--exit_when_dataplane_stops"]
    if control_cpu is not None:
        ctl_cmd = ["taskset", "-c", str(control_cpu), *ctl_cmd]
    commands["control"] = ctl_cmd
    ctl_log = open(ctl_log_path, "w")
    ctl_log.write(" ".join(ctl_cmd) + "\n")
    ctl_log.flush()
    ctl = subprocess.Popen(ctl_cmd, stdin=subprocess.DEVNULL, stdout=ctl_log,
                           stderr=subprocess.STDOUT, start_new_session=True)
    def during(out, mirror_path, tap_pid):
        deadline = time.monotonic() + 30
        while not os.path.exists(mirror_path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no mirror file at {mirror_path}")
            time.sleep(0.05)
        m = Mirror(mirror_path)
        try:
            t_att = time.monotonic()
            while m.rings_stats()[0]["reader_beat"] == 0:
                if time.monotonic() - t_att > 30:
                    raise RuntimeError("shroud-control did not attach to the mirror within 30 s")
                time.sleep(0.05)
            time.sleep(warmup)
            t0, s0 = time.monotonic(), m.total()
            cpu0, tap0, busy0 = proc_cpu(ctl.pid), proc_cpu(tap_pid), cpu_busy_s()
            time.sleep(records_s)
            t1, s1 = time.monotonic(), m.total()
            cpu1, tap1, busy1 = proc_cpu(ctl.pid), proc_cpu(tap_pid), cpu_busy_s()
            if m.state() != 1:  # MirrorState::kRunning
                raise RuntimeError("the tap stopped before the measuring window ended (a slow "
                                   "start of shroud-control?); see the logs")
        finally:
            m.close()
        dt = t1 - t0
        known = [x for x in (cpu0, cpu1, tap0, tap1) if x is not None]
        other = (max(0.0, (busy1 - busy0 - (cpu1 - cpu0) - (tap1 - tap0)) / dt)
                 if len(known) == 4 else None)
        return dict(other=other, tap_cpu=(tap1 - tap0) / dt if tap0 is not None and tap1 is not None else None,
                    seconds=dt, consumed=(s1["tail"] - s0["tail"]) / dt,
                    published=(s1["head"] - s0["head"]) / dt, dropped=(s1["dropped"] - s0["dropped"]) / dt,
                    control_cpu=(cpu1 - cpu0) / dt if cpu0 is not None and cpu1 is not None else None)
    global duration
    saved = duration
    duration = warmup + records_s + 3
    try:
        r = run_tap(pcap_main, "tap-records", [f"--export_interval_ms={export_ms}"], instance=instance,
                    during=during)
    finally:
        duration = saved
        try:
            ctl.wait(timeout=STOP_LIMIT)
        except subprocess.TimeoutExpired:
            kill_group(ctl)
        ctl_log.close()
    rates = [float(m.group(1)) for m in re.finditer(r"\] (\d+) records/s", open(ctl_log_path).read())]
    r["control_log_rates"] = rates
    r["control_rc"] = ctl.returncode
    return r

def proc_cpu(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except Exception:
        return None

# shroud-control goes on the main lcore's CPU (where the tap's main thread
# mostly sleeps), so it never preempts the tap's worker on the other one.
control_cpu = None
if do_records:
    first = re.match(r"\d+", lcores).group(0)
    if subprocess.run(["sh", "-c", "command -v taskset"], stdout=subprocess.DEVNULL).returncode == 0:
        control_cpu = int(first)

if do_records:
    print()
    print(f"=== (c) records/s consumed by shroud-control (tap --export_interval_ms={export_ms}, "
          f"{flows:,} flows) ===")
    print("the tap's worker (on the second lcore of -l " + lcores + ") and shroud-control ("
          + (f"pinned to CPU {control_cpu}, the tap's main lcore, where the tap's main thread mostly sleeps"
             if control_cpu is not None else "not pinned: taskset is missing")
          + f") share this {os.cpu_count()}-core machine with everything else running on it")
    try:
        r = records_phase()
        s = r["side"]
        summary["records"] = dict(consumed=s["consumed"], published=s["published"], dropped=s["dropped"],
                                  control_cpu=s["control_cpu"], seconds=s["seconds"],
                                  log_rates=r["control_log_rates"], tap_mpps=mpps(r), other=s["other"],
                                  tap_cpu=s["tap_cpu"])
        cpu = f"{s['control_cpu']:.2f}" if s["control_cpu"] is not None else "?"
        print(f"  window {s['seconds']:.1f} s after a 4 s warm-up: consumed {s['consumed']:,.0f} records/s"
              f" (ring tail), published {s['published']:,.0f}/s, dropped (ring full) {s['dropped']:,.0f}/s;"
              f" shroud-control CPU {cpu} cores")
        print(f"  other processes meanwhile: {s['other'] if s['other'] is not None else float('nan'):.2f} "
              f"cores; the tap's process {s['tap_cpu'] if s['tap_cpu'] is not None else float('nan'):.2f} cores")
        print(f"  tap meanwhile: {mpps(r):.2f} Mpps, {r['flows']:,} flows; shroud-control's own summary "
              + (f"lines: {', '.join(f'{x:,.0f}' for x in r['control_log_rates'])} records/s (every 10 s, "
                 f"the first one includes its wait for the tap)" if r["control_log_rates"] else
                 "lines: none (it logs every 10 s)")
              + f"; its exit status {r['control_rc']}")
        if s["dropped"] <= 0:
            print("  note: no drops in the window: the tap produced fewer records than the reader could "
                  "take, so this is the producer's rate, not the reader's limit")
    except Exception as e:
        print(f"  FAILED: {e}")
        summary["records"] = None

# ---- (d) mirror_bench ----
if do_mirror_bench:
    print()
    print("=== (d) mirror_bench: ring and control-side records/s in one process ===")
    out_json = os.path.join(run_dir, "mirror_bench.json")
    cmd = [os.path.join(build_dir, "mirror_bench"), f"--benchmark_out={out_json}",
           "--benchmark_out_format=json", "--benchmark_min_time=0.3"]
    commands["mirror_bench"] = cmd
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        open(os.path.join(run_dir, "mirror_bench.log"), "wb").write(p.stdout)
        b = json.load(open(out_json))
        rows = {}
        for bm in b["benchmarks"]:
            if bm.get("error_occurred"):
                print(f"  {bm['name']}: ERROR {bm.get('error_message')}")
                continue
            rows[bm["name"]] = bm.get("items_per_second")
            extra = ""
            if "dropped_share" in bm:
                extra = f" (writer's records dropped: {100 * bm['dropped_share']:.0f} %)"
            print(f"  {bm['name']:34s} {bm['items_per_second'] / 1e6:8.2f} M records/s "
                  f"({1e9 / bm['items_per_second']:7.1f} ns each){extra}")
        summary["mirror_bench"] = rows
    except Exception as e:
        print(f"  FAILED: {e}")
        summary["mirror_bench"] = None

json.dump(summary, open(os.path.join(run_dir, "summary.json"), "w"), indent=1)
# The runs' mirror files (20 MB each) are of no further use.
shutil.rmtree(runtime_dir, ignore_errors=True)

# ---- summary ----
def q(cmd):
    return " ".join(c if re.match(r"^[A-Za-z0-9_./=,:+@-]+$", c) else repr(c) for c in cmd)
print()
print("=== summary ===")
print(f"input: {flows:,} flows, one 64-byte frame each, replayed in a loop (net_pcap infinite_rx); "
      f"{runs} round(s) x {duration:g} s; one busy core per program (EAL -l {lcores})")
if tp and tap:
    ratio = tap["mpps"] / tp["mpps"]
    print(f"(a) testpmd rxonly {tp['mpps']:6.2f} Mpps   tap {tap['mpps']:6.2f} Mpps"
          + (f" (steady {tap['steady']:.2f})" if tap["steady"] else "")
          + f"   tap/testpmd {ratio:.2f}   >= 0.60: {'yes' if ratio >= TARGET else 'NO'}")
    print(f"    runs: testpmd {', '.join(f'{x:.2f}' for x in tp['runs'])}; tap "
          f"{', '.join(f'{x:.2f}' for x in tap['runs'])} Mpps; other load {tp['other']:.2f} / "
          f"{tap['other']:.2f} cores")
    fl = tap["flows"]
    ok = all(abs(x - flows) <= flows * 0.001 for x in fl) and not tap["table_full"]
    print(f"    flows.active at the end: {', '.join(f'{x:,}' for x in fl)} of {flows:,} "
          f"{'(all present)' if ok else '(NOT all: see table_full and the logs)'}; packet times: {tap['clock']}")
else:
    print("(a) no result (see the errors above)")
busy = [r["other"] for rs in results.values() for r in rs]
if busy and max(busy) > 0.3:
    print(f"    WARNING: other processes kept {statistics.mean(busy):.2f} cores busy on average during "
          f"these runs (up to {max(busy):.2f}) on this {os.cpu_count()}-core machine, so the benchmarked "
          f"programs did not always have their core: the rates are low and noisy (ratios less so, the "
          f"runs alternate); rerun on a quiet machine")
if breakdown:
    nm, tp1, tap1 = summary.get("tap-nomirror"), summary.get("testpmd-1k"), summary.get("tap-1k")
    print("(b) where the tap's time goes (medians, ns per packet = 1000 / Mpps):")
    big = f"{flows:,} flows"
    rows = [(f"testpmd rxonly, {big}", tp), (f"tap, {big}", tap), (f"tap --mirror=false, {big}", nm),
            (f"testpmd rxonly, {SMALL_FLOWS} flows", tp1), (f"tap, {SMALL_FLOWS} flows", tap1)]
    for label, r in rows:
        if r:
            print(f"    {label:40s} {r['mpps']:6.2f} Mpps  {1e3 / r['mpps']:6.1f} ns/pkt")
        else:
            print(f"    {label:40s} failed")
    if tp and tap and nm and tp1 and tap1:
        print(f"    tap/testpmd with {SMALL_FLOWS} flows: {tap1['mpps'] / tp1['mpps']:.2f}; "
              f"the device (net_pcap copying from {flows:,} vs {SMALL_FLOWS} stored frames) costs "
              f"{1e3 / tp['mpps'] - 1e3 / tp1['mpps']:+.1f} ns/pkt in testpmd")
        print(f"    tap's own work: {1e3 / tap['mpps'] - 1e3 / tp['mpps']:.1f} ns/pkt at {big}, "
              f"{1e3 / tap1['mpps'] - 1e3 / tp1['mpps']:.1f} at {SMALL_FLOWS}: the flow working set "
              f"costs ~{(1e3 / tap['mpps'] - 1e3 / tp['mpps']) - (1e3 / tap1['mpps'] - 1e3 / tp1['mpps']):.1f} ns/pkt; "
              f"the mirror exporter ~{1e3 / tap['mpps'] - 1e3 / nm['mpps']:.1f} ns/pkt")
rec = summary.get("records")
if do_records:
    if rec:
        print(f"(c) shroud-control consumed {rec['consumed']:,.0f} records/s (ring tail over "
              f"{rec['seconds']:.0f} s; tap published {rec['published']:,.0f}/s, dropped "
              f"{rec['dropped']:,.0f}/s{'' if rec['dropped'] > 0 else ' -> producer-bound'}); "
              f"control CPU {rec['control_cpu'] or 0:.2f} cores, tap {rec['tap_mpps']:.2f} Mpps meanwhile, "
              f"other processes {rec['other'] or 0:.2f} cores (tap and control share the {os.cpu_count()} cores)")
        if rec["other"] is not None and rec["other"] > 0.3:
            print(f"    WARNING: other processes kept {rec['other']:.2f} cores busy during (c): the "
                  f"consumer's rate is understated")
    else:
        print("(c) failed")
mb = summary.get("mirror_bench")
if do_mirror_bench and mb:
    def g(n):
        v = mb.get(n)
        return f"{v / 1e6:.2f} M/s" if v else "n/a"
    print(f"(d) mirror_bench: TryWrite {g('BM_MirrorTryWrite')}, Poll(4096) {g('BM_MirrorPoll/4096')}, "
          f"two threads {g('BM_MirrorEndToEnd/min_time:1.000/real_time')}, FlowStore::Apply "
          f"{g('BM_FlowStoreApply/1024')} (1k flows) / {g('BM_FlowStoreApply/1048576')} (1M), "
          f"Poll+Apply {g('BM_PollAndApply/1048576')} (1M)")
print("commands (last run of each):")
for k in ("testpmd", "tap", "tap-nomirror", "testpmd-1k", "tap-1k", "tap-records", "control", "mirror_bench"):
    if k in commands:
        print(f"  {k}: {q(commands[k])}")
print(f"load average at end: {open('/proc/loadavg').read().split()[0:3]}")
print(f"logs: {run_dir}")
print(f"rerun: {rerun}")
PYEOF
