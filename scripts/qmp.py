#!/usr/bin/env python3
"""Small stdlib-only QMP client for shroud's capture scripts.

Usage:
  qmp.py SOCKET wait [--timeout S]             wait until QEMU answers on SOCKET
  qmp.py SOCKET exec CMD [JSON-ARGS] [--timeout S]
                                               run one command, print its "return"
                                               (gives up after S s, default 20, when
                                               nobody answers on SOCKET)
  qmp.py SOCKET migrate --uri URI --bandwidth BYTES_PER_S
                        [--timeout S] [--interval S] [--downtime-limit MS]
                        [--switchover-hook CMD | --switchover-ctl SOCKET
                         --switchover-set KEY=VALUE...] [--switchover-hook-wait S]
        set max-bandwidth, start the migration, poll query-migrate until
        completed/failed (bounded), print a JSON object with the final
        query-migrate answer and wall-clock timestamps.
        --switchover-hook: QEMU pauses once the guest has stopped and before
        the last state is sent (capability pause-before-switchover); CMD
        starts there (/bin/sh -c, killed after 5 s) and the migration goes on
        once it is done or after --switchover-hook-wait S (default 0.05),
        whichever is first, whatever CMD did: the guest is down meanwhile.
        The output's "switchover_hook" has its exit status, its time and
        whether it was done before QEMU went on. E.g. a gateway told to
        drain the rest at full rate.
        --switchover-ctl SOCKET --switchover-set KEY=VALUE...: the same, but
        instead of a command qmp.py itself sends shroud ctl's "set" with those
        values to a dataplane's control socket (RUNTIME_DIR/INSTANCE/ctl.sock):
        no process to start in the pause. rc 0 when the dataplane answers ok.

Exit status: 0 on success, 1 on a QMP error / failed migration, 2 on usage or
connection errors. Errors are printed to stderr as one clear line.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time


HOOK_TIMEOUT_S = 5.0


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, path, timeout=10.0, connect_timeout=None):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.timeout = timeout
        # connect_timeout bounds the connect, greeting and qmp_capabilities
        # (connect_retry's deadline); `timeout` each read after that.
        self.sock.settimeout(timeout if connect_timeout is None else connect_timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        greeting = self._read_msg()
        if "QMP" not in greeting:
            raise QMPError("no QMP greeting on %s: %r" % (path, greeting))
        self.execute("qmp_capabilities")
        self.sock.settimeout(timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _read_msg(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise QMPError("QEMU closed the QMP socket %s" % self.path)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.strip()
        if not line:
            return self._read_msg()
        return json.loads(line.decode("utf-8", "replace"))

    def execute(self, cmd, args=None):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            resp = self._read_msg()
            if "event" in resp:
                self.events.append(resp)
                continue
            if "error" in resp:
                err = resp["error"]
                raise QMPError("%s: %s: %s" % (cmd, err.get("class"), err.get("desc")))
            if "return" in resp:
                return resp["return"]

    def wait_event(self, name, timeout):
        """Wait for an event NAME (already-buffered events count)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("event") == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise QMPError("timeout waiting for event %s" % name)
            self.sock.settimeout(left)
            try:
                resp = self._read_msg()
            finally:
                self.sock.settimeout(self.timeout)
            if "event" in resp:
                self.events.append(resp)

    def next_event(self, timeout):
        """The next event (buffered first), or None after TIMEOUT seconds."""
        if self.events:
            return self.events.pop(0)
        self.sock.settimeout(max(timeout, 0.001))
        try:
            while True:
                resp = self._read_msg()
                if "event" in resp:
                    return resp
        except socket.timeout:
            return None
        finally:
            self.sock.settimeout(self.timeout)


