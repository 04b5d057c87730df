#!/usr/bin/env python3
"""Merge classic pcap files by timestamp into one (what a tap on a link sees).

usage: pcap-merge.py OUT IN...

All inputs must share one link type; the output keeps nanosecond precision
(inputs in microseconds are converted). Records with equal timestamps keep the
order of the inputs on the command line. Exit 2 on bad input.
"""
import heapq
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        sys.exit(f"pcap-merge: {path}: not a pcap file ({len(data)} bytes)")
    for e in "<>":
        magic = struct.unpack_from(e + "I", data)[0]
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            break
    else:
        sys.exit(f"pcap-merge: {path}: not a classic pcap file (pcapng? convert with editcap -F pcap)")
    scale = 1 if magic == 0xA1B23C4D else 1000
    linktype = struct.unpack_from(e + "I", data, 20)[0]
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, caplen, wire = struct.unpack_from(e + "IIII", data, off)
        off += 16
        if off + caplen > len(data):
            sys.exit(f"pcap-merge: {path}: truncated record at byte {off - 16}")
        out.append((sec * 1_000_000_000 + frac * scale, wire, data[off:off + caplen]))
        off += caplen
    return linktype, out


def main(argv):
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) > 1 and argv[1] in ("-h", "--help") else 2
    inputs = [read(p) for p in argv[2:]]
    linktypes = {lt for lt, _ in inputs}
    if len(linktypes) != 1:
        sys.exit(f"pcap-merge: inputs have different link types {sorted(linktypes)}")
    streams = [[(t, i, n, w, fr) for n, (t, w, fr) in enumerate(recs)] for i, (_, recs) in enumerate(inputs)]
    with open(argv[1], "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktypes.pop()))
        for t, _, _, w, fr in heapq.merge(*streams):
            f.write(struct.pack("<IIII", t // 1_000_000_000, t % 1_000_000_000, len(fr), w))
            f.write(fr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
