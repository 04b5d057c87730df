// Per-flow features, identical in the dataplane and the offline tools.
//
// All state is in one fixed-size, trivially copyable struct (256 bytes) so a tap
// can keep millions of flows and the struct can be mirrored to the control
// process as is. Time and configuration are arguments; nothing here reads a
// clock or a global.
#ifndef SHROUD_DATAPLANE_CORE_FLOW_FEATURES_H_
#define SHROUD_DATAPLANE_CORE_FLOW_FEATURES_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "shroud/feature_config.h"

namespace shroud {

// Position in the whole observed stream (every parsed packet of every flow, in
// order), kept once per observation point -- a capture file, a dataplane worker.
// Algorithm 2 windows count packets of this stream. Tracking each window's
// start here spares the per-flow update any division.
class StreamPosition {
 public:
  explicit StreamPosition(const FeatureConfig& config);
  // Moves to the next packet of the stream; call once per packet before
  // observing it.
  void Advance() {
    ++index_;
    // Most packets cross no window boundary; only the nearest one is checked.
    if (index_ < next_boundary_) return;
    next_boundary_ = UINT64_MAX;
    for (size_t i = 0; i < window_count_; ++i) {
      if (index_ - window_start_[i] >= window_size_[i]) window_start_[i] += window_size_[i];
      next_boundary_ = std::min(next_boundary_, window_start_[i] + window_size_[i]);
    }
  }
  // Jumps to packet `index` of the stream (>= the current one): a worker
  // that shares one stream with others (a multi-queue tap) is handed the
  // indices of its packets. Advance() is AdvanceTo(index() + 1).
  void AdvanceTo(uint64_t index) {
    index_ = index;
    if (index_ < next_boundary_) return;
    next_boundary_ = UINT64_MAX;
    for (size_t i = 0; i < window_count_; ++i) {
      window_start_[i] = index_ - index_ % window_size_[i];
      next_boundary_ = std::min(next_boundary_, window_start_[i] + window_size_[i]);
    }
  }
  // Index of the current packet (0-based); packets() = how many so far.
  uint64_t index() const { return index_; }
  uint64_t packets() const { return index_ + 1; }
  uint64_t window_start(size_t slot) const { return window_start_[slot]; }

 private:
  uint64_t index_;
  uint64_t next_boundary_ = UINT64_MAX;  // smallest window_start_ + window_size_
  size_t window_count_;
  std::array<uint64_t, kMaxByteWindows> window_size_{};
  std::array<uint64_t, kMaxByteWindows> window_start_{};
};

// One observed packet, as the feature code needs it.
struct PacketObservation {
  uint64_t time_ns = 0;     // capture or rx timestamp
  uint32_t wire_bytes = 0;  // frame length on the wire (not the captured length)
};

struct IptCategoryCount {
  uint32_t category_us = 0;  // inter-packet time in [category_us, category_us + 1) us
  uint32_t count = 0;        // 0 = empty slot
};

struct FlowFeatures {
  // --- totals (48 B) ---
  uint64_t packets = 0;
  uint64_t bytes = 0;
  uint64_t first_ns = 0;
  uint64_t last_ns = 0;
  uint64_t first_stream_index = 0;
  uint64_t last_stream_index = 0;

  // --- Algorithm 1 (32 B) ---
  uint32_t a1_window_packets = 0;      // length of the current BurstList
  uint32_t a1_since_burst = 0;         // BurstCounter: packets since the last burst start
  uint32_t a1_distances = 0;           // burst-to-burst distances in the current window
  uint32_t a1_distance_sum = 0;
  uint64_t a1_distance_sumsq = 0;
  uint32_t a1_pattern_counter = 0;     // windows with CoV < delta
  uint32_t a1_windows = 0;             // windows evaluated

  // --- Algorithm 2 (96 B) ---
  // Per window size W (slot i of FeatureConfig::byte_windows): bytes of this
  // flow in the window that holds its latest packet, and the sum of squares of
  // its bytes over the earlier windows since its first. The count and the sum
  // of those windows follow from the stream indices and the byte total, so they
  // are not stored.
  std::array<uint32_t, kMaxByteWindows> a2_current_bytes{};
  std::array<double, kMaxByteWindows> a2_sumsq{};

  // --- inter-packet times, top-k categories at 1 us (80 B) ---
  // Space-Saving sketch: counts of the k most frequent categories, exact while
  // the flow has at most k distinct categories, over-estimates by at most
  // (packets-1)/k otherwise.
  std::array<IptCategoryCount, kIptTopK> ipt{};

  // Feeds one packet of this flow, the current packet of `stream`. Packets must
  // arrive in stream order; timestamps that go backwards count as a zero gap.
  void Observe(const PacketObservation& p, const StreamPosition& stream,
               const FeatureConfig& config);

  double duration_seconds() const {
    return packets < 2 ? 0.0 : static_cast<double>(last_ns - first_ns) * 1e-9;
  }
  // Algorithm 1 verdict so far: the pattern was seen more than PCt times.
  bool pattern_detected(const FeatureConfig& config) const {
    return a1_pattern_counter > config.pattern_count_threshold;
  }
};

static_assert(sizeof(FlowFeatures) == 256, "per-flow state budget: 256 bytes");
static_assert(std::is_trivially_copyable_v<FlowFeatures>);

// Coefficient of variation (population stddev / mean, the paper's Eq. 1) of
// the flow's bytes per window of W = config.byte_windows[slot] stream packets.
// Windows run from the one holding the flow's first packet to the one holding
// its latest; the latest is counted only once the stream has passed its end
// (stream_packets = packets observed so far in the whole stream). Windows in
// between in which the flow sent nothing count as zero. NaN when fewer than two
// windows are complete.
double ByteWindowCov(const FlowFeatures& f, const FeatureConfig& config, size_t slot,
                     uint64_t stream_packets);

// Number of complete windows behind ByteWindowCov for this slot.
uint64_t ByteWindowCount(const FlowFeatures& f, const FeatureConfig& config, size_t slot,
                         uint64_t stream_packets);

// The non-empty IPT sketch entries, most frequent first.
std::vector<IptCategoryCount> TopIptCategories(const FlowFeatures& f);

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_CORE_FLOW_FEATURES_H_
