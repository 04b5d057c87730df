#include "dataplane/core/packet_parser.h"

#include <cstring>

namespace shroud {
namespace {

constexpr uint16_t kEtherTypeIpv4 = 0x0800;
constexpr uint16_t kEtherTypeIpv6 = 0x86DD;
constexpr uint16_t kEtherTypeVlan = 0x8100;
constexpr uint16_t kEtherTypeQinQ = 0x88A8;
constexpr uint16_t kEtherTypeQinQOld = 0x9100;

// Reads are done through this view so that every access is checked.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t size() const { return size_; }
  bool Has(size_t offset, size_t n) const { return offset <= size_ && n <= size_ - offset; }
  uint8_t U8(size_t off) const { return data_[off]; }
  uint16_t Be16(size_t off) const {
    return static_cast<uint16_t>(data_[off] << 8 | data_[off + 1]);
  }
  uint32_t Be32(size_t off) const {
    return static_cast<uint32_t>(data_[off]) << 24 | static_cast<uint32_t>(data_[off + 1]) << 16 |
           static_cast<uint32_t>(data_[off + 2]) << 8 | data_[off + 3];
  }
  uint32_t Le32(size_t off) const {
    return static_cast<uint32_t>(data_[off + 3]) << 24 |
           static_cast<uint32_t>(data_[off + 2]) << 16 |
           static_cast<uint32_t>(data_[off + 1]) << 8 | data_[off];
  }
  void Copy(size_t off, size_t n, uint8_t* dst) const { std::memcpy(dst, data_ + off, n); }