def connect_retry(path, timeout, io_timeout=10.0):
    """A QMP session on PATH within TIMEOUT s. An attempt that connects but
    hears no greeting (a hung QEMU) ends at the deadline too, not after
    IO_TIMEOUT, the timeout of each read once connected."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if os.path.exists(path):
            try:
                return QMP(path, io_timeout, min(io_timeout, max(deadline - time.monotonic(), 0.05)))
            except (OSError, QMPError) as e:  # not listening yet
                last = e
        time.sleep(0.1)
    raise QMPError("cannot connect to QMP socket %s within %.0f s (%s)" % (path, timeout, last))


class PauseAction:
    """What runs in QEMU's pre-switchover pause: subclasses start it, then
    wait(timeout) reads its end. QEMU waits at most `wait` s; result() waits
    for the end (bounded by HOOK_TIMEOUT_S) and returns the record."""

    def waited(self, wait):
        self.wait(wait)
        self.rec["qemu_waited_s"] = round(time.monotonic() - self.t0, 4)
        self.rec["done_before_continue"] = self.finished

    def result(self):
        while not self.wait(HOOK_TIMEOUT_S - (time.monotonic() - self.t0) + 0.01):
            pass
        return self.rec


class SwitchoverHook(PauseAction):
    """CMD (/bin/sh -c) started at QEMU's pre-switchover pause. QEMU waits for it
    at most `wait` seconds (every one of them is downtime: the guest is paused),
    then goes on while the hook finishes; it is killed after HOOK_TIMEOUT_S."""

    def __init__(self, cmd, wait):
        self.rec = {"cmd": cmd, "wall": time.time(), "rc": None, "output": ""}
        self.t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen(["/bin/sh", "-c", cmd], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # killed as a group
        except OSError as ex:
            self.proc = None
            self.rec["output"] = str(ex)
            self.rec["seconds"] = 0.0
            print("qmp.py: switchover hook failed to start: %s" % ex, file=sys.stderr)
        self.finished = self.proc is None
        self.waited(wait)

    def wait(self, timeout):
        """Waits up to TIMEOUT s for the hook; True once it has ended."""
        if self.finished:
            return True
        timed_out = False
        try:
            out, _ = self.proc.communicate(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            if time.monotonic() - self.t0 < HOOK_TIMEOUT_S:
                return False
            try:  # the shell's children too: they hold its output pipe open
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
            out, _ = self.proc.communicate()
            timed_out = True
        self.rec["rc"] = None if timed_out else self.proc.returncode
        self.rec["output"] = ("timed out after %.0f s; " % HOOK_TIMEOUT_S if timed_out else "") + \
            out.decode("utf-8", "replace")[-500:]
        self.rec["seconds"] = round(time.monotonic() - self.t0, 4)
        self.finished = True
        if self.rec["rc"] != 0:
            print("qmp.py: switchover hook failed (%s): %s" % (self.rec["rc"], self.rec["output"].strip()[-200:]),
                  file=sys.stderr)
        return True


class SwitchoverCtl(PauseAction):
    """shroud ctl's "set" sent over a dataplane's control socket at QEMU's
    pre-switchover pause (include/shroud/ctl_protocol.h: one JSON line each
    way). The same contract as SwitchoverHook: QEMU waits at most `wait`."""

    def __init__(self, path, values, wait):
        self.rec = {"ctl": path, "values": values, "wall": time.time(), "rc": None, "output": ""}
        self.t0 = time.monotonic()
        self.buf = b""
        self.finished = False
        try:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(HOOK_TIMEOUT_S)
            self.sock.connect(path)
            self.sock.sendall(json.dumps({"cmd": "set", "values": values}).encode() + b"\n")
        except OSError as ex:
            self.end(None, "cannot reach %s: %s" % (path, ex))
        self.waited(wait)

    def end(self, rc, output):
        self.rec["rc"] = rc
        self.rec["output"] = output[-500:]
        self.rec["seconds"] = round(time.monotonic() - self.t0, 4)
        self.finished = True
        try:
            self.sock.close()
        except OSError:
            pass
        if rc != 0:
            print("qmp.py: switchover ctl set failed (%s): %s" % (rc, output.strip()[-200:]), file=sys.stderr)

    def wait(self, timeout):
        """Waits up to TIMEOUT s for the dataplane's answer; True once there is one."""
        deadline = time.monotonic() + max(timeout, 0)
        while not self.finished:
            left = deadline - time.monotonic()
            if time.monotonic() - self.t0 >= HOOK_TIMEOUT_S:
                self.end(None, "no answer within %.0f s" % HOOK_TIMEOUT_S)
                break
            if left <= 0:
                return False
            try:
                self.sock.settimeout(min(left, HOOK_TIMEOUT_S))
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as ex:
                self.end(None, str(ex))
                break
            if not chunk:
                self.end(None, "the dataplane closed the connection without an answer")
                break
            self.buf += chunk
            if b"\n" in self.buf:
                line = self.buf.split(b"\n", 1)[0].decode("utf-8", "replace")
                try:
                    ok = json.loads(line).get("ok") is True
                except (ValueError, AttributeError):
                    ok = False
                self.end(0 if ok else 1, line)
        return True


def parse_set(items):
    """KEY=VALUE strings to a dict; VALUE is JSON when it parses, else a string (as shroud ctl)."""
    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError("--switchover-set wants KEY=VALUE, got %r" % item)
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values


