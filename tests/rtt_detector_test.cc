// Tests of the RTT migration monitor's detector (control/rttmon) in simulated
// time with seeded randomness: outages of N ms are one red event whose
// downtime is within one probe interval of N, jitter alone never turns red, a
// queue build-up is yellow not red (unless configured so), and the config is
// validated.
#include "control/rttmon/rtt_detector.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <ostream>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shroud::rttmon {

// Readable failures (gtest finds it by ADL).
void PrintTo(const RttEvent& e, std::ostream* os) {
  *os << "{event " << e.id << " " << RttStateName(e.state) << " " << e.reason << " start "
      << e.start_ns / 1e9 << " s end " << e.end_ns / 1e9 << " s downtime " << e.downtime_ms
      << " ms gap " << e.downtime_gap_ms << " ms lost " << e.lost << " peak " << e.peak_rtt_ms
      << " ms baseline " << e.baseline_ms << " ms silence " << e.max_silence_ms << " ms}";
}

namespace {

using ::testing::HasSubstr;

constexpr int64_t kUs = 1'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;

// What happens to the probe sent at a time: its RTT, or nullopt when lost.
using PathModel = std::function<std::optional<int64_t>(int64_t sent_ns)>;

struct SimResult {
  std::vector<RttEvent> events;
  std::vector<RttTransition> transitions;
  uint64_t lost = 0;
};

// Drives the detector like RttMonitor does: sends on a grid, replies at
// sent + RTT, loss decisions at sent + timeout, late replies after that,
// Advance() at every step, all in time order.
class Sim {
 public:
  explicit Sim(RttDetectorConfig config) : config_(config) {
    auto d = RttDetector::Create(config);
    EXPECT_TRUE(d.ok()) << d.status();
    det_.emplace(std::move(*d));
  }

  // Probes every interval from 0 to duration; `skip(sent)` true leaves a slot
  // out (a stalled prober).
  SimResult Run(int64_t duration_ns, const PathModel& path,
                const std::function<bool(int64_t)>& skip = nullptr) {
    // (time, order, kind, seq, sent, rtt): kind 0 send, 1 reply, 2 loss, 3 late reply.
    using Ev = std::tuple<int64_t, int, int, uint64_t, int64_t, int64_t>;
    std::priority_queue<Ev, std::vector<Ev>, std::greater<>> q;
    int order = 0;
    uint64_t seq = 0;
    uint64_t skipped = 0;
    std::map<uint64_t, uint64_t> skipped_before;  // seq -> slots skipped just before it
    for (int64_t t = 0; t < duration_ns; t += config_.interval_ns) {
      if (skip && skip(t)) {
        ++skipped;
        continue;
      }
      skipped_before[seq] = std::exchange(skipped, 0);
      q.emplace(t, order++, 0, seq++, t, 0);
    }
    SimResult r;
    while (!q.empty()) {
      auto [time, ord, kind, s, sent, rtt] = q.top();
      q.pop();
      det_->Advance(time);
      switch (kind) {
        case 0: {
          det_->OnSent(s, sent, skipped_before[s]);
          std::optional<int64_t> outcome = path(sent);
          if (!outcome || *outcome >= config_.loss_timeout_ns) {
            q.emplace(sent + config_.loss_timeout_ns, order++, 2, s, sent, 0);
            if (outcome) q.emplace(sent + *outcome, order++, 3, s, sent, *outcome);
          } else {
            q.emplace(sent + *outcome, order++, 1, s, sent, *outcome);
          }
          break;
        }
        case 1:
          EXPECT_TRUE(det_->OnReply(s, sent, rtt).ok());
          break;
        case 2:
          EXPECT_TRUE(det_->OnLoss(s, sent).ok());
          ++r.lost;
          break;
        case 3:
          det_->OnLateReply(s, sent, rtt);
          break;
      }
      Collect(&r);
    }
    det_->Finish(duration_ns + config_.loss_timeout_ns);
    Collect(&r);
    return r;
  }

  RttDetector& detector() { return *det_; }

