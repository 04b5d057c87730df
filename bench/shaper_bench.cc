// Benchmarks of the gateway's shaper (Google Benchmark 1.7): what a rate change
// costs in-process, against the paper's `tc class change` every 10 ms
// (scripts/bench-rate-change.sh prints the ratio), and the per-packet cost of
// the hierarchy.
//
//   BM_SetRate                  Shaper::SetRate alone (a plain store)
//   BM_Algorithm3Step           RateVariation::Step (Algorithm 3, one iteration)
//   BM_RateChange               the worker's whole 10 ms rate change: ShouldStep
//                               + StepAt + SetRate
//   BM_TokenBucketRefill        one bucket's refill
//   BM_ShaperRefill             Shaper::Refill: root + 2 x (rate, ceil)
//   BM_EnqueueDequeue/N         per packet: enqueue bursts of N migration packets,
//                               dequeue them (tokens never binding)
//   BM_EnqueueDequeueBorrowing  per packet: half migration (idle between
//                               bursts), half chaff borrowing its tokens
//   BM_DequeueIdle              a poll with empty queues (refill + checks)
//   BM_PassDefault              accounting one default-class packet to root
//
// Per-packet benchmarks report items_per_second (= packets/s).
#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <random>

#include "dataplane/core/rate_variation.h"
#include "dataplane/core/token_bucket.h"

