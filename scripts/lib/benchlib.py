"""Helpers shared by the benchmark scripts' embedded Python (bench-dataplane.sh,
bench-tap.sh): CPU load of other processes during a run, process-group kill."""
import os
import resource
import signal
import subprocess
import time


def cpu_busy_s():
    """CPU seconds the whole machine has been busy (user nice system irq softirq steal)."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is inside user)
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Load:
    """with Load() as l: ... -> l.own (cores our children used), l.other (everyone else)."""

    def __enter__(self):
        self.t, self.busy, self.child = time.monotonic(), cpu_busy_s(), children_cpu_s()
        return self

    def __exit__(self, *a):
        wall = time.monotonic() - self.t
        self.own = (children_cpu_s() - self.child) / wall
        self.other = max(0.0, (cpu_busy_s() - self.busy) / wall - self.own)


def kill_group(p):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            pass