 private:
  void Collect(SimResult* r) {
    for (auto& e : det_->TakeEvents()) r->events.push_back(e);
    for (auto& t : det_->TakeTransitions()) r->transitions.push_back(t);
  }

  RttDetectorConfig config_;
  std::optional<RttDetector> det_;
};

RttDetectorConfig DefaultConfig() { return RttDetectorConfig{}; }

// A quiet LAN/veth path: 50 us +- a few us, like the netns veth.
PathModel Lan(std::mt19937_64& rng) {
  return [&rng](int64_t) -> std::optional<int64_t> {
    std::normal_distribution<double> d(50.0, 4.0);
    return static_cast<int64_t>(std::max(10.0, d(rng)) * kUs);
  };
}

// The target unreachable during [from, to): probes sent then are dropped.
PathModel WithOutage(PathModel base, int64_t from, int64_t to) {
  return [=](int64_t sent) -> std::optional<int64_t> {
    if (sent >= from && sent < to) return std::nullopt;
    return base(sent);
  };
}

// The target unreachable during [from, to) but the probes are held (a queue
// in front of a paused VM) and answered when it resumes: the demo paper's
// "strongly increased" RTT.
PathModel WithHeldOutage(PathModel base, int64_t from, int64_t to) {
  return [=](int64_t sent) -> std::optional<int64_t> {
    std::optional<int64_t> r = base(sent);
    if (sent >= from && sent < to && r) return (to - sent) + *r;
    return r;
  };
}

std::vector<RttEvent> Red(const std::vector<RttEvent>& events) {
  std::vector<RttEvent> out;
  for (const auto& e : events) {
    if (e.state == RttState::kRed) out.push_back(e);
  }
  return out;
}

// --- outages ---

TEST(RttDetector, OutageOfNmsIsOneRedEventWithDowntimeWithinOneInterval) {
  const RttDetectorConfig config = DefaultConfig();
  const double interval_ms = config.interval_ns / 1e6;
  std::mt19937_64 rng(42);
  for (int64_t n_ms : {250, 300, 555, 1000, 2000, 4321}) {
    for (int rep = 0; rep < 5; ++rep) {
      SCOPED_TRACE(testing::Message() << "outage " << n_ms << " ms, rep " << rep);
      // A random phase against the probe grid.
      const int64_t from = 5 * kSec + static_cast<int64_t>(rng() % 10'000) * kUs;
      const int64_t to = from + n_ms * kMs;
      Sim sim(config);
      SimResult r = sim.Run(to + 6 * kSec, WithOutage(Lan(rng), from, to));
      ASSERT_EQ(r.events.size(), 1u);
      const RttEvent& e = r.events[0];
      EXPECT_EQ(e.state, RttState::kRed);
      EXPECT_EQ(e.reason, "outage");
      EXPECT_FALSE(e.open);
      EXPECT_LE(std::fabs(e.downtime_ms - n_ms), interval_ms) << e.downtime_ms;
      EXPECT_LE(std::fabs(e.downtime_gap_ms - n_ms), interval_ms) << e.downtime_gap_ms;
      // Red while the target is still down: the silence rule, min_outage_ms
      // plus about one interval after the outage began.
      const double delay_ms = (e.red_ns - from) / 1e6;
      EXPECT_GE(delay_ms, config.min_outage_ms);
      EXPECT_LE(delay_ms, config.min_outage_ms + 2 * interval_ms + 1);
      // Start is the first unanswered probe: within one interval after the truth.
      EXPECT_GE(e.start_ns, from);
      EXPECT_LT(e.start_ns - from, config.interval_ns);
      EXPECT_NEAR((e.end_ns - e.start_ns) / 1e6, n_ms, 2 * interval_ms);
      // Transitions: green -> red -> green.
      ASSERT_EQ(r.transitions.size(), 2u);
      EXPECT_EQ(r.transitions[0].to, RttState::kRed);
      EXPECT_EQ(r.transitions[1].to, RttState::kGreen);
    }
  }
}

TEST(RttDetector, HeldProbesAnsweredAfterTheOutageAreTheRttGap) {
  const RttDetectorConfig config = DefaultConfig();
  std::mt19937_64 rng(7);
  for (int64_t n_ms : {300, 800, 1500}) {
    SCOPED_TRACE(testing::Message() << "held outage " << n_ms << " ms");
    const int64_t from = 4 * kSec + 3 * kMs;
    const int64_t to = from + n_ms * kMs;
    Sim sim(config);
    SimResult r = sim.Run(to + 6 * kSec, WithHeldOutage(Lan(rng), from, to));
    ASSERT_EQ(r.events.size(), 1u);
    const RttEvent& e = r.events[0];
    EXPECT_EQ(e.state, RttState::kRed);
    // Held, not dropped, unless held longer than the 1 s loss timeout.
    const double expect_lost = std::max<int64_t>(0, n_ms - 1000) / (config.interval_ns / 1e6);
    EXPECT_NEAR(static_cast<double>(e.lost), expect_lost, 1.0);
    EXPECT_EQ(e.late, e.lost);
    EXPECT_LE(std::fabs(e.downtime_gap_ms - n_ms), config.interval_ns / 1e6) << e.downtime_gap_ms;
    EXPECT_GE(e.peak_rtt_ms, std::min<int64_t>(n_ms, 1000) - 20);
    EXPECT_LE((e.red_ns - from) / 1e6, config.min_outage_ms + 2 * config.interval_ns / 1e6 + 1);
  }
}

TEST(RttDetector, OutageIsDetectedFromOutcomesAloneWithoutAdvance) {
  // Offline replay (no clock, no OnSent): the loss run and the reply gap.
  auto det = RttDetector::Create(DefaultConfig());
  ASSERT_TRUE(det.ok());
  const int64_t T = 10 * kMs;
  uint64_t seq = 0;
  for (int i = 0; i < 300; ++i, ++seq) ASSERT_TRUE(det->OnReply(seq, seq * T, 50 * kUs).ok());
  for (int i = 0; i < 30; ++i, ++seq) ASSERT_TRUE(det->OnLoss(seq, seq * T).ok());
  for (int i = 0; i < 300; ++i, ++seq) ASSERT_TRUE(det->OnReply(seq, seq * T, 50 * kUs).ok());
  det->Finish(seq * T);
  std::vector<RttEvent> events = det->TakeEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].state, RttState::kRed);
  EXPECT_DOUBLE_EQ(events[0].downtime_ms, 300.0);
  EXPECT_NEAR(events[0].downtime_gap_ms, 300.0, 0.01);
  EXPECT_EQ(events[0].outage_start_ns, 300 * T);
  EXPECT_FALSE(events[0].open);
}

