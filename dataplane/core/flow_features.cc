#include "dataplane/core/flow_features.h"

#include <algorithm>
#include <cmath>

namespace shroud {

StreamPosition::StreamPosition(const FeatureConfig& config)
    // Starts "before" packet 0 so that the first Advance() lands on index 0.
    : index_(~uint64_t{0}), window_count_(config.byte_window_count) {
  for (size_t i = 0; i < window_count_; ++i) {
    window_size_[i] = config.byte_windows[i];
    next_boundary_ = std::min<uint64_t>(next_boundary_, window_size_[i]);
  }
}

namespace {

void AddInterPacketTime(std::array<IptCategoryCount, kIptTopK>& sketch, uint64_t gap_ns) {
  uint64_t us = gap_ns / 1000;
  const uint32_t category = us > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(us);
  // One branch-free pass (the per-entry branches of a plain scan mispredict
  // on every packet whose gap is new): the matching entry, the first empty
  // one, and the first of the smallest counts. Walking backwards with "<="
  // leaves the first of equals. Non-empty categories are unique.
  int match = -1;
  int empty = -1;
  int smallest = 0;
  uint32_t smallest_count = UINT32_MAX;
  for (int i = static_cast<int>(kIptTopK) - 1; i >= 0; --i) {
    const IptCategoryCount e = sketch[i];
    const bool used = e.count != 0;
    match = (used && e.category_us == category) ? i : match;
    empty = used ? empty : i;
    const bool le = used && e.count <= smallest_count;
    smallest = le ? i : smallest;
    smallest_count = le ? e.count : smallest_count;
  }
  if (match >= 0) {
    ++sketch[match].count;
  } else if (empty >= 0) {
    sketch[empty] = {category, 1};
  } else {
    // Space-Saving: the newcomer inherits the evicted count, so counts are
    // upper bounds and a category that keeps coming back climbs into the top.
    sketch[smallest].category_us = category;
    ++sketch[smallest].count;
  }
}

}  // namespace

void FlowFeatures::Observe(const PacketObservation& p, const StreamPosition& stream,
                           const FeatureConfig& config) {
  const bool first = packets == 0;
  const uint64_t gap = (first || p.time_ns < last_ns) ? 0 : p.time_ns - last_ns;
  // The first packet of a flow opens its first burst.
  const bool burst_start = first || gap > config.burst_gap_ns;

  // Algorithm 2: bytes per window of W stream packets.
  for (size_t i = 0; i < config.byte_window_count; ++i) {
    if (!first && last_stream_index >= stream.window_start(i)) {
      uint64_t sum = uint64_t{a2_current_bytes[i]} + p.wire_bytes;
      a2_current_bytes[i] = sum > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(sum);
    } else {
      if (!first) {
        double b = a2_current_bytes[i];
        a2_sumsq[i] += b * b;  // windows the flow skipped add zero
      }
      a2_current_bytes[i] = p.wire_bytes;
    }
  }

  // Algorithm 1: distances (in packets of the flow) between burst starts, per
  // window of Pwin packets.
  ++a1_window_packets;
  if (a1_since_burst != UINT32_MAX) ++a1_since_burst;
  if (burst_start) {
    if (!first) {
      uint64_t d = a1_since_burst;
      ++a1_distances;
      a1_distance_sum += static_cast<uint32_t>(d);
      a1_distance_sumsq += d * d;
    }
    a1_since_burst = 0;
  }
  if (a1_window_packets >= config.pattern_window) {
    if (a1_distances >= config.pattern_min_distances) {
      double n = a1_distances;
      double mean = a1_distance_sum / n;
      double var = std::max(0.0, static_cast<double>(a1_distance_sumsq) / n - mean * mean);
      double cov = std::sqrt(var) / mean;
      if (cov < config.pattern_delta) ++a1_pattern_counter;
      ++a1_windows;
    }
    a1_window_packets = 0;
    a1_distances = 0;
    a1_distance_sum = 0;
    a1_distance_sumsq = 0;
  }

  if (!first) AddInterPacketTime(ipt, gap);

  if (first) {
    first_ns = p.time_ns;
    first_stream_index = stream.index();
  }
  last_ns = std::max(last_ns, p.time_ns);
  last_stream_index = stream.index();
  ++packets;
  bytes += p.wire_bytes;
}

uint64_t ByteWindowCount(const FlowFeatures& f, const FeatureConfig& config, size_t slot,
                         uint64_t stream_packets) {
  if (f.packets == 0) return 0;
  const uint64_t w = config.byte_windows[slot];
  const uint64_t first_window = f.first_stream_index / w;
  const uint64_t last_window = f.last_stream_index / w;
  // The latest window is complete once the stream has moved past its end.
  const bool last_complete = stream_packets >= (last_window + 1) * w;
  return last_window - first_window + (last_complete ? 1 : 0);
}

double ByteWindowCov(const FlowFeatures& f, const FeatureConfig& config, size_t slot,
                     uint64_t stream_packets) {
  const uint64_t n = ByteWindowCount(f, config, slot, stream_packets);
  if (n < 2) return std::nan("");
  const uint64_t w = config.byte_windows[slot];
  const bool last_complete = stream_packets >= (f.last_stream_index / w + 1) * w;
  const double current = f.a2_current_bytes[slot];
  // Every byte of the flow sits in exactly one window, so the sum over the
  // complete windows is the total minus the open window.
  double sum = static_cast<double>(f.bytes) - (last_complete ? 0.0 : current);
  double sumsq = f.a2_sumsq[slot] + (last_complete ? current * current : 0.0);
  double mean = sum / static_cast<double>(n);
  if (mean <= 0) return std::nan("");
  double var = std::max(0.0, sumsq / static_cast<double>(n) - mean * mean);
  return std::sqrt(var) / mean;
}

std::vector<IptCategoryCount> TopIptCategories(const FlowFeatures& f) {
  std::vector<IptCategoryCount> out;
  for (const auto& e : f.ipt) {
    if (e.count != 0) out.push_back(e);
  }
  std::sort(out.begin(), out.end(), [](const IptCategoryCount& a, const IptCategoryCount& b) {
    return a.count != b.count ? a.count > b.count : a.category_us < b.category_us;
  });
  return out;
}

}  // namespace shroud
