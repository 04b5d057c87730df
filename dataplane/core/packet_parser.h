// Bounds-checked packet parsing: link layer -> IPv4/IPv6 -> TCP/UDP/ICMP.
//
// No DPDK types: the dataplane passes mbuf data pointers, the offline tools pass
// pcap records. Every read is checked against the captured length; a malformed
// frame yields a ParseStatus saying what is wrong, never an out-of-bounds read.
#ifndef SHROUD_DATAPLANE_CORE_PACKET_PARSER_H_
#define SHROUD_DATAPLANE_CORE_PACKET_PARSER_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "shroud/flow_key.h"

namespace shroud {

// Link-layer framings, numbered as libpcap's LINKTYPE_* values so pcap files
// map onto them directly.
enum class LinkType : uint32_t {
  kNull = 0,          // BSD loopback: 4-byte host-order address family
  kEthernet = 1,
  kPpp = 9,           // PPP, optionally with HDLC address/control (0xff 0x03)
  kRaw = 101,         // raw IPv4 or IPv6, version from the first nibble
  kLoop = 108,        // OpenBSD loopback: 4-byte network-order family
  kLinuxSll = 113,
  kIpv4 = 228,
  kIpv6 = 229,
  kLinuxSll2 = 276,
};

// True when the parser understands this pcap LINKTYPE value.
bool IsSupportedLinkType(uint32_t linktype);
std::string_view LinkTypeName(uint32_t linktype);

enum class ParseStatus : uint8_t {
  kOk = 0,
  // Not errors: frames that are well-formed but carry no IP flow.
  kNotIp,                 // ARP, LLDP, ... (EtherType or PPP protocol other than IP)
  // Malformed or cut-short frames.
  kTruncatedLinkHeader,
  kTooManyVlanTags,       // more than kMaxVlanTags 802.1Q/802.1ad tags
  kTruncatedIpHeader,
  kBadIpVersion,          // version nibble disagrees with the link layer's protocol
  kBadIpHeaderLength,     // IPv4 IHL < 5
  kBadIpTotalLength,      // IP length field smaller than its header or larger than the frame
  kBadIpv6ExtensionHeader,  // extension-header chain runs past the packet or is too long
  kTruncatedL4Header,     // TCP/UDP/ICMP header not fully captured
  kBadTcpHeaderLength,    // TCP data offset < 5 or past the IP payload
  kCount,
};

std::string_view ParseStatusName(ParseStatus status);
inline bool IsMalformed(ParseStatus s) { return s != ParseStatus::kOk && s != ParseStatus::kNotIp; }

inline constexpr int kMaxVlanTags = 2;        // QinQ
inline constexpr int kMaxIpv6ExtHeaders = 8;  // bound on the extension-header walk

struct ParsedPacket {
  FlowKey key;
  uint32_t wire_length = 0;    // frame length on the wire
  uint16_t l3_offset = 0;      // start of the IP header in the captured bytes
  uint16_t l4_offset = 0;      // start of the transport header (0: none, e.g. later fragment)
  // Start of the transport payload. With a snaplen-cut capture it may lie past
  // the captured bytes (and TCP options may be missing): check against the
  // captured length before reading payload.
  uint16_t payload_offset = 0;
  uint32_t payload_length = 0; // transport payload length according to the IP header
  uint8_t vlan_tags = 0;
  uint8_t tcp_flags = 0;
  bool is_fragment = false;        // any IPv4/IPv6 fragment
  bool is_later_fragment = false;  // fragment offset != 0: no transport header, ports are 0
};

// Parses one frame. `captured` bytes are available at `data`; `wire_length` is
// the frame's length on the wire (larger than `captured` when a capture was cut
// at a snaplen; equal in the dataplane). The fixed part of every header up to
// and including the ports must be captured; TCP options, the tail of the last
// IPv6 extension header and the payload may be cut off by a snaplen, so
// l4_offset/payload_offset can point past `captured` (never when captured ==
// wire_length, as in the dataplane). On a status other than kOk, `out` holds whatever was
// parsed before the problem.
ParseStatus ParsePacket(const uint8_t* data, size_t captured, uint32_t wire_length,
                        LinkType link, ParsedPacket* out);

// A frame a capture cut at its snaplen and then replayed without its pcap
// record header (net_pcap hands over only the captured bytes, so the frame's
// wire length is lost): the wire length its IP header implies, i.e. the link
// header plus the IP total length (IPv6: 40 + payload length). 0 when the
// header implies no more than `captured` bytes, or is not there. Meant for
// after ParsePacket(data, captured, captured, ...) said kBadIpTotalLength;
// reparse with the result. Exact for cut frames: a frame longer than any
// snaplen carries no Ethernet padding.
uint32_t ImpliedWireLength(const uint8_t* data, size_t captured, const ParsedPacket& partial);

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_CORE_PACKET_PARSER_H_