TEST(RttDetector, ShortLossBurstsBelowTheThresholdStayGreen) {
  RttDetectorConfig config = DefaultConfig();
  std::mt19937_64 rng(3);
  // 19 consecutive probes (190 ms < 200 ms) lost every 3 s, and 1 % random loss.
  PathModel base = Lan(rng);
  PathModel path = [&](int64_t sent) -> std::optional<int64_t> {
    if ((sent % (3 * kSec)) >= 2 * kSec && (sent % (3 * kSec)) < 2 * kSec + 190 * kMs) {
      return std::nullopt;
    }
    if (rng() % 100 == 0) return std::nullopt;
    return base(sent);
  };
  Sim sim(config);
  SimResult r = sim.Run(60 * kSec, path);
  EXPECT_GT(r.lost, 400u);  // 20 bursts of 19 and 1 % of 6000
  EXPECT_THAT(Red(r.events), ::testing::IsEmpty());
}

TEST(RttDetector, TwoOutagesFarApartAreTwoEventsCloseTogetherOne) {
  std::mt19937_64 rng(11);
  const RttDetectorConfig config = DefaultConfig();
  {
    Sim sim(config);
    PathModel p = WithOutage(WithOutage(Lan(rng), 5 * kSec, 5300 * kMs), 10 * kSec, 10500 * kMs);
    SimResult r = sim.Run(16 * kSec, p);
    ASSERT_EQ(r.events.size(), 2u);
    EXPECT_NEAR(r.events[0].downtime_ms, 300, 10);
    EXPECT_NEAR(r.events[1].downtime_ms, 500, 10);
    EXPECT_EQ(r.events[1].id, 2u);
  }
  {
    // Within quiet_s (2 s) of each other: one migration episode, downtime summed.
    Sim sim(config);
    PathModel p = WithOutage(WithOutage(Lan(rng), 5 * kSec, 5300 * kMs), 6 * kSec, 6500 * kMs);
    SimResult r = sim.Run(12 * kSec, p);
    ASSERT_EQ(r.events.size(), 1u);
    EXPECT_NEAR(r.events[0].downtime_ms, 800, 20);
    EXPECT_NEAR(r.events[0].downtime_gap_ms, 800, 20);
  }
}

