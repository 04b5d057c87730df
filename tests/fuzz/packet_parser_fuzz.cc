// libFuzzer target for ParsePacket, and behind it the per-flow feature update.
//
// Input layout:
//   byte 0      link type: index into kLinks (modulo its size)
//   bytes 1-2   wire-length delta, big-endian int16: wire_length = frame size + delta
//               (clamped at 0), so both snaplen-cut and over-long records occur
//   bytes 3..   the frame
//
// Besides memory errors (ASan/UBSan in the -Dfuzz=true build), the target traps
// on results that break the parser's contract, so logic bugs are found too.
// Built with gcc it runs through tests/fuzz/replay_main.cc over the corpus.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "dataplane/core/flow_features.h"
#include "dataplane/core/packet_parser.h"
#include "shroud/feature_config.h"
#include "shroud/flow_key.h"

namespace {

using shroud::LinkType;
using shroud::ParsedPacket;
using shroud::ParseStatus;

constexpr LinkType kLinks[] = {
    LinkType::kEthernet,  LinkType::kRaw,  LinkType::kIpv4, LinkType::kIpv6, LinkType::kLinuxSll,
    LinkType::kLinuxSll2, LinkType::kNull, LinkType::kLoop, LinkType::kPpp,
};
constexpr size_t kLinkCount = sizeof(kLinks) / sizeof(kLinks[0]);

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// What every successful parse must satisfy, whatever the input.
void CheckParse(ParseStatus status, const ParsedPacket& p, size_t captured, uint32_t wire) {
  Check(status < ParseStatus::kCount);
  Check(p.wire_length == wire);
  if (status != ParseStatus::kOk) return;
  const uint64_t available = captured < wire ? captured : wire;
  Check(p.key.ip_version == 4 || p.key.ip_version == 6);
  const uint64_t ip_header = p.key.ip_version == 4 ? 20 : 40;
  Check(p.l3_offset + ip_header <= available);
  Check(p.payload_offset >= p.l3_offset + ip_header);
  // The payload may be cut by a snaplen, but it ends where the IP packet ends,
  // which is inside the frame.
  Check(p.payload_offset + uint64_t{p.payload_length} <= wire);
  Check(p.key.reserved[0] == 0 && p.key.reserved[1] == 0);
  if (p.is_later_fragment) {
    Check(p.is_fragment);
    Check(p.l4_offset == 0);
    Check(p.key.src_port == 0 && p.key.dst_port == 0);
    return;
  }
  Check(p.l4_offset >= p.l3_offset + ip_header);
  Check(p.l4_offset <= p.payload_offset);
  uint64_t fixed = 0;
  switch (p.key.protocol) {
    case shroud::kProtoTcp:
      fixed = 20;
      break;
    case shroud::kProtoUdp:
    case shroud::kProtoIcmp:
    case shroud::kProtoIcmpV6:
      fixed = 8;
      break;
    default:
      break;
  }
  // A transport header the parser read was captured.
  if (fixed > 0) Check(p.l4_offset + fixed <= available);
  const uint64_t l4_header = p.payload_offset - p.l4_offset;
  if (p.key.protocol == shroud::kProtoTcp) {
    Check(l4_header >= 20 && l4_header <= 60 && l4_header % 4 == 0);
  } else {
    Check(l4_header == fixed);
  }
  if (p.key.protocol != shroud::kProtoTcp) Check(p.tcp_flags == 0);
}

shroud::FeatureConfig FuzzConfig() {
  shroud::FeatureConfig config;
  config.burst_gap_ns = 50'000;
  config.pattern_window = 4;
  config.pattern_min_distances = 1;
  config.byte_windows = {1, 2, 3, 5, 8, 13, 0, 0};
  config.byte_window_count = 6;
  return config;
}

// Feeds the parsed packet to two flows in a short simulated stream whose
// timing and sizes come from the frame's bytes, then reads every feature.
void ExerciseFeatures(const ParsedPacket& p, const uint8_t* frame, size_t size) {
  static const shroud::FeatureConfig config = FuzzConfig();
  shroud::StreamPosition stream(config);
  shroud::FlowFeatures flows[2] = {};
  uint64_t t = 1'000'000'000;
  const size_t steps = size < 64 ? size : 64;
  for (size_t i = 0; i < steps; ++i) {
    const uint8_t b = frame[i];
    stream.Advance();
    t += uint64_t{b} * 613;  // gaps around the burst gap and across 1 us categories
    // Sometimes a timestamp from the past.
    const uint64_t when = (b & 0x40) != 0 ? t - 70'000 : t;
    const uint32_t bytes = (b & 0x80) != 0 ? p.wire_length : p.payload_length;
    flows[b & 1].Observe({when, bytes}, stream, config);
  }
  for (const shroud::FlowFeatures& f : flows) {
    Check(f.last_ns >= f.first_ns);
    Check(f.duration_seconds() >= 0);
    uint64_t ipt_total = 0;
    for (const shroud::IptCategoryCount& e : shroud::TopIptCategories(f)) ipt_total += e.count;
    Check(f.packets == 0 ? ipt_total == 0 : ipt_total == f.packets - 1);
    Check(f.a1_pattern_counter <= f.a1_windows);
    for (size_t slot = 0; slot < config.byte_window_count; ++slot) {
      const uint64_t n = shroud::ByteWindowCount(f, config, slot, stream.packets());
      Check(n <= stream.packets() / config.byte_windows[slot] + 1);
      const double cov = shroud::ByteWindowCov(f, config, slot, stream.packets());
      Check(std::isnan(cov) || (cov >= 0 && std::isfinite(cov)));
      Check(n >= 2 || std::isnan(cov));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const LinkType link = kLinks[data[0] % kLinkCount];
  const int delta = static_cast<int16_t>(static_cast<uint16_t>(data[1] << 8 | data[2]));
  const uint8_t* frame = data + 3;
  const size_t captured = size - 3;
  const int64_t wire_signed = static_cast<int64_t>(captured) + delta;
  const uint32_t wire = wire_signed < 0 ? 0 : static_cast<uint32_t>(wire_signed);

  ParsedPacket parsed;
  const ParseStatus status = shroud::ParsePacket(frame, captured, wire, link, &parsed);
  CheckParse(status, parsed, captured, wire);
  if (status == ParseStatus::kOk) {
    // The key must format without trouble.
    Check(!shroud::FormatFlowKey(parsed.key).empty());
    ExerciseFeatures(parsed, frame, captured);
  }
  return 0;
}
