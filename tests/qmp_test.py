#!/usr/bin/env python3
"""scripts/qmp.py's migrate against a scripted QMP server (no QEMU, no root).

What it checks: --switchover-hook sets QEMU's events and pause-before-switchover
capabilities, runs the hook while QEMU waits in pre-switchover and only then
sends migrate-continue, records the hook's exit status, continues whatever the
hook did, and reports null when QEMU never paused; without the hook nothing of
that is asked of QEMU. exec gives up after its --timeout when nobody answers
on the socket (scripts/testbed migrate polls a destination QEMU that may be dead).
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QMP_PY = os.path.join(ROOT, "scripts", "qmp.py")


class FakeQemu(threading.Thread):
    """Answers one QMP client. The migration goes active -> (pre-switchover,
    waiting for migrate-continue, when the capability is on) -> device ->
    completed, or active -> failed when fail_before_switchover."""

    def __init__(self, path, fail_before_switchover=False, unfilled_queries=0):
        super().__init__(daemon=True)
        # QEMU's race: the first queries that say completed still carry total-time 0.
        self.unfilled = unfilled_queries
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.server.settimeout(20)
        self.fail = fail_before_switchover
        self.log = []  # (monotonic time, command, arguments)
        self.caps = {}
        self.status = "setup"
        self.queries = 0
        self.paused_at = None

    def send(self, conn, obj):
        conn.sendall(json.dumps(obj).encode() + b"\n")

    def run(self):
        try:
            self.serve()
        finally:
            self.server.close()

    def serve(self):
        conn, _ = self.server.accept()
        conn.settimeout(20)
        self.send(conn, {"QMP": {"version": {}, "capabilities": []}})
        buf = b""
        with conn:
            while True:
                while b"\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                cmd, args = msg["execute"], msg.get("arguments", {})
                self.log.append((time.monotonic(), cmd, args))
                ret = {}
                if cmd == "query-migrate-parameters":
                    ret = {"max-bandwidth": self.bandwidth, "downtime-limit": 100}
                elif cmd == "migrate-set-parameters":
                    self.bandwidth = args["max-bandwidth"]
                elif cmd == "migrate-set-capabilities":
                    for c in args["capabilities"]:
                        self.caps[c["capability"]] = c["state"]
                elif cmd == "migrate":
                    self.status = "active"
                elif cmd == "migrate-continue":
                    assert self.status == "pre-switchover", self.status
                    self.status = "device"
                elif cmd == "query-migrate":
                    self.queries += 1
                    if self.status == "active" and self.queries >= 3:
                        if self.fail:
                            self.status = "failed"
                        elif self.caps.get("pause-before-switchover"):
                            self.status = "pre-switchover"
                            self.paused_at = time.monotonic()
                            if self.caps.get("events"):
                                self.send(conn, {"event": "MIGRATION", "data": {"status": "pre-switchover"}})
                        else:
                            self.status = "device"
                    elif self.status == "device":
                        self.status = "completed"
                    ret = {"status": self.status}
                    if self.status == "completed":
                        filled = self.unfilled <= 0
                        self.unfilled -= 1
                        ret.update({"total-time": 1234 if filled else 0, "downtime": 42 if filled else 0})
                self.send(conn, {"return": ret})

    def commands(self):
        return [c for _, c, _ in self.log]

    def time_of(self, cmd):
        return next(t for t, c, _ in self.log if c == cmd)


class FakeCtl(threading.Thread):
    """A dataplane's ctl.sock: reads one request line, answers after `delay` s."""

    def __init__(self, path, delay=0.0, ok=True):
        super().__init__(daemon=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.server.settimeout(20)
        self.delay, self.ok = delay, ok
        self.request = None
        self.received_at = None

    def run(self):
        try:
            conn, _ = self.server.accept()
            with conn:
                buf = b""
                while b"\n" not in buf:
                    buf += conn.recv(65536)
                self.received_at = time.monotonic()
                self.request = json.loads(buf.split(b"\n", 1)[0])
                time.sleep(self.delay)
                answer = ({"ok": True, "version": 1, "applied": self.request["values"]} if self.ok
                          else {"ok": False, "version": 1, "error": "rate_variation.start_rate_mbyte_s: too high"})
                conn.sendall(json.dumps(answer).encode() + b"\n")
        finally:
            self.server.close()


class QmpMigrateTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.sock = os.path.join(self.tmp.name, "src.qmp")

    def tearDown(self):
        self.tmp.cleanup()

    def migrate(self, hook=None, fail=False, hook_wait=None, ctl=None, unfilled=0):
        if os.path.exists(self.sock):  # a second migration in one test
            os.unlink(self.sock)
        qemu = FakeQemu(self.sock, fail_before_switchover=fail, unfilled_queries=unfilled)
        qemu.start()
        cmd = [sys.executable, QMP_PY, self.sock, "migrate", "--uri", "tcp:192.0.2.1:49152",
               "--bandwidth", "4194304", "--timeout", "20", "--interval", "0.05"]
        if hook is not None:
            cmd += ["--switchover-hook", hook]
        if ctl is not None:
            cmd += ["--switchover-ctl", ctl, "--switchover-set", "rate_variation.enabled=false",
                    "--switchover-set", "rate_variation.start_rate_mbyte_s=11.875"]
        if hook_wait is not None:
            cmd += ["--switchover-hook-wait", str(hook_wait)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        qemu.join(5)
        out = json.loads(r.stdout) if r.stdout.strip() else None
        return r, out, qemu

    def test_hook_runs_in_the_pause_before_continue(self):
        mark = os.path.join(self.tmp.name, "hook-ran")
        r, out, qemu = self.migrate(hook="sleep 0.3; touch %s" % mark, hook_wait=2)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(out["status"], "completed")
        self.assertEqual(qemu.caps, {"events": True, "pause-before-switchover": True})
        self.assertTrue(os.path.exists(mark), "the hook did not run")
        self.assertEqual(out["switchover_hook"]["rc"], 0)
        self.assertGreaterEqual(out["switchover_hook"]["seconds"], 0.3)
        # migrate-continue only once the hook is done (it sleeps 0.3 s in the pause).
        self.assertIn("migrate-continue", qemu.commands())
        self.assertGreaterEqual(qemu.time_of("migrate-continue") - qemu.paused_at, 0.3)
        self.assertEqual(qemu.commands().count("migrate-continue"), 1)
        self.assertEqual(qemu.log[-1][1], "query-migrate")  # polled on to completed
        self.assertTrue(out["switchover_hook"]["done_before_continue"])

    def test_completed_waits_for_qemus_times(self):
        """QEMU reports completed a moment before its total-time and downtime: the output
        carries the filled-in ones."""
        r, out, qemu = self.migrate(unfilled=3)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(out["query_migrate"]["total-time"], 1234)
        self.assertEqual(out["query_migrate"]["downtime"], 42)
        self.assertEqual(qemu.unfilled, -1)  # the three unfilled answers, then one filled

    def test_slow_hook_does_not_hold_the_paused_guest(self):
        """QEMU goes on after --switchover-hook-wait; the hook's end is still recorded."""
        mark = os.path.join(self.tmp.name, "hook-ran")
        r, out, qemu = self.migrate(hook="sleep 0.6; touch %s" % mark, hook_wait=0.05)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(out["status"], "completed")
        self.assertLess(qemu.time_of("migrate-continue") - qemu.paused_at, 0.4)
        hook = out["switchover_hook"]
        self.assertFalse(hook["done_before_continue"])
        self.assertLess(hook["qemu_waited_s"], 0.4)
        self.assertEqual(hook["rc"], 0)  # waited for before the output
        self.assertGreaterEqual(hook["seconds"], 0.6)
        self.assertTrue(os.path.exists(mark))

    def test_failing_hook_still_continues(self):
        r, out, qemu = self.migrate(hook="echo gateway unreachable >&2; exit 3", hook_wait=2)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(out["status"], "completed")
        self.assertEqual(out["switchover_hook"]["rc"], 3)
        self.assertIn("gateway unreachable", out["switchover_hook"]["output"])
        self.assertIn("switchover hook failed (3)", r.stderr)
        self.assertIn("migrate-continue", qemu.commands())

    def test_hung_hook_is_killed(self):
        r, out, qemu = self.migrate(hook="sleep 30", hook_wait=0.05)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(out["status"], "completed")
        self.assertIsNone(out["switchover_hook"]["rc"])
        self.assertIn("timed out after 5 s", out["switchover_hook"]["output"])
        self.assertLess(out["switchover_hook"]["seconds"], 10)

    def migrate_with_ctl(self, hook_wait, **fake):
        """A migration whose pause tells a FakeCtl(**fake) over its socket."""
        path = os.path.join(self.tmp.name, "ctl.sock")
        ctl = FakeCtl(path, **fake)
        ctl.start()
        r, out, qemu = self.migrate(ctl=path, hook_wait=hook_wait)
        ctl.join(5)
        return r, out, qemu, ctl

    def test_ctl_set_in_the_pause(self):
        """--switchover-ctl: shroud ctl's set, typed values, sent while QEMU waits."""
        r, out, qemu, ctl = self.migrate_with_ctl(2, delay=0.1)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(out["status"], "completed")
        self.assertEqual(qemu.caps, {"events": True, "pause-before-switchover": True})
        self.assertEqual(ctl.request, {"cmd": "set", "values": {"rate_variation.enabled": False,
                                                                "rate_variation.start_rate_mbyte_s": 11.875}})
        self.assertGreaterEqual(ctl.received_at, qemu.paused_at)  # not before the guest stopped
        self.assertGreaterEqual(qemu.time_of("migrate-continue") - ctl.received_at, 0.1)  # after the answer
        hook = out["switchover_hook"]
        self.assertEqual(hook["rc"], 0)
        self.assertTrue(hook["done_before_continue"])
        self.assertIn('"applied"', hook["output"])

    def test_slow_ctl_does_not_hold_the_paused_guest(self):
        r, out, qemu, _ = self.migrate_with_ctl(0.05, delay=0.6)
        self.assertEqual(out["status"], "completed")
        self.assertLess(qemu.time_of("migrate-continue") - qemu.paused_at, 0.4)
        self.assertFalse(out["switchover_hook"]["done_before_continue"])
        self.assertEqual(out["switchover_hook"]["rc"], 0)  # its answer still read
        self.assertGreaterEqual(out["switchover_hook"]["seconds"], 0.6)

    def test_ctl_refusal_and_absence_are_reported(self):
        r, out, qemu, _ = self.migrate_with_ctl(2, ok=False)
        self.assertEqual(out["status"], "completed")
        self.assertEqual(out["switchover_hook"]["rc"], 1)
        self.assertIn("too high", out["switchover_hook"]["output"])
        self.assertIn("switchover ctl set failed (1)", r.stderr)
        r, out, qemu = self.migrate(ctl=os.path.join(self.tmp.name, "nobody.sock"), hook_wait=2)
        self.assertEqual(out["status"], "completed")
        self.assertIsNone(out["switchover_hook"]["rc"])
        self.assertIn("cannot reach", out["switchover_hook"]["output"])

    def test_no_pause_when_the_migration_fails_first(self):
        mark = os.path.join(self.tmp.name, "hook-ran")
        r, out, qemu = self.migrate(hook="touch %s" % mark, fail=True)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(out["status"], "failed")
        self.assertIsNone(out["switchover_hook"])
        self.assertFalse(os.path.exists(mark))
        self.assertNotIn("migrate-continue", qemu.commands())

    def test_without_hook_no_capabilities(self):
        r, out, qemu = self.migrate()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(out["status"], "completed")
        self.assertNotIn("migrate-set-capabilities", qemu.commands())
        self.assertNotIn("switchover_hook", out)


class QmpExecTimeoutTest(unittest.TestCase):
    """exec --timeout bounds the connect: before, it retried 20 s whatever --timeout said."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def exec_status(self, path):
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, QMP_PY, path, "exec", "query-status", "--timeout", "2"],
                           capture_output=True, text=True, timeout=60)
        return r, time.monotonic() - t0

    def check_gives_up(self, path):
        r, elapsed = self.exec_status(path)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("cannot connect to QMP socket", r.stderr)
        self.assertGreaterEqual(elapsed, 1.5)  # it did retry
        # Not a speed claim: the old code gave up after 20 s whatever --timeout
        # said; the margin is for a loaded CI machine starting Python.
        self.assertLess(elapsed, 12)

    def test_socket_whose_listener_is_gone(self):
        """A dead QEMU leaves its socket file; connecting is refused."""
        path = os.path.join(self.tmp.name, "dst.qmp")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(1)
        s.close()
        self.assertTrue(os.path.exists(path))
        self.check_gives_up(path)

    def test_missing_socket(self):
        self.check_gives_up(os.path.join(self.tmp.name, "nobody.qmp"))

    def test_listener_that_never_greets(self):
        """A hung QEMU: the connect succeeds (backlog), the greeting never comes."""
        path = os.path.join(self.tmp.name, "hung.qmp")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(8)
        try:
            self.check_gives_up(path)
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