TEST(RttDetector, OneReplyDelayedWhileTheNextOnesComeBackIsNoOutage) {
  // Every 2 s one probe comes back 300 ms late (reordered behind cross
  // traffic); the probes after it are answered as usual.
  PathModel path = [](int64_t sent) -> std::optional<int64_t> {
    return (sent % (2 * kSec) == 0 ? 300 : 1) * kMs;
  };
  Sim sim(DefaultConfig());
  SimResult r = sim.Run(30 * kSec, path);
  EXPECT_THAT(r.events, ::testing::IsEmpty());
}

TEST(RttDetector, NoRedForATargetThatNeverAnswered) {
  Sim sim(DefaultConfig());
  SimResult r = sim.Run(5 * kSec, [](int64_t) -> std::optional<int64_t> { return std::nullopt; });
  EXPECT_EQ(r.lost, 500u);
  EXPECT_THAT(r.events, ::testing::IsEmpty());
  EXPECT_EQ(sim.detector().state(), RttState::kGreen);
}

TEST(RttDetector, AStalledProberIsNotAnOutage) {
  // No probes at all for 400 ms (the prober was descheduled; RttMonitor
  // skips the slots): the target said nothing because nobody asked.
  std::mt19937_64 rng(5);
  Sim sim(DefaultConfig());
  SimResult r = sim.Run(10 * kSec, Lan(rng),
                        [](int64_t t) { return t >= 5 * kSec && t < 5400 * kMs; });
  EXPECT_THAT(r.events, ::testing::IsEmpty());
}

TEST(RttDetector, AStallDuringAnOutageCostsAtMostTheStall) {
  // The target is down 5.0-6.0 s; the prober sends nothing 5.3-5.4 s.
  std::mt19937_64 rng(6);
  Sim sim(DefaultConfig());
  SimResult r = sim.Run(12 * kSec, WithOutage(Lan(rng), 5 * kSec, 6 * kSec),
                        [](int64_t t) { return t >= 5300 * kMs && t < 5400 * kMs; });
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].state, RttState::kRed);
  EXPECT_NEAR(r.events[0].downtime_ms, 900, 10);
  EXPECT_NEAR(r.events[0].downtime_gap_ms, 900, 10);
  EXPECT_NEAR(r.events[0].stall_ms, 100, 1);  // what the estimates may miss
}

TEST(RttDetector, UnfinishedOutageIsReportedOpen) {
  std::mt19937_64 rng(9);
  Sim sim(DefaultConfig());
  SimResult r = sim.Run(8 * kSec, WithOutage(Lan(rng), 5 * kSec, 100 * kSec));
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_TRUE(r.events[0].open);
  EXPECT_EQ(r.events[0].state, RttState::kRed);
  EXPECT_EQ(sim.detector().state(), RttState::kRed);
}

// --- jitter ---

