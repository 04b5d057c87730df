#!/usr/bin/env python3
"""Prepare a capture for replay through shroud-dataplane's net_pcap ports.

Usage:
  pcap-prepare.py --inside ADDRS [--inside-mac MACS] \\
                  --inside-out IN.pcap --outside-out OUT.pcap CAPTURE

The gateway has two ports: port 0 (inside, towards the migration hosts) and
port 1 (outside, towards the WAN). To replay one capture of both directions
through it, the capture has to be split into what arrives at each port, and
net_pcap hands the dataplane only the bytes a record holds, so records cut by a
snaplen must be filled back to their length on the wire (otherwise the shaper
sees 68-byte packets and shapes nothing like the real load). This script:

  * pads every record to its wire length with zero bytes (caplen = len);
  * writes records whose IPv4/IPv6 source address is in --inside to the
    --inside-out file (they enter the gateway's inside port), all others to
    --outside-out (they enter the outside port).

Which side a frame came from:
  IPv4 / IPv6 (also behind 802.1Q/802.1ad tags)  its source address
  ARP                                             its sender protocol address
  any other frame (LLDP, STP, ...)                inside if its source MAC is
                                                  in --inside-mac, else outside
  a frame too short to tell                       outside

Only classic pcap with Ethernet link type is accepted (the gateway's ports
carry Ethernet frames), either byte order, microsecond or nanosecond
timestamps. The outputs are little-endian pcaps with the input's timestamp
precision and unchanged timestamps, so `--replay_speed=1` replays the original
timing. pcapng is refused: convert it first with
`editcap -F pcap IN.pcapng OUT.pcap` (or `tcpdump -r IN.pcapng -w OUT.pcap`).

Both outputs are always written, possibly with no records (net_pcap accepts a
header-only pcap but not an empty file). A summary goes to stderr.

Example: replay a capture through the gateway at its own pace
  scripts/pcap-prepare.py --inside 198.51.100.1 capture.pcap \\
      --inside-out in.pcap --outside-out out.pcap
  shroud-dataplane --no-huge -m 512 --no-shconf --no-pci -l 0-1 \\
      --vdev=net_pcap0,rx_pcap=in.pcap,tx_pcap=back.pcap \\
      --vdev=net_pcap1,rx_pcap=out.pcap,tx_pcap=shaped.pcap \\
      -- --config=conf/gateway.example.toml --replay_speed=1 --exit_when_idle_ms=1500
  # what an observer of the WAN link sees: both directions, by time
  mergecap -F pcap -w wan.pcap shaped.pcap back.pcap && shroud analyze wan.pcap

Exit status: 0 on success, 1 when an output cannot be written, 2 on bad usage
or bad input (not a pcap, pcapng, unsupported link type, truncated or corrupt
record); errors are one line on stderr naming the file and the problem.
"""

import argparse
import ipaddress
import os
import struct
import sys

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
PCAPNG_MAGIC = 0x0A0D0D0A
LINKTYPE_ETHERNET = 1
# Larger than any frame a real capture holds (jumbo frames, TSO super-frames
# seen by tcpdump on the host); a larger length means a corrupt record.
MAX_RECORD = 262144

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806
ETH_VLAN = (0x8100, 0x88A8, 0x9100)
MAX_VLAN_TAGS = 2


class InputError(Exception):
    """Bad input: reported as one line, exit status 2."""


def parse_networks(text):
    nets = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"'{item}' is not an IPv4/IPv6 address or CIDR prefix")
    if not nets:
        raise argparse.ArgumentTypeError("no address given")
    return nets


def parse_macs(text):
    macs = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.replace("-", ":").split(":")
        try:
            if len(parts) != 6 or any(len(p) not in (1, 2) for p in parts):
                raise ValueError
            macs.add(bytes(int(p, 16) for p in parts))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"'{item}' is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return macs


def source_side(frame, inside_v4, inside_v6, inside_macs):
    """True when the frame came from the inside."""
    if len(frame) < 14:
        return False
    ethertype = struct.unpack_from(">H", frame, 12)[0]
    off = 14
    tags = 0
    while ethertype in ETH_VLAN and tags < MAX_VLAN_TAGS and len(frame) >= off + 4:
        ethertype = struct.unpack_from(">H", frame, off + 2)[0]
        off += 4
        tags += 1
    addr = None
    if ethertype == ETH_IPV4 and len(frame) >= off + 16 and frame[off] >> 4 == 4:
        addr = ipaddress.IPv4Address(frame[off + 12:off + 16])
    elif ethertype == ETH_IPV6 and len(frame) >= off + 24 and frame[off] >> 4 == 6:
        addr = ipaddress.IPv6Address(frame[off + 8:off + 24])
    elif ethertype == ETH_ARP and len(frame) >= off + 8:
        # htype(2) ptype(2) hlen(1) plen(1) op(2) sha(hlen) spa(plen)
        ptype, hlen, plen = struct.unpack_from(">HBB", frame, off + 2)
        spa = off + 8 + hlen
        if ptype == ETH_IPV4 and plen == 4 and len(frame) >= spa + 4:
            addr = ipaddress.IPv4Address(frame[spa:spa + 4])
    if addr is not None:
        nets = inside_v4 if addr.version == 4 else inside_v6
        return any(addr in n for n in nets)
    return frame[6:12] in inside_macs


