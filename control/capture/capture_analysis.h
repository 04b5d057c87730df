// Runs a capture file through the parser and the flow features: the offline
// twin of the dataplane's per-packet path.
#ifndef SHROUD_CONTROL_CAPTURE_CAPTURE_ANALYSIS_H_
#define SHROUD_CONTROL_CAPTURE_CAPTURE_ANALYSIS_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "control/analysis/flow_table.h"
#include "shroud/feature_config.h"

namespace shroud {

struct CaptureAnalysis {
  std::string path;
  uint32_t linktype = 0;
  uint64_t frames = 0;
  std::unique_ptr<FlowTable> table;
};

struct CaptureOptions {
  FeatureConfig features;
  // tcpdump-syntax filter; a flow whose first packet matches is marked
  // selected (e.g. labelled as migration). Empty: no flow is selected.
  std::string selector;
  size_t max_flows = 50'000'000;
  // Called for every parsed packet after the flow table saw it (offline
  // evaluations that need more than the per-flow features, e.g. exact
  // inter-packet-time histograms). May be empty.
  std::function<void(const ParsedPacket& packet, uint64_t time_ns)> on_packet;
  // Told, once per capture, what the reader left out without failing (flows
  // beyond max_flows), so a command can say so. May be empty.
  std::function<void(const std::string& message)> warn;
};

// Reads the whole file. Errors name the file: missing, not a capture,
// unsupported link type, truncated or corrupt, bad selector expression.
absl::StatusOr<CaptureAnalysis> AnalyzeCapture(const std::string& path,
                                               const CaptureOptions& options);

}  // namespace shroud

#endif  // SHROUD_CONTROL_CAPTURE_CAPTURE_ANALYSIS_H_