TEST(RttDetector, JitterTwentyPlusMinusTenMsForTenMinutesNeverTurnsRed) {
  for (uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> jitter(10.0, 30.0);
    PathModel path = [&](int64_t) -> std::optional<int64_t> {
      return static_cast<int64_t>(jitter(rng) * kMs);
    };
    Sim sim(DefaultConfig());
    SimResult r = sim.Run(600 * kSec, path);
    EXPECT_THAT(Red(r.events), ::testing::IsEmpty());
    // Uniform jitter has no tail: not even yellow.
    EXPECT_THAT(r.events, ::testing::IsEmpty());
    RttDetectorStatus s = sim.detector().Status();
    EXPECT_NEAR(s.baseline_ms, 20.0, 0.5);
    EXPECT_NEAR(s.spread_ms, 1.4826 * 5.0, 0.5);  // MAD of U(10, 30) is 5 ms
  }
}

TEST(RttDetector, HeavyTailedJitterWithLossNeverTurnsRed) {
  // An Internet-like path: 40 ms + exponential tail (mean 5 ms), 1 % of the
  // probes delayed 80-200 ms more (a burst of cross traffic), 0.5 % lost.
  std::mt19937_64 rng(17);
  std::exponential_distribution<double> tail(1.0 / 5.0);
  std::uniform_real_distribution<double> spike(80.0, 200.0);
  PathModel path = [&](int64_t) -> std::optional<int64_t> {
    if (rng() % 200 == 0) return std::nullopt;
    double ms = 40.0 + tail(rng);
    if (rng() % 100 == 0) ms += spike(rng);
    return static_cast<int64_t>(ms * kMs);
  };
  Sim sim(DefaultConfig());
  SimResult r = sim.Run(600 * kSec, path);
  EXPECT_THAT(Red(r.events), ::testing::IsEmpty());
}

// --- queue build-up ---

// RTT base ms, ramping linearly to peak ms over ramp, holding, ramping back.
PathModel Ramp(double base_ms, double peak_ms, int64_t from, int64_t ramp, int64_t hold) {
  return [=](int64_t sent) -> std::optional<int64_t> {
    double ms = base_ms;
    const int64_t t = sent - from;
    if (t >= 0 && t < ramp) {
      ms = base_ms + (peak_ms - base_ms) * static_cast<double>(t) / static_cast<double>(ramp);
    } else if (t >= ramp && t < ramp + hold) {
      ms = peak_ms;
    } else if (t >= ramp + hold && t < 2 * ramp + hold) {
      ms = peak_ms - (peak_ms - base_ms) * static_cast<double>(t - ramp - hold) /
                         static_cast<double>(ramp);
    }
    return static_cast<int64_t>(ms * kMs);
  };
}

TEST(RttDetector, QueueBuildUpIsYellowNotRed) {
  for (int64_t ramp_ms : {500, 2000, 5000}) {
    SCOPED_TRACE(testing::Message() << "ramp " << ramp_ms << " ms");
    Sim sim(DefaultConfig());
    SimResult r = sim.Run(20 * kSec, Ramp(20, 150, 5 * kSec, ramp_ms * kMs, 1 * kSec));
    ASSERT_EQ(r.events.size(), 1u);
    const RttEvent& e = r.events[0];
    EXPECT_EQ(e.state, RttState::kYellow);
    EXPECT_EQ(e.reason, "peak");
    EXPECT_EQ(e.lost, 0u);
    EXPECT_DOUBLE_EQ(e.downtime_ms, 0.0);
    EXPECT_DOUBLE_EQ(e.downtime_gap_ms, 0.0);
    EXPECT_NEAR(e.peak_rtt_ms, 150, 1);
    EXPECT_NEAR(e.baseline_ms, 20, 0.01);
    // Yellow once the RTT passed 20 + 10 ms for three probes.
    EXPECT_GT(e.yellow_ns, 5 * kSec);
    EXPECT_LT(e.yellow_ns, 5 * kSec + ramp_ms * kMs / 2);
    EXPECT_EQ(e.red_ns, -1);
  }
}