def read_header(f, path):
    head = f.read(24)
    if len(head) >= 4 and struct.unpack("<I", head[:4])[0] == PCAPNG_MAGIC:
        raise InputError(f"{path}: is pcapng, only classic pcap is supported; convert it with "
                         f"'editcap -F pcap IN.pcapng OUT.pcap'")
    if len(head) < 24:
        raise InputError(f"{path}: not a pcap file (shorter than the 24-byte pcap header)")
    for endian in ("<", ">"):
        magic = struct.unpack(endian + "I", head[:4])[0]
        if magic in (MAGIC_US, MAGIC_NS):
            major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack(
                endian + "HHiIII", head[4:])
            if major != 2:
                raise InputError(f"{path}: pcap version {major}.{minor} is not supported")
            linktype &= 0x0FFFFFFF  # upper bits: FCS length, reserved
            if linktype != LINKTYPE_ETHERNET:
                raise InputError(f"{path}: link type {linktype} is not Ethernet (1); the "
                                 f"gateway's ports carry Ethernet frames")
            return endian, magic, snaplen
    raise InputError(f"{path}: not a pcap file (magic {head[:4].hex()})")


def prepare(args):
    inside_v4 = [n for n in args.inside if n.version == 4]
    inside_v6 = [n for n in args.inside if n.version == 6]
    try:
        src = open(args.capture, "rb")
    except OSError as e:
        raise InputError(f"{args.capture}: cannot open: {e.strerror}")
    stats = {True: [0, 0], False: [0, 0]}  # side -> [records, bytes]
    padded = 0
    with src:
        endian, magic, _snaplen = read_header(src, args.capture)
        rec = struct.Struct(endian + "IIII")
        out_rec = struct.Struct("<IIII")
        # The output header is written once the records are known (snaplen =
        # the largest frame), so records go to temporary files first.
        tmp = {True: args.inside_out + ".tmp", False: args.outside_out + ".tmp"}
        outs = {}
        try:
            for side, path in tmp.items():
                try:
                    outs[side] = open(path, "wb")
                except OSError as e:
                    raise OSError(f"{path[:-4]}: cannot write: {e.strerror}")
            largest = 0
            n = 0
            while True:
                h = src.read(16)
                if not h:
                    break
                n += 1
                if len(h) < 16:
                    raise InputError(f"{args.capture}: record {n}: truncated record header "
                                     f"({len(h)} of 16 bytes)")
                ts_sec, ts_frac, caplen, wirelen = rec.unpack(h)
                if caplen > MAX_RECORD or wirelen > MAX_RECORD:
                    raise InputError(f"{args.capture}: record {n}: length {max(caplen, wirelen)} "
                                     f"is larger than {MAX_RECORD} bytes (corrupt capture?)")
                if caplen > wirelen:
                    raise InputError(f"{args.capture}: record {n}: captured length {caplen} "
                                     f"exceeds its wire length {wirelen} (corrupt capture?)")
                data = src.read(caplen)
                if len(data) < caplen:
                    raise InputError(f"{args.capture}: record {n}: truncated ({len(data)} of "
                                     f"{caplen} bytes)")
                side = source_side(data, inside_v4, inside_v6, args.inside_mac)
                if wirelen > caplen:
                    data += bytes(wirelen - caplen)
                    padded += 1
                largest = max(largest, wirelen)
                out = outs[side]
                out.write(out_rec.pack(ts_sec, ts_frac, wirelen, wirelen))
                out.write(data)
                stats[side][0] += 1
                stats[side][1] += wirelen
            for o in outs.values():
                o.close()
            header = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, max(65535, largest),
                                 LINKTYPE_ETHERNET)
            for side, final in ((True, args.inside_out), (False, args.outside_out)):
                try:
                    with open(final, "wb") as o, open(tmp[side], "rb") as t:
                        o.write(header)
                        while True:
                            chunk = t.read(1 << 20)
                            if not chunk:
                                break
                            o.write(chunk)
                except OSError as e:
                    raise OSError(f"{final}: cannot write: {e.strerror}")
        finally:
            for o in outs.values():
                o.close()
            for path in tmp.values():
                try:
                    os.unlink(path)
                except OSError:
                    pass
    if not args.quiet:
        print(f"{args.capture}: {n} records, {padded} padded to their wire length; "
              f"inside {stats[True][0]} records {stats[True][1]} bytes -> {args.inside_out}; "
              f"outside {stats[False][0]} records {stats[False][1]} bytes -> {args.outside_out}",
              file=sys.stderr)


def main(argv):
    # The module docstring minus its "Usage:" paragraph (argparse prints its own).
    paragraphs = __doc__.strip().split("\n\n")
    parser = argparse.ArgumentParser(
        prog="pcap-prepare.py",
        description="\n\n".join(p for p in paragraphs if not p.startswith("Usage:")),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", metavar="CAPTURE", help="classic pcap, Ethernet link type")
    parser.add_argument("--inside", required=True, type=parse_networks, metavar="ADDRS",
                        help="comma-separated IPv4/IPv6 addresses or CIDR prefixes of the "
                             "inside hosts (the migration hosts behind the gateway)")
    parser.add_argument("--inside-mac", "--inside_mac", type=parse_macs, default=set(),
                        metavar="MACS",
                        help="comma-separated source MAC addresses whose non-IP, non-ARP "
                             "frames come from the inside (default: such frames go outside)")
    parser.add_argument("--inside-out", "--inside_out", required=True, metavar="FILE",
                        help="write frames from the inside here (the gateway's port 0 rx_pcap)")
    parser.add_argument("--outside-out", "--outside_out", required=True, metavar="FILE",
                        help="write frames from the outside here (the gateway's port 1 rx_pcap)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    args = parser.parse_args(argv)
    if os.path.abspath(args.inside_out) == os.path.abspath(args.outside_out):
        parser.error("--inside-out and --outside-out must be different files")
    for out in (args.inside_out, args.outside_out):
        if os.path.abspath(out) == os.path.abspath(args.capture):
            parser.error(f"{out}: would overwrite the input capture")
    try:
        prepare(args)
    except InputError as e:
        print(f"pcap-prepare.py: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"pcap-prepare.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
