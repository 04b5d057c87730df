#!/usr/bin/env python3
"""Induced outages for the RTT migration monitor's tests and figures: takes a
link down for N ms and up again, over rtnetlink directly (no `ip` process in
between, whose start-up would blur the outage's edges), and prints when.

  link_flap.py --ifname DEV --outages-ms 300,1000 [--lead-s 3] [--gap-s 5]

waits --lead-s, then for each N: link down, N ms, link up, --gap-s. One JSON
line per outage:
  {"n": 0, "planned_ms": 300, "down_unix": ..., "up_unix": ...,
   "duration_ms": ..., "uncertainty_ms": ...}
down_unix/up_unix are CLOCK_REALTIME seconds at the middle of the netlink
request that changed the link (from sending it to the kernel's ack; the
change happens in between); duration_ms is up - down and uncertainty_ms half
of the two requests' lengths together: the truth is within it.

Run it inside the namespace that holds DEV (ip netns exec NS python3 ...);
needs CAP_NET_ADMIN there. Bounded: at most 1000 outages of at most 60 s.
"""
import argparse
import json
import socket
import struct
import sys
import time

RTM_NEWLINK = 16
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
IFF_UP = 0x1


class Rtnl:
    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def set_up(self, ifindex: int, up: bool):
        """Returns (t_before, t_after) in CLOCK_REALTIME seconds around the request."""
        self.seq += 1
        ifi = struct.pack("=BBHiII", socket.AF_UNSPEC, 0, 0, ifindex, IFF_UP if up else 0, IFF_UP)
        msg = struct.pack("=IHHII", 16 + len(ifi), RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, self.seq, 0) + ifi
        t0 = time.time()
        self.sock.send(msg)
        while True:
            resp = self.sock.recv(65536)
            t1 = time.time()
            length, mtype, _, seq, _ = struct.unpack("=IHHII", resp[:16])
            if mtype == NLMSG_ERROR and seq == self.seq:
                (err,) = struct.unpack("=i", resp[16:20])
                if err != 0:
                    raise OSError(-err, "RTM_NEWLINK failed")
                return t0, t1


def sleep_until(deadline: float):
    """time.monotonic deadline; sleeps, then spins the last millisecond."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if left > 0.002:
            time.sleep(left - 0.001)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ifname", required=True)
    p.add_argument("--outages-ms", required=True, help="comma-separated durations")
    p.add_argument("--lead-s", type=float, default=3.0)
    p.add_argument("--gap-s", type=float, default=5.0)
    args = p.parse_args()
    outages = [float(x) for x in args.outages_ms.split(",") if x]
    if not outages or len(outages) > 1000 or any(not 0 < n <= 60000 for n in outages):
        p.error("--outages-ms: 1 to 1000 durations in (0, 60000] ms")
    if not 0 <= args.lead_s <= 600 or not 0 <= args.gap_s <= 600:
        p.error("--lead-s and --gap-s must be in [0, 600]")
    ifindex = socket.if_nametoindex(args.ifname)
    rtnl = Rtnl()
    next_at = time.monotonic() + args.lead_s
    for i, n in enumerate(outages):
        sleep_until(next_at)
        try:
            d0, d1 = rtnl.set_up(ifindex, False)
            sleep_until(time.monotonic() + n / 1000.0)
        finally:
            # Never leave the link down, whatever happened.
            u0, u1 = rtnl.set_up(ifindex, True)
        down, up = (d0 + d1) / 2, (u0 + u1) / 2
        print(json.dumps({"n": i, "planned_ms": n, "down_unix": down, "up_unix": up,
                          "duration_ms": (up - down) * 1000.0,
                          "uncertainty_ms": ((d1 - d0) + (u1 - u0)) / 2 * 1000.0}), flush=True)
        next_at = time.monotonic() + args.gap_s
    return 0


if __name__ == "__main__":
    sys.exit(main())