TEST(RttDetector, QueueBuildUpIsRedWhenTheSignatureSaysSo) {
  RttDetectorConfig config = DefaultConfig();
  config.red_peak_excess_ms = 100;
  Sim sim(config);
  SimResult r = sim.Run(20 * kSec, Ramp(20, 150, 5 * kSec, 2 * kSec, 1 * kSec));
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].state, RttState::kRed);
  EXPECT_EQ(r.events[0].reason, "rtt");
  // Yellow first (the ramp passed the peak threshold), red at +100 ms.
  ASSERT_GE(r.transitions.size(), 3u);
  EXPECT_EQ(r.transitions[0].to, RttState::kYellow);
  EXPECT_EQ(r.transitions[1].to, RttState::kRed);
}

TEST(RttDetector, RequirePrecedingPeakMakesABareOutageYellow) {
  RttDetectorConfig config = DefaultConfig();
  config.require_preceding_peak = true;
  std::mt19937_64 rng(13);
  {
    Sim sim(config);
    SimResult r = sim.Run(12 * kSec, WithOutage(Lan(rng), 5 * kSec, 5500 * kMs));
    ASSERT_EQ(r.events.size(), 1u);
    EXPECT_EQ(r.events[0].state, RttState::kYellow);
    EXPECT_EQ(r.events[0].reason, "outage");
    EXPECT_NEAR(r.events[0].downtime_ms, 500, 10);
  }
  {
    // Pre-copy: RTT up for 3 s (a loaded link), then the stop-and-copy.
    PathModel pre = Ramp(0.05, 40, 5 * kSec, 500 * kMs, 2 * kSec);
    Sim sim(config);
    SimResult r = sim.Run(16 * kSec, WithOutage(pre, 8 * kSec, 8500 * kMs));
    ASSERT_EQ(r.events.size(), 1u);
    EXPECT_EQ(r.events[0].state, RttState::kRed);
    EXPECT_EQ(r.events[0].reason, "peak+outage");
    EXPECT_NEAR(r.events[0].downtime_ms, 500, 10);
    EXPECT_LT(r.events[0].yellow_ns, r.events[0].red_ns);
  }
}

TEST(RttDetector, ALevelShiftBecomesTheNewBaseline) {
  RttDetectorConfig config = DefaultConfig();
  config.rebaseline_after_s = 10;
  // 20 ms, then from 5 s on 60 ms for good (a route change).
  PathModel path = [](int64_t sent) -> std::optional<int64_t> {
    return (sent < 5 * kSec ? 20 : 60) * kMs;
  };
  Sim sim(config);
  SimResult r = sim.Run(40 * kSec, path);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].state, RttState::kYellow);
  EXPECT_EQ(r.events[0].reason, "level-shift");
  EXPECT_EQ(sim.detector().state(), RttState::kGreen);
  EXPECT_NEAR(sim.detector().Status().baseline_ms, 60, 0.01);
}

TEST(RttDetector, SingleOutliersAreNotPeaks) {
  // Two probes in a row 50 ms late every second: below peak_min_samples.
  PathModel path = [](int64_t sent) -> std::optional<int64_t> {
    return (sent % kSec < 20 * kMs ? 50 : 1) * kMs;
  };
  Sim sim(DefaultConfig());
  SimResult r = sim.Run(30 * kSec, path);
  EXPECT_THAT(r.events, ::testing::IsEmpty());
}

// --- input handling ---