namespace shroud {
namespace {

constexpr ShapedClass kMig = ShapedClass::kMigration;
constexpr ShapedClass kChaff = ShapedClass::kChaff;

// Rates and bursts so large that tokens never hold a packet back: the cost
// measured is the bookkeeping, not waiting.
ShaperConfig UnboundedConfig() {
  ShaperConfig c;
  c.link_rate_bytes_per_sec = kMaxRateBytesPerSec;
  c.link_burst_bytes = 64 << 20;
  for (ShaperClassConfig* k : {&c.migration, &c.chaff}) {
    k->rate_bytes_per_sec = kMaxRateBytesPerSec;
    k->ceil_bytes_per_sec = kMaxRateBytesPerSec;
    k->burst_bytes = 64 << 20;
    k->queue_depth_ms = 1;
    k->queue_packets = 4096;
  }
  return c;
}

void BM_SetRate(benchmark::State& state) {
  Shaper shaper = Shaper::Create(ShaperConfig{}, 0).value();
  uint64_t rate = 4'000'000;
  for (auto _ : state) {
    shaper.SetRate(kMig, rate);
    rate ^= 0x5555;  // alternate two rates
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_SetRate);

void BM_Algorithm3Step(benchmark::State& state) {
  RateVariation rv{RateVariationConfig{}};
  std::mt19937_64 rng(1);
  for (auto _ : state) benchmark::DoNotOptimize(rv.Step(rng));
}
BENCHMARK(BM_Algorithm3Step);

void BM_RateChange(benchmark::State& state) {
  Shaper shaper = Shaper::Create(ShaperConfig{}, 0).value();
  RateVariationConfig config;
  RateVariation rv(config);
  std::mt19937_64 rng(1);
  uint64_t now = 0;
  for (auto _ : state) {
    now += config.interval_ns;  // every iteration is a due step
    if (rv.ShouldStep(now)) shaper.SetRate(kMig, RateToBytesPerSec(rv.StepAt(now, rng)));
    benchmark::ClobberMemory();
  }
  if (rv.steps() != static_cast<uint64_t>(state.iterations())) state.SkipWithError("not every iteration stepped");
}
BENCHMARK(BM_RateChange);

void BM_TokenBucketRefill(benchmark::State& state) {
  TokenBucket bucket(1'000'000'000, 1 << 30, 0);
  uint64_t now = 0;
  for (auto _ : state) {
    now += 700;
    bucket.Refill(now);
    bucket.Take(BytesToTokenUnits(64));  // keep it below burst: the refill path adds
    benchmark::DoNotOptimize(bucket.tokens());
  }
}
BENCHMARK(BM_TokenBucketRefill);

void BM_ShaperRefill(benchmark::State& state) {
  Shaper shaper = Shaper::Create(ShaperConfig{}, 0).value();
  uint64_t now = 0;
  for (auto _ : state) {
    now += 700;
    shaper.Refill(now);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_ShaperRefill);

void BM_EnqueueDequeue(benchmark::State& state) {
  const size_t burst = static_cast<size_t>(state.range(0));
  Shaper shaper = Shaper::Create(UnboundedConfig(), 0).value();
  std::array<uint64_t, 256> out;
  uint64_t now = 0, handle = 0;
  for (auto _ : state) {
    now += 1'000;
    for (size_t i = 0; i < burst; ++i) shaper.Enqueue(kMig, handle++, 1'500, now);
    const size_t n = shaper.Dequeue(now, out.data(), burst);
    benchmark::DoNotOptimize(out.data());
    if (n != burst) {
      state.SkipWithError("tokens held packets back");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(burst));
}
BENCHMARK(BM_EnqueueDequeue)->Arg(1)->Arg(32);

// A burst of 32 from four interleaved migration flows through 1 lane (the
// baseline, one FIFO) or a lane per flow (flow_lanes), in trains of 1..8.
void BM_EnqueueDequeueLanes(benchmark::State& state) {
  ShaperConfig config = UnboundedConfig();
  config.migration.flow_lanes = static_cast<uint32_t>(state.range(0));
  config.migration.train_max_frames = 8;
  Shaper shaper = Shaper::Create(config, 0).value();
  std::array<uint64_t, 64> out;
  uint64_t now = 0, handle = 0;
  for (auto _ : state) {
    now += 1'000;
    for (uint32_t i = 0; i < 32; ++i) shaper.Enqueue(kMig, handle++, 1'500, now, i % 4);
    size_t n = 0;
    // Trains may leave a few frames for the next poll; drain like a busy loop.
    for (int polls = 0; polls < 8 && n < 32; ++polls) n += shaper.Dequeue(now, out.data(), out.size());
    benchmark::DoNotOptimize(out.data());
    if (n != 32 && shaper.counters(kMig).backlog_packets > 64) {
      state.SkipWithError("the queue grows: tokens held packets back");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * 32);
  state.counters["lane_turns_per_burst"] =
      static_cast<double>(shaper.counters(kMig).lane_turns) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_EnqueueDequeueLanes)->Arg(1)->Arg(4)->Arg(8);

void BM_EnqueueDequeueBorrowing(benchmark::State& state) {
  // Chaff has no rate of its own; every chaff packet is sent on migration's
  // tokens (migration's queue is empty by the time chaff is served).
  ShaperConfig config = UnboundedConfig();
  config.chaff.rate_bytes_per_sec = 0;
  Shaper shaper = Shaper::Create(config, 0).value();
  std::array<uint64_t, 64> out;
  uint64_t now = 0, handle = 0;
  // Spend chaff's initial (full) bucket first, so that what is timed is the
  // borrowing path.
  while (shaper.counters(kChaff).borrowed_bytes == 0) {
    now += 1'000;
    for (int i = 0; i < 32; ++i) shaper.Enqueue(kChaff, handle++, 1'500, now);
    shaper.Dequeue(now, out.data(), out.size());
  }
  const uint64_t borrowed_before = shaper.counters(kChaff).borrowed_bytes;
  for (auto _ : state) {
    now += 1'000;
    for (int i = 0; i < 16; ++i) shaper.Enqueue(kMig, handle++, 1'500, now);
    for (int i = 0; i < 16; ++i) shaper.Enqueue(kChaff, handle++, 1'500, now);
    const size_t n = shaper.Dequeue(now, out.data(), out.size());
    benchmark::DoNotOptimize(out.data());
    if (n != 32) {
      state.SkipWithError("tokens held packets back");
      break;
    }
  }
  const uint64_t borrowed = shaper.counters(kChaff).borrowed_bytes - borrowed_before;
  if (borrowed < static_cast<uint64_t>(state.iterations()) * 16 * 1'500) {
    state.SkipWithError("chaff did not run on borrowed tokens");
  }
  state.SetItemsProcessed(state.iterations() * 32);
}
BENCHMARK(BM_EnqueueDequeueBorrowing);

void BM_DequeueIdle(benchmark::State& state) {
  Shaper shaper = Shaper::Create(ShaperConfig{}, 0).value();
  std::array<uint64_t, 32> out;
  uint64_t now = 0;
  for (auto _ : state) {
    now += 700;
    benchmark::DoNotOptimize(shaper.Dequeue(now, out.data(), out.size()));
  }
}
BENCHMARK(BM_DequeueIdle);

void BM_PassDefault(benchmark::State& state) {
  Shaper shaper = Shaper::Create(ShaperConfig{}, 0).value();
  uint64_t now = 0;
  for (auto _ : state) {
    now += 100;
    shaper.PassDefault(1'500, now);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PassDefault);

}  // namespace
}  // namespace shroud

BENCHMARK_MAIN();
