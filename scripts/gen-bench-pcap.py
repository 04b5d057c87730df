#!/usr/bin/env python3
"""Writes a pcap of small IPv4 TCP/UDP frames over many flows, for
scripts/bench-dataplane.sh and scripts/bench-tap.sh (net_pcap
rx_pcap=FILE,infinite_rx=1).

One frame per flow, flows interleaved, so a device that replays the file in a
loop sends every flow once per pass. Addresses are TEST-NET (RFC 5737):
clients 198.51.100.0/24, servers 203.0.113.0/24. Default flows alternate
TCP (ACK+PSH with a few payload bytes) and UDP. --migration-percent of the
flows (spread evenly through the file) are TCP to 49152-49215, libvirt's migration
ports, which conf/gateway.example.toml classifies as migration; no default
flow uses those ports or 16514. Every frame carries a payload that matches no
built-in signature, so the gateway settles default flows after
signature_scan_packets passes.

--reverse writes the other direction of the same flows (addresses and ports
swapped), for the device on the outside port.

Frame sizes exclude the FCS, as DPDK reports them: 60 bytes here is a 64-byte
frame on the wire.

Only the Python standard library is used.
"""
import argparse
import struct
import sys

ETH_HDR = 14
IPV4_HDR = 20
TCP_HDR = 20
UDP_HDR = 8
MIGRATION_PORT_FIRST = 49152
MIGRATION_PORTS = 64  # 49152-49215
DEFAULT_DST_PORTS = (443, 80, 8080, 8443, 5201, 3478, 1194, 51820)
# 2^20: make_flows' 5-tuples are distinct up to here (checked as they are made).
MAX_FLOWS = 1 << 20


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def l4_checksum(src: bytes, dst: bytes, proto: int, segment: bytes) -> int:
    pseudo = src + dst + struct.pack("!BBH", 0, proto, len(segment))
    c = checksum(pseudo + segment)
    return c if c != 0 or proto != 17 else 0xFFFF


def frame(flow: dict, size: int, reverse: bool) -> bytes:
    src_ip, dst_ip = flow["client"], flow["server"]
    sport, dport = flow["cport"], flow["sport"]
    mac_a, mac_b = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
    if reverse:
        src_ip, dst_ip, sport, dport = dst_ip, src_ip, dport, sport
        mac_a, mac_b = mac_b, mac_a
    proto = flow["proto"]
    l4_hdr = TCP_HDR if proto == 6 else UDP_HDR
    payload_len = size - ETH_HDR - IPV4_HDR - l4_hdr
    # Not "QEVM" nor the multifd magic: matches no built-in signature.
    unit = b"shroud-bench-%06d-" % flow["index"]
    payload = (unit * (payload_len // len(unit) + 1))[:payload_len]
    if proto == 6:
        seg = struct.pack("!HHIIBBHHH", sport, dport, 1000 + flow["index"], 1,
                          (TCP_HDR // 4) << 4, 0x18, 65535, 0, 0) + payload
        csum = l4_checksum(src_ip, dst_ip, 6, seg)
        seg = seg[:16] + struct.pack("!H", csum) + seg[18:]
    else:
        seg = struct.pack("!HHHH", sport, dport, UDP_HDR + payload_len, 0) + payload
        csum = l4_checksum(src_ip, dst_ip, 17, seg)
        seg = seg[:6] + struct.pack("!H", csum) + seg[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, IPV4_HDR + len(seg), flow["index"] & 0xFFFF,
                     0x4000, 64, proto, 0, src_ip, dst_ip)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    out = mac_b + mac_a + struct.pack("!H", 0x0800) + ip + seg
    assert len(out) == size, (len(out), size)
    return out


def make_flows(count: int, migration_percent: float) -> list:
    flows, seen = [], set()
    for i in range(count):
        # Bresenham: migration flows spread evenly, exactly round(count * p / 100).
        migration = int((i + 1) * migration_percent / 100) > int(i * migration_percent / 100)
        client = bytes([198, 51, 100, 1 + i % 250])
        server = bytes([203, 0, 113, 1 + (i // 250) % 250])
        cport = 1024 + (i // 62500) * 7 + i % 30011  # < 32768: not a migration port
        if migration:
            proto, sport = 6, MIGRATION_PORT_FIRST + i % MIGRATION_PORTS
        else:
            proto = 6 if i % 2 == 0 else 17
            sport = DEFAULT_DST_PORTS[(i // 2) % len(DEFAULT_DST_PORTS)]
        key = (client, server, proto, cport, sport)
        if key in seen:
            sys.exit(f"gen-bench-pcap: flow {i} repeats an earlier 5-tuple; use fewer flows")
        seen.add(key)
        flows.append(dict(index=i, client=client, server=server, cport=cport, sport=sport,
                          proto=proto, migration=migration))
    return flows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("output", help="pcap file to write")
    ap.add_argument("--flows", type=int, default=1024,
                    help=f"flows (= frames), default 1024, at most {MAX_FLOWS}")
    ap.add_argument("--migration-percent", type=float, default=0.0,
                    help="percent of flows to TCP 49152-49215 (default 0)")
    ap.add_argument("--frame-size", type=int, default=60,
                    help="bytes per frame without FCS, 55-1514 (default 60 = 64 on the wire)")
    ap.add_argument("--reverse", action="store_true",
                    help="write the return direction (server to client) of the same flows")
    args = ap.parse_args()
    if not 1 <= args.flows <= MAX_FLOWS:
        ap.error(f"--flows must be in [1, {MAX_FLOWS}]")
    if not 0 <= args.migration_percent <= 100:
        ap.error("--migration-percent must be in [0, 100]")
    if not ETH_HDR + IPV4_HDR + TCP_HDR + 1 <= args.frame_size <= 1514:
        ap.error(f"--frame-size must be in [{ETH_HDR + IPV4_HDR + TCP_HDR + 1}, 1514]")

    flows = make_flows(args.flows, args.migration_percent)
    with open(args.output, "wb") as f:
        # pcap, microsecond timestamps, LINKTYPE_ETHERNET.
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for n, flow in enumerate(flows):
            data = frame(flow, args.frame_size, args.reverse)
            f.write(struct.pack("<IIII", 1_700_000_000, n % 1_000_000, len(data), len(data)))
            f.write(data)
    migration = sum(fl["migration"] for fl in flows)
    print(f"{args.output}: {len(flows)} frames of {args.frame_size} B, {len(flows)} flows "
          f"({migration} migration-class TCP 49152-49215, {len(flows) - migration} default)"
          f"{', return direction' if args.reverse else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
