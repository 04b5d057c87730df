#!/usr/bin/env python3
"""User-space WAN emulator and ICMP ping for scripts/testbed (no sch_netem here).

  testbed_wan.py forward --a IF_A --b IF_B [--mirror IF_M] [options]
      Forward every Ethernet frame between IF_A and IF_B (AF_PACKET raw
      sockets, promiscuous), adding per direction a one-way delay, a uniform
      jitter of +-J ms (frames are never reordered: a frame never leaves before
      the one ahead of it, like a FIFO link), random loss, an optional link
      rate (serialisation at RATE Mbit/s before the delay) and a bounded queue
      (tail drop). With --mirror, a copy of every forwarded frame is written to
      IF_M (the adversary's tap). The tap sits on the WAN at side --tap-at:
      "a" (default) sees a->b frames as they enter the WAN and b->a frames as
      they leave it (after their delay), "b" the opposite, "mid" sees both
      directions halfway. Counters go to --stats (JSON, rewritten every second
      and at exit). Stops on SIGTERM/SIGINT or after --max-s seconds.

      --record-request FILE: while FILE holds a path, every forwarded frame is
      also written to that path as the tap sees it on the emulated link
      (nanosecond pcap, snaplen 96), stamped with the link model's time rather
      than when this process got round to it: a frame enters the WAN when its
      serialisation ends and leaves it at its due time, but no sooner after the
      frame ahead of it than its own serialisation time (forwarding may release
      frames that jitter bunched together at once, as it always did; a link
      cannot). That is what a tap with hardware timestamps on a real link
      records; a capture of the --mirror port instead shows this loop's
      per-frame cost (~10 us, and different for the two directions, since one
      is mirrored on receive and the other on send).
      The path is opened within 0.25 s and FILE.active then names it; remove
      FILE to close it (everything is written, in time order, then FILE.active
      goes). `scripts/testbed record start|stop` drives this.

  testbed_wan.py ping DST [-c N] [-i S] [-W S]
      ICMP echo with a raw socket (this system has no ping binary); prints one
      line per reply and a summary "rtt min/avg/max = a/b/c ms, R/N received".
      Exit 0 if any reply came back, 1 otherwise.

Needs root (CAP_NET_RAW). Only the interfaces named are touched.
"""
import argparse
import collections
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
PCAP_SNAPLEN = 96
# Ethernet's per-frame overhead on the wire: preamble + SFD (8), FCS (4), IFG (12).
WIRE_OVERHEAD = 24


def open_packet_socket(ifname, receive):
    """A raw AF_PACKET socket bound to ifname (receive=False: send-only)."""
    proto = ETH_P_ALL if receive else 0
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
        except OSError:
            pass
    s.bind((ifname, proto))  # Python converts the protocol to network order
    if receive:
        ifindex = socket.if_nametoindex(ifname)
        mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
        s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        try:  # our own transmissions are not input (filtered below otherwise)
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass
    s.setblocking(False)
    return s


class Direction:
    def __init__(self, name, rx, tx, delay_ms, jitter_ms, loss_pct, rate_mbit, queue_pkts, mirror_early):
        self.name = name
        self.rx, self.tx = rx, tx
        self.delay = delay_ms / 1000.0
        self.jitter = jitter_ms / 1000.0
        self.loss = loss_pct / 100.0
        self.byte_time = 8.0 / (rate_mbit * 1e6) if rate_mbit > 0 else 0.0
        self.queue_pkts = queue_pkts
        self.mirror_early = mirror_early  # None: at half the delay (mid)
        self.q = collections.deque()  # (due, frame, mirrored)
        self.last_due = 0.0
        self.last_exit = float("-inf")
        self.link_free = 0.0
        self.c = dict(rx_frames=0, rx_bytes=0, tx_frames=0, tx_bytes=0, lost=0,
                      queue_dropped=0, tx_errors=0, max_queue=0)

    def enqueue(self, frame, now):
        """Queue frame, arrived at monotonic time now; (link_time, exit_time) or None if lost or dropped.

        link_time is when its serialisation onto the link ends (now without a
        rate). It is forwarded at its due time (delay and jitter after
        link_time, never before the frame ahead of it); exit_time is when the
        tap sees it leave: its due time, but no sooner after the previous exit
        than its own serialisation time, which jitter cannot shrink on a link.
        Forwarding keeps the due time (session 8's A/B: enforcing the spacing
        on forwarding too slowed shaped migrations; see results/experiments).
        """
        c = self.c
        c["rx_frames"] += 1
        c["rx_bytes"] += len(frame)
        if self.loss > 0 and random.random() < self.loss:
            c["lost"] += 1
            return None
        if len(self.q) >= self.queue_pkts:
            c["queue_dropped"] += 1
            return None
        t = now
        wire = (len(frame) + WIRE_OVERHEAD) * self.byte_time
        if self.byte_time:
            start = max(now, self.link_free)
            self.link_free = start + wire
            t = self.link_free
        due = t + self.delay
        if self.jitter > 0:
            due += random.uniform(-self.jitter, self.jitter)
        due = max(due, t, self.last_due)  # FIFO: never overtake
        self.last_due = due
        self.last_exit = max(due, self.last_exit + wire)
        self.q.append([due, frame, False])
        if len(self.q) > c["max_queue"]:
            c["max_queue"] = len(self.q)
        return t, self.last_exit

    def tap_time(self, link_time, exit_time):
        """When the tap sees a frame: entering the WAN, leaving it, or halfway."""
        if self.mirror_early is None:
            return (link_time + exit_time) / 2
        return link_time if self.mirror_early else exit_time


