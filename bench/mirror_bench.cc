// Benchmarks of the mirror channel and of what the control process does with
// each record (Google Benchmark 1.7). Records/s in every one (items_per_second),
// plus per_record (seconds per record, e.g. "42.1n" = 42.1 ns).
//
//   BM_MirrorTryWrite          MirrorProducer::TryWrite into a ring with room
//                              (the reader's Poll that makes room runs with the
//                              timer paused): the tap's cost per record.
//   BM_MirrorTryWriteFull      TryWrite into a full ring with no reader: a drop
//                              (what a tap pays per record while nobody reads).
//   BM_MirrorPoll/B            MirrorReader::Poll in batches of B records (4096
//                              is shroud-control's batch) out of a full ring
//                              (the writes that fill it run with the timer
//                              paused).
//   BM_MirrorEndToEnd          a producer thread writing as fast as it can and
//                              this thread polling batches of 4096: records
//                              consumed per second of wall time (real time;
//                              needs two free cores to mean anything).
//   BM_FlowStoreApply/N        FlowStore::Apply of update records of N live
//                              flows in round-robin order (as the tap's sweep
//                              exports them), PaperDetectors with the built-in
//                              default model re-evaluating every flow:
//                              shroud-control's work per record. N = 1024 (all
//                              in cache) and 1048576 (the bench-tap flow count).
//   BM_PollAndApply/N          Poll (batches of 4096) + Apply, one thread, the
//                              ring refilled with the timer paused: the
//                              consumer's cost per record without its sleeps,
//                              its lock and the ring's cross-core traffic.
//
// The mirror file lives in /dev/shm (else $TMPDIR, else /tmp) and is removed.
// Example:
//   build/mirror_bench --benchmark_filter='Mirror|FlowStore'
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "control/analysis/maxent_model.h"
#include "control/daemon/flow_store.h"
#include "control/mirror/mirror_reader.h"
#include "dataplane/core/flow_features.h"
#include "dataplane/mirror_writer.h"
#include "default_model.h"
#include "shroud/feature_config.h"
#include "shroud/mirror.h"

