#!/usr/bin/env python3
"""A user-space ICMP echo responder that delays its answers (IPv4).

This kernel has no sch_netem, so RTT jitter and queue build-ups for the RTT
migration monitor's tests (tests/rttmon_netns_test.sh, scripts/evaluate-
rttmon.sh) are made here: the target namespace turns its kernel's echo replies
off (sysctl net.ipv4.icmp_echo_ignore_all=1) and this program answers every
echo request on a raw socket after a delay:

  --mode=jitter  delay uniform in [delay - jitter, delay + jitter] (seeded)
  --mode=ramp    a queue build-up: base delay, then after --ramp-start-s a
                 linear rise to --ramp-peak-ms over --ramp-up-s, held for
                 --ramp-hold-s, a linear fall over --ramp-down-s, base again.
                 The delay changes slower than time (slope < 1), so answers
                 leave in the order the requests came, as from a FIFO queue,
                 and none is dropped.

Bounded: it exits after --duration-s seconds or --max-replies answers,
whichever comes first, and then prints one JSON line with its counters.

The delay counts from the kernel's receive timestamp (SO_TIMESTAMPNS), not
from when Python got round to reading the request, and every answer that
left more than --late-ms after it was due is listed under "late" (wall-clock
time and how late): a responder descheduled for 40 ms on a loaded machine IS
a 40 ms RTT peak to the prober, and the tests must be able to tell such a
peak from the detector's own mistakes.
Run it inside the target namespace (ip netns exec NS python3 ...); it needs
CAP_NET_RAW there.
"""
import argparse
import heapq
import json
import os
import random
import select
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; struct timespec


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ramp_delay_ms(args, t: float) -> float:
    base, peak = args.ramp_base_ms, args.ramp_peak_ms
    t -= args.ramp_start_s
    if t < 0:
        return base
    if t < args.ramp_up_s:
        return base + (peak - base) * t / args.ramp_up_s
    t -= args.ramp_up_s
    if t < args.ramp_hold_s:
        return peak
    t -= args.ramp_hold_s
    if t < args.ramp_down_s:
        return peak - (peak - base) * t / args.ramp_down_s
    return base


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["jitter", "ramp"], required=True)
    p.add_argument("--delay-ms", type=float, default=20.0)
    p.add_argument("--jitter-ms", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ramp-base-ms", type=float, default=20.0)
    p.add_argument("--ramp-peak-ms", type=float, default=150.0)
    p.add_argument("--ramp-start-s", type=float, default=5.0)
    p.add_argument("--ramp-up-s", type=float, default=2.0)
    p.add_argument("--ramp-hold-s", type=float, default=1.0)
    p.add_argument("--ramp-down-s", type=float, default=2.0)
    p.add_argument("--duration-s", type=float, required=True)
    p.add_argument("--max-replies", type=int, default=200000)
    p.add_argument("--ready-file", help="created once the socket is open")
    p.add_argument("--late-ms", type=float, default=5.0,
                   help="list answers sent more than this late (default 5)")
    args = p.parse_args()
    if not 0 < args.duration_s <= 3600:
        p.error("--duration-s must be in (0, 3600]")
    if args.mode == "ramp":
        for name in ("ramp_up_s", "ramp_down_s"):
            if getattr(args, name) <= 0:
                p.error(f"--{name.replace('_', '-')} must be > 0")
        slope = (args.ramp_peak_ms - args.ramp_base_ms) / 1000.0 / min(args.ramp_up_s, args.ramp_down_s)
        if abs(slope) >= 1:
            p.error("the ramp must change the delay slower than time (FIFO order)")

    rng = random.Random(args.seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(str(os.getpid()))

    start = time.monotonic()
    started_unix = time.time()
    end = start + args.duration_s
    pending = []  # (due, order, packet, address)
    order = 0
    requests = replies = 0
    delays = []
    late = []  # {"unix", "late_ms"}, bounded
    late_count = 0
    late_max_ms = 0.0
    while True:
        now = time.monotonic()
        if now >= end or replies >= args.max_replies:
            break
        while pending and pending[0][0] <= now:
            due, _, pkt, addr = heapq.heappop(pending)
            late_ms = (now - due) * 1000.0
            late_max_ms = max(late_max_ms, late_ms)
            if late_ms > args.late_ms:
                late_count += 1
                if len(late) < 10000:
                    late.append({"unix": round(time.time(), 6), "late_ms": round(late_ms, 3)})
            try:
                sock.sendto(pkt, (addr, 0))
                replies += 1
            except OSError:
                pass
        timeout = end - now
        if pending:
            timeout = min(timeout, max(0.0, pending[0][0] - now))
        r, _, _ = select.select([sock], [], [], timeout)
        if not r:
            continue
        while True:
            try:
                data, ancillary, _, (addr, _) = sock.recvmsg(65535, socket.CMSG_SPACE(16))
            except BlockingIOError:
                break
            arrival = time.monotonic()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("qq", value[:16])
                    # The kernel stamped it in wall-clock time; how long ago
                    # that was is what matters.
                    arrival -= max(0.0, time.time() - (sec + nsec / 1e9))
            ihl = (data[0] & 0x0F) * 4
            icmp = data[ihl:]
            if len(icmp) < 8 or icmp[0] != 8 or icmp[1] != 0:
                continue  # only echo requests
            requests += 1
            if args.mode == "jitter":
                delay = args.delay_ms + rng.uniform(-args.jitter_ms, args.jitter_ms)
            else:
                delay = ramp_delay_ms(args, arrival - start)
            delay = max(0.0, delay)
            delays.append(delay)
            reply = bytearray(icmp)
            reply[0] = 0  # echo reply, same identifier, sequence and payload
            reply[2:4] = b"\0\0"
            reply[2:4] = struct.pack("!H", checksum(bytes(reply)))
            heapq.heappush(pending, (arrival + delay / 1000.0, order, bytes(reply), addr))
            order += 1
    delays.sort()
    out = {"requests": requests, "replies": replies, "unanswered": len(pending),
           "started_unix": started_unix, "late_max_ms": round(late_max_ms, 3),
           "late_count": late_count, "late": late}
    if delays:
        out["delay_ms"] = {"min": delays[0], "median": delays[len(delays) // 2], "max": delays[-1]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
