// Header-only helpers that build link-layer frames for tests: Ethernet (with
// 802.1Q / 802.1ad tags), Linux cooked v1/v2, BSD NULL loopback, PPP; IPv4
// (with options, fragments) and IPv6 (with extension headers); TCP, UDP, ICMP
// and ICMPv6. Lengths and checksums are filled in unless a test overrides a
// field on purpose to build a malformed frame.
//
// Example:
//   using namespace shroud::test_frames;
//   Frame f = Ethernet(kEtherTypeIpv4,
//                      Ipv4Packet({.src = Ipv4Addr("192.0.2.1"),
//                                  .dst = Ipv4Addr("198.51.100.2"),
//                                  .protocol = kIpProtoTcp},
//                                 TcpSegment(49152, 80, kTcpSyn)));
#ifndef SHROUD_TESTS_FRAME_BUILDER_H_
#define SHROUD_TESTS_FRAME_BUILDER_H_

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace shroud::test_frames {

using Frame = std::vector<uint8_t>;
using Ipv4Address = std::array<uint8_t, 4>;
using Ipv6Address = std::array<uint8_t, 16>;

inline constexpr uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr uint16_t kEtherTypeArp = 0x0806;
inline constexpr uint16_t kEtherTypeIpv6 = 0x86DD;
inline constexpr uint16_t kTpidDot1Q = 0x8100;
inline constexpr uint16_t kTpidDot1Ad = 0x88A8;

inline constexpr uint8_t kIpProtoIcmp = 1;
inline constexpr uint8_t kIpProtoTcp = 6;
inline constexpr uint8_t kIpProtoUdp = 17;
inline constexpr uint8_t kIpProtoIcmpV6 = 58;
inline constexpr uint8_t kIpv6HopByHop = 0;
inline constexpr uint8_t kIpv6Routing = 43;
inline constexpr uint8_t kIpv6Fragment = 44;
inline constexpr uint8_t kIpv6DestOptions = 60;
inline constexpr uint8_t kIpv6NoNext = 59;

inline constexpr uint8_t kTcpFin = 0x01;
inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpRst = 0x04;
inline constexpr uint8_t kTcpPsh = 0x08;
inline constexpr uint8_t kTcpAck = 0x10;

// IPv4 flags/fragment-offset field values.
inline constexpr uint16_t kIpv4DontFragment = 0x4000;
inline constexpr uint16_t kIpv4MoreFragments = 0x2000;

// PPP protocol numbers and BSD address families.
inline constexpr uint16_t kPppIpv4 = 0x0021;
inline constexpr uint16_t kPppIpv6 = 0x0057;
inline constexpr uint32_t kBsdAfInet = 2;
inline constexpr uint32_t kBsdAfInet6Linux = 10;

// ---------------------------------------------------------------- byte helpers

inline void AppendBe16(Frame& f, uint16_t v) {
  f.push_back(static_cast<uint8_t>(v >> 8));
  f.push_back(static_cast<uint8_t>(v));
}

inline void AppendBe32(Frame& f, uint32_t v) {
  AppendBe16(f, static_cast<uint16_t>(v >> 16));
  AppendBe16(f, static_cast<uint16_t>(v));
}

inline void AppendLe32(Frame& f, uint32_t v) {
  for (int i = 0; i < 4; ++i) f.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

inline void PutBe16(Frame& f, size_t offset, uint16_t v) {
  f.at(offset) = static_cast<uint8_t>(v >> 8);
  f.at(offset + 1) = static_cast<uint8_t>(v);
}

inline void Append(Frame& f, const Frame& tail) { f.insert(f.end(), tail.begin(), tail.end()); }

// `n` payload bytes with a recognisable pattern (0, 1, 2, ...).
inline Frame PayloadBytes(size_t n) {
  Frame p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(i);
  return p;
}

// Aborts on a malformed literal: a typo in a test must not silently give 0.0.0.0.
inline Ipv4Address Ipv4Addr(const std::string& text) {
  Ipv4Address a{};
  if (inet_pton(AF_INET, text.c_str(), a.data()) != 1) std::abort();
  return a;
}

inline Ipv6Address Ipv6Addr(const std::string& text) {
  Ipv6Address a{};
  if (inet_pton(AF_INET6, text.c_str(), a.data()) != 1) std::abort();
  return a;
}

// RFC 1071 one's-complement sum, not yet folded or inverted.
inline uint32_t ChecksumAdd(uint32_t sum, const uint8_t* data, size_t n) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(data[i] << 8 | data[i + 1]);
  if (n % 2 == 1) sum += static_cast<uint32_t>(data[n - 1] << 8);
  return sum;
}

inline uint16_t ChecksumFinish(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// ------------------------------------------------------------------ transport

// TCP header of `data_offset_words` 32-bit words (options zero-filled, i.e.
// end-of-option-list) followed by `payload_bytes` bytes. The checksum is left 0;
// Ipv4Packet/Ipv6Packet fill it in.
inline Frame TcpSegment(uint16_t src_port, uint16_t dst_port, uint8_t flags = kTcpAck,
                        size_t payload_bytes = 0, uint8_t data_offset_words = 5) {
  Frame f;
  AppendBe16(f, src_port);
  AppendBe16(f, dst_port);
  AppendBe32(f, 1000);  // sequence number
  AppendBe32(f, (flags & kTcpAck) ? 2000 : 0);
  f.push_back(static_cast<uint8_t>(data_offset_words << 4));
  f.push_back(flags);
  AppendBe16(f, 65535);  // window
  AppendBe16(f, 0);      // checksum
  AppendBe16(f, 0);      // urgent pointer
  size_t header = static_cast<size_t>(data_offset_words) * 4;
  if (header > f.size()) f.resize(header, 0);
  Append(f, PayloadBytes(payload_bytes));
  return f;
}

// UDP header with a correct length field, then the payload.
inline Frame UdpDatagram(uint16_t src_port, uint16_t dst_port, size_t payload_bytes = 0) {
  Frame f;
  AppendBe16(f, src_port);
  AppendBe16(f, dst_port);
  AppendBe16(f, static_cast<uint16_t>(8 + payload_bytes));
  AppendBe16(f, 0);  // checksum, filled in by the IP builders
  Append(f, PayloadBytes(payload_bytes));
  return f;
}

// ICMP (type 8/0) or ICMPv6 (type 128/129) echo. The ICMPv4 checksum is filled
// in here; ICMPv6's covers a pseudo-header and is filled in by Ipv6Packet.
inline Frame IcmpEcho(uint8_t type, uint16_t id, uint16_t sequence, size_t payload_bytes = 0,
                      uint8_t code = 0) {
  Frame f;
  f.push_back(type);
  f.push_back(code);
  AppendBe16(f, 0);
  AppendBe16(f, id);
  AppendBe16(f, sequence);
  Append(f, PayloadBytes(payload_bytes));
  if (type == 8 || type == 0) PutBe16(f, 2, ChecksumFinish(ChecksumAdd(0, f.data(), f.size())));
  return f;
}

// -------------------------------------------------------------------- network

struct Ipv4Header {
  Ipv4Address src = {192, 0, 2, 1};
  Ipv4Address dst = {198, 51, 100, 2};
  uint8_t protocol = kIpProtoTcp;
  uint8_t ttl = 64;
  uint16_t id = 0x1234;
  // Flags (kIpv4DontFragment, kIpv4MoreFragments) | offset in 8-byte units.
  uint16_t flags_fragment = 0;
  // Option bytes; zero-padded to a multiple of 4 (zero = end of option list).
  Frame options;
  // Overrides for malformed headers; by default computed from the contents.
  std::optional<uint8_t> ihl_words;
  std::optional<uint16_t> total_length;
  uint8_t version = 4;
  // Fill in the TCP/UDP checksum (skipped for fragments: it covers the whole
  // datagram).
  bool transport_checksum = true;
};

inline uint32_t PseudoHeaderSum(const uint8_t* src, const uint8_t* dst, size_t addr_len,
                                uint8_t protocol, uint32_t l4_length) {
  uint32_t sum = ChecksumAdd(0, src, addr_len);
  sum = ChecksumAdd(sum, dst, addr_len);
  sum += protocol;
  sum += l4_length >> 16;
  sum += l4_length & 0xFFFF;
  return sum;
}

// Fills the checksum field of a TCP/UDP/ICMPv6 message starting at `l4` in `f`.
inline void FillTransportChecksum(Frame& f, size_t l4, uint8_t protocol, uint32_t pseudo_sum) {
  size_t field;
  if (protocol == kIpProtoTcp) {
    field = 16;
  } else if (protocol == kIpProtoUdp) {
    field = 6;
  } else if (protocol == kIpProtoIcmpV6) {
    field = 2;
  } else {
    return;
  }
  if (l4 + field + 2 > f.size()) return;
  PutBe16(f, l4 + field, 0);
  uint16_t c = ChecksumFinish(ChecksumAdd(pseudo_sum, f.data() + l4, f.size() - l4));
  if (protocol == kIpProtoUdp && c == 0) c = 0xFFFF;
  PutBe16(f, l4 + field, c);
}

// IPv4 header (with a valid header checksum) followed by `payload`.
inline Frame Ipv4Packet(const Ipv4Header& h, const Frame& payload) {
  Frame options = h.options;
  while (options.size() % 4 != 0) options.push_back(0);
  const size_t header = 20 + options.size();
  Frame f;
  f.push_back(static_cast<uint8_t>(h.version << 4 | h.ihl_words.value_or(header / 4)));
  f.push_back(0);  // DSCP/ECN
  AppendBe16(f, h.total_length.value_or(static_cast<uint16_t>(header + payload.size())));
  AppendBe16(f, h.id);
  AppendBe16(f, h.flags_fragment);
  f.push_back(h.ttl);
  f.push_back(h.protocol);
  AppendBe16(f, 0);  // header checksum
  f.insert(f.end(), h.src.begin(), h.src.end());
  f.insert(f.end(), h.dst.begin(), h.dst.end());
  Append(f, options);
  PutBe16(f, 10, ChecksumFinish(ChecksumAdd(0, f.data(), f.size())));
  Append(f, payload);
  const bool fragment = (h.flags_fragment & (kIpv4MoreFragments | 0x1FFF)) != 0;
  if (h.transport_checksum && !fragment && h.protocol != kIpProtoIcmpV6) {
    FillTransportChecksum(f, header, h.protocol,
                          PseudoHeaderSum(h.src.data(), h.dst.data(), 4, h.protocol,
                                          static_cast<uint32_t>(payload.size())));
  }
  return f;
}

// One IPv6 extension header; Ipv6Packet fills in its next-header byte.
struct Ipv6Extension {
  uint8_t type = kIpv6HopByHop;
  // The header's bytes including the next-header byte at [0] (overwritten).
  Frame bytes;
};

// Hop-by-hop or destination options: (1 + len8) * 8 bytes of PadN.
inline Ipv6Extension Ipv6OptionsHeader(uint8_t type, uint8_t len8 = 0) {
  Ipv6Extension e{type, Frame((static_cast<size_t>(len8) + 1) * 8, 0)};
  e.bytes[1] = len8;
  e.bytes[2] = 1;  // PadN
  e.bytes[3] = static_cast<uint8_t>(e.bytes.size() - 4);
  return e;
}

// Type 0 routing header with `addresses` (segments left = 0, so it is inert).
inline Ipv6Extension Ipv6RoutingHeader(const std::vector<Ipv6Address>& addresses) {
  Ipv6Extension e{kIpv6Routing, Frame(8, 0)};
  e.bytes[1] = static_cast<uint8_t>(addresses.size() * 2);
  e.bytes[2] = 0;  // routing type
  e.bytes[3] = 0;  // segments left
  for (const auto& a : addresses) e.bytes.insert(e.bytes.end(), a.begin(), a.end());
  return e;
}

// Fragment header: `offset8` in 8-byte units.
inline Ipv6Extension Ipv6FragmentHeader(uint16_t offset8, bool more_fragments,
                                        uint32_t id = 0xCAFE) {
  Ipv6Extension e{kIpv6Fragment, {}};
  e.bytes.push_back(0);
  e.bytes.push_back(0);
  AppendBe16(e.bytes, static_cast<uint16_t>(offset8 << 3 | (more_fragments ? 1 : 0)));
  AppendBe32(e.bytes, id);
  return e;
}

struct Ipv6Header {
  Ipv6Address src = Ipv6Addr("2001:db8::1");
  Ipv6Address dst = Ipv6Addr("2001:db8::2");
  // The upper-layer protocol after the extension headers.
  uint8_t protocol = kIpProtoTcp;
  std::vector<Ipv6Extension> extensions;
  uint8_t hop_limit = 64;
  std::optional<uint16_t> payload_length;  // override; default computed
  uint8_t version = 6;
  bool transport_checksum = true;
};

inline Frame Ipv6Packet(const Ipv6Header& h, const Frame& payload) {
  Frame ext;
  bool fragment = false;
  for (size_t i = 0; i < h.extensions.size(); ++i) {
    Frame bytes = h.extensions[i].bytes;
    bytes.at(0) = i + 1 < h.extensions.size() ? h.extensions[i + 1].type : h.protocol;
    fragment = fragment || h.extensions[i].type == kIpv6Fragment;
    Append(ext, bytes);
  }
  Frame f;
  AppendBe32(f, static_cast<uint32_t>(h.version) << 28);  // version, class 0, label 0
  AppendBe16(f, h.payload_length.value_or(static_cast<uint16_t>(ext.size() + payload.size())));
  f.push_back(h.extensions.empty() ? h.protocol : h.extensions[0].type);
  f.push_back(h.hop_limit);
  f.insert(f.end(), h.src.begin(), h.src.end());
  f.insert(f.end(), h.dst.begin(), h.dst.end());
  Append(f, ext);
  const size_t l4 = f.size();
  Append(f, payload);
  if (h.transport_checksum && !fragment) {
    FillTransportChecksum(f, l4, h.protocol,
                          PseudoHeaderSum(h.src.data(), h.dst.data(), 16, h.protocol,
                                          static_cast<uint32_t>(payload.size())));
  }
  return f;
}

// ----------------------------------------------------------------- link layer

struct VlanTag {
  uint16_t tpid = kTpidDot1Q;
  uint16_t tci = 100;  // priority 0, VLAN id 100
};

inline constexpr std::array<uint8_t, 6> kDstMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
inline constexpr std::array<uint8_t, 6> kSrcMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};

// Ethernet II with `tags` outermost first (e.g. {{kTpidDot1Ad, 10}, {kTpidDot1Q, 20}}).
inline Frame Ethernet(uint16_t ethertype, const Frame& payload,
                      const std::vector<VlanTag>& tags = {}) {
  Frame f(kDstMac.begin(), kDstMac.end());
  f.insert(f.end(), kSrcMac.begin(), kSrcMac.end());
  for (const VlanTag& t : tags) {
    AppendBe16(f, t.tpid);
    AppendBe16(f, t.tci);
  }
  AppendBe16(f, ethertype);
  Append(f, payload);
  return f;
}

// Minimal ARP request (Ethernet/IPv4), for non-IP frames.
inline Frame ArpRequestBody() {
  Frame f;
  AppendBe16(f, 1);       // hardware: Ethernet
  AppendBe16(f, 0x0800);  // protocol: IPv4
  f.push_back(6);
  f.push_back(4);
  AppendBe16(f, 1);  // request
  f.insert(f.end(), kSrcMac.begin(), kSrcMac.end());
  Ipv4Address spa = Ipv4Addr("192.0.2.1");
  f.insert(f.end(), spa.begin(), spa.end());
  f.insert(f.end(), 6, 0);
  Ipv4Address tpa = Ipv4Addr("192.0.2.2");
  f.insert(f.end(), tpa.begin(), tpa.end());
  return f;
}

// LINKTYPE_LINUX_SLL (16-byte header, protocol at offset 14).
inline Frame LinuxSll(uint16_t protocol, const Frame& payload) {
  Frame f;
  AppendBe16(f, 0);  // packet type: to us
  AppendBe16(f, 1);  // ARPHRD_ETHER
  AppendBe16(f, 6);  // address length
  f.insert(f.end(), kSrcMac.begin(), kSrcMac.end());
  f.push_back(0);
  f.push_back(0);  // address padded to 8 bytes
  AppendBe16(f, protocol);
  Append(f, payload);
  return f;
}

// LINKTYPE_LINUX_SLL2 (20-byte header, protocol at offset 0).
inline Frame LinuxSll2(uint16_t protocol, const Frame& payload) {
  Frame f;
  AppendBe16(f, protocol);
  AppendBe16(f, 0);  // reserved
  AppendBe32(f, 2);  // interface index
  AppendBe16(f, 1);  // ARPHRD_ETHER
  f.push_back(0);    // packet type
  f.push_back(6);    // address length
  f.insert(f.end(), kSrcMac.begin(), kSrcMac.end());
  f.push_back(0);
  f.push_back(0);
  Append(f, payload);
  return f;
}

// LINKTYPE_NULL: 4-byte address family in the writer's byte order.
inline Frame NullLoopback(uint32_t family, const Frame& payload, bool little_endian = true) {
  Frame f;
  if (little_endian) {
    AppendLe32(f, family);
  } else {
    AppendBe32(f, family);
  }
  Append(f, payload);
  return f;
}

// LINKTYPE_PPP, with or without the HDLC address/control bytes 0xff 0x03.
inline Frame Ppp(uint16_t protocol, const Frame& payload, bool hdlc_framing) {
  Frame f;
  if (hdlc_framing) {
    f.push_back(0xFF);
    f.push_back(0x03);
  }
  AppendBe16(f, protocol);
  Append(f, payload);
  return f;
}

// -------------------------------------------------------- ready-made examples

// 192.0.2.1:49152 > 198.51.100.2:80 TCP with `payload_bytes` of data.
inline Frame TcpIpv4Packet(size_t payload_bytes = 0, uint8_t flags = kTcpAck | kTcpPsh) {
  return Ipv4Packet({}, TcpSegment(49152, 80, flags, payload_bytes));
}

// [2001:db8::1]:443 > [2001:db8::2]:5555 TCP.
inline Frame TcpIpv6Packet(size_t payload_bytes = 0, uint8_t flags = kTcpAck) {
  return Ipv6Packet({}, TcpSegment(443, 5555, flags, payload_bytes));
}

// Ethernet + IPv4 + UDP between dotted-quad addresses, `payload_bytes` of data.
inline Frame EthernetUdp4(const char* src, const char* dst, uint16_t src_port, uint16_t dst_port,
                          size_t payload_bytes) {
  return Ethernet(kEtherTypeIpv4, Ipv4Packet({.src = Ipv4Addr(src), .dst = Ipv4Addr(dst),
                                              .protocol = kIpProtoUdp},
                                             UdpDatagram(src_port, dst_port, payload_bytes)));
}

// Ethernet + IPv4 + TCP; the payload starts with `payload_prefix` (e.g. a
// protocol header a classifier looks for), the rest is PayloadBytes.
inline Frame EthernetTcp4(const char* src, const char* dst, uint16_t src_port, uint16_t dst_port,
                          size_t payload_bytes, uint8_t flags = kTcpAck | kTcpPsh,
                          const Frame& payload_prefix = {}) {
  Frame segment = TcpSegment(src_port, dst_port, flags, payload_bytes);
  std::copy(payload_prefix.begin(), payload_prefix.end(), segment.begin() + 20);
  return Ethernet(kEtherTypeIpv4, Ipv4Packet({.src = Ipv4Addr(src), .dst = Ipv4Addr(dst),
                                              .protocol = kIpProtoTcp},
                                             segment));
}

}  // namespace shroud::test_frames

#endif  // SHROUD_TESTS_FRAME_BUILDER_H_