 private:
  const uint8_t* data_;
  size_t size_;
};

enum class L3 { kNone, kIpv4, kIpv6, kFromVersion };

struct L3Start {
  ParseStatus status = ParseStatus::kOk;
  L3 kind = L3::kNone;
  size_t offset = 0;
};

L3Start EthernetL3(const Bytes& b, size_t off, ParsedPacket* out) {
  if (!b.Has(off, 14)) return {ParseStatus::kTruncatedLinkHeader};
  off += 12;
  uint16_t type = b.Be16(off);
  off += 2;
  while (type == kEtherTypeVlan || type == kEtherTypeQinQ || type == kEtherTypeQinQOld) {
    if (out->vlan_tags == kMaxVlanTags) return {ParseStatus::kTooManyVlanTags};
    if (!b.Has(off, 4)) return {ParseStatus::kTruncatedLinkHeader};
    type = b.Be16(off + 2);
    off += 4;
    ++out->vlan_tags;
  }
  if (type == kEtherTypeIpv4) return {ParseStatus::kOk, L3::kIpv4, off};
  if (type == kEtherTypeIpv6) return {ParseStatus::kOk, L3::kIpv6, off};
  return {ParseStatus::kNotIp};
}

L3Start LinkToL3(const Bytes& b, LinkType link, ParsedPacket* out) {
  switch (link) {
    case LinkType::kEthernet:
      return EthernetL3(b, 0, out);
    case LinkType::kRaw:
      return {ParseStatus::kOk, L3::kFromVersion, 0};
    case LinkType::kIpv4:
      return {ParseStatus::kOk, L3::kIpv4, 0};
    case LinkType::kIpv6:
      return {ParseStatus::kOk, L3::kIpv6, 0};
    case LinkType::kNull:
    case LinkType::kLoop: {
      if (!b.Has(0, 4)) return {ParseStatus::kTruncatedLinkHeader};
      // The family is in the writer's byte order for NULL; accept either.
      uint32_t family = link == LinkType::kLoop ? b.Be32(0) : b.Le32(0);
      if (family > 0xFFFF) family = b.Be32(0);
      if (family == 2) return {ParseStatus::kOk, L3::kIpv4, 4};
      if (family == 10 || family == 24 || family == 28 || family == 30) {
        return {ParseStatus::kOk, L3::kIpv6, 4};
      }
      return {ParseStatus::kNotIp};
    }
    case LinkType::kPpp: {
      size_t off = 0;
      if (b.Has(0, 2) && b.U8(0) == 0xFF && b.U8(1) == 0x03) off = 2;
      if (!b.Has(off, 2)) return {ParseStatus::kTruncatedLinkHeader};
      uint16_t proto = b.Be16(off);
      if (proto == 0x0021) return {ParseStatus::kOk, L3::kIpv4, off + 2};
      if (proto == 0x0057) return {ParseStatus::kOk, L3::kIpv6, off + 2};
      return {ParseStatus::kNotIp};
    }
    case LinkType::kLinuxSll: {
      if (!b.Has(0, 16)) return {ParseStatus::kTruncatedLinkHeader};
      uint16_t proto = b.Be16(14);
      if (proto == kEtherTypeIpv4) return {ParseStatus::kOk, L3::kIpv4, 16};
      if (proto == kEtherTypeIpv6) return {ParseStatus::kOk, L3::kIpv6, 16};
      return {ParseStatus::kNotIp};
    }
    case LinkType::kLinuxSll2: {
      if (!b.Has(0, 20)) return {ParseStatus::kTruncatedLinkHeader};
      uint16_t proto = b.Be16(0);
      if (proto == kEtherTypeIpv4) return {ParseStatus::kOk, L3::kIpv4, 20};
      if (proto == kEtherTypeIpv6) return {ParseStatus::kOk, L3::kIpv6, 20};
      return {ParseStatus::kNotIp};
    }
  }
  return {ParseStatus::kNotIp};
}

bool IsIpv6ExtensionHeader(uint8_t next) {
  switch (next) {
    case 0:    // hop-by-hop
    case 43:   // routing
    case 44:   // fragment
    case 51:   // AH
    case 60:   // destination options
    case 135:  // mobility
    case 139:  // HIP
    case 140:  // shim6
      return true;
    default:
      return false;
  }
}

// Transport header: fills ports/flags and payload bounds. `ip_end` is where the
// IP packet ends according to its length field (may be past the captured bytes).
ParseStatus ParseL4(const Bytes& b, size_t off, size_t ip_end, ParsedPacket* out) {
  out->l4_offset = static_cast<uint16_t>(off);
  FlowKey& k = out->key;
  size_t header = 0;
  switch (k.protocol) {
    case kProtoTcp: {
      if (!b.Has(off, 20)) return ParseStatus::kTruncatedL4Header;
      k.src_port = b.Be16(off);
      k.dst_port = b.Be16(off + 2);
      header = static_cast<size_t>(b.U8(off + 12) >> 4) * 4;
      out->tcp_flags = b.U8(off + 13);
      if (header < 20 || off + header > ip_end) return ParseStatus::kBadTcpHeaderLength;
      // Options cut off by a capture's snaplen are fine: the key and the
      // lengths are known, only the option bytes are missing.
      break;
    }
    case kProtoUdp: {
      if (!b.Has(off, 8)) return ParseStatus::kTruncatedL4Header;
      k.src_port = b.Be16(off);
      k.dst_port = b.Be16(off + 2);
      header = 8;
      break;
    }
    case kProtoIcmp:
    case kProtoIcmpV6: {
      if (!b.Has(off, 8)) return ParseStatus::kTruncatedL4Header;
      k.src_port = b.Be16(off);      // type << 8 | code
      k.dst_port = b.Be16(off + 4);  // echo identifier (0 for other types' first word)
      header = 8;
      break;
    }
    default:
      // Other protocols: a flow per address pair and protocol.
      header = 0;
      break;
  }
  if (off + header > ip_end) return ParseStatus::kTruncatedL4Header;
  out->payload_offset = static_cast<uint16_t>(off + header);
  out->payload_length = static_cast<uint32_t>(ip_end - off - header);
  return ParseStatus::kOk;
}

ParseStatus ParseIpv4(const Bytes& b, size_t off, size_t frame_end, ParsedPacket* out) {
  if (!b.Has(off, 20)) return ParseStatus::kTruncatedIpHeader;
  uint8_t vihl = b.U8(off);
  if ((vihl >> 4) != 4) return ParseStatus::kBadIpVersion;
  size_t ihl = static_cast<size_t>(vihl & 0x0F) * 4;
  if (ihl < 20) return ParseStatus::kBadIpHeaderLength;
  if (!b.Has(off, ihl)) return ParseStatus::kTruncatedIpHeader;  // options cut short
  size_t total = b.Be16(off + 2);
  if (total < ihl || off + total > frame_end) return ParseStatus::kBadIpTotalLength;
  uint16_t frag = b.Be16(off + 6);
  FlowKey& k = out->key;
  k.ip_version = 4;
  k.protocol = b.U8(off + 9);
  b.Copy(off + 12, 4, k.src_addr.data());
  b.Copy(off + 16, 4, k.dst_addr.data());
  out->is_fragment = (frag & 0x2000) != 0 || (frag & 0x1FFF) != 0;
  out->is_later_fragment = (frag & 0x1FFF) != 0;
  if (out->is_later_fragment) {
    out->payload_offset = static_cast<uint16_t>(off + ihl);
    out->payload_length = static_cast<uint32_t>(total - ihl);
    return ParseStatus::kOk;
  }
  return ParseL4(b, off + ihl, off + total, out);
}

ParseStatus ParseIpv6(const Bytes& b, size_t off, size_t frame_end, ParsedPacket* out) {
  if (!b.Has(off, 40)) return ParseStatus::kTruncatedIpHeader;
  if ((b.U8(off) >> 4) != 6) return ParseStatus::kBadIpVersion;
  // A zero payload length means a jumbogram (hop-by-hop option); we treat the
  // rest of the frame as the payload rather than parse the option.
  size_t payload = b.Be16(off + 4);
  size_t ip_end = payload == 0 ? frame_end : off + 40 + payload;
  if (ip_end > frame_end) return ParseStatus::kBadIpTotalLength;
  FlowKey& k = out->key;
  k.ip_version = 6;
  b.Copy(off + 8, 16, k.src_addr.data());
  b.Copy(off + 24, 16, k.dst_addr.data());
  uint8_t next = b.U8(off + 6);
  size_t cur = off + 40;
  for (int i = 0; IsIpv6ExtensionHeader(next); ++i) {
    if (i == kMaxIpv6ExtHeaders) return ParseStatus::kBadIpv6ExtensionHeader;
    if (!b.Has(cur, 8) || cur + 8 > ip_end) return ParseStatus::kBadIpv6ExtensionHeader;
    uint8_t following = b.U8(cur);
    size_t len;
    if (next == 44) {  // fragment header: fixed 8 bytes
      uint16_t frag = b.Be16(cur + 2);
      out->is_fragment = true;
      out->is_later_fragment = (frag & 0xFFF8) != 0;
      len = 8;
    } else if (next == 51) {  // AH: length in 4-byte units, minus 2
      len = (static_cast<size_t>(b.U8(cur + 1)) + 2) * 4;
    } else {
      len = (static_cast<size_t>(b.U8(cur + 1)) + 1) * 8;
    }
    if (cur + len > ip_end) return ParseStatus::kBadIpv6ExtensionHeader;
    cur += len;
    next = following;
    // A later fragment's data follows its fragment header: it is not headers.
    if (out->is_later_fragment) break;
  }
  k.protocol = next;
  if (out->is_later_fragment) {
    out->payload_offset = static_cast<uint16_t>(cur);
    out->payload_length = static_cast<uint32_t>(ip_end - cur);
    return ParseStatus::kOk;
  }
  return ParseL4(b, cur, ip_end, out);
}

}  // namespace