TEST(RttDetector, OutcomesOutOfOrderAreAnalysedInSequenceOrder) {
  auto det = RttDetector::Create(DefaultConfig());
  ASSERT_TRUE(det.ok());
  const int64_t T = 10 * kMs;
  det->OnSent(0, 0);
  det->OnSent(1, T);
  det->OnSent(2, 2 * T);
  ASSERT_TRUE(det->OnReply(2, 2 * T, 1 * kMs).ok());
  ASSERT_TRUE(det->OnReply(1, T, 5 * kMs).ok());
  ASSERT_TRUE(det->OnLoss(0, 0).ok());
  // Resolved twice / before the start.
  absl::Status dup = det->OnReply(1, T, 5 * kMs);
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dup.message()), HasSubstr("resolved twice"));
  EXPECT_EQ(det->OnLoss(2, 2 * T).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(det->OnReply(3, 3 * T, -1).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RttDetector, StatusReportsTheBaselineAndTheOpenEpisode) {
  std::mt19937_64 rng(21);
  RttDetectorConfig config = DefaultConfig();
  auto det = RttDetector::Create(config);
  ASSERT_TRUE(det.ok());
  RttDetectorStatus before = det->Status();
  EXPECT_FALSE(before.baseline_ready);
  EXPECT_DOUBLE_EQ(before.outage_threshold_ms, 200.0);
  const int64_t T = config.interval_ns;
  uint64_t seq = 0;
  for (; seq < 100; ++seq) {
    det->OnSent(seq, seq * T);
    ASSERT_TRUE(det->OnReply(seq, seq * T, 20 * kMs).ok());
    det->Advance(seq * T + 20 * kMs);
  }
  RttDetectorStatus s = det->Status();
  EXPECT_TRUE(s.baseline_ready);
  EXPECT_DOUBLE_EQ(s.baseline_ms, 20.0);
  EXPECT_DOUBLE_EQ(s.spread_ms, 0.0);
  EXPECT_DOUBLE_EQ(s.peak_threshold_ms, 30.0);  // the 10 ms floor
  EXPECT_FALSE(s.open_event.has_value());
  // Silence: probes keep going out, nothing comes back.
  EXPECT_EQ(det->SilenceDeadlineNs(), 99 * T + 20 * kMs + T + 200 * kMs);
  for (; seq < 130; ++seq) {
    det->OnSent(seq, seq * T);
    det->Advance(seq * T);
  }
  s = det->Status();
  EXPECT_EQ(s.state, RttState::kRed);
  ASSERT_TRUE(s.open_event.has_value());
  EXPECT_TRUE(s.open_event->open);
  EXPECT_GT(s.silence_ms, 200.0);
  EXPECT_EQ(det->SilenceDeadlineNs(), INT64_MAX);  // already red
}

// --- config ---

TEST(RttDetectorConfig, DefaultsAreValid) { EXPECT_TRUE(RttDetectorConfig{}.Validate().ok()); }

TEST(RttDetectorConfig, BadValuesAreRefusedWithTheFieldName) {
  struct Case {
    std::function<void(RttDetectorConfig&)> change;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](auto& c) { c.interval_ns = 0; }, "interval"},
      {[](auto& c) { c.loss_timeout_ns = -1; }, "timeout"},
      {[](auto& c) { c.baseline_window_s = 0; }, "baseline_window_s"},
      {[](auto& c) { c.baseline_max_samples = 2; }, "baseline_max_samples"},
      {[](auto& c) { c.warmup_samples = 0; }, "warmup_samples"},
      {[](auto& c) { c.warmup_samples = 5000; }, "warmup_samples"},
      {[](auto& c) { c.peak_k = -1; }, "peak_k"},
      {[](auto& c) { c.peak_k = NAN; }, "peak_k"},
      {[](auto& c) { c.peak_floor_ms = 0; }, "peak_floor_ms"},
      {[](auto& c) { c.peak_min_samples = 0; }, "peak_min_samples"},
      {[](auto& c) { c.min_outage_ms = 0; }, "min_outage_ms"},
      {[](auto& c) { c.min_outage_ms = 5; }, "at least one probe interval"},
      {[](auto& c) { c.outage_spread_k = -2; }, "outage_spread_k"},
      {[](auto& c) { c.preceding_peak_window_s = 0; }, "preceding_peak_window_s"},
      {[](auto& c) { c.red_peak_excess_ms = -5; }, "red_peak_excess_ms"},
      {[](auto& c) { c.quiet_s = 0; }, "quiet_s"},
      {[](auto& c) { c.rebaseline_after_s = 1; }, "rebaseline_after_s"},
  };
  for (const Case& k : cases) {
    RttDetectorConfig c;
    k.change(c);
    absl::Status s = c.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << k.field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(k.field));
    EXPECT_FALSE(RttDetector::Create(c).ok()) << k.field;
  }
}

}  // namespace
}  // namespace shroud::rttmon
