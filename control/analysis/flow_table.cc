#include "control/analysis/flow_table.h"

namespace shroud {

FlowTable::FlowTable(const FeatureConfig& config, size_t max_flows)
    : config_(config), max_flows_(max_flows), stream_(config) {}

FlowTable::Observed FlowTable::Observe(const ParsedPacket& packet, uint64_t time_ns) {
  ++status_counts_[static_cast<size_t>(ParseStatus::kOk)];
  stream_.Advance();
  ++observed_;
  Observed result;
  auto [it, inserted] = index_.try_emplace(packet.key, static_cast<uint32_t>(flows_.size()));
  if (inserted) {
    if (flows_.size() >= max_flows_) {
      index_.erase(it);
      ++dropped_flow_limit_;
      return result;
    }
    flows_.push_back(FlowRecord{packet.key, FlowFeatures{}, false});
    result.created = true;
  }
  FlowRecord& flow = flows_[it->second];
  flow.features.Observe(PacketObservation{time_ns, packet.wire_length}, stream_, config_);
  result.flow = &flow;
  return result;
}

}  // namespace shroud