bool IsSupportedLinkType(uint32_t linktype) {
  switch (static_cast<LinkType>(linktype)) {
    case LinkType::kNull:
    case LinkType::kEthernet:
    case LinkType::kPpp:
    case LinkType::kRaw:
    case LinkType::kLoop:
    case LinkType::kLinuxSll:
    case LinkType::kIpv4:
    case LinkType::kIpv6:
    case LinkType::kLinuxSll2:
      return true;
  }
  return false;
}

std::string_view LinkTypeName(uint32_t linktype) {
  switch (static_cast<LinkType>(linktype)) {
    case LinkType::kNull: return "NULL";
    case LinkType::kEthernet: return "ETHERNET";
    case LinkType::kPpp: return "PPP";
    case LinkType::kRaw: return "RAW";
    case LinkType::kLoop: return "LOOP";
    case LinkType::kLinuxSll: return "LINUX_SLL";
    case LinkType::kIpv4: return "IPV4";
    case LinkType::kIpv6: return "IPV6";
    case LinkType::kLinuxSll2: return "LINUX_SLL2";
  }
  return "unsupported";
}

std::string_view ParseStatusName(ParseStatus status) {
  switch (status) {
    case ParseStatus::kOk: return "ok";
    case ParseStatus::kNotIp: return "not_ip";
    case ParseStatus::kTruncatedLinkHeader: return "truncated_link_header";
    case ParseStatus::kTooManyVlanTags: return "too_many_vlan_tags";
    case ParseStatus::kTruncatedIpHeader: return "truncated_ip_header";
    case ParseStatus::kBadIpVersion: return "bad_ip_version";
    case ParseStatus::kBadIpHeaderLength: return "bad_ip_header_length";
    case ParseStatus::kBadIpTotalLength: return "bad_ip_total_length";
    case ParseStatus::kBadIpv6ExtensionHeader: return "bad_ipv6_extension_header";
    case ParseStatus::kTruncatedL4Header: return "truncated_l4_header";
    case ParseStatus::kBadTcpHeaderLength: return "bad_tcp_header_length";
    case ParseStatus::kCount: break;
  }
  return "unknown";
}

