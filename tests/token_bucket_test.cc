// Tests of the Dynamic Hierarchical Token Bucket in simulated time (plain
// integer nanoseconds): bucket arithmetic, conformance to Algorithm 3's rate
// every 10 ms, rate changes without token resets, borrowing, ceilings, the
// root limit, queue limits, the default class, and no allocation on the
// per-packet path.
#include "dataplane/core/token_bucket.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/core/rate_variation.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/allocation_counter.h"

namespace shroud {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kUs = 1'000;
constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSec = 1'000'000'000;
constexpr ShapedClass kMig = ShapedClass::kMigration;
constexpr ShapedClass kChaff = ShapedClass::kChaff;

// An independent (r, b) conformance check: a bucket in 128-bit arithmetic that
// starts full, refills at the rate in force and must never go negative when
// charged with what the shaper sent. A sequence passes iff it never exceeds
// b + integral of r over any interval.
class ReferenceBucket {
 public:
  ReferenceBucket(uint64_t rate, uint64_t burst_bytes, uint64_t now_ns)
      : tokens_(static_cast<__int128>(burst_bytes) * kTokenUnitsPerByte),
        burst_(tokens_),
        rate_(rate),
        last_(now_ns) {}
  void Advance(uint64_t now_ns) {
    if (now_ns <= last_) return;
    tokens_ += static_cast<__int128>(rate_) * (now_ns - last_);
    if (tokens_ > burst_) tokens_ = burst_;
    last_ = now_ns;
  }
  void SetRate(uint64_t now_ns, uint64_t rate) {
    Advance(now_ns);
    rate_ = rate;
  }
  // False when `bytes` more would break conformance.
  bool Charge(uint64_t now_ns, uint64_t bytes) {
    Advance(now_ns);
    tokens_ -= static_cast<__int128>(bytes) * kTokenUnitsPerByte;
    return tokens_ >= 0;
  }

