// Directional flow key shared by the dataplane and the control process.
//
// A flow is one direction of a conversation: source IP:port -> destination
// IP:port, protocol. The key is a fixed 40-byte, trivially copyable value so it
// can be used as an rte_hash key in the dataplane and as an absl hash key
// offline, and so both sides agree bit for bit.
#ifndef SHROUD_FLOW_KEY_H_
#define SHROUD_FLOW_KEY_H_

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

namespace shroud {

inline constexpr uint8_t kProtoIcmp = 1;
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;
inline constexpr uint8_t kProtoIcmpV6 = 58;

struct FlowKey {
  // IPv4 addresses occupy the first 4 bytes; the remaining 12 are zero. Keeping
  // one layout for both families keeps hashing and comparison branch-free.
  std::array<uint8_t, 16> src_addr{};
  std::array<uint8_t, 16> dst_addr{};
  uint16_t src_port = 0;  // host byte order; ICMP: type<<8|code on src, id on dst
  uint16_t dst_port = 0;
  uint8_t protocol = 0;
  uint8_t ip_version = 0;  // 4 or 6; 0 means "no key"
  uint8_t reserved[2] = {0, 0};  // always zero so memcmp/hash see no padding garbage

  friend bool operator==(const FlowKey& a, const FlowKey& b) {
    return std::memcmp(&a, &b, sizeof(FlowKey)) == 0;
  }
  friend bool operator!=(const FlowKey& a, const FlowKey& b) { return !(a == b); }
  friend bool operator<(const FlowKey& a, const FlowKey& b) {
    return std::memcmp(&a, &b, sizeof(FlowKey)) < 0;
  }

  template <typename H>
  friend H AbslHashValue(H h, const FlowKey& k) {
    return H::combine_contiguous(std::move(h), reinterpret_cast<const unsigned char*>(&k),
                                 sizeof(FlowKey));
  }

  // The key of the opposite direction (destination -> source).
  FlowKey Reversed() const {
    FlowKey r = *this;
    std::swap(r.src_addr, r.dst_addr);
    std::swap(r.src_port, r.dst_port);
    return r;
  }
};

static_assert(sizeof(FlowKey) == 40, "FlowKey is part of the dataplane/control contract");
static_assert(std::is_trivially_copyable_v<FlowKey>);

// "SRC:PORT>DST:PORT/PROTO", e.g. "192.0.2.1:49152>192.0.2.2:80/tcp" or
// "[2001:db8::1]:443>[2001:db8::2]:5555/udp". PROTO is tcp, udp, icmp, icmp6 or
// the protocol number.
std::string FormatFlowKey(const FlowKey& key);
std::string FormatAddress(const FlowKey& key, bool source);
std::string ProtocolName(uint8_t protocol);

}  // namespace shroud

#endif  // SHROUD_FLOW_KEY_H_
