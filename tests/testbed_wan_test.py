#!/usr/bin/env python3
"""Unit tests of the testbed's WAN emulator model (scripts/lib/testbed_wan.py):
serialisation and FIFO timing, where the tap sees a frame, and the link-time
pcap recorder. No sockets, no root."""
import importlib.util
import os
import random
import struct
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("testbed_wan", os.path.join(ROOT, "scripts/lib/testbed_wan.py"))
wan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wan)

FULL = bytes(1514)
WIRE_100M = (1514 + 24) * 8 / 100e6  # 123.04 us


def direction(rate_mbit=100.0, delay_ms=10.0, jitter_ms=0.0, mirror_early=True, queue=10000):
    return wan.Direction("a_to_b", None, None, delay_ms, jitter_ms, 0.0, rate_mbit, queue, mirror_early)


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack("<IHHiIII", data[:24])
    records, off = [], 24
    while off < len(data):
        sec, nsec, incl, orig = struct.unpack("<IIII", data[off:off + 16])
        records.append((sec * 1_000_000_000 + nsec, incl, orig, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return (magic, major, minor, snaplen, linktype), records


class DirectionTest(unittest.TestCase):
    def test_back_to_back_frames_are_serialised_at_the_link_rate(self):
        d = direction()
        times = [d.enqueue(FULL, 1.0) for _ in range(3)]
        self.assertAlmostEqual(times[0][0], 1.0 + WIRE_100M, places=12)
        self.assertAlmostEqual(times[1][0] - times[0][0], WIRE_100M, places=12)
        self.assertAlmostEqual(times[2][0] - times[1][0], WIRE_100M, places=12)
        for link, due in times:
            self.assertAlmostEqual(due - link, 0.010, places=12)

    def test_an_idle_link_starts_at_arrival(self):
        d = direction()
        d.enqueue(FULL, 1.0)
        link, _ = d.enqueue(FULL, 2.0)
        self.assertAlmostEqual(link, 2.0 + WIRE_100M, places=12)

    def test_no_rate_means_no_serialisation(self):
        d = direction(rate_mbit=0.0, delay_ms=5.0)
        self.assertEqual(d.enqueue(FULL, 3.0), (3.0, 3.005))

    def test_the_tap_never_sees_frames_leave_closer_than_their_wire_time(self):
        random.seed(7)
        d = direction(jitter_ms=1.0)
        exits, dues = [], []
        for i in range(2000):
            exits.append(d.enqueue(FULL, 1.0 + i * 20e-6)[1])
            dues.append(d.q[-1][0])
        gaps = [b - a for a, b in zip(exits, exits[1:])]
        self.assertGreaterEqual(min(gaps), WIRE_100M - 1e-12)
        # Forwarding keeps FIFO due times, which jitter may bunch together.
        self.assertEqual(sorted(dues), dues)
        self.assertLess(min(b - a for a, b in zip(dues, dues[1:])), WIRE_100M / 2)
        self.assertTrue(all(e >= q for e, q in zip(exits, dues)))

    def test_queue_bound_drops_and_reports_none(self):
        d = direction(queue=2)
        self.assertIsNotNone(d.enqueue(FULL, 0.0))
        self.assertIsNotNone(d.enqueue(FULL, 0.0))
        self.assertIsNone(d.enqueue(FULL, 0.0))
        self.assertEqual(d.c["queue_dropped"], 1)

    def test_tap_time_entry_exit_and_mid(self):
        self.assertEqual(direction(mirror_early=True).tap_time(1.0, 1.5), 1.0)
        self.assertEqual(direction(mirror_early=False).tap_time(1.0, 1.5), 1.5)
        self.assertEqual(direction(mirror_early=None).tap_time(1.0, 1.5), 1.25)


class PcapRecorderTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "wan.pcap")

    def tearDown(self):
        self.dir.cleanup()

    def test_writes_a_nanosecond_pcap_in_time_order_truncated_to_the_snaplen(self):
        r = wan.PcapRecorder(self.path, wall_offset=1_700_000_000.0, horizon=2.0)
        r.push(5.000200, b"\x01" * 1514)  # a->b, stamped ahead (being serialised)
        r.push(5.000100, b"\x02" * 66)    # b->a, pushed later with an earlier time
        r.push(5.000150, b"\x03" * 100)
        r.close()
        header, recs = read_pcap(self.path)
        self.assertEqual(header, (0xA1B23C4D, 2, 4, wan.PCAP_SNAPLEN, 1))
        self.assertEqual([rec[3][0] for rec in recs], [2, 3, 1])
        self.assertEqual([(rec[1], rec[2]) for rec in recs], [(66, 66), (96, 100), (96, 1514)])
        self.assertEqual(recs[0][0], 1_700_000_005_000_100_000)
        self.assertEqual(recs[2][0] - recs[0][0], 100_000)
        self.assertEqual(r.written, 3)

    def test_flush_writes_only_what_is_older_than_the_horizon(self):
        r = wan.PcapRecorder(self.path, wall_offset=0.0, horizon=2.0)
        for t in (1.0, 2.5, 3.5):
            r.push(t, b"\x00" * 60)
        r.flush(now=4.0)
        self.assertEqual(r.written, 1)  # only t=1.0 < 4.0 - 2.0
        r.flush(now=4.6)
        self.assertEqual(r.written, 2)
        r.close()
        _, recs = read_pcap(self.path)
        self.assertEqual([rec[0] for rec in recs], [1_000_000_000, 2_500_000_000, 3_500_000_000])

    def test_counts_frames_pushed_behind_what_was_written(self):
        r = wan.PcapRecorder(self.path, wall_offset=0.0, horizon=1.0)
        r.push(1.0, b"\x00" * 60)
        r.flush(now=3.0)
        r.push(2.0, b"\x00" * 60)
        self.assertEqual(r.late, 0)
        r.push(0.5, b"\x00" * 60)  # later than the horizon allowed for
        self.assertEqual(r.late, 1)
        r.close()

    def test_equal_times_keep_arrival_order(self):
        r = wan.PcapRecorder(self.path, wall_offset=0.0)
        for i in range(5):
            r.push(1.0, bytes([i]) * 60)
        r.close()
        _, recs = read_pcap(self.path)
        self.assertEqual([rec[3][0] for rec in recs], list(range(5)))


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False, verbosity=2).result.wasSuccessful() else 1)