 private:
  __int128 tokens_;
  __int128 burst_;
  uint64_t rate_;
  uint64_t last_;
};

// ---------------------------------------------------------------- TokenBucket

TEST(TokenBucketTest, TokensNeverExceedBurstUnderARandomSchedule) {
  std::mt19937_64 rng(1);
  TokenBucket b(1'000'000, 16'384, 0);
  uint64_t now = 0;
  for (int i = 0; i < 2'000'000; ++i) {
    switch (rng() % 8) {
      case 0:
        b.SetRate(rng() % (kMaxRateBytesPerSec + 1));  // up to 1 TB/s
        break;
      case 1:
        now += rng() % (1000 * kSec);  // long idle: the product overflows 64 bits
        break;
      case 2:
        if (now > 1000) now -= rng() % 1000;  // a clock that steps back
        break;
      case 3:
        b.Take(BytesToTokenUnits(rng() % 40'000));  // debt, floored
        break;
      default:
        now += rng() % (50 * kUs);
        b.TryConsume(rng() % 2'000);
        break;
    }
    b.Refill(now);
    ASSERT_LE(b.tokens(), b.burst()) << "op " << i;
    ASSERT_GE(b.tokens(), -b.burst()) << "op " << i;
  }
}

TEST(TokenBucketTest, RefillIsExactOverALongRun) {
  // A rate that divides nothing, refilled at irregular times for 10^7 refills:
  // the balance must be exactly rate * elapsed, to the 1e-9 byte. A floating
  // point or per-refill-rounded bucket drifts here.
  const uint64_t rate = 1'000'003;
  TokenBucket b(rate, kMaxBurstBytes, 0);
  b.Take(b.burst());  // empty
  ASSERT_EQ(b.tokens(), 0);
  std::mt19937_64 rng(2);
  uint64_t now = 0;
  __int128 taken = 0;
  for (int i = 0; i < 10'000'000; ++i) {
    now += 1 + rng() % 997;
    b.Refill(now);
    if (i % 1000 == 0) {
      const uint64_t bytes = rng() % 500;
      if (b.TryConsume(bytes)) taken += BytesToTokenUnits(bytes);
    }
  }
  const __int128 expect = static_cast<__int128>(rate) * now - taken;
  EXPECT_TRUE(b.tokens() == expect) << "tokens " << b.tokens() << " after " << now << " ns";
}

TEST(TokenBucketTest, SetRateKeepsTokensAndAppliesFromTheLastRefill) {
  TokenBucket b(1'000'000, 20'000, 0);
  ASSERT_TRUE(b.TryConsume(15'000));
  const int64_t before = b.tokens();
  b.SetRate(50'000'000);
  EXPECT_EQ(b.tokens(), before) << "a rate change must not touch the tokens";
  b.SetRate(10);
  EXPECT_EQ(b.tokens(), before);
  b.SetRate(2'000'000);
  b.Refill(1 * kMs);  // 1 ms at the new rate: 2000 bytes
  EXPECT_EQ(b.tokens(), before + BytesToTokenUnits(2'000));
  EXPECT_EQ(b.rate(), 2'000'000u);
}

TEST(TokenBucketTest, RateIncreaseReleasesAtMostTheBurst) {
  // Idle for a second at 1 MB/s: full, and not a byte more than the burst.
  TokenBucket b(1'000'000, 16'384, 0);
  b.Refill(1 * kSec);
  ASSERT_EQ(b.tokens(), b.burst());
  // 1 MB/s -> 100 MB/s. Whatever is sent at that instant is bounded by the
  // burst; an rte_sched-style reset would add nothing here but would refill a
  // drained bucket -- checked next.
  b.SetRate(100'000'000);
  uint64_t sent = 0;
  while (b.TryConsume(1'000)) sent += 1'000;
  EXPECT_EQ(sent, 16'000u);
  // Drained to 384 B, then more changes: nothing is added until time passes.
  b.SetRate(1'000'000);
  b.SetRate(100'000'000);
  EXPECT_EQ(b.tokens(), BytesToTokenUnits(384));
  EXPECT_FALSE(b.TryConsume(1'000));
  b.Refill(1 * kSec + 10 * kUs);  // 10 us at 100 MB/s = 1000 bytes
  EXPECT_TRUE(b.TryConsume(1'384));
  EXPECT_FALSE(b.TryConsume(1));
}

TEST(TokenBucketTest, TimeGoingBackwardsCreditsNothing) {
  TokenBucket b(1'000'000, 10'000, 1 * kSec);
  b.Take(b.burst());
  b.Refill(1 * kSec - 500 * kUs);
  EXPECT_EQ(b.tokens(), 0);
  b.Refill(1 * kSec + 1 * kMs);
  EXPECT_EQ(b.tokens(), BytesToTokenUnits(1'000));
}

TEST(TokenBucketTest, DebtIsFlooredAtMinusBurst) {
  TokenBucket b(1'000'000, 10'000, 0);
  b.Take(BytesToTokenUnits(1'000'000));
  EXPECT_EQ(b.tokens(), -b.burst());
  b.Refill(20 * kMs);  // 20 ms x 1 MB/s = 20000 bytes repays the debt
  EXPECT_EQ(b.tokens(), b.burst());
}

TEST(RateMailboxTest, WorkerSeesThePublishedRatesInOrderAndTheLastOne) {
  RateMailbox mailbox;
  EXPECT_EQ(mailbox.Peek(), 0u);
  constexpr uint64_t kLast = 200'000;
  std::thread control([&] {
    for (uint64_t r = 1; r <= kLast; ++r) mailbox.Publish(r);
  });
  TokenBucket bucket(0, 10'000, 0);
  uint64_t applied = 0;
  uint64_t changes = 0;
  while (applied != kLast) {
    if (uint64_t r = mailbox.Peek(); r != applied) {
      ASSERT_GT(r, applied) << "a single atomic is coherent: never an older value";
      bucket.SetRate(r);
      applied = r;
      ++changes;
    }
  }
  control.join();
  EXPECT_EQ(bucket.rate(), kLast);
  EXPECT_GE(changes, 1u);
}

// ------------------------------------------------------------------ Config

TEST(ShaperConfigTest, DefaultsValidate) {
  ShaperConfig c;
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  EXPECT_TRUE(c.chaff_borrows_from_migration);
  EXPECT_FALSE(c.migration_borrows_from_chaff);
  // The defaults line up with Algorithm 3's: ceil = maxR, start rate = r.
  const RateVariationConfig rv;
  EXPECT_EQ(c.migration.ceil_bytes_per_sec, RateToBytesPerSec(rv.max_rate));
  EXPECT_EQ(c.migration.rate_bytes_per_sec, RateToBytesPerSec(rv.start_rate));
}

TEST(ShaperConfigTest, ValidateNamesTheField) {
  struct Case {
    std::string name;
    void (*mutate)(ShaperConfig&);
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"link rate 0", [](ShaperConfig& c) { c.link_rate_bytes_per_sec = 0; },
       "link_rate_bytes_per_sec"},
      {"link burst < frame", [](ShaperConfig& c) { c.link_burst_bytes = 1'000; },
       "link_burst_bytes"},
      {"max frame 0", [](ShaperConfig& c) { c.max_frame_bytes = 0; }, "max_frame_bytes"},
      {"mig ceil 0", [](ShaperConfig& c) { c.migration.ceil_bytes_per_sec = 0; },
       "migration.ceil_bytes_per_sec"},
      {"chaff rate > ceil",
       [](ShaperConfig& c) { c.chaff.rate_bytes_per_sec = c.chaff.ceil_bytes_per_sec + 1; },
       "chaff.rate_bytes_per_sec"},
      {"mig burst < frame", [](ShaperConfig& c) { c.migration.burst_bytes = 1'500; },
       "migration.burst_bytes"},
      {"chaff burst huge", [](ShaperConfig& c) { c.chaff.burst_bytes = kMaxBurstBytes + 1; },
       "chaff.burst_bytes"},
      {"mig queue 0 packets", [](ShaperConfig& c) { c.migration.queue_packets = 0; },
       "migration.queue_packets"},
      {"chaff depth 0", [](ShaperConfig& c) { c.chaff.queue_depth_ms = 0; },
       "chaff.queue_depth_ms"},
      {"mig trains 0", [](ShaperConfig& c) { c.migration.train_max_frames = 0; },
       "migration.train_max_frames"},
      {"chaff trains huge", [](ShaperConfig& c) { c.chaff.train_max_frames = 5000; },
       "chaff.train_max_frames"},
      {"mig lanes 0", [](ShaperConfig& c) { c.migration.flow_lanes = 0; }, "migration.flow_lanes"},
      {"mig lanes 17", [](ShaperConfig& c) { c.migration.flow_lanes = 17; }, "migration.flow_lanes"},
      {"lanes x packets huge",
       [](ShaperConfig& c) {
         c.migration.flow_lanes = 16;
         c.migration.queue_packets = 1u << 17;
       },
       "migration.flow_lanes x migration.queue_packets"},
      {"quantum < frame", [](ShaperConfig& c) { c.migration.lane_quantum_bytes = 1'000; },
       "migration.lane_quantum_bytes"},
      {"queue smaller than a frame",
       [](ShaperConfig& c) {
         c.chaff.ceil_bytes_per_sec = 100'000;  // 10 ms = 1000 bytes < 9018
       },
       "chaff.queue_depth_ms"},
  };
  for (const Case& tc : cases) {
    ShaperConfig c;
    tc.mutate(c);
    absl::Status s = c.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << tc.name;
    EXPECT_THAT(std::string(s.message()), HasSubstr(tc.expect)) << tc.name << ": " << s;
    EXPECT_FALSE(Shaper::Create(c, 0).ok()) << tc.name;
  }
}

// ------------------------------------------------------------ Simulation

// Drives a shaper in simulated time: packets are registered by handle, polls
// dequeue and account what was sent, per class.
class Sim {
 public:
  struct Packet {
    ShapedClass cls;
    uint32_t bytes;
    uint32_t lane = 0;
  };

  Sim(const ShaperConfig& config, uint64_t start_ns, uint64_t seed = 1)
      : shaper_(Shaper::Create(config, start_ns).value()), now_(start_ns), rng_(seed) {}

  Shaper& shaper() { return shaper_; }
  uint64_t now() const { return now_; }
  void AdvanceTo(uint64_t t) { now_ = std::max(now_, t); }
  void Advance(uint64_t ns) { now_ += ns; }
  // A random poll gap of 1-20 us, like a busy worker's loop.
  void AdvanceJitter() { now_ += 1 * kUs + rng_() % (19 * kUs); }
  std::mt19937_64& rng() { return rng_; }

  bool Offer(ShapedClass c, uint32_t bytes, uint32_t lane = 0) {
    const uint64_t handle = packets_.size();
    packets_.push_back({c, bytes, lane});
    return shaper_.Enqueue(c, handle, bytes, now_, lane);
  }
  // Keeps class `c` backlogged with at least `depth` packets.
  void KeepBacklogged(ShapedClass c, uint32_t depth, uint32_t min_bytes, uint32_t max_bytes) {
    while (shaper_.counters(c).backlog_packets < depth) {
      const uint32_t bytes = min_bytes + static_cast<uint32_t>(rng_() % (max_bytes - min_bytes + 1));
      if (!Offer(c, bytes)) break;
    }
  }
  // Dequeues at now; returns the packets sent, in order.
  const std::vector<uint64_t>& Poll(size_t budget = 32) {
    sent_now_.clear();
    std::array<uint64_t, 256> out;
    const size_t n = shaper_.Dequeue(now_, out.data(), std::min(budget, out.size()));
    for (size_t i = 0; i < n; ++i) {
      const Packet& p = packets_[out[i]];
      sent_bytes_[static_cast<size_t>(p.cls)] += p.bytes;
      sent_now_.push_back(out[i]);
    }
    return sent_now_;
  }
  const Packet& packet(uint64_t handle) const { return packets_[handle]; }
  uint64_t sent_bytes(ShapedClass c) const { return sent_bytes_[static_cast<size_t>(c)]; }

 private:
  Shaper shaper_;
  uint64_t now_;
  std::mt19937_64 rng_;
  std::vector<Packet> packets_;
  std::vector<uint64_t> sent_now_;
  std::array<uint64_t, kShapedClassCount> sent_bytes_{};
};

void ExpectBucketsWithinBurst(const Shaper& s) {
  ASSERT_LE(s.root_bucket().tokens(), s.root_bucket().burst());
  for (ShapedClass c : {kMig, kChaff}) {
    ASSERT_LE(s.rate_bucket(c).tokens(), s.rate_bucket(c).burst()) << ShapedClassName(c);
    ASSERT_LE(s.ceil_bucket(c).tokens(), s.ceil_bucket(c).burst()) << ShapedClassName(c);
    ASSERT_GE(s.rate_bucket(c).tokens(), 0) << ShapedClassName(c);
    ASSERT_GE(s.ceil_bucket(c).tokens(), 0) << ShapedClassName(c);
  }
}

struct FollowResult {
  double max_rel_error = 0;    // over intervals
  double max_abs_error = 0;    // bytes
  double min_commanded = 1e300;  // bytes per interval
  int intervals = 0;
  int rate_changes = 0;
};

// The worker's loop, simulated: every poll dequeues at `now` (refilling at the
// rate in force) and then, if an interval is due, steps Algorithm 3 and sets
// the migration rate -- so each rate holds exactly from one step to the next.
// Migration is kept backlogged; each interval's bytes are compared with the
// commanded rate times the interval's actual length. The first interval is
// skipped: it also carries the initial full bucket ("once backlogged").
FollowResult FollowAlgorithm3(const RateVariationConfig& rvc, ShaperConfig sc, uint32_t min_pkt,
                              uint32_t max_pkt, uint64_t seed, uint64_t duration_ns) {
  FollowResult res;
  sc.migration.ceil_bytes_per_sec = RateToBytesPerSec(rvc.max_rate);
  sc.migration.rate_bytes_per_sec = RateToBytesPerSec(rvc.start_rate);
  sc.chaff.ceil_bytes_per_sec = sc.migration.ceil_bytes_per_sec;
  const uint64_t t0 = 3 * kSec;
  Sim sim(sc, t0, seed);
  RateVariation rv(rvc);
  std::mt19937_64 rv_rng(seed * 7919);
  ReferenceBucket reference(sc.migration.rate_bytes_per_sec, sc.migration.burst_bytes, t0);

  uint64_t interval_start = 0;
  uint64_t interval_rate = 0;
  uint64_t interval_sent_at_start = 0;
  while (sim.now() < t0 + duration_ns) {
    sim.KeepBacklogged(kMig, 64, min_pkt, max_pkt);
    sim.shaper().Refill(sim.now());
    ExpectBucketsWithinBurst(sim.shaper());
    for (uint64_t h : sim.Poll()) {
      EXPECT_TRUE(reference.Charge(sim.now(), sim.packet(h).bytes))
          << "sent beyond burst + rate at t=" << sim.now() - t0;
    }
    if (rv.ShouldStep(sim.now())) {
      const uint64_t sent = sim.sent_bytes(kMig);
      if (interval_start != 0 && res.rate_changes >= 2) {
        const double commanded = static_cast<double>(interval_rate) *
                                 static_cast<double>(sim.now() - interval_start) / kSec;
        const double achieved = static_cast<double>(sent - interval_sent_at_start);
        const double abs_err = std::abs(achieved - commanded);
        res.max_abs_error = std::max(res.max_abs_error, abs_err);
        res.max_rel_error = std::max(res.max_rel_error, abs_err / commanded);
        res.min_commanded = std::min(res.min_commanded, commanded);
        ++res.intervals;
      }
      interval_rate = RateToBytesPerSec(rv.StepAt(sim.now(), rv_rng));
      sim.shaper().SetRate(kMig, interval_rate);
      reference.SetRate(sim.now(), interval_rate);
      ++res.rate_changes;
      interval_start = sim.now();
      interval_sent_at_start = sent;
    }
    sim.AdvanceJitter();
  }
  EXPECT_EQ(sim.shaper().counters(kMig).dropped_packets, 0u) << "the source must not overrun";
  return res;
}

// Trains: a backlogged migration at 1 MB/s with 1514-byte frames, polled
// every 1-20 us. What one poll sends is one train (the link is far faster).
struct TrainRun {
  std::vector<uint32_t> sizes;     // frames per poll that sent any
  std::vector<uint64_t> starts;    // when each train left
  bool conformed = true;           // never beyond rate + burst
  uint64_t sent_bytes = 0;
};

TrainRun RunTrains(uint32_t train_max, uint64_t seed, uint64_t duration_ns) {
  ShaperConfig sc;
  sc.max_frame_bytes = 1518;
  sc.migration.rate_bytes_per_sec = 1'000'000;
  sc.migration.train_max_frames = train_max;
  sc.train_seed = seed;
  const uint64_t t0 = kSec;
  Sim sim(sc, t0, seed);
  ReferenceBucket reference(sc.migration.rate_bytes_per_sec, sc.migration.burst_bytes, t0);
  TrainRun run;
  while (sim.now() < t0 + duration_ns) {
    sim.KeepBacklogged(kMig, 64, 1514, 1514);
    const std::vector<uint64_t>& sent = sim.Poll();
    for (uint64_t h : sent) run.conformed = reference.Charge(sim.now(), sim.packet(h).bytes) && run.conformed;
    if (!sent.empty()) {
      run.sizes.push_back(static_cast<uint32_t>(sent.size()));
      run.starts.push_back(sim.now());
    }
    sim.AdvanceJitter();
  }
  run.sent_bytes = sim.sent_bytes(kMig);
  return run;
}

TEST(ShaperTrainTest, OneFrameAtATimeWithoutTrains) {
  const TrainRun run = RunTrains(1, 1, 2 * kSec);
  EXPECT_TRUE(run.conformed);
  // Paced: after the initial full bucket, never two frames in one poll.
  const auto more = std::count_if(run.sizes.begin() + 12, run.sizes.end(), [](uint32_t s) { return s > 1; });
  EXPECT_EQ(more, 0);
}

TEST(ShaperTrainTest, TrainsOfOneToNFramesLeaveBackToBackAtTheSameRate) {
  constexpr uint32_t kMax = 8;
  const uint64_t duration = 20 * kSec;
  const TrainRun run = RunTrains(kMax, 7, duration);
  EXPECT_TRUE(run.conformed) << "a train must never send beyond rate + burst";
  // Same mean rate as pacing: 1 MB/s over 20 s, within a burst and a frame.
  EXPECT_NEAR(static_cast<double>(run.sent_bytes), 20e6, 16 * 1024 + 1514);
  // Every length 1..8 occurs, about uniformly (about 2600 trains); none longer.
  std::array<int, kMax + 1> count{};
  for (size_t i = 1; i < run.sizes.size(); ++i) {  // the first drains the full bucket
    ASSERT_LE(run.sizes[i], kMax);
    ++count[run.sizes[i]];
  }
  const double trains = static_cast<double>(run.sizes.size() - 1);
  for (uint32_t k = 1; k <= kMax; ++k) {
    EXPECT_NEAR(count[k] / trains, 1.0 / kMax, 0.3 / kMax) << "length " << k;
  }
  // A train waits for all of its tokens: the gap before a train of m frames
  // is at least what m frames cost, less what the previous one left (< 1
  // frame, as it started as soon as its tokens were there).
  for (size_t i = 2; i < run.sizes.size(); ++i) {
    const double earned = static_cast<double>(run.starts[i] - run.starts[i - 1]) * 1e-9 * 1e6;
    ASSERT_GE(earned + 1514 + 40, 1514.0 * run.sizes[i]) << "train " << i;
  }
}

TEST(ShaperTrainTest, TrainLengthsFollowTheSeed) {
  const TrainRun a = RunTrains(8, 3, kSec / 2);
  const TrainRun b = RunTrains(8, 3, kSec / 2);
  const TrainRun c = RunTrains(8, 4, kSec / 2);
  EXPECT_EQ(a.sizes, b.sizes);
  EXPECT_NE(a.sizes, c.sizes);
}

TEST(ShaperTrainTest, AShortQueueGoesAsSoonAsItsOwnTokensAreThere) {
  // Fewer frames queued than the train wants: they leave when their tokens
  // are there instead of waiting for more to arrive.
  ShaperConfig sc;
  sc.max_frame_bytes = 1518;
  sc.migration.rate_bytes_per_sec = 1'000'000;
  sc.migration.train_max_frames = 16;
  Sim sim(sc, kSec);
  ASSERT_TRUE(sim.Offer(kMig, 1514));
  EXPECT_EQ(sim.Poll().size(), 1u);  // the bucket starts full
  // Drain the bucket, then offer one frame: it waits ~1.5 ms for its tokens, not 16 frames' worth.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(sim.Offer(kMig, 1514));
  while (!sim.Poll().empty()) {}
  while (sim.shaper().counters(kMig).backlog_packets > 0) {
    sim.Advance(100 * kUs);
    sim.Poll();
  }
  const uint64_t offered = sim.now();
  ASSERT_TRUE(sim.Offer(kMig, 1514));
  while (sim.Poll().empty()) sim.Advance(10 * kUs);
  EXPECT_LE(sim.now() - offered, 2 * 1514 * kUs + 20 * kUs) << "waited for more than its own tokens";
}

// ------------------------------------------------------------ Flow lanes

TEST(LaneQueueTest, OneLaneIsAFifo) {
  LaneQueue q(1, 8, 100'000, 1'518);
  for (uint64_t h = 0; h < 5; ++h) ASSERT_TRUE(q.Push(static_cast<uint32_t>(h), {h, 0, 100}));
  for (uint64_t h = 0; h < 5; ++h) {
    q.NextTurnIfDue();
    EXPECT_EQ(q.Front().handle, h);
    q.Pop();
  }
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.turns(), 0u);
}

TEST(LaneQueueTest, CapsHoldOverAllLanes) {
  LaneQueue q(4, 6, 5'000, 1'518);
  for (uint32_t i = 0; i < 4; ++i) ASSERT_TRUE(q.Push(i, {i, 0, 1'000}));
  EXPECT_FALSE(q.Push(1, {9, 0, 1'001}));  // 5001 bytes in all, though lane 1 holds 1000
  EXPECT_TRUE(q.Push(5, {4, 0, 1'000}));   // lane 5 % 4 = 1: 5000 bytes, exactly the cap
  EXPECT_TRUE(q.Push(2, {5, 0, 0}));       // the 6th packet
  EXPECT_FALSE(q.Push(3, {6, 0, 0}));      // a 7th: over the packet cap, in an emptier lane too
  EXPECT_EQ(q.size(), 6u);
  EXPECT_EQ(q.bytes(), 5'000u);
}

TEST(LaneQueueTest, LanesTakeTurnsOfAQuantumRoundRobin) {
  // Three lanes, 1000-byte frames, a quantum of 2500 bytes: a turn is three frames
  // (it ends once 2500 are reached), and an empty lane is skipped.
  LaneQueue q(4, 64, 1'000'000, 2'500);
  for (uint64_t i = 0; i < 6; ++i) {
    for (uint32_t lane : {0u, 1u, 3u}) ASSERT_TRUE(q.Push(lane, {lane * 100 + i, 0, 1'000}));
  }
  std::vector<uint64_t> order;
  while (!q.empty()) {
    q.NextTurnIfDue();
    order.push_back(q.Front().handle);
    q.Pop();
  }
  const std::vector<uint64_t> expect = {0,   1,   2,   100, 101, 102, 300, 301, 302,
                                        3,   4,   5,   103, 104, 105, 303, 304, 305};
  EXPECT_EQ(order, expect);
  EXPECT_EQ(q.turns(), 5u);
}

TEST(LaneQueueTest, ALoneLaneKeepsItsTurn) {
  LaneQueue q(4, 64, 1'000'000, 1'518);
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(q.Push(2, {i, 0, 1'500}));
  for (uint64_t i = 0; i < 4; ++i) {
    q.NextTurnIfDue();
    EXPECT_EQ(q.current_lane(), 2u);
    EXPECT_EQ(q.Front().handle, i);
    q.Pop();
  }
  EXPECT_EQ(q.turns(), 1u);  // from lane 0 to lane 2, once
}

// Four flows whose frames arrive interleaved (as four TCP connections queue
// through one gateway), a backlogged migration class sending trains of 1..8
// at 4 MB/s. Returns the flows in transmit order.
std::vector<uint32_t> InterleavedFlowsOut(uint32_t lanes, uint64_t quantum, ShaperClassCounters* k,
                                          uint64_t* turns) {
  ShaperConfig sc;
  sc.max_frame_bytes = 1518;
  sc.migration.rate_bytes_per_sec = 4'000'000;
  sc.migration.train_max_frames = 8;
  sc.migration.flow_lanes = lanes;
  sc.migration.lane_quantum_bytes = quantum;
  const uint64_t t0 = kSec;
  Sim sim(sc, t0, 3);
  ReferenceBucket reference(sc.migration.rate_bytes_per_sec, sc.migration.burst_bytes, t0);
  std::vector<uint32_t> flows;
  std::array<uint64_t, 4> next_seq{};
  std::vector<uint64_t> seq_of;  // handle -> its flow's sequence number
  std::array<int64_t, 4> last_seq;
  last_seq.fill(-1);
  uint32_t next_flow = 0;
  while (sim.now() < t0 + 2 * kSec) {
    while (sim.shaper().counters(kMig).backlog_packets < 64) {
      const uint32_t flow = next_flow++ % 4;
      seq_of.push_back(next_seq[flow]++);
      EXPECT_TRUE(sim.Offer(kMig, 1514, flow));
    }
    for (uint64_t h : sim.Poll()) {
      EXPECT_TRUE(reference.Charge(sim.now(), sim.packet(h).bytes)) << "beyond rate + burst";
      flows.push_back(sim.packet(h).lane);
      // Within a flow, order is kept.
      EXPECT_EQ(static_cast<int64_t>(seq_of[h]), last_seq[sim.packet(h).lane] + 1);
      last_seq[sim.packet(h).lane] = static_cast<int64_t>(seq_of[h]);
    }
    sim.AdvanceJitter();
  }
  *k = sim.shaper().counters(kMig);
  *turns = k->lane_turns;
  return flows;
}

size_t FlowChanges(const std::vector<uint32_t>& flows) {
  size_t n = 0;
  for (size_t i = 1; i < flows.size(); ++i) n += flows[i] != flows[i - 1];
  return n;
}

TEST(ShaperLaneTest, LanesSendEachFlowInRunsAtTheSameRate) {
  ShaperClassCounters fifo_k, lanes_k;
  uint64_t fifo_turns = 0, lane_turns = 0;
  const std::vector<uint32_t> fifo = InterleavedFlowsOut(1, 64 * 1024, &fifo_k, &fifo_turns);
  const std::vector<uint32_t> laned = InterleavedFlowsOut(4, 64 * 1024, &lanes_k, &lane_turns);
  // One FIFO: the flows leave as they came, a change at nearly every frame.
  ASSERT_GT(fifo.size(), 4000u);
  EXPECT_GT(FlowChanges(fifo), fifo.size() * 9 / 10);
  // Lanes: a flow keeps the link for its quantum (64 KiB = 44 frames of 1514),
  // rounded up to a whole train: about one change per 44-51 frames.
  EXPECT_EQ(FlowChanges(laned), lane_turns);
  EXPECT_LE(FlowChanges(laned), laned.size() / 40 + 1);
  EXPECT_GE(FlowChanges(laned), laned.size() / 52);
  // Every flow gets its turns: each sends a quarter, give or take a turn.
  for (uint32_t f = 0; f < 4; ++f) {
    const auto n = std::count(laned.begin(), laned.end(), f);
    EXPECT_NEAR(static_cast<double>(n), laned.size() / 4.0, 52) << "flow " << f;
  }
  // The class's rate does not depend on the lanes.
  EXPECT_NEAR(static_cast<double>(lanes_k.sent_bytes), static_cast<double>(fifo_k.sent_bytes), 8 * 1514);
  EXPECT_EQ(lanes_k.dropped_packets, 0u);
}

TEST(ShaperLaneTest, DiscardMidTrainLeavesAWorkingQueue) {
  ShaperConfig sc;
  sc.max_frame_bytes = 1518;
  sc.migration.rate_bytes_per_sec = 1'000'000;
  sc.migration.train_max_frames = 8;
  sc.migration.flow_lanes = 4;
  Sim sim(sc, kSec);
  for (uint32_t i = 0; i < 40; ++i) ASSERT_TRUE(sim.Offer(kMig, 1514, i % 4));
  while (!sim.Poll().empty()) {}  // the full bucket goes; a train may be under way
  std::vector<uint64_t> out(64);
  const size_t discarded = sim.shaper().Discard(kMig, out.data(), out.size());
  EXPECT_GT(discarded, 0u);
  EXPECT_EQ(sim.shaper().counters(kMig).backlog_packets, 0u);
  ASSERT_TRUE(sim.Offer(kMig, 1514, 3));
  sim.Advance(100 * kMs);
  const std::vector<uint64_t>& sent = sim.Poll();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sim.packet(sent[0]).lane, 3u);
}

TEST(ShaperTest, FollowsAlgorithm3RateWithin3PercentEvery10ms) {
  // Algorithm 3 scaled to a 1 Gbit/s gateway: [10, 80] MB/s, so one interval
  // is at least 100 kB and one packet (<= 1518 B) at most 1.5 % of it.
  RateVariationConfig rvc;
  rvc.min_rate = 10'000'000;
  rvc.max_rate = 80'000'000;
  rvc.start_rate = 40'000'000;
  ShaperConfig sc;
  sc.max_frame_bytes = 1518;
  sc.migration.queue_packets = 4096;
  const FollowResult r = FollowAlgorithm3(rvc, sc, 64, 1518, 1, 20 * kSec);
  EXPECT_GE(r.intervals, 1990);
  EXPECT_LE(r.max_rel_error, 0.03);
  std::cout << "scaled [10, 80] MB/s, 64-1518 B: " << r.intervals
            << " intervals, max error " << 100 * r.max_rel_error << " % ("
            << r.max_abs_error << " B)\n";
}

TEST(ShaperTest, FollowsAlgorithm3AtDefaultRatesWithinOnePacket) {
  // At the default [1, 8] MB/s a 10 ms interval can be as small as 10 kB, so a
  // single 1518 B frame is 15 % of it: the bound that holds there is the
  // token-bucket one, |achieved - commanded| < one frame (the tokens left at
  // each end of the interval are in [0, frame)).
  const RateVariationConfig rvc;
  ShaperConfig sc;
  sc.max_frame_bytes = 1518;
  for (uint64_t seed : {1, 2, 3}) {
    const FollowResult r = FollowAlgorithm3(rvc, sc, 1518, 1518, seed, 20 * kSec);
    EXPECT_GE(r.intervals, 1990);
    EXPECT_LT(r.max_abs_error, 1518.0) << "seed " << seed;
    std::cout << "default [1, 8] MB/s, 1518 B, seed " << seed << ": max error "
              << r.max_abs_error << " B = " << 100 * r.max_rel_error
              << " % of the smallest-interval worst case\n";
  }
}

TEST(ShaperTest, RateChangeDoesNotResetTokensOrLeakABurst) {
  ShaperConfig sc;
  sc.migration.rate_bytes_per_sec = 1'000'000;
  sc.migration.ceil_bytes_per_sec = 100'000'000;
  sc.migration.burst_bytes = 16'384;
  Sim sim(sc, 0);
  // Backlogged at 1 MB/s for a while: the rate bucket hovers near empty.
  for (int i = 0; i < 1000; ++i) {
    sim.KeepBacklogged(kMig, 16, 1000, 1000);
    sim.Poll();
    sim.AdvanceJitter();
  }
  // As the worker does: dequeue (refilling at the old rate) at `now`, then
  // change the rate at that same `now`.
  sim.Poll();
  const int64_t tokens = sim.shaper().rate_bucket(kMig).tokens();
  ASSERT_LT(tokens, BytesToTokenUnits(1000));
  sim.shaper().SetRate(kMig, 100'000'000);
  EXPECT_EQ(sim.shaper().rate_bucket(kMig).tokens(), tokens) << "SetRate must keep tokens";
  // Right at the change nothing more may leave than the tokens already there.
  const uint64_t before = sim.sent_bytes(kMig);
  sim.Poll();
  EXPECT_EQ(sim.sent_bytes(kMig), before);
  // 100 us later: 100 MB/s x 100 us = 10 kB, not a bucket's worth more.
  sim.Advance(100 * kUs);
  sim.Poll(256);
  EXPECT_LE(sim.sent_bytes(kMig) - before, 10'000u + 1'000u);
  EXPECT_GE(sim.sent_bytes(kMig) - before, 9'000u);
}

// --------------------------------------------------------------- Borrowing

ShaperConfig BorrowConfig() {
  ShaperConfig sc;
  sc.max_frame_bytes = 1518;
  sc.migration = {.rate_bytes_per_sec = 10'000'000,
                  .ceil_bytes_per_sec = 40'000'000,
                  .burst_bytes = 16'384,
                  .queue_depth_ms = 50,
                  .queue_packets = 4096};
  sc.chaff = {.rate_bytes_per_sec = 0,
              .ceil_bytes_per_sec = 40'000'000,
              .burst_bytes = 16'384,
              .queue_depth_ms = 50,
              .queue_packets = 4096};
  return sc;
}

// Runs `phase_ns` of polls with a per-poll callback; returns bytes sent per
// class during the phase.
template <typename Fn>
std::array<uint64_t, 2> RunPhase(Sim& sim, uint64_t phase_ns, Fn&& per_poll) {
  const uint64_t end = sim.now() + phase_ns;
  const uint64_t m0 = sim.sent_bytes(kMig), c0 = sim.sent_bytes(kChaff);
  while (sim.now() < end) {
    per_poll();
    sim.Poll();
    sim.AdvanceJitter();
  }
  return {sim.sent_bytes(kMig) - m0, sim.sent_bytes(kChaff) - c0};
}

TEST(ShaperTest, ChaffFillsWhatMigrationLeavesUnused) {
  // Chaff has no rate of its own; migration runs at 10 MB/s. Whatever
  // migration does, migration + chaff stays at 10 MB/s: the envelope.
  const ShaperConfig sc = BorrowConfig();
  Sim sim(sc, 0);
  const uint64_t kPhase = 1 * kSec;
  const double envelope = 10'000'000.0;  // bytes per 1 s phase
  // Small chaff frames: they must not squeeze past a waiting migration head.
  auto chaff = [&] { sim.KeepBacklogged(kChaff, 64, 64, 200); };
  // (i) no migration: chaff gets all of migration's tokens.
  RunPhase(sim, 100 * kMs, chaff);  // past the initial full buckets
  auto idle = RunPhase(sim, kPhase, chaff);
  EXPECT_EQ(idle[0], 0u);
  EXPECT_NEAR(static_cast<double>(idle[1]), envelope, 0.01 * envelope);
  // (ii) migration backlogged: it keeps its own rate; chaff gets nothing.
  auto busy = RunPhase(sim, kPhase, [&] {
    chaff();
    sim.KeepBacklogged(kMig, 64, 1518, 1518);
  });
  EXPECT_NEAR(static_cast<double>(busy[0]), envelope, 0.01 * envelope);
  EXPECT_LT(busy[1], 20'000u) << "chaff borrowed tokens a backlogged migration needed";
  EXPECT_EQ(sim.shaper().counters(kMig).borrowed_bytes, 0u);
  // Drain migration's backlog from phase (ii) before measuring (iii).
  RunPhase(sim, 100 * kMs, chaff);
  // (iii) migration offered at 4 MB/s (1518 B every 379.5 us): it gets all of
  // it, chaff the remaining 6 MB/s.
  uint64_t next_arrival = sim.now();
  auto part = RunPhase(sim, kPhase, [&] {
    chaff();
    while (next_arrival <= sim.now()) {
      sim.Offer(kMig, 1518);
      next_arrival += 379'500;
    }
  });
  EXPECT_NEAR(static_cast<double>(part[0]), 4'000'000.0, 0.01 * envelope);
  EXPECT_NEAR(static_cast<double>(part[0] + part[1]), envelope, 0.01 * envelope);
  EXPECT_GT(sim.shaper().counters(kChaff).borrowed_bytes, 15'000'000u);
  std::cout << "envelope 10 MB/s: idle " << idle[0] << "+" << idle[1] << ", busy " << busy[0]
            << "+" << busy[1] << ", partial " << part[0] << "+" << part[1] << " bytes/s\n";
}

// A worker that sleeps when a loop released nothing (--idle_sleep_us) must
// not sleep longer than a bucket takes to fill while packets wait for tokens:
// tokens beyond a full bucket are lost, so a 10 ms sleep capped migration at
// a 16 KiB bucket per 10 ms (1.6 MB/s of its 10) and sent it in clumps.
TEST(ShaperTest, SleepingAtMostMaxIdleBetweenDequeuesLosesNoTokens) {
  const ShaperConfig sc = BorrowConfig();
  auto sent_in_a_second = [&sc](uint64_t idle_sleep_ns, bool honour_max_idle) {
    Sim sim(sc, 0);
    EXPECT_EQ(sim.shaper().MaxIdleNs(), UINT64_MAX) << "nothing queued: no limit";
    sim.KeepBacklogged(kMig, 64, 1518, 1518);
    RunPhase(sim, 100 * kMs, [] {});  // past the initial full buckets
    const uint64_t before = sim.sent_bytes(kMig);
    const uint64_t end = sim.now() + kSec;
    while (sim.now() < end) {
      sim.KeepBacklogged(kMig, 64, 1518, 1518);
      if (sim.Poll(256).empty()) {
        const uint64_t max_idle = sim.shaper().MaxIdleNs();
        EXPECT_LT(max_idle, UINT64_MAX) << "packets are queued";
        sim.Advance(honour_max_idle ? std::min(idle_sleep_ns, max_idle) : idle_sleep_ns);
      } else {
        sim.AdvanceJitter();
      }
    }
    return static_cast<double>(sim.sent_bytes(kMig) - before);
  };
  const double rate = 10'000'000.0;
  EXPECT_NEAR(sent_in_a_second(10 * kMs, true), rate, 0.02 * rate);
  EXPECT_LT(sent_in_a_second(10 * kMs, false), 0.3 * rate) << "the loss this guards against";
  Sim sim(sc, 0);
  sim.Offer(kMig, 1518);
  // Migration's 10 MB/s fills its 16 KiB bucket in 1.64 ms (chaff has no
  // rate; the root's link rate is far above both).
  EXPECT_EQ(sim.shaper().MaxIdleNs(), 16'384ull * 1'000'000'000 / 10'000'000 / 2);
}

TEST(ShaperTest, ChaffDoesNotBorrowWhenDisabled) {
  ShaperConfig sc = BorrowConfig();
  sc.chaff_borrows_from_migration = false;
  Sim sim(sc, 0);
  auto r = RunPhase(sim, 1 * kSec, [&] { sim.KeepBacklogged(kChaff, 64, 64, 1518); });
  // Only the chaff bucket's initial burst may leave (rate 0, starts full).
  EXPECT_LE(r[1], sc.chaff.burst_bytes);
  EXPECT_EQ(sim.shaper().counters(kChaff).borrowed_bytes, 0u);
}

TEST(ShaperTest, MigrationBorrowsFromChaffOnlyWhenEnabled) {
  for (bool enabled : {false, true}) {
    SCOPED_TRACE(enabled ? "borrowing on" : "borrowing off");
    ShaperConfig sc = BorrowConfig();
    sc.chaff.rate_bytes_per_sec = 5'000'000;  // unused: chaff has no traffic
    sc.migration_borrows_from_chaff = enabled;
    Sim sim(sc, 0);
    RunPhase(sim, 100 * kMs, [&] { sim.KeepBacklogged(kMig, 64, 1518, 1518); });
    auto r = RunPhase(sim, 1 * kSec, [&] { sim.KeepBacklogged(kMig, 64, 1518, 1518); });
    const double expect = enabled ? 15'000'000.0 : 10'000'000.0;
    EXPECT_NEAR(static_cast<double>(r[0]), expect, 0.01 * expect);
    EXPECT_EQ(sim.shaper().counters(kMig).borrowed_bytes > 0, enabled);
  }
}

TEST(ShaperTest, NoClassExceedsItsCeilEvenWhenBorrowing) {
  // Each class has more to borrow than its 12 MB/s ceil allows.
  ShaperConfig sc = BorrowConfig();
  sc.migration.rate_bytes_per_sec = 40'000'000;
  sc.migration.ceil_bytes_per_sec = 40'000'000;
  sc.chaff.rate_bytes_per_sec = 1'000'000;  // needs migration's tokens to go faster
  sc.chaff.ceil_bytes_per_sec = 12'000'000;
  sc.migration_borrows_from_chaff = true;
  // Chaff alone, lending migration idle.
  {
    Sim sim(sc, 0);
    ReferenceBucket ceil(12'000'000, sc.chaff.burst_bytes, 0);
    const uint64_t end = 2 * kSec;
    while (sim.now() < end) {
      sim.KeepBacklogged(kChaff, 64, 64, 1518);
      for (uint64_t h : sim.Poll()) {
        ASSERT_TRUE(ceil.Charge(sim.now(), sim.packet(h).bytes)) << "chaff above its ceil";
      }
      sim.AdvanceJitter();
    }
    EXPECT_NEAR(static_cast<double>(sim.sent_bytes(kChaff)), 24'000'000.0, 0.01 * 24e6);
    EXPECT_GT(sim.shaper().counters(kChaff).borrowed_bytes, 0u);
  }
  // Migration alone, borrowing from idle chaff (12 MB/s to lend), capped by
  // its ceil.
  {
    sc.chaff.rate_bytes_per_sec = 12'000'000;
    sc.migration.rate_bytes_per_sec = 2'000'000;
    sc.migration.ceil_bytes_per_sec = 12'000'000;
    Sim sim(sc, 0);
    ReferenceBucket ceil(12'000'000, sc.migration.burst_bytes, 0);
    while (sim.now() < 2 * kSec) {
      sim.KeepBacklogged(kMig, 64, 64, 1518);
      for (uint64_t h : sim.Poll()) {
        ASSERT_TRUE(ceil.Charge(sim.now(), sim.packet(h).bytes)) << "migration above its ceil";
      }
      sim.AdvanceJitter();
    }
    EXPECT_NEAR(static_cast<double>(sim.sent_bytes(kMig)), 24'000'000.0, 0.01 * 24e6);
  }
}

TEST(ShaperTest, RootLimitsTheSumAndServesMigrationFirst) {
  ShaperConfig sc = BorrowConfig();
  sc.link_rate_bytes_per_sec = 15'000'000;
  sc.link_burst_bytes = 32'768;
  sc.migration.rate_bytes_per_sec = 10'000'000;
  sc.chaff.rate_bytes_per_sec = 10'000'000;
  sc.chaff.ceil_bytes_per_sec = 40'000'000;
  Sim sim(sc, 0);
  ReferenceBucket link(15'000'000, sc.link_burst_bytes, 0);
  const uint64_t end = 2 * kSec;
  while (sim.now() < end) {
    sim.KeepBacklogged(kMig, 64, 1518, 1518);
    sim.KeepBacklogged(kChaff, 64, 64, 600);  // small: would slip in first
    for (uint64_t h : sim.Poll()) {
      ASSERT_TRUE(link.Charge(sim.now(), sim.packet(h).bytes)) << "root above link rate";
    }
    sim.AdvanceJitter();
  }
  const double total = static_cast<double>(sim.sent_bytes(kMig) + sim.sent_bytes(kChaff));
  EXPECT_NEAR(total, 30'000'000.0, 0.01 * 30e6);
  // Migration, first in line, gets its full 10 MB/s; chaff the remaining 5.
  EXPECT_NEAR(static_cast<double>(sim.sent_bytes(kMig)), 20'000'000.0, 0.01 * 20e6);
}

// ------------------------------------------------------------------ Queues

TEST(ShaperTest, TailDropAtThePacketCapIsCounted) {
  ShaperConfig sc;
  sc.migration.queue_packets = 4;
  Sim sim(sc, 0);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(sim.Offer(kMig, 100), i < 4) << i;
  const ShaperClassCounters k = sim.shaper().counters(kMig);
  EXPECT_EQ(k.enqueued_packets, 4u);
  EXPECT_EQ(k.enqueued_bytes, 400u);
  EXPECT_EQ(k.dropped_packets, 2u);
  EXPECT_EQ(k.dropped_bytes, 200u);
  EXPECT_EQ(k.backlog_packets, 4u);
  EXPECT_EQ(k.backlog_bytes, 400u);
  EXPECT_EQ(sim.shaper().queue_packet_limit(kMig), 4u);
  // Room again once one leaves: the ring wraps.
  ASSERT_EQ(sim.Poll(1).size(), 1u);
  EXPECT_TRUE(sim.Offer(kMig, 100));
  EXPECT_FALSE(sim.Offer(kMig, 100));
}

TEST(ShaperTest, DiscardEmptiesAQueueAsDropsNotSends) {
  ShaperConfig sc;
  Sim sim(sc, 0);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(sim.Offer(kMig, 100));
  ShaperClassCounters before = sim.shaper().counters(kMig);
  std::vector<uint64_t> out(3);
  // In batches, oldest first.
  EXPECT_EQ(sim.shaper().Discard(kMig, out.data(), out.size()), 3u);
  EXPECT_EQ(sim.shaper().Discard(kMig, out.data(), out.size()), 2u);
  EXPECT_EQ(sim.shaper().Discard(kMig, out.data(), out.size()), 0u);
  const ShaperClassCounters k = sim.shaper().counters(kMig);
  EXPECT_EQ(k.sent_packets, before.sent_packets);
  EXPECT_EQ(k.sojourn_ns_max, before.sojourn_ns_max);
  EXPECT_EQ(k.dropped_packets, before.dropped_packets + 5);
  EXPECT_EQ(k.dropped_bytes, before.dropped_bytes + 500);
  EXPECT_EQ(k.backlog_packets, 0u);
  EXPECT_EQ(k.backlog_bytes, 0u);
}

TEST(ShaperTest, TailDropAtTheByteCapIsCounted) {
  ShaperConfig sc;
  sc.max_frame_bytes = 1518;
  sc.migration.ceil_bytes_per_sec = 1'000'000;
  sc.migration.rate_bytes_per_sec = 1'000'000;
  sc.migration.queue_depth_ms = 10;  // 10 ms at the 1 MB/s ceil: 10000 bytes
  Sim sim(sc, 0);
  EXPECT_EQ(sim.shaper().queue_byte_limit(kMig), 10'000u);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(sim.Offer(kMig, 1'500));  // 9000
  EXPECT_FALSE(sim.Offer(kMig, 1'500));                               // 10500 > 10000
  EXPECT_TRUE(sim.Offer(kMig, 1'000));                                // exactly 10000
  EXPECT_FALSE(sim.Offer(kMig, 1));
  const ShaperClassCounters k = sim.shaper().counters(kMig);
  EXPECT_EQ(k.dropped_packets, 2u);
  EXPECT_EQ(k.dropped_bytes, 1'501u);
  EXPECT_EQ(k.backlog_bytes, 10'000u);
  EXPECT_EQ(k.oversize_packets, 0u);
}

TEST(ShaperTest, OversizeFramesAreDroppedAndCounted) {
  ShaperConfig sc;
  sc.max_frame_bytes = 1518;
  Sim sim(sc, 0);
  EXPECT_FALSE(sim.Offer(kChaff, 1519));
  EXPECT_TRUE(sim.Offer(kChaff, 1518));
  const ShaperClassCounters k = sim.shaper().counters(kChaff);
  EXPECT_EQ(k.dropped_packets, 1u);
  EXPECT_EQ(k.oversize_packets, 1u);
  EXPECT_EQ(k.dropped_bytes, 1519u);
  EXPECT_EQ(k.enqueued_packets, 1u);
}

TEST(ShaperTest, FifoOrderAndAHeadThatDoesNotFitWaits) {
  ShaperConfig sc;
  sc.max_frame_bytes = 1518;
  sc.migration.rate_bytes_per_sec = 1'000'000;  // 1 byte per us
  sc.migration.burst_bytes = 1518;
  sc.chaff_borrows_from_migration = false;
  Sim sim(sc, 0);
  // Drain the initial bucket with one full frame.
  ASSERT_TRUE(sim.Offer(kMig, 1518));
  ASSERT_EQ(sim.Poll().size(), 1u);
  // Alternate big and small: a small one behind a waiting big one must wait.
  std::vector<uint64_t> order;
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(sim.Offer(kMig, i % 2 == 0 ? 1500 : 64));
  uint64_t first_handle = 1;
  for (int step = 0; step < 200'000 && order.size() < 200; ++step) {
    sim.Advance(7 * kUs);
    const int64_t tokens_before = sim.shaper().rate_bucket(kMig).tokens() +
                                  7 * static_cast<int64_t>(kUs) * 1'000'000;
    const auto& sent = sim.Poll();
    if (sent.empty()) {
      // Nothing went although a 64 B packet would have fit: the head is big.
      const bool head_is_big = order.size() % 2 == 0;
      if (tokens_before >= BytesToTokenUnits(64) && !head_is_big) {
        ADD_FAILURE() << "a small head packet with tokens available did not go";
      }
    }
    for (uint64_t h : sent) order.push_back(h);
  }
  ASSERT_EQ(order.size(), 200u);
  for (size_t i = 0; i < order.size(); ++i) ASSERT_EQ(order[i], first_handle + i);
}

TEST(ShaperTest, CountersAndSojourn) {
  ShaperConfig sc;
  sc.max_frame_bytes = 1518;
  sc.migration.rate_bytes_per_sec = 1'000'000;
  sc.migration.burst_bytes = 1518;
  sc.chaff_borrows_from_migration = false;
  Sim sim(sc, 10 * kSec);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(sim.Offer(kMig, 1000));
  // 1518 B of tokens: the first goes now, the second needs 482 more (482 us),
  // the third 1000 more.
  EXPECT_EQ(sim.Poll().size(), 1u);
  sim.Advance(482 * kUs);
  EXPECT_EQ(sim.Poll().size(), 1u);
  sim.Advance(999 * kUs);
  EXPECT_EQ(sim.Poll().size(), 0u);
  sim.Advance(1 * kUs);
  EXPECT_EQ(sim.Poll().size(), 1u);
  const ShaperClassCounters k = sim.shaper().counters(kMig);
  EXPECT_EQ(k.sent_packets, 3u);
  EXPECT_EQ(k.sent_bytes, 3000u);
  EXPECT_EQ(k.backlog_packets, 0u);
  EXPECT_EQ(k.sojourn_ns_max, 1482 * kUs);
  EXPECT_EQ(k.sojourn_ns_total, (0 + 482 + 1482) * kUs);
}

// ---------------------------------------------------------- Default class

// A 20 MB/s link, and default traffic at 12 MB/s (1200 B every 100 us), far
// more than root's burst at any one time, passed as a poll comes due.
ShaperConfig TwentyMBpsLinkConfig() {
  ShaperConfig sc = BorrowConfig();
  sc.link_rate_bytes_per_sec = 20'000'000;
  sc.link_burst_bytes = 32'768;
  return sc;
}
struct DefaultAt12MBps {
  uint64_t next = 0;
  uint64_t bytes = 0;
  void PassDue(Sim& sim) {
    while (next <= sim.now()) {
      sim.shaper().PassDefault(1200, sim.now());
      bytes += 1200;
      next += 100 * kUs;
    }
  }
};

TEST(ShaperTest, DefaultClassNeverWaitsAndShapedClassesLeaveItRoom) {
  for (bool charged : {true, false}) {
    SCOPED_TRACE(charged ? "charged to root" : "not charged");
    ShaperConfig sc = TwentyMBpsLinkConfig();
    sc.migration.rate_bytes_per_sec = 20'000'000;
    sc.default_counts_against_root = charged;
    Sim sim(sc, 0);
    // 2 s of it: every default packet is passed and counted.
    DefaultAt12MBps background;
    auto r = RunPhase(sim, 2 * kSec, [&] {
      sim.KeepBacklogged(kMig, 64, 1518, 1518);
      background.PassDue(sim);
    });
    EXPECT_EQ(sim.shaper().default_counters().bytes, background.bytes);
    EXPECT_EQ(sim.shaper().default_counters().packets, background.bytes / 1200);
    EXPECT_GE(sim.shaper().root_bucket().tokens(), -sim.shaper().root_bucket().burst());
    // Charged: migration gets what the link has left, 20 - 12 = 8 MB/s.
    // Not charged: migration runs at its own 20 MB/s regardless.
    const double expect = charged ? 16'000'000.0 : 40'000'000.0;
    EXPECT_NEAR(static_cast<double>(r[0]), expect, 0.01 * expect);
  }
}

TEST(ShaperTest, AMigrationThatDoesNotWaitForRootKeepsItsRateBesideDefaultAndChaffYields) {
  for (bool waits : {true, false}) {
    SCOPED_TRACE(waits ? "migration waits for root" : "migration does not wait for root");
    ShaperConfig sc = TwentyMBpsLinkConfig();
    sc.migration.rate_bytes_per_sec = 10'000'000;
    sc.chaff.rate_bytes_per_sec = 10'000'000;  // chaff wants the link too
    sc.migration.waits_for_root = waits;
    Sim sim(sc, 0);
    // 2 s of default traffic charged to root: the link has 8 MB/s left for
    // the shaped classes.
    DefaultAt12MBps background;
    auto r = RunPhase(sim, 2 * kSec, [&] {
      sim.KeepBacklogged(kMig, 64, 1518, 1518);
      sim.KeepBacklogged(kChaff, 64, 1518, 1518);
      background.PassDue(sim);
    });
    EXPECT_GE(sim.shaper().root_bucket().tokens(), -sim.shaper().root_bucket().burst());
    // Waiting: migration first, on what the default class left, 8 MB/s.
    // Not waiting: migration at its own 10 MB/s, the link overbooked
    // (12 + 10 > 20) as it would be without the gateway. Chaff, waiting for
    // root either way, gets nothing.
    const double expect = waits ? 16'000'000.0 : 20'000'000.0;
    EXPECT_NEAR(static_cast<double>(r[0]), expect, (waits ? 0.02 : 0.01) * expect);
    EXPECT_LT(r[1], 100'000u);
  }
}

TEST(ShaperTest, DefaultDebtIsBoundedByTheRootBurst) {
  ShaperConfig sc = BorrowConfig();
  sc.link_rate_bytes_per_sec = 10'000'000;
  sc.link_burst_bytes = 100'000;
  Sim sim(sc, 0);
  // An 11 MB surge in one instant: root is floored at -100 kB, so shaped
  // traffic resumes after 10.2 ms (100 kB of debt + one frame at 10 MB/s),
  // not after the 1.1 s the whole surge would take.
  sim.shaper().PassDefault(1'000'000, 0);
  for (int i = 0; i < 10; ++i) sim.shaper().PassDefault(1'000'000, 0);
  EXPECT_EQ(sim.shaper().root_bucket().tokens(), -sim.shaper().root_bucket().burst());
  ASSERT_TRUE(sim.Offer(kMig, 1518));
  sim.Advance(10 * kMs);
  EXPECT_TRUE(sim.Poll().empty());
  sim.Advance(200 * kUs);
  EXPECT_EQ(sim.Poll().size(), 1u);
}

// ------------------------------------------------------ No allocation

TEST(ShaperTest, PerPacketPathAndRateChangesDoNotAllocate) {
  ShaperConfig sc;
  sc.migration.flow_lanes = 4;  // lanes are allocated at Create too
  Shaper shaper = Shaper::Create(sc, 0).value();
  RateVariation rv{RateVariationConfig{}};
  std::mt19937_64 rng(5);
  std::array<uint64_t, 32> out;
  uint64_t now = 0, handle = 0, sent = 0;
  const uint64_t before = test::ThreadAllocations();
  for (int i = 0; i < 100'000; ++i) {
    now += 10 * kUs;
    shaper.Enqueue(kMig, handle++, 1500, now, static_cast<uint32_t>(i % 5));
    shaper.Enqueue(kChaff, handle++, 400, now);
    shaper.PassDefault(600, now);
    if (rv.ShouldStep(now)) shaper.SetRate(kMig, RateToBytesPerSec(rv.StepAt(now, rng)));
    sent += shaper.Dequeue(now, out.data(), out.size());
    (void)shaper.counters(kMig);
  }
  const uint64_t after = test::ThreadAllocations();
  EXPECT_EQ(after - before, 0u);
  EXPECT_GT(sent, 0u);
  EXPECT_GT(rv.steps(), 50u);
}

}  // namespace
}  // namespace shroud
