// The offline flow table: every directional flow of one observation point (a
// capture file) with its features, in first-seen order. The dataplane keeps
// the same FlowFeatures in an rte_hash; this is the unbounded-memory variant
// for offline analysis, with a flow limit as a safety net.
#ifndef SHROUD_CONTROL_ANALYSIS_FLOW_TABLE_H_
#define SHROUD_CONTROL_ANALYSIS_FLOW_TABLE_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "dataplane/core/flow_features.h"
#include "dataplane/core/packet_parser.h"
#include "shroud/feature_config.h"
#include "shroud/flow_key.h"

namespace shroud {

struct FlowRecord {
  FlowKey key;
  FlowFeatures features;
  bool selected = false;  // matched the caller's flow selector on its first packet
};

class FlowTable {
 public:
  // `config` must be valid (FeatureConfig::Validate).
  explicit FlowTable(const FeatureConfig& config, size_t max_flows = 50'000'000);

  struct Observed {
    FlowRecord* flow = nullptr;  // null when the flow limit was hit
    bool created = false;
  };
  // Counts one parsed packet of the stream and feeds it to its flow.
  Observed Observe(const ParsedPacket& packet, uint64_t time_ns);
  // Counts a frame that did not parse into a flow.
  void CountUnparsed(ParseStatus status) { ++status_counts_[static_cast<size_t>(status)]; }

  const FeatureConfig& config() const { return config_; }
  // Flows in the order their first packet was seen.
  const std::vector<FlowRecord>& flows() const { return flows_; }
  uint64_t stream_packets() const { return observed_; }
  uint64_t dropped_flow_limit() const { return dropped_flow_limit_; }
  const std::array<uint64_t, static_cast<size_t>(ParseStatus::kCount)>& status_counts() const {
    return status_counts_;
  }

 private:
  FeatureConfig config_;
  size_t max_flows_;
  StreamPosition stream_;
  uint64_t observed_ = 0;
  uint64_t dropped_flow_limit_ = 0;
  std::vector<FlowRecord> flows_;
  absl::flat_hash_map<FlowKey, uint32_t> index_;
  std::array<uint64_t, static_cast<size_t>(ParseStatus::kCount)> status_counts_{};
};

}  // namespace shroud

#endif  // SHROUD_CONTROL_ANALYSIS_FLOW_TABLE_H_