class PcapRecorder:
    """The tap's view of the link as a nanosecond pcap, in time order.

    Frames are pushed with monotonic model times that may run ahead of the
    clock (a frame still being serialised) or behind it (read late), so they
    are held in a heap and written once older than now - horizon.
    """

    def __init__(self, path, wall_offset, horizon=2.0):
        self.path = path
        # Wall clock - monotonic clock, as integer ns: a float epoch time only
        # resolves ~0.24 us, coarser than the gaps this capture is for.
        self.offset_ns = int(round(wall_offset * 1e9))
        self.horizon = horizon
        self.heap = []
        self.seq = 0
        self.written = 0
        self.last_written = float("-inf")
        self.late = 0  # pushed behind what was already written: out of order in the file
        self.f = open(path, "wb")
        self.f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, PCAP_SNAPLEN, 1))

    def push(self, t, frame):
        if t < self.last_written:
            self.late += 1
        heapq.heappush(self.heap, (t, self.seq, frame[:PCAP_SNAPLEN], len(frame)))
        self.seq += 1

    def flush(self, now, final=False):
        heap, f = self.heap, self.f
        limit = float("inf") if final else now - self.horizon
        while heap and heap[0][0] < limit:
            t, _, data, orig = heapq.heappop(heap)
            self.last_written = t
            ns = int(round(t * 1e9)) + self.offset_ns
            f.write(struct.pack("<IIII", ns // 1000000000, ns % 1000000000, len(data), orig))
            f.write(data)
            self.written += 1

    def close(self):
        self.flush(0.0, final=True)
        self.f.close()


def read_request(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def forward(args):
    a_rx = open_packet_socket(args.a, True)
    b_rx = open_packet_socket(args.b, True)
    mirror = open_packet_socket(args.mirror, False) if args.mirror else None
    early = {"a": (True, False), "b": (False, True), "mid": (None, None)}[args.tap_at]
    ab = Direction("a_to_b", a_rx, b_rx, args.delay_ms, args.jitter_ms, args.loss_pct,
                   args.rate_mbit, args.queue_pkts, early[0])
    ba = Direction("b_to_a", b_rx, a_rx,
                   args.delay_ms if args.delay_ms_ba is None else args.delay_ms_ba,
                   args.jitter_ms if args.jitter_ms_ba is None else args.jitter_ms_ba,
                   args.loss_pct if args.loss_pct_ba is None else args.loss_pct_ba,
                   args.rate_mbit, args.queue_pkts, early[1])
    dirs = (ab, ba)
    by_sock = {a_rx.fileno(): ab, b_rx.fileno(): ba}
    if args.seed:
        random.seed(args.seed)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    t0 = time.monotonic()
    deadline = t0 + args.max_s if args.max_s > 0 else float("inf")
    next_stats = t0
    mirror_c = {"sent": 0, "errors": 0}
    rec = {"recorder": None, "next_check": t0, "done": []}

    def stop_recording():
        r = rec["recorder"]
        r.close()
        rec["done"].append({"path": r.path, "frames": r.written, "late": r.late})
        rec["recorder"] = None
        remove_quietly(args.record_request + ".active")

    def check_record_request():
        want = read_request(args.record_request)
        r = rec["recorder"]
        if r is not None and r.path == want:
            return
        if r is not None:
            stop_recording()
        if want:
            try:
                rec["recorder"] = PcapRecorder(want, time.time() - time.monotonic())
                write_atomic(args.record_request + ".active", want + "\n")
            except OSError as e:
                print("testbed_wan: cannot record to %s: %s" % (want, e), file=sys.stderr)
                write_atomic(args.record_request + ".error", "%s: %s\n" % (want, e))

    def write_stats(final=False):
        if not args.stats:
            return
        doc = {"uptime_s": round(time.monotonic() - t0, 3), "final": final,
               "settings": {"delay_ms": args.delay_ms, "jitter_ms": args.jitter_ms,
                            "loss_pct": args.loss_pct, "rate_mbit": args.rate_mbit,
                            "queue_pkts": args.queue_pkts, "tap_at": args.tap_at,
                            "mirror": args.mirror or ""},
               "mirror": mirror_c,
               "recording": rec["recorder"].path if rec["recorder"] else "",
               "recorded": rec["done"][-20:]}
        for d in dirs:
            doc[d.name] = dict(d.c, queued=len(d.q))
        write_atomic(args.stats, json.dumps(doc))

    def do_mirror(frame):
        try:
            mirror.send(frame)
            mirror_c["sent"] += 1
        except OSError:
            mirror_c["errors"] += 1

    rx_fds = [a_rx, b_rx]
    while not stop:
        now = time.monotonic()
        if now >= deadline:
            break
        # Transmit what is due (and mirror "mid" frames at half their delay).
        wake = now + 0.2
        for d in dirs:
            q = d.q
            while q and q[0][0] <= now:
                due, frame, mirrored = q.popleft()
                if mirror is not None and not mirrored:
                    do_mirror(frame)
                try:
                    d.tx.send(frame)
                    d.c["tx_frames"] += 1
                    d.c["tx_bytes"] += len(frame)
                except OSError:
                    d.c["tx_errors"] += 1
            if mirror is not None and d.mirror_early is None:
                half = d.delay / 2
                for item in q:
                    if item[2]:
                        continue
                    if item[0] - half <= now:
                        do_mirror(item[1])
                        item[2] = True
                    else:
                        wake = min(wake, item[0] - half)
                        break
            if q:
                wake = min(wake, q[0][0])
        if args.record_request and now >= rec["next_check"]:
            check_record_request()
            rec["next_check"] = now + 0.25
            wake = min(wake, rec["next_check"])
        if rec["recorder"] is not None:
            rec["recorder"].flush(now)
        if now >= next_stats:
            write_stats()
            next_stats = now + 1.0
            wake = min(wake, next_stats)
        timeout = max(0.0, min(wake, deadline) - time.monotonic())
        try:
            ready, _, _ = select.select(rx_fds, [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        recorder = rec["recorder"]
        for s in ready:
            d = by_sock[s.fileno()]
            for _ in range(256):
                try:
                    frame, addr = s.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                times = d.enqueue(frame, now)
                if times is None:
                    continue
                if recorder is not None:
                    recorder.push(d.tap_time(*times), frame)
                if mirror is not None and d.mirror_early:
                    d.q[-1][2] = True
                    do_mirror(frame)
    if rec["recorder"] is not None:
        stop_recording()
    write_stats(final=True)
    return 0


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    rtts = []
    dst = socket.gethostbyname(args.dst)
    for seq in range(1, args.count + 1):
        payload = struct.pack("!d", time.time()) + b"shroud-testbed-ping" * 2
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = struct.pack("!BBHHH", 8, 0, checksum(hdr + payload), ident, seq) + payload
        sent = time.monotonic()
        s.sendto(pkt, (dst, 0))
        got = None
        while True:
            left = sent + args.W - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([s], [], [], left)
            if not r:
                break
            data, src = s.recvfrom(65535)
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if typ == 0 and rid == ident and rseq == seq and src[0] == dst:
                got = (time.monotonic() - sent) * 1000.0
                break
        if got is None:
            print("seq=%d timeout" % seq)
        else:
            rtts.append(got)
            print("seq=%d rtt=%.2f ms" % (seq, got))
        sys.stdout.flush()
        if seq < args.count:
            time.sleep(max(0.0, args.i - (time.monotonic() - sent)))
    if rtts:
        print("rtt min/avg/max = %.2f/%.2f/%.2f ms, %d/%d received"
              % (min(rtts), sum(rtts) / len(rtts), max(rtts), len(rtts), args.count))
    else:
        print("rtt min/avg/max = -/-/- ms, 0/%d received" % args.count)
    return 0 if rtts else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("forward")
    f.add_argument("--a", required=True)
    f.add_argument("--b", required=True)
    f.add_argument("--mirror", default="")
    f.add_argument("--tap-at", choices=("a", "b", "mid"), default="a")
    f.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, each direction")
    f.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +-J ms")
    f.add_argument("--loss-pct", type=float, default=0.0)
    f.add_argument("--delay-ms-ba", type=float, default=None, help="b->a delay if different")
    f.add_argument("--jitter-ms-ba", type=float, default=None)
    f.add_argument("--loss-pct-ba", type=float, default=None)
    f.add_argument("--rate-mbit", type=float, default=0.0, help="link rate per direction; 0: unlimited")
    f.add_argument("--queue-pkts", type=int, default=10000, help="queue bound per direction (tail drop)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--stats", default="")
    f.add_argument("--max-s", type=float, default=1800.0)
    f.add_argument("--record-request", default="",
                   help="file naming a pcap to record the tap's view of the link to (see above)")
    g = sub.add_parser("ping")
    g.add_argument("dst")
    g.add_argument("-c", dest="count", type=int, default=5)
    g.add_argument("-i", type=float, default=0.2)
    g.add_argument("-W", type=float, default=2.0)
    args = p.parse_args()
    return forward(args) if args.cmd == "forward" else ping(args)


if __name__ == "__main__":
    sys.exit(main())