def cmd_migrate(q, a):
    params = {"max-bandwidth": int(a.bandwidth)}
    if a.downtime_limit is not None:
        params["downtime-limit"] = int(a.downtime_limit)
    q.execute("migrate-set-parameters", params)
    got = q.execute("query-migrate-parameters")
    if int(got.get("max-bandwidth", -1)) != int(a.bandwidth):
        raise QMPError("max-bandwidth not applied: %r" % got.get("max-bandwidth"))
    hook = None
    pause = bool(a.switchover_hook or a.switchover_ctl)
    if pause:
        # The MIGRATION events say "pre-switchover" at once; polling would add
        # up to --interval to the guest's downtime.
        q.execute("migrate-set-capabilities", {"capabilities": [
            {"capability": "events", "state": True},
            {"capability": "pause-before-switchover", "state": True}]})
    t_start = time.time()
    q.execute("migrate", {"uri": a.uri})
    deadline = time.monotonic() + a.timeout
    info = {}
    t_active = None
    while True:
        info = q.execute("query-migrate")
        st = info.get("status")
        if st == "active" and t_active is None:
            t_active = time.time()
        if st == "pre-switchover" and pause and hook is None:
            if a.switchover_ctl:
                hook = SwitchoverCtl(a.switchover_ctl, parse_set(a.switchover_set), a.switchover_hook_wait)
            else:
                hook = SwitchoverHook(a.switchover_hook, a.switchover_hook_wait)
            q.execute("migrate-continue", {"state": "pre-switchover"})
            continue
        if hook is not None:
            hook.wait(0)
        if st in ("completed", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            try:
                q.execute("migrate_cancel")
            except QMPError:
                pass
            info["status"] = "timeout"
            break
        if pause:
            # Until the next event or --interval, whichever comes first.
            left = a.interval
            t_wait = time.monotonic()
            while left > 0:
                ev = q.next_event(left)
                if ev is None or ev.get("event") == "MIGRATION":
                    break
                left = a.interval - (time.monotonic() - t_wait)
        else:
            time.sleep(a.interval)
    t_end = time.time()
    # QEMU says completed before it fills in total-time and downtime (0 until then).
    for _ in range(25):
        if info.get("status") != "completed" or info.get("total-time"):
            break
        time.sleep(0.02)
        info = q.execute("query-migrate")
    out = {
        "status": info.get("status"),
        "wall_start": t_start,
        "wall_active": t_active,
        "wall_end": t_end,
        "max_bandwidth": got.get("max-bandwidth"),
        "downtime_limit": got.get("downtime-limit"),
        "query_migrate": info,
    }
    if pause:
        # null: QEMU never paused (failed before)
        out["switchover_hook"] = hook.result() if hook is not None else None
    print(json.dumps(out, sort_keys=True))
    return 0 if info.get("status") == "completed" else 1


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("socket")
    sub = p.add_subparsers(dest="op", required=True)
    w = sub.add_parser("wait")
    w.add_argument("--timeout", type=float, default=20.0)
    e = sub.add_parser("exec")
    e.add_argument("cmd")
    e.add_argument("args", nargs="?", default=None)
    e.add_argument("--timeout", type=float, default=20.0)
    m = sub.add_parser("migrate")
    m.add_argument("--uri", required=True)
    m.add_argument("--bandwidth", type=int, required=True, help="bytes per second")
    m.add_argument("--downtime-limit", type=int, default=None, help="ms")
    m.add_argument("--timeout", type=float, default=120.0)
    m.add_argument("--interval", type=float, default=0.2)
    m.add_argument("--switchover-hook", default=None, metavar="CMD",
                   help="shell command started when QEMU pauses before the switch-over")
    m.add_argument("--switchover-ctl", default=None, metavar="SOCKET",
                   help="a shroud dataplane's ctl.sock, told --switchover-set in the pause")
    m.add_argument("--switchover-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for --switchover-ctl (repeat for more)")
    m.add_argument("--switchover-hook-wait", type=float, default=0.05, metavar="S",
                   help="the longest QEMU waits in the pause for the hook (default 0.05 s)")
    a = p.parse_args(argv)
    if a.op == "migrate":
        if a.switchover_ctl and a.switchover_hook:
            p.error("--switchover-hook and --switchover-ctl exclude each other")
        if bool(a.switchover_ctl) != bool(a.switchover_set):
            p.error("--switchover-ctl and --switchover-set go together")
        try:
            parse_set(a.switchover_set)
        except ValueError as ex:
            p.error(str(ex))

    try:
        # wait and exec give up after their --timeout (exec also bounds its
        # reads by it: a caller polling a QEMU that died must not hang);
        # migrate's --timeout is the migration's, its connect 20 s as before.
        if a.op == "migrate":
            q = connect_retry(a.socket, 20.0)
        elif a.op == "exec":
            q = connect_retry(a.socket, a.timeout, min(10.0, a.timeout))
        else:
            q = connect_retry(a.socket, a.timeout)
    except QMPError as ex:
        print("qmp.py: %s" % ex, file=sys.stderr)
        return 2
    try:
        if a.op == "wait":
            print(json.dumps(q.execute("query-status")))
            return 0
        if a.op == "exec":
            args = json.loads(a.args) if a.args else None
            print(json.dumps(q.execute(a.cmd, args)))
            return 0
        if a.op == "migrate":
            return cmd_migrate(q, a)
    except (QMPError, OSError, ValueError) as ex:
        print("qmp.py: %s" % ex, file=sys.stderr)
        return 1
    finally:
        q.close()
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
