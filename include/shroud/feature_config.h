// Configuration of the per-flow features. Shared by the dataplane, the offline
// tools and the control process: a flow's features only mean something together
// with the configuration they were computed under.
#ifndef SHROUD_FEATURE_CONFIG_H_
#define SHROUD_FEATURE_CONFIG_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace shroud {

// Upper bound on the Algorithm 2 window set; fixed so per-flow state is bounded.
inline constexpr size_t kMaxByteWindows = 8;
// Inter-packet-time categories kept per flow (top-k sketch, 1 us categories).
inline constexpr size_t kIptTopK = 10;

struct FeatureConfig {
  // --- Algorithm 1 (pattern matching) ---
  // A packet starts a burst when the gap to the flow's previous packet exceeds
  // this. The paper gives no value; QEMU paces in 100 ms slices and sends each
  // slice back to back, so 10 ms separates slices from intra-slice gaps at every
  // rate the paper used (2-12 MB/s) on links of 100 Mbit/s and faster.
  uint64_t burst_gap_ns = 10'000'000;
  uint32_t pattern_window = 1000;          // Pwin (packets of the flow)
  double pattern_delta = 0.05;             // delta: CoV threshold
  uint32_t pattern_count_threshold = 3;    // PCt: detect when counter > PCt
  // A window needs at least this many burst-to-burst distances for its CoV to
  // mean anything (see pattern_attack.cc for why).
  uint32_t pattern_min_distances = 2;

  // --- Algorithm 2 (maximum entropy) ---
  // Window sizes W in packets of the whole observed stream, ascending.
  std::array<uint32_t, kMaxByteWindows> byte_windows = {100, 200, 300, 500, 1000, 2000, 3000, 0};
  size_t byte_window_count = 7;

  // Returns OK or a message naming the offending field.
  absl::Status Validate() const;
  // The slot of window size w in byte_windows, or -1.
  int WindowSlot(uint32_t w) const;
  std::string WindowsToString() const;
};

}  // namespace shroud

#endif  // SHROUD_FEATURE_CONFIG_H_
