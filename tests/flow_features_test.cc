// Tests of the per-flow features in simulated time: totals, Algorithm 1
// (burst-distance pattern), Algorithm 2 (bytes per stream window), the
// inter-packet-time sketch and the feature configuration.
#include "dataplane/core/flow_features.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "shroud/feature_config.h"

namespace shroud {
namespace {

constexpr uint64_t kUs = 1'000;
constexpr uint64_t kMs = 1'000'000;

// Population CoV (the paper's Eq. 1), computed the plain two-pass way; NaN
// with fewer than two values or a zero mean.
double CoefficientOfVariation(const std::vector<double>& xs) {
  if (xs.size() < 2) return std::nan("");
  double sum = 0;
  for (double x : xs) sum += x;
  const double mean = sum / static_cast<double>(xs.size());
  if (mean <= 0) return std::nan("");
  double ss = 0;
  for (double x : xs) ss += (x - mean) * (x - mean);
  return std::sqrt(ss / static_cast<double>(xs.size())) / mean;
}

TEST(ReferenceTest, CoefficientOfVariationOfKnownLists) {
  EXPECT_DOUBLE_EQ(CoefficientOfVariation({2, 4}), 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(CoefficientOfVariation({5, 5, 5}), 0.0);
  EXPECT_DOUBLE_EQ(CoefficientOfVariation({0, 10}), 1.0);
  EXPECT_TRUE(std::isnan(CoefficientOfVariation({3})));
  EXPECT_TRUE(std::isnan(CoefficientOfVariation({0, 0})));
}

// The whole observed stream in simulated time: every packet advances the
// stream position; packets of flows a test does not track are just skipped.
class Stream {
 public:
  explicit Stream(const FeatureConfig& config) : config_(config), position_(config_) {}

  void Send(FlowFeatures& flow, uint64_t time_ns, uint32_t wire_bytes) {
    position_.Advance();
    flow.Observe({time_ns, wire_bytes}, position_, config_);
  }
  void SendOther() { position_.Advance(); }
  uint64_t packets() const { return position_.packets(); }
  const FeatureConfig& config() const { return config_; }

 private:
  FeatureConfig config_;
  StreamPosition position_;
};

// ------------------------------------------------------------ stream, totals

TEST(StreamPositionTest, CountsPacketsAndWindowStarts) {
  FeatureConfig config;
  config.byte_windows = {3, 5};
  config.byte_window_count = 2;
  StreamPosition pos(config);
  EXPECT_EQ(pos.packets(), 0u);
  for (uint64_t i = 0; i < 17; ++i) {
    pos.Advance();
    EXPECT_EQ(pos.index(), i);
    EXPECT_EQ(pos.packets(), i + 1);
    EXPECT_EQ(pos.window_start(0), i / 3 * 3) << i;
    EXPECT_EQ(pos.window_start(1), i / 5 * 5) << i;
  }
}

// A multi-queue tap hands each worker the stream indices of its packets;
// jumping there must land on the window starts that stepping would.
TEST(StreamPositionTest, AdvanceToMatchesStepping) {
  FeatureConfig config;
  StreamPosition stepped(config);
  StreamPosition jumped(config);
  std::mt19937_64 rng(3);
  uint64_t checked = 0;
  for (uint64_t i = 0; i < 20'000; ++i) {
    stepped.Advance();
    if (rng() % 7 != 0) continue;  // the other workers' packets
    jumped.AdvanceTo(i);
    ASSERT_EQ(jumped.index(), stepped.index());
    for (size_t w = 0; w < config.byte_window_count; ++w) {
      ASSERT_EQ(jumped.window_start(w), stepped.window_start(w)) << "index " << i << " slot " << w;
    }
    ++checked;
  }
  EXPECT_GT(checked, 2000u);
}

TEST(FlowFeaturesTest, TotalsDurationAndStreamIndices) {
  Stream stream(FeatureConfig{});
  FlowFeatures f;
  EXPECT_EQ(f.duration_seconds(), 0.0);
  stream.SendOther();
  stream.Send(f, 1'000, 100);
  EXPECT_EQ(f.packets, 1u);
  EXPECT_EQ(f.duration_seconds(), 0.0);  // a single packet has no duration
  stream.SendOther();
  stream.SendOther();
  stream.Send(f, 5'000, 200);
  stream.Send(f, 12'000, 300);
  EXPECT_EQ(f.packets, 3u);
  EXPECT_EQ(f.bytes, 600u);
  EXPECT_EQ(f.first_ns, 1'000u);
  EXPECT_EQ(f.last_ns, 12'000u);
  EXPECT_EQ(f.first_stream_index, 1u);
  EXPECT_EQ(f.last_stream_index, 5u);
  EXPECT_DOUBLE_EQ(f.duration_seconds(), 11'000e-9);
}

TEST(FlowFeaturesTest, TimestampsGoingBackwardsCountAsZeroGap) {
  FeatureConfig config;
  config.burst_gap_ns = 10 * kMs;
  Stream stream(config);
  FlowFeatures f;
  stream.Send(f, 10'000 * kMs, 100);
  stream.Send(f, 1'000 * kMs, 100);            // 9 s back in time
  stream.Send(f, 1'000 * kMs + 5 * kUs, 100);  // still before the latest
  stream.Send(f, 10'000 * kMs + 3 * kUs, 100);
  EXPECT_EQ(f.packets, 4u);
  EXPECT_EQ(f.first_ns, 10'000 * kMs);
  EXPECT_EQ(f.last_ns, 10'000 * kMs + 3 * kUs);  // the latest time seen
  EXPECT_DOUBLE_EQ(f.duration_seconds(), 3e-6);
  // No gap was large (no wrap-around to a huge unsigned gap): no burst starts
  // after the first packet.
  EXPECT_EQ(f.a1_since_burst, 3u);
  EXPECT_EQ(f.a1_distances, 0u);
  // Gaps: 0, 0, 3 us.
  std::vector<IptCategoryCount> top = TopIptCategories(f);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].category_us, 0u);
  EXPECT_EQ(top[0].count, 2u);
  EXPECT_EQ(top[1].category_us, 3u);
  EXPECT_EQ(top[1].count, 1u);
}

TEST(FlowFeaturesTest, HugeGapSaturatesIptCategory) {
  Stream stream(FeatureConfig{});
  FlowFeatures f;
  stream.Send(f, 0, 60);
  stream.Send(f, std::numeric_limits<uint64_t>::max(), 60);
  std::vector<IptCategoryCount> top = TopIptCategories(f);
  ASSERT_EQ(top.size(), 1u);
  EXPECT_EQ(top[0].category_us, std::numeric_limits<uint32_t>::max());
  EXPECT_EQ(f.a1_distances, 1u);  // the huge gap started a burst
}

// ---------------------------------------------------------------- Algorithm 1

// Feeds one packet per entry of `starts`: a burst start comes 100 ms after the
// previous packet, any other packet 10 us after it.
uint64_t FeedBursts(Stream& stream, FlowFeatures& f, const std::vector<bool>& starts,
                    uint64_t t = 1'000 * kMs) {
  for (bool start : starts) {
    t += start ? 100 * kMs : 10 * kUs;
    stream.Send(f, t, 1500);
  }
  return t;
}

std::vector<bool> Slice(const std::vector<bool>& v, size_t begin, size_t end) {
  return std::vector<bool>(v.begin() + static_cast<std::ptrdiff_t>(begin),
                           v.begin() + static_cast<std::ptrdiff_t>(end));
}

// Packets in bursts of the given sizes: the first packet of each burst starts it.
std::vector<bool> BurstsOfSizes(const std::vector<int>& sizes) {
  std::vector<bool> starts;
  for (int n : sizes) {
    for (int i = 0; i < n; ++i) starts.push_back(i == 0);
  }
  return starts;
}

FeatureConfig SmallPatternConfig() {
  FeatureConfig config;
  config.burst_gap_ns = 10 * kMs;
  config.pattern_window = 10;
  config.pattern_min_distances = 2;
  return config;
}

TEST(PatternAttackStateTest, BurstGapMustBeExceeded) {
  FeatureConfig config;
  config.burst_gap_ns = 1'000;
  Stream stream(config);
  FlowFeatures at_gap;
  FlowFeatures past_gap;
  for (uint64_t i = 0; i < 5; ++i) {
    stream.Send(at_gap, i * 1'000, 100);
    stream.Send(past_gap, i * 1'001, 100);
  }
  EXPECT_EQ(at_gap.a1_distances, 0u);
  EXPECT_EQ(at_gap.a1_since_burst, 4u);
  EXPECT_EQ(past_gap.a1_distances, 4u);  // every packet after the first starts a burst
  EXPECT_EQ(past_gap.a1_distance_sum, 4u);
  EXPECT_EQ(past_gap.a1_since_burst, 0u);
}

// Bursts of 3 packets, Pwin = 10. Burst starts at packets 0, 3, 6, 9, 12, ...;
// the first opens a burst without a distance, each later one records the
// distance 3 (packets since the previous start). Window k holds packets
// [10k, 10k + 9]: window 0 sees starts 3, 6, 9; window 1 12, 15, 18; window 2
// 21, 24, 27; window 3 30, 33, 36, 39. All CoVs are 0 < delta.
TEST(PatternAttackStateTest, HandComputedWindowsOfConstantBursts) {
  const FeatureConfig config = SmallPatternConfig();
  Stream stream(config);
  FlowFeatures f;
  std::vector<bool> starts = BurstsOfSizes(std::vector<int>(14, 3));  // 42 packets

  uint64_t t = FeedBursts(stream, f, Slice(starts, 0, 9));
  EXPECT_EQ(f.a1_window_packets, 9u);
  EXPECT_EQ(f.a1_distances, 2u);  // at packets 3 and 6
  EXPECT_EQ(f.a1_distance_sum, 6u);
  EXPECT_EQ(f.a1_distance_sumsq, 18u);
  EXPECT_EQ(f.a1_since_burst, 2u);
  EXPECT_EQ(f.a1_windows, 0u);

  t = FeedBursts(stream, f, Slice(starts, 9, 10), t);  // packet 9
  EXPECT_EQ(f.a1_windows, 1u);
  EXPECT_EQ(f.a1_pattern_counter, 1u);
  EXPECT_EQ(f.a1_window_packets, 0u);
  EXPECT_EQ(f.a1_distances, 0u);
  EXPECT_EQ(f.a1_since_burst, 0u);  // packet 9 started a burst

  t = FeedBursts(stream, f, Slice(starts, 10, 39), t);  // to packet 38
  EXPECT_EQ(f.a1_windows, 3u);
  EXPECT_EQ(f.a1_pattern_counter, 3u);
  EXPECT_FALSE(f.pattern_detected(config));  // detect when counter > PCt = 3

  t = FeedBursts(stream, f, Slice(starts, 39, 40), t);  // packet 39
  EXPECT_EQ(f.a1_windows, 4u);
  EXPECT_EQ(f.a1_pattern_counter, 4u);
  EXPECT_TRUE(f.pattern_detected(config));

  FeedBursts(stream, f, Slice(starts, 40, starts.size()), t);
  EXPECT_EQ(f.a1_window_packets, 2u);
  EXPECT_EQ(f.a1_since_burst, 2u);  // burst started at packet 39
  EXPECT_EQ(f.a1_distances, 0u);
}

// Bursts of 7, Pwin = 10: starts at 0, 7, 14, 21, 28. Window 0 (0-9) sees one
// distance (at 7), window 1 (10-19) one (at 14): both below the minimum of 2,
// so neither is evaluated. The distance at 21 is 7 because the count since
// the start at 14 carries across the boundary at 20; window 2 sees 7, 7.
TEST(PatternAttackStateTest, DistancesCarryAcrossWindowBoundaries) {
  const FeatureConfig config = SmallPatternConfig();
  Stream stream(config);
  FlowFeatures f;
  std::vector<bool> starts = BurstsOfSizes(std::vector<int>(5, 7));  // 35 packets

  uint64_t t = FeedBursts(stream, f, Slice(starts, 0, 10));
  EXPECT_EQ(f.a1_windows, 0u);  // one distance is not enough
  EXPECT_EQ(f.a1_since_burst, 2u);
  t = FeedBursts(stream, f, Slice(starts, 10, 20), t);
  EXPECT_EQ(f.a1_windows, 0u);
  EXPECT_EQ(f.a1_since_burst, 5u);
  t = FeedBursts(stream, f, Slice(starts, 20, 30), t);
  EXPECT_EQ(f.a1_windows, 1u);
  EXPECT_EQ(f.a1_pattern_counter, 1u);  // distances {7, 7}: CoV 0

  // With a minimum of one distance every window counts.
  FeatureConfig one = config;
  one.pattern_min_distances = 1;
  Stream stream1(one);
  FlowFeatures g;
  FeedBursts(stream1, g, Slice(starts, 0, 30));
  EXPECT_EQ(g.a1_windows, 3u);
  EXPECT_EQ(g.a1_pattern_counter, 3u);
}

// Starts at packets 0, 2 and 6 of a 10-packet window: distances {2, 4},
// population CoV = 1 / 3 (the sample CoV would be 0.471).
TEST(PatternAttackStateTest, WindowCovIsPopulationStddevOverMean) {
  std::vector<bool> starts(10, false);
  starts[0] = starts[2] = starts[6] = true;
  struct Case {
    double delta;
    uint32_t expected_counter;
  };
  for (Case c : {Case{0.30, 0}, Case{0.33, 0}, Case{0.34, 1}, Case{0.40, 1}, Case{0.05, 0}}) {
    FeatureConfig config = SmallPatternConfig();
    config.pattern_delta = c.delta;
    Stream stream(config);
    FlowFeatures f;
    FeedBursts(stream, f, starts);
    EXPECT_EQ(f.a1_windows, 1u) << c.delta;
    EXPECT_EQ(f.a1_pattern_counter, c.expected_counter) << "delta " << c.delta;
  }
}

TEST(PatternAttackStateTest, ConstantBurstMigrationIsDetected) {
  // A native migration as the paper describes it: every 100 ms a burst of
  // exactly 100 packets back to back (10 us apart). Paper parameters.
  const FeatureConfig config;  // Pwin 1000, delta 0.05, PCt 3, burst gap 10 ms
  Stream stream(config);
  FlowFeatures f;
  const std::vector<bool> starts = BurstsOfSizes(std::vector<int>(100, 100));  // 10'000 packets
  uint64_t t = FeedBursts(stream, f, Slice(starts, 0, 3'000));
  EXPECT_EQ(f.a1_windows, 3u);
  EXPECT_EQ(f.a1_pattern_counter, 3u);
  EXPECT_FALSE(f.pattern_detected(config));
  FeedBursts(stream, f, Slice(starts, 3'000, starts.size()), t);
  EXPECT_EQ(f.a1_windows, 10u);
  EXPECT_EQ(f.a1_pattern_counter, 10u);
  EXPECT_TRUE(f.pattern_detected(config));
  EXPECT_NEAR(f.duration_seconds(), 99 * 0.1 + 9'900 * 10e-6, 1e-9);
}

TEST(PatternAttackStateTest, SlightlyJitteredBurstsAreStillDetected) {
  // Burst sizes 99..101: CoV of the distances about 0.008 < 0.05.
  std::mt19937 rng(7);
  std::vector<int> sizes;
  for (int i = 0; i < 100; ++i) sizes.push_back(99 + static_cast<int>(rng() % 3));
  Stream stream(FeatureConfig{});
  FlowFeatures f;
  FeedBursts(stream, f, BurstsOfSizes(sizes));
  EXPECT_GE(f.a1_windows, 9u);
  EXPECT_EQ(f.a1_pattern_counter, f.a1_windows);
  EXPECT_TRUE(f.pattern_detected(FeatureConfig{}));
}

TEST(PatternAttackStateTest, RandomBurstSizesAreNeverDetected) {
  // Bursts of 1..60 packets: CoV of the distances about 0.55, far above 0.05.
  std::mt19937 rng(42);
  std::vector<int> sizes;
  for (int i = 0; i < 1'000; ++i) sizes.push_back(1 + static_cast<int>(rng() % 60));
  const FeatureConfig config;
  Stream stream(config);
  FlowFeatures f;
  FeedBursts(stream, f, BurstsOfSizes(sizes));
  EXPECT_GT(f.a1_windows, 20u);
  EXPECT_EQ(f.a1_pattern_counter, 0u);
  EXPECT_FALSE(f.pattern_detected(config));
}

TEST(PatternAttackStateTest, BulkFlowWithoutGapsHasNoDistances) {
  const FeatureConfig config;
  Stream stream(config);
  FlowFeatures f;
  FeedBursts(stream, f, std::vector<bool>(20'000, false));
  EXPECT_EQ(f.packets, 20'000u);
  EXPECT_EQ(f.a1_distances, 0u);
  EXPECT_EQ(f.a1_windows, 0u);
  EXPECT_EQ(f.a1_pattern_counter, 0u);
  EXPECT_FALSE(f.pattern_detected(config));
}

// ---------------------------------------------------------------- Algorithm 2

struct Checkpoint {
  uint64_t stream_packets;
  // Complete windows, from the one holding the flow's first packet, per slot.
  std::vector<double> a_w2, a_w4, b_w2, b_w4;
};

void ExpectCov(const FlowFeatures& f, const FeatureConfig& config, size_t slot,
               uint64_t stream_packets, const std::vector<double>& windows) {
  SCOPED_TRACE(::testing::Message()
               << "W=" << config.byte_windows[slot] << " stream_packets=" << stream_packets);
  EXPECT_EQ(ByteWindowCount(f, config, slot, stream_packets), windows.size());
  const double want = CoefficientOfVariation(windows);
  const double got = ByteWindowCov(f, config, slot, stream_packets);
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << got;
  } else {
    EXPECT_NEAR(got, want, 1e-12 * std::max(1.0, want));
  }
}

// Two flows A and B in one stream, windows W = 2 and W = 4:
//
//   index  0    1   2    3    4   5   6    7   8   9   10   11
//   flow   A    B   A    A    B   B   A    B   B   B   A    B
//   bytes  100  10  200  300  20  30  400  40  50  60  500  70
//
// W=2 windows [0,1] [2,3] [4,5] [6,7] [8,9] [10,11]:
//   A: 100 500 0 400 0 500      B: 10 0 50 40 110 70
// W=4 windows [0-3] [4-7] [8-11]:
//   A: 600 400 500              B: 10 90 180
// A window counts once the stream has passed its end.
TEST(ByteWindowTest, HandComputedTwoFlowsWithZeroWindows) {
  FeatureConfig config;
  config.byte_windows = {2, 4};
  config.byte_window_count = 2;
  ASSERT_TRUE(config.Validate().ok());
  const std::vector<std::pair<char, uint32_t>> packets = {
      {'A', 100}, {'B', 10}, {'A', 200}, {'A', 300}, {'B', 20},  {'B', 30},
      {'A', 400}, {'B', 40}, {'B', 50},  {'B', 60},  {'A', 500}, {'B', 70},
  };
  const std::vector<Checkpoint> checkpoints = {
      // After index 1: only window [0,1] is complete.
      {2, {100}, {}, {10}, {}},
      // After index 3: A's windows [0,1], [2,3]; B's [0,1] (10) and [2,3] (0,
      // B's latest packet is at 1 so the window [2,3] does not count for B).
      {4, {100, 500}, {600}, {10}, {10}},
      // After index 6: A's latest window [6,7] is still open.
      {7, {100, 500, 0}, {600}, {10, 0, 50}, {10}},
      {11, {100, 500, 0, 400, 0}, {600, 400}, {10, 0, 50, 40, 110}, {10, 90}},
      {12, {100, 500, 0, 400, 0, 500}, {600, 400, 500}, {10, 0, 50, 40, 110, 70}, {10, 90, 180}},
  };
  Stream stream(config);
  FlowFeatures a;
  FlowFeatures b;
  size_t next = 0;
  for (size_t i = 0; i < packets.size(); ++i) {
    stream.Send(packets[i].first == 'A' ? a : b, 1'000 * (i + 1), packets[i].second);
    if (stream.packets() == 4) {
      // Spot value, so the reference itself is checked: {100, 500}.
      EXPECT_NEAR(ByteWindowCov(a, config, 0, 4), 200.0 / 300.0, 1e-12);
    }
    if (next < checkpoints.size() && stream.packets() == checkpoints[next].stream_packets) {
      const Checkpoint& c = checkpoints[next++];
      ExpectCov(a, config, 0, c.stream_packets, c.a_w2);
      ExpectCov(a, config, 1, c.stream_packets, c.a_w4);
      ExpectCov(b, config, 0, c.stream_packets, c.b_w2);
      ExpectCov(b, config, 1, c.stream_packets, c.b_w4);
    }
  }
  ASSERT_EQ(next, checkpoints.size());
  EXPECT_EQ(a.bytes, 1'500u);
  EXPECT_EQ(b.bytes, 280u);
  // CoV of {600, 400, 500} = sqrt(20000 / 3) / 500.
  EXPECT_NEAR(ByteWindowCov(a, config, 1, 12), std::sqrt(20'000.0 / 3) / 500, 1e-12);
  // The per-slot state: the open window's bytes and the closed windows' squares.
  EXPECT_EQ(a.a2_current_bytes[0], 500u);
  EXPECT_DOUBLE_EQ(a.a2_sumsq[0], 100.0 * 100 + 500.0 * 500 + 400.0 * 400);
  EXPECT_EQ(b.a2_current_bytes[1], 180u);
  EXPECT_DOUBLE_EQ(b.a2_sumsq[1], 10.0 * 10 + 90.0 * 90);

  // Windows after a flow's latest packet do not count (the flow has ended).
  for (int i = 0; i < 30; ++i) stream.Send(b, 100'000, 70);
  ExpectCov(a, config, 0, stream.packets(), {100, 500, 0, 400, 0, 500});
  ExpectCov(a, config, 1, stream.packets(), {600, 400, 500});
}

TEST(ByteWindowTest, LoneFlowWithEqualPacketsHasZeroCov) {
  FeatureConfig config;
  config.byte_windows = {100, 200, 300};
  config.byte_window_count = 3;
  Stream stream(config);
  FlowFeatures f;
  for (uint64_t i = 0; i < 1'000; ++i) stream.Send(f, i * 10 * kUs, 1'500);
  EXPECT_EQ(ByteWindowCount(f, config, 0, stream.packets()), 10u);
  EXPECT_EQ(ByteWindowCount(f, config, 1, stream.packets()), 5u);
  EXPECT_EQ(ByteWindowCount(f, config, 2, stream.packets()), 3u);  // [900, 1200) is open
  for (size_t slot = 0; slot < 3; ++slot) {
    EXPECT_EQ(ByteWindowCov(f, config, slot, stream.packets()), 0.0) << slot;
  }
}

TEST(ByteWindowTest, NanWithFewerThanTwoCompleteWindows) {
  FeatureConfig config;
  config.byte_windows = {10};
  config.byte_window_count = 1;
  Stream stream(config);
  FlowFeatures f;
  EXPECT_EQ(ByteWindowCount(f, config, 0, 0), 0u);
  EXPECT_TRUE(std::isnan(ByteWindowCov(f, config, 0, 0)));
  for (int i = 0; i < 19; ++i) stream.Send(f, 1'000 * i, 100 + i);
  EXPECT_EQ(ByteWindowCount(f, config, 0, stream.packets()), 1u);
  EXPECT_TRUE(std::isnan(ByteWindowCov(f, config, 0, stream.packets())));
  stream.Send(f, 100'000, 100);
  EXPECT_EQ(ByteWindowCount(f, config, 0, stream.packets()), 2u);
  EXPECT_FALSE(std::isnan(ByteWindowCov(f, config, 0, stream.packets())));
}

TEST(ByteWindowTest, FlowSeenInOneWindowOnlyHasNanCov) {
  FeatureConfig config;
  config.byte_windows = {100};
  config.byte_window_count = 1;
  Stream stream(config);
  FlowFeatures f;
  for (int i = 0; i < 50; ++i) stream.Send(f, 1'000 * i, 1'000);
  for (int i = 0; i < 500; ++i) stream.SendOther();
  EXPECT_EQ(ByteWindowCount(f, config, 0, stream.packets()), 1u);
  EXPECT_TRUE(std::isnan(ByteWindowCov(f, config, 0, stream.packets())));
}

// Every window's bytes of every flow, stored in full: the straightforward
// version of what FlowFeatures keeps in constant space.
class ReferenceWindows {
 public:
  ReferenceWindows(size_t flows, const FeatureConfig& config)
      : config_(config),
        bytes_(flows, std::vector<std::map<uint64_t, double>>(config.byte_window_count)),
        first_(flows, 0),
        last_(flows, 0),
        seen_(flows, false) {}

  void Add(size_t flow, uint64_t stream_index, uint32_t wire_bytes) {
    for (size_t s = 0; s < config_.byte_window_count; ++s) {
      bytes_[flow][s][stream_index / config_.byte_windows[s]] += wire_bytes;
    }
    if (!seen_[flow]) first_[flow] = stream_index;
    seen_[flow] = true;
    last_[flow] = stream_index;
  }

  std::vector<double> Windows(size_t flow, size_t slot, uint64_t stream_packets) const {
    std::vector<double> out;
    if (!seen_[flow]) return out;
    const uint64_t w = config_.byte_windows[slot];
    for (uint64_t k = first_[flow] / w; k <= last_[flow] / w; ++k) {
      if ((k + 1) * w > stream_packets) break;  // not complete yet
      auto it = bytes_[flow][slot].find(k);
      out.push_back(it == bytes_[flow][slot].end() ? 0.0 : it->second);
    }
    return out;
  }

 private:
  FeatureConfig config_;
  std::vector<std::vector<std::map<uint64_t, double>>> bytes_;
  std::vector<uint64_t> first_;
  std::vector<uint64_t> last_;
  std::vector<bool> seen_;
};

TEST(ByteWindowTest, MatchesReferenceOnRandomStreams) {
  std::mt19937_64 rng(12345);
  int comparisons = 0;
  int finite = 0;
  for (int round = 0; round < 30; ++round) {
    SCOPED_TRACE(round);
    FeatureConfig config;
    config.byte_window_count = 1 + rng() % kMaxByteWindows;
    uint32_t w = 0;
    for (size_t s = 0; s < config.byte_window_count; ++s) {
      w += 1 + static_cast<uint32_t>(rng() % 60);
      config.byte_windows[s] = w;
    }
    ASSERT_TRUE(config.Validate().ok()) << config.WindowsToString();
    SCOPED_TRACE(config.WindowsToString());

    // Flows with very different shares of the stream, so some skip many windows.
    constexpr size_t kFlows = 6;
    const std::vector<double> weights = {40, 20, 10, 5, 1, 0.2};
    std::discrete_distribution<size_t> pick(weights.begin(), weights.end());
    std::vector<FlowFeatures> flows(kFlows);
    ReferenceWindows ref(kFlows, config);
    Stream stream(config);
    const uint64_t length = 500 + rng() % 3'000;
    for (uint64_t i = 0; i < length; ++i) {
      size_t flow = pick(rng);
      uint32_t bytes = 40 + static_cast<uint32_t>(rng() % 1'461);
      stream.Send(flows[flow], i * 1'000, bytes);
      ref.Add(flow, i, bytes);
      if (i % 97 != 0 && i + 1 != length) continue;
      for (size_t f = 0; f < kFlows; ++f) {
        for (size_t s = 0; s < config.byte_window_count; ++s) {
          std::vector<double> windows = ref.Windows(f, s, stream.packets());
          ASSERT_EQ(ByteWindowCount(flows[f], config, s, stream.packets()), windows.size())
              << "flow " << f << " slot " << s << " at " << stream.packets();
          const double want = CoefficientOfVariation(windows);
          const double got = ByteWindowCov(flows[f], config, s, stream.packets());
          ++comparisons;
          if (std::isnan(want)) {
            ASSERT_TRUE(std::isnan(got)) << got;
            continue;
          }
          ++finite;
          ASSERT_NEAR(got, want, std::max(1e-9 * std::abs(want), 1e-15))
              << "flow " << f << " slot " << s << " at " << stream.packets();
        }
      }
    }
  }
  // The comparison covered real values, not just NaNs.
  EXPECT_GT(finite, comparisons / 2);
}

// ---------------------------------------------------------------- IPT sketch

// Sends packets separated by the given gaps (first at t = 1 s).
FlowFeatures FlowWithGaps(const std::vector<uint64_t>& gaps) {
  Stream stream(FeatureConfig{});
  FlowFeatures f;
  uint64_t t = 1'000 * kMs;
  stream.Send(f, t, 100);
  for (uint64_t g : gaps) {
    t += g;
    stream.Send(f, t, 100);
  }
  return f;
}

std::vector<uint64_t> Repeat(std::vector<std::pair<uint64_t, int>> gaps_and_counts) {
  std::vector<uint64_t> out;
  for (auto [gap, n] : gaps_and_counts) out.insert(out.end(), n, gap);
  return out;
}

TEST(IptSketchTest, ExactCountsWithFewCategories) {
  FlowFeatures f =
      FlowWithGaps({1'500, 2'999, 1'500, 0, 1'500, 2'999, 10'000'000, 1'500, 0, 1'500, 2'999});
  std::vector<IptCategoryCount> top = TopIptCategories(f);
  ASSERT_EQ(top.size(), 4u);
  EXPECT_EQ(top[0].category_us, 1u);
  EXPECT_EQ(top[0].count, 5u);
  EXPECT_EQ(top[1].category_us, 2u);
  EXPECT_EQ(top[1].count, 3u);
  EXPECT_EQ(top[2].category_us, 0u);
  EXPECT_EQ(top[2].count, 2u);
  EXPECT_EQ(top[3].category_us, 10'000u);
  EXPECT_EQ(top[3].count, 1u);
}

TEST(IptSketchTest, CategoriesAreWholeMicroseconds) {
  FlowFeatures f = FlowWithGaps(Repeat({{999, 1}, {1'000, 2}, {1'999, 3}, {2'000, 4}}));
  std::vector<IptCategoryCount> top = TopIptCategories(f);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].category_us, 1u);  // 1000 and 1999 ns
  EXPECT_EQ(top[0].count, 5u);
  EXPECT_EQ(top[1].category_us, 2u);
  EXPECT_EQ(top[1].count, 4u);
  EXPECT_EQ(top[2].category_us, 0u);
  EXPECT_EQ(top[2].count, 1u);
}

TEST(IptSketchTest, TiesAreOrderedByCategory) {
  FlowFeatures f = FlowWithGaps({7'000, 3'000, 5'000});
  std::vector<IptCategoryCount> top = TopIptCategories(f);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].category_us, 3u);
  EXPECT_EQ(top[1].category_us, 5u);
  EXPECT_EQ(top[2].category_us, 7u);
}

TEST(IptSketchTest, ExactWithTenCategoriesThenEvictsTheSmallest) {
  // Category c (0..9 us) seen c + 1 times: exactly kIptTopK categories.
  std::vector<std::pair<uint64_t, int>> spec;
  for (int c = 0; c < static_cast<int>(kIptTopK); ++c) spec.push_back({c * kUs + 500, c + 1});
  std::vector<uint64_t> gaps = Repeat(spec);
  FlowFeatures f = FlowWithGaps(gaps);
  std::vector<IptCategoryCount> top = TopIptCategories(f);
  ASSERT_EQ(top.size(), kIptTopK);
  for (size_t i = 0; i < kIptTopK; ++i) {
    EXPECT_EQ(top[i].category_us, kIptTopK - 1 - i);
    EXPECT_EQ(top[i].count, kIptTopK - i);
  }

  // An eleventh category replaces the least frequent (0 us, count 1) and
  // inherits its count: Space-Saving's over-estimate.
  gaps.push_back(50 * kUs);
  f = FlowWithGaps(gaps);
  top = TopIptCategories(f);
  ASSERT_EQ(top.size(), kIptTopK);
  bool found = false;
  for (const IptCategoryCount& e : top) {
    EXPECT_NE(e.category_us, 0u);
    if (e.category_us == 50) {
      found = true;
      EXPECT_EQ(e.count, 2u);
    }
  }
  EXPECT_TRUE(found);
}

TEST(IptSketchTest, FrequentCategoryStaysOnTopAmongManyRareOnes) {
  // A 7 us gap every other packet, 150 distinct rare gaps (100..249 us) between.
  std::vector<uint64_t> gaps;
  for (int i = 0; i < 150; ++i) {
    gaps.push_back(7 * kUs + 300);
    gaps.push_back((100 + i) * kUs);
  }
  const uint32_t true_count = 150;
  FlowFeatures f = FlowWithGaps(gaps);
  std::vector<IptCategoryCount> top = TopIptCategories(f);
  ASSERT_EQ(top.size(), kIptTopK);
  EXPECT_EQ(top[0].category_us, 7u);
  EXPECT_GE(top[0].count, true_count);
  EXPECT_LE(top[0].count, true_count + (f.packets - 1) / kIptTopK);
  // Every increment lands somewhere: counts add up to the number of gaps.
  uint64_t total = 0;
  for (const IptCategoryCount& e : top) total += e.count;
  EXPECT_EQ(total, f.packets - 1);
}

// ---------------------------------------------------------------- config

TEST(FeatureConfigTest, DefaultsAreValidAndThePapers) {
  FeatureConfig config;
  EXPECT_TRUE(config.Validate().ok()) << config.Validate();
  EXPECT_EQ(config.pattern_window, 1000u);
  EXPECT_DOUBLE_EQ(config.pattern_delta, 0.05);
  EXPECT_EQ(config.pattern_count_threshold, 3u);
  EXPECT_EQ(config.WindowsToString(), "100,200,300,500,1000,2000,3000");
  EXPECT_EQ(config.WindowSlot(100), 0);
  EXPECT_EQ(config.WindowSlot(500), 3);
  EXPECT_EQ(config.WindowSlot(3000), 6);
  EXPECT_EQ(config.WindowSlot(400), -1);
  EXPECT_EQ(config.WindowSlot(0), -1);  // the unused eighth slot is not a window
}

// Validate() fails and its message names `field`.
void ExpectInvalid(const FeatureConfig& config, const std::string& field) {
  absl::Status s = config.Validate();
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find(field), std::string::npos) << s;
}

TEST(FeatureConfigTest, RejectsZeroBurstGap) {
  FeatureConfig config;
  config.burst_gap_ns = 0;
  ExpectInvalid(config, "burst_gap");
}

TEST(FeatureConfigTest, RejectsPatternWindowBelowTwo) {
  FeatureConfig config;
  config.pattern_window = 1;
  ExpectInvalid(config, "pattern_window");
  config.pattern_window = 0;
  ExpectInvalid(config, "pattern_window");
  config.pattern_window = 2;
  EXPECT_TRUE(config.Validate().ok());
}

TEST(FeatureConfigTest, RejectsBadDeltaAndMinimumDistances) {
  FeatureConfig config;
  config.pattern_delta = 0;
  ExpectInvalid(config, "pattern_delta");
  config.pattern_delta = std::nan("");
  ExpectInvalid(config, "pattern_delta");
  config.pattern_delta = 0.05;
  config.pattern_min_distances = 0;
  ExpectInvalid(config, "pattern_min_distances");
}

TEST(FeatureConfigTest, RejectsNonAscendingWindows) {
  FeatureConfig config;
  config.byte_windows = {100, 100, 300};
  config.byte_window_count = 3;
  ExpectInvalid(config, "ascending");
  config.byte_windows = {300, 200};
  config.byte_window_count = 2;
  ExpectInvalid(config, "ascending");
  config.byte_windows = {0, 200};
  ExpectInvalid(config, "> 0");
  config.byte_windows = {100, 200};
  EXPECT_TRUE(config.Validate().ok());
}

TEST(FeatureConfigTest, RejectsTooManyOrNoWindows) {
  FeatureConfig config;
  config.byte_windows = {1, 2, 3, 4, 5, 6, 7, 8};
  config.byte_window_count = kMaxByteWindows;
  EXPECT_TRUE(config.Validate().ok());
  config.byte_window_count = kMaxByteWindows + 1;
  ExpectInvalid(config, "byte windows");
  config.byte_window_count = 0;
  ExpectInvalid(config, "byte windows");
}

}  // namespace
}  // namespace shroud