ParseStatus ParsePacket(const uint8_t* data, size_t captured, uint32_t wire_length,
                        LinkType link, ParsedPacket* out) {
  *out = ParsedPacket{};
  out->wire_length = wire_length;
  // A capture never holds more than the wire carried; if a broken record says
  // otherwise, trust neither more than the smaller.
  if (captured > wire_length) captured = wire_length;
  Bytes b(data, captured);
  L3Start l3 = LinkToL3(b, link, out);
  if (l3.status != ParseStatus::kOk) return l3.status;
  out->l3_offset = static_cast<uint16_t>(l3.offset);
  L3 kind = l3.kind;
  if (kind == L3::kFromVersion) {
    if (!b.Has(l3.offset, 1)) return ParseStatus::kTruncatedIpHeader;
    uint8_t version = b.U8(l3.offset) >> 4;
    if (version == 4) {
      kind = L3::kIpv4;
    } else if (version == 6) {
      kind = L3::kIpv6;
    } else {
      return ParseStatus::kBadIpVersion;
    }
  }
  // The frame as it was on the wire bounds the IP length fields; the captured
  // length bounds the reads.
  size_t frame_end = wire_length;
  return kind == L3::kIpv4 ? ParseIpv4(b, l3.offset, frame_end, out)
                           : ParseIpv6(b, l3.offset, frame_end, out);
}

uint32_t ImpliedWireLength(const uint8_t* data, size_t captured, const ParsedPacket& partial) {
  const size_t l3 = partial.l3_offset;
  if (l3 == 0 || l3 + 8 > captured) return 0;
  const uint8_t version = data[l3] >> 4;
  uint32_t implied = 0;
  if (version == 4) {
    implied = static_cast<uint32_t>(l3) + ((uint32_t{data[l3 + 2]} << 8) | data[l3 + 3]);
  } else if (version == 6) {
    implied = static_cast<uint32_t>(l3) + 40 + ((uint32_t{data[l3 + 4]} << 8) | data[l3 + 5]);
  }
  return implied > captured ? implied : 0;
}

}  // namespace shroud
