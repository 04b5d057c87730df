#include "shroud/flow_key.h"

#include <arpa/inet.h>

#include "absl/strings/str_cat.h"

namespace shroud {

std::string ProtocolName(uint8_t protocol) {
  switch (protocol) {
    case kProtoTcp: return "tcp";
    case kProtoUdp: return "udp";
    case kProtoIcmp: return "icmp";
    case kProtoIcmpV6: return "icmp6";
    default: return absl::StrCat(protocol);
  }
}

std::string FormatAddress(const FlowKey& key, bool source) {
  const auto& addr = source ? key.src_addr : key.dst_addr;
  char buf[INET6_ADDRSTRLEN] = {0};
  if (key.ip_version == 6) {
    inet_ntop(AF_INET6, addr.data(), buf, sizeof(buf));
    return absl::StrCat("[", buf, "]");
  }
  inet_ntop(AF_INET, addr.data(), buf, sizeof(buf));
  return buf;
}

std::string FormatFlowKey(const FlowKey& key) {
  return absl::StrCat(FormatAddress(key, true), ":", key.src_port, ">", FormatAddress(key, false),
                      ":", key.dst_port, "/", ProtocolName(key.protocol));
}

}  // namespace shroud