namespace shroud {
namespace {

constexpr uint32_t kRingCapacity = 65536;  // shroud-dataplane's default ring
constexpr size_t kControlBatch = 4096;     // shroud-control's records per poll

void ReportRecords(benchmark::State& state, uint64_t records) {
  state.SetItemsProcessed(static_cast<int64_t>(records));
  state.counters["per_record"] = benchmark::Counter(
      static_cast<double>(records), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

std::string MirrorDir() {
  if (std::filesystem::is_directory("/dev/shm") && access("/dev/shm", W_OK) == 0) return "/dev/shm";
  if (const char* t = std::getenv("TMPDIR"); t != nullptr && *t != '\0') return t;
  return "/tmp";
}

// One mirror file with one ring, its writer and its reader; removed at the end.
struct Channel {
  std::string path;
  std::unique_ptr<MirrorWriter> writer;
  std::unique_ptr<MirrorReader> reader;
  MirrorProducer producer;
  bool ok = false;

  explicit Channel(benchmark::State& state, uint32_t capacity = kRingCapacity) {
    static int serial = 0;
    path = MirrorDir() + "/shroud-mirror-bench-" + std::to_string(getpid()) + "-" +
           std::to_string(serial++);
    MirrorWriterOptions o;
    o.path = path;
    o.rings = 1;
    o.ring_capacity = capacity;
    o.mode = MirrorMode::kTap;
    o.instance = "mirror-bench";
    absl::StatusOr<std::unique_ptr<MirrorWriter>> w = MirrorWriter::Create(o);
    if (!w.ok()) {
      state.SkipWithError(std::string(w.status().message()).c_str());
      return;
    }
    writer = *std::move(w);
    writer->SetState(MirrorState::kRunning);
    absl::StatusOr<std::unique_ptr<MirrorReader>> r = MirrorReader::Open(path);
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    reader = *std::move(r);
    producer = writer->producer(0);
    ok = true;
  }
  ~Channel() {
    reader.reset();
    writer.reset();
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
  // Empties the ring.
  void Drain(std::vector<MirrorRecord>& scratch) {
    for (;;) {
      scratch.clear();
      if (reader->Poll(scratch, kControlBatch) == 0) return;
    }
  }
};

// Feature sets of flows that saw a realistic stream: 4096 flows interleaved,
// ~60 packets each, random sizes and gaps (so every byte window and the
// burst/pattern state hold something). Records of more flows reuse them with
// their own 5-tuples.
struct Templates {
  std::vector<FlowFeatures> features;
  uint64_t stream_packets = 0;
};

const Templates& FeatureTemplates() {
  static const Templates* t = [] {
    auto* out = new Templates;
    constexpr uint32_t kFlows = 4096;
    const FeatureConfig config;
    out->features.resize(kFlows);
    StreamPosition stream(config);
    std::mt19937_64 rng(42);
    std::uniform_int_distribution<uint32_t> size(60, 1514);
    uint64_t t_ns = 1'000'000'000;
    for (uint32_t p = 0; p < kFlows * 60; ++p) {
      const uint32_t f = static_cast<uint32_t>(rng() % kFlows);
      t_ns += rng() % 50'000;
      out->features[f].Observe({t_ns, size(rng)}, stream, config);
      stream.Advance();
    }
    out->stream_packets = stream.packets();
    return out;
  }();
  return *t;
}

FlowKey KeyOf(uint32_t i) {
  FlowKey k{};
  k.ip_version = 4;
  k.protocol = (i & 1) != 0 ? kProtoUdp : kProtoTcp;
  k.src_addr = {198, 51, static_cast<uint8_t>(i >> 16), static_cast<uint8_t>(i >> 8)};
  k.dst_addr = {203, 0, 113, static_cast<uint8_t>(i)};
  k.src_port = static_cast<uint16_t>(1024 + (i & 0x3fff));
  k.dst_port = 443;
  return k;
}

MirrorRecord RecordOf(uint32_t i) {
  const Templates& t = FeatureTemplates();
  MirrorRecord r{};
  r.type = MirrorRecordType::kUpdate;
  r.flow_class = MirrorFlowClass::kUnclassified;
  r.worker = 0;
  r.stream_packets = t.stream_packets;
  r.features = t.features[i % t.features.size()];
  r.time_ns = r.features.last_ns;
  r.key = KeyOf(i);
  return r;
}

// ------------------------------------------------------------ the ring

void BM_MirrorTryWrite(benchmark::State& state) {
  Channel ch(state);
  if (!ch.ok) return;
  std::vector<MirrorRecord> scratch;
  scratch.reserve(kControlBatch);
  MirrorRecord r = RecordOf(1);
  uint64_t written = 0, in_ring = 0;
  for (auto _ : state) {
    if (in_ring == kRingCapacity) {
      state.PauseTiming();
      ch.Drain(scratch);
      in_ring = 0;
      state.ResumeTiming();
    }
    r.stream_packets = written;
    benchmark::DoNotOptimize(ch.producer.TryWrite(r));
    ++written;
    ++in_ring;
  }
  if (ch.producer.dropped() != 0) state.SkipWithError("records dropped with room in the ring");
  ReportRecords(state, written);
}
BENCHMARK(BM_MirrorTryWrite);

void BM_MirrorTryWriteFull(benchmark::State& state) {
  Channel ch(state, 1024);
  if (!ch.ok) return;
  const MirrorRecord r = RecordOf(1);
  while (ch.producer.TryWrite(r)) {
  }
  uint64_t n = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ch.producer.TryWrite(r));
    ++n;
  }
  ReportRecords(state, n);
}
BENCHMARK(BM_MirrorTryWriteFull);

void BM_MirrorPoll(benchmark::State& state) {
  Channel ch(state);
  if (!ch.ok) return;
  const size_t batch = static_cast<size_t>(state.range(0));
  std::vector<MirrorRecord> out;
  out.reserve(batch);
  MirrorRecord r = RecordOf(1);
  uint64_t consumed = 0;
  size_t left = 0;
  for (auto _ : state) {
    if (left < batch) {
      state.PauseTiming();
      ch.Drain(out);
      for (uint32_t i = 0; i < kRingCapacity; ++i) {
        r.stream_packets = i;
        ch.producer.TryWrite(r);
      }
      left = kRingCapacity;
      state.ResumeTiming();
    }
    out.clear();
    const size_t n = ch.reader->Poll(out, batch);
    benchmark::DoNotOptimize(out.data());
    consumed += n;
    left -= n;
  }
  ReportRecords(state, consumed);
}
BENCHMARK(BM_MirrorPoll)->Arg(64)->Arg(kControlBatch);

void BM_MirrorEndToEnd(benchmark::State& state) {
  Channel ch(state);
  if (!ch.ok) return;
  std::atomic<bool> stop{false};
  MirrorProducer producer = ch.producer;
  std::thread writer([&stop, producer]() mutable {
    MirrorRecord r = RecordOf(1);
    uint64_t i = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      r.stream_packets = i++;
      producer.TryWrite(r);
    }
  });
  std::vector<MirrorRecord> out;
  out.reserve(kControlBatch);
  uint64_t consumed = 0;
  const uint64_t published_before = ch.producer.published();
  const uint64_t dropped_before = ch.producer.dropped();
  for (auto _ : state) {
    out.clear();
    consumed += ch.reader->Poll(out, kControlBatch);
    benchmark::DoNotOptimize(out.data());
  }
  stop.store(true);
  writer.join();
  ReportRecords(state, consumed);
  const double attempted = static_cast<double>(ch.producer.published() - published_before +
                                               ch.producer.dropped() - dropped_before);
  state.counters["dropped_share"] =
      attempted > 0 ? static_cast<double>(ch.producer.dropped() - dropped_before) / attempted : 0;
}
BENCHMARK(BM_MirrorEndToEnd)->UseRealTime()->MinTime(1.0);

// ------------------------------------------------------------ the control side

MaxEntModel DefaultModel() {
  absl::StatusOr<MaxEntModel> m =
      MaxEntModel::FromJson(std::string(kDefaultMaxEntModel), "built-in default model");
  if (!m.ok()) {
    std::fprintf(stderr, "mirror_bench: default model: %s\n", std::string(m.status().message()).c_str());
    std::abort();
  }
  return *std::move(m);
}

// A store holding `flows` live flows (records of keys 0..flows-1), and those
// records. Built once per flow count and kept: Google Benchmark calls a
// benchmark function several times while it sizes the iteration count, and
// building a million flows takes a second or two.
struct StoreFixture {
  std::unique_ptr<FlowStore> store;
  std::vector<MirrorRecord> records;
  std::string error;
};

StoreFixture* SharedStore(benchmark::State& state, uint32_t flows) {
  static std::map<uint32_t, std::unique_ptr<StoreFixture>> cache;
  std::unique_ptr<StoreFixture>& f = cache[flows];
  if (f == nullptr) {
    f = std::make_unique<StoreFixture>();
    FlowStoreOptions o;
    o.max_live_flows = size_t{flows} + 1;
    o.detection_min_packets = 1000;  // shroud-control's default --min_packets
    f->store = std::make_unique<FlowStore>(DefaultModel(), o);
    if (absl::Status s = f->store->BeginRun(0x5eed, FeatureConfig{}, 1); !s.ok()) {
      f->error = std::string(s.message());
    } else if (!f->store->current_run()->detectors.has_value()) {
      f->error = f->store->current_run()->detector_error;
    } else {
      f->records.reserve(flows);
      for (uint32_t i = 0; i < flows; ++i) f->records.push_back(RecordOf(i));
      for (const MirrorRecord& r : f->records) f->store->Apply(r, 2);
    }
  }
  if (!f->error.empty()) {
    state.SkipWithError(f->error.c_str());
    return nullptr;
  }
  return f.get();
}

void BM_FlowStoreApply(benchmark::State& state) {
  const uint32_t flows = static_cast<uint32_t>(state.range(0));
  StoreFixture* f = SharedStore(state, flows);
  if (f == nullptr) return;
  FlowStore* store = f->store.get();
  const std::vector<MirrorRecord>& records = f->records;
  uint64_t n = 0;
  uint32_t next = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(store->Apply(records[next], 3 + n));
    if (++next == flows) next = 0;
    ++n;
  }
  if (store->live_flows() != flows) state.SkipWithError("live flows changed");
  ReportRecords(state, n);
  state.counters["flows"] = static_cast<double>(store->live_flows());
}
BENCHMARK(BM_FlowStoreApply)->Arg(1024)->Arg(1 << 20);

void BM_PollAndApply(benchmark::State& state) {
  const uint32_t flows = static_cast<uint32_t>(state.range(0));
  StoreFixture* f = SharedStore(state, flows);
  if (f == nullptr) return;
  FlowStore* store = f->store.get();
  const std::vector<MirrorRecord>& records = f->records;
  Channel ch(state);
  if (!ch.ok) return;
  std::vector<MirrorRecord> batch;
  batch.reserve(kControlBatch);
  uint64_t n = 0;
  uint32_t next = 0;
  size_t left = 0;
  for (auto _ : state) {
    if (left == 0) {
      state.PauseTiming();
      for (uint32_t i = 0; i < kRingCapacity; ++i) {
        ch.producer.TryWrite(records[next]);
        if (++next == flows) next = 0;
      }
      left = kRingCapacity;
      state.ResumeTiming();
    }
    batch.clear();
    const size_t got = ch.reader->Poll(batch, kControlBatch);
    for (const MirrorRecord& r : batch) benchmark::DoNotOptimize(store->Apply(r, 3 + n++));
    left -= got;
  }
  ReportRecords(state, n);
}
BENCHMARK(BM_PollAndApply)->Arg(1024)->Arg(1 << 20);

}  // namespace
}  // namespace shroud

BENCHMARK_MAIN();
