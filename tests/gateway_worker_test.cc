// The gateway worker on DPDK ring ports (rte_eth_from_rings), in-process, with
// --no-huge: frames built by the test go into the ports' rx rings, the worker
// runs until idle, and what it sent is read back from the tx rings.
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "dataplane/core/gateway_config.h"
#include "dataplane/gateway_worker.h"
#include "dataplane/service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/frame_builder.h"
#include "tests/ring_frames.h"

namespace shroud {
namespace {

using test_frames::Frame;
using ::testing::ElementsAreArray;

constexpr unsigned kRingSize = 4096;

struct Env {
  rte_mempool* pool = nullptr;
  rte_ring* rx[2] = {};
  rte_ring* tx[2] = {};
  bool ok = false;
};
Env g_env;

void Inject(int port, const std::vector<Frame>& frames) {
  test_frames::InjectFrames(g_env.pool, g_env.rx[port], frames);
}

std::vector<Frame> Drain(int port) { return test_frames::DrainFrames(g_env.tx[port]); }

Frame Udp(const char* src, const char* dst, uint16_t sport, uint16_t dport, size_t payload) {
  return test_frames::EthernetUdp4(src, dst, sport, dport, payload);
}

Frame Tcp(const char* src, const char* dst, uint16_t sport, uint16_t dport, size_t payload,
          const Frame& prefix = {}) {
  return test_frames::EthernetTcp4(src, dst, sport, dport, payload,
                                   test_frames::kTcpAck | test_frames::kTcpPsh, prefix);
}

// The example deployment: migration rule on TCP dst 49152-49215.
GatewayConfig BaseConfig() {
  GatewayConfig c;
  ClassRule rule;
  rule.name = "qemu-migration";
  rule.protocol = kProtoTcp;
  rule.dst_ports = {49152, 49215};
  c.classify.rules.push_back(rule);
  c.rate_variation.enabled = false;  // a constant, known rate unless a test wants Algorithm 3
  c.rate_variation.start_rate_mbyte_s = 1;
  c.shaper.migration_queue_ms = 1000;
  return c;
}

class GatewayWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!g_env.ok) GTEST_SKIP() << "DPDK EAL could not start (see the log above)";
    Drain(0);
    Drain(1);
  }

  // Runs a worker over whatever the rx rings hold until it has been idle for
  // 30 ms with empty queues.
  GatewayCounters RunWorker(const GatewayConfig& config,
                            uint64_t duration_ns = 20'000'000'000ull,
                            std::unique_ptr<RuntimeUpdate> update = nullptr) {
    EXPECT_TRUE(ValidateGatewayConfig(config).ok()) << ValidateGatewayConfig(config);
    absl::StatusOr<Classifier> classifier = Classifier::Create(config.classify);
    EXPECT_TRUE(classifier.ok()) << classifier.status();
    classifier_ = *std::move(classifier);
    static int table_seq = 0;
    auto flows = WorkerFlowTable::Create("test_flows" + std::to_string(table_seq++),
                                   config.flows.max_flows, SOCKET_ID_ANY);
    EXPECT_TRUE(flows.ok()) << flows.status();
    GatewayWorkerOptions o = WorkerOptionsFromConfig(config);
    o.burst = 32;
    o.seed = 7;
    o.exit_when_idle_ns = 30'000'000;
    o.duration_ns = duration_ns;  // by default a bound, never expected to hit
    auto worker = GatewayWorker::Create(o, classifier_, *std::move(flows));
    EXPECT_TRUE(worker.ok()) << worker.status();
    if (update != nullptr) (*worker)->PostUpdate(std::move(update));
    std::atomic<bool> stop{false};
    (*worker)->Run(stop);
    GatewayCounters c = (*worker)->counters();
    last_flows_.clear();
    const WorkerFlowTable& t = (*worker)->flows();
    for (uint32_t i = 0; i < t.capacity(); ++i) {
      if (t.slot(i).in_use) last_flows_.push_back(t.slot(i));
    }
    return c;
  }

  // Puts `packets` full-size frames of one migration flow on the inside rx
  // ring; returns the base config with Algorithm 3 on (r = 4 MB/s).
  GatewayConfig InjectMigration(int packets, std::vector<Frame>* frames) {
    for (int i = 0; i < packets; ++i) {
      frames->push_back(Tcp("192.0.2.1", "198.51.100.2", 33000, 49152, 1400));
    }
    Inject(0, *frames);
    GatewayConfig config = BaseConfig();
    config.rate_variation.enabled = true;
    config.rate_variation.start_rate_mbyte_s = 4;
    return config;
  }

  Classifier classifier_;
  std::vector<FlowEntry> last_flows_;
};

TEST_F(GatewayWorkerTest, ForwardsDefaultTrafficUnchangedAndInOrderBothWays) {
  std::vector<Frame> in, out;
  for (int i = 0; i < 200; ++i) {
    in.push_back(Udp("192.0.2.1", "198.51.100.2", 5000 + i % 7, 53, 20 + i));
    out.push_back(Tcp("198.51.100.2", "192.0.2.1", 443, 40000 + i % 3, i % 50));
  }
  in.push_back(test_frames::Ethernet(test_frames::kEtherTypeArp, Frame(28, 1)));  // not IP
  Inject(0, in);
  Inject(1, out);
  GatewayCounters c = RunWorker(BaseConfig());
  EXPECT_THAT(Drain(1), ElementsAreArray(in));   // inside -> outside
  EXPECT_THAT(Drain(0), ElementsAreArray(out));  // outside -> inside
  EXPECT_EQ(c.direction[kInsideToOutside].forwarded_packets, in.size());
  EXPECT_EQ(c.direction[kInsideToOutside].shaped_packets, 0u);
  EXPECT_EQ(c.parse_status[static_cast<size_t>(ParseStatus::kNotIp)], 1u);
  EXPECT_EQ(c.flows.created, 7u + 3u);
  EXPECT_EQ(c.default_class.packets, in.size());
}

// Fills port `port`'s tx ring to the brim with filler frames, so the port
// refuses whatever the worker sends; `*filler` = how many it took.
void FillTxRing(int port, size_t* filler) {
  *filler = 0;
  for (;;) {
    rte_mbuf* m = test_frames::FrameToMbuf(g_env.pool, Frame(60, 0xee));
    ASSERT_NE(m, nullptr);
    if (rte_ring_enqueue(g_env.tx[port], m) != 0) {
      rte_pktmbuf_free(m);
      return;
    }
    ++*filler;
  }
}

// A port whose tx ring is full refuses frames; the worker keeps them and
// stops reading that direction until the port takes them again, so nothing is
// lost or reordered (it used to free them: a hole in a chaff connection that
// nobody retransmits, a shaped frame whose tokens were spent).
TEST_F(GatewayWorkerTest, AFullTxRingHoldsFramesBackInsteadOfDroppingThem) {
  size_t filler = 0;
  ASSERT_NO_FATAL_FAILURE(FillTxRing(1, &filler));
  std::vector<Frame> in;
  for (int i = 0; i < 300; ++i) in.push_back(Udp("192.0.2.1", "198.51.100.2", 5000, 53, 20 + i));
  Inject(0, in);
  std::atomic<bool> worker_done{false};
  std::vector<Frame> out;
  std::thread port([&] {
    // The port stays full for 100 ms (the worker's idle exit is 30 ms), then
    // takes frames as they come.
    usleep(100'000);
    for (int i = 0; i < 20'000 && !(worker_done && rte_ring_count(g_env.tx[1]) == 0); ++i) {
      for (Frame& f : Drain(1)) out.push_back(std::move(f));
      usleep(500);
    }
  });
  GatewayCounters c = RunWorker(BaseConfig(), /*duration_ns=*/10'000'000'000ull);
  worker_done = true;
  port.join();
  ASSERT_EQ(out.size(), filler + in.size());
  EXPECT_THAT(std::vector<Frame>(out.begin() + static_cast<std::ptrdiff_t>(filler), out.end()),
              ElementsAreArray(in));
  EXPECT_EQ(c.direction[kInsideToOutside].tx_dropped, 0u);
  EXPECT_GT(c.direction[kInsideToOutside].tx_retried, 0u);
  EXPECT_EQ(c.direction[kInsideToOutside].tx_packets, in.size());
}

// A port still full when the worker stops: the frames it holds back are
// dropped then, and counted, so every frame read is accounted for.
TEST_F(GatewayWorkerTest, FramesAPortStillRefusesAtTheStopAreCountedAsDropped) {
  size_t filler = 0;
  ASSERT_NO_FATAL_FAILURE(FillTxRing(1, &filler));
  std::vector<Frame> in;
  for (int i = 0; i < 100; ++i) in.push_back(Udp("192.0.2.1", "198.51.100.2", 5000, 53, 20 + i));
  Inject(0, in);
  GatewayCounters c = RunWorker(BaseConfig(), /*duration_ns=*/50'000'000ull);
  const DirectionCounters& d = c.direction[kInsideToOutside];
  EXPECT_EQ(Drain(1).size(), filler);  // the port never took one of ours
  EXPECT_EQ(d.tx_packets, 0u);
  EXPECT_GT(d.rx_packets, 0u);
  EXPECT_EQ(d.tx_dropped, d.rx_packets);
  // What the worker did not read stays in the port's rx ring.
  EXPECT_EQ(d.rx_packets + rte_ring_count(g_env.rx[0]), in.size());
  test_frames::DrainFrames(g_env.rx[0]);
}

TEST_F(GatewayWorkerTest, ShapesTheMigrationFlowAtItsRateAndForwardsItsAcks) {
  std::vector<Frame> mig, other, acks;
  for (int i = 0; i < 300; ++i) {
    mig.push_back(Tcp("192.0.2.1", "198.51.100.2", 33000, 49152, 1000));
    if (i % 10 == 0) other.push_back(Udp("192.0.2.1", "198.51.100.2", 6000, 53, i));
    if (i % 5 == 0) acks.push_back(Tcp("198.51.100.2", "192.0.2.1", 49152, 33000, 0));
  }
  std::vector<Frame> in;
  for (size_t i = 0; i < mig.size(); ++i) {
    in.push_back(mig[i]);
    if (i % 10 == 0) in.push_back(other[i / 10]);
  }
  Inject(0, in);
  Inject(1, acks);
  GatewayConfig config = BaseConfig();  // 1 MB/s, constant
  GatewayCounters c = RunWorker(config);

  const std::vector<Frame> sent = Drain(1);
  std::vector<Frame> sent_mig, sent_other;
  for (const Frame& f : sent) (f.size() > 1000 ? sent_mig : sent_other).push_back(f);
  EXPECT_THAT(sent_mig, ElementsAreArray(mig));
  EXPECT_THAT(sent_other, ElementsAreArray(other));
  EXPECT_THAT(Drain(0), ElementsAreArray(acks));  // ACKs are never queued
  EXPECT_EQ(c.direction[kInsideToOutside].shaped_packets, mig.size());
  EXPECT_EQ(c.migration.sent_packets, mig.size());
  EXPECT_EQ(c.migration.dropped_packets, 0u);
  EXPECT_EQ(c.classified_rule, 2u);  // the data direction and its reverse

  // 300 frames of 1054 bytes at 1 MB/s: the first 16 KiB of bucket burst go
  // at once, the rest takes (316200 - 16384) / 1e6 s = 0.30 s at least.
  const double min_seconds = (300.0 * mig[0].size() - 16384) / 1e6;
  EXPECT_GE(static_cast<double>(c.elapsed_ns) * 1e-9, min_seconds);
  EXPECT_GE(c.migration.sojourn_ns_max, static_cast<uint64_t>(0.25e9));
}

TEST_F(GatewayWorkerTest, FlowLanesSendEachMigrationConnectionInRuns) {
  // Four migration connections (QEMU multifd) arriving interleaved frame by
  // frame, 1 MB/s in trains of 1..8. One FIFO sends them interleaved; with a
  // lane per flow, each leaves in runs of its 16 KiB quantum (whole trains).
  std::vector<Frame> in;
  for (int i = 0; i < 240; ++i) {
    in.push_back(Tcp("192.0.2.1", "198.51.100.2", static_cast<uint16_t>(33000 + i % 4), 49152, 1000));
  }
  auto flow_of = [](const Frame& f) { return (f[34] << 8 | f[35]) - 33000; };  // TCP source port
  auto run = [&](uint32_t lanes, GatewayCounters* c) {
    Inject(0, in);
    GatewayConfig config = BaseConfig();
    config.shaper.train_max_frames = 8;
    config.shaper.flow_lanes = lanes;
    config.shaper.flow_lane_quantum_bytes = 16 * 1024;
    *c = RunWorker(config);
    return Drain(1);
  };
  auto changes = [&](const std::vector<Frame>& sent) {
    size_t n = 0;
    for (size_t i = 1; i < sent.size(); ++i) n += flow_of(sent[i]) != flow_of(sent[i - 1]);
    return n;
  };
  GatewayCounters fifo_c, lanes_c;
  const std::vector<Frame> fifo = run(1, &fifo_c);
  const std::vector<Frame> laned = run(4, &lanes_c);
  ASSERT_EQ(fifo.size(), in.size());
  ASSERT_EQ(laned.size(), in.size());
  EXPECT_EQ(changes(fifo), in.size() - 1);
  // 240 frames of 1054 bytes, turns of >= 16 KiB (16 frames) rounded up to a
  // train: about 240 / 16 = 15 turns. A turn also ends when its lane runs dry,
  // which happens while the first rx bursts (8 frames per flow) arrive: a few more.
  EXPECT_LE(changes(laned), 20u);
  std::vector<size_t> runs = {1};
  for (size_t i = 1; i < laned.size(); ++i) {
    if (flow_of(laned[i]) == flow_of(laned[i - 1])) {
      ++runs.back();
    } else {
      runs.push_back(1);
    }
  }
  std::sort(runs.begin(), runs.end());
  EXPECT_GE(runs[runs.size() / 2], 16u) << "median run shorter than a quantum";
  EXPECT_EQ(lanes_c.migration.lane_turns, changes(laned));
  EXPECT_EQ(fifo_c.migration.lane_turns, 0u);
  // Each connection's own frames in their order: the same frames, regrouped.
  for (int f = 0; f < 4; ++f) {
    std::vector<Frame> want, got;
    for (const Frame& x : in) if (flow_of(x) == f) want.push_back(x);
    for (const Frame& x : laned) if (flow_of(x) == f) got.push_back(x);
    EXPECT_THAT(got, ElementsAreArray(want)) << "flow " << f;
  }
  EXPECT_EQ(lanes_c.migration.dropped_packets, 0u);
}

TEST_F(GatewayWorkerTest, TailDropsBeyondTheQueueAndCountsIt) {
  std::vector<Frame> mig;
  for (int i = 0; i < 200; ++i) mig.push_back(Tcp("192.0.2.1", "198.51.100.2", 33000, 49200, 1000));
  Inject(0, mig);
  GatewayConfig config = BaseConfig();
  config.shaper.queue_packets = 20;
  GatewayCounters c = RunWorker(config);
  const size_t sent = Drain(1).size();
  EXPECT_EQ(c.migration.sent_packets, sent);
  EXPECT_GT(c.migration.dropped_packets, 0u);
  EXPECT_EQ(c.migration.sent_packets + c.migration.dropped_packets, mig.size());
  EXPECT_LT(sent, 60u);  // 20 queued + what the 16 KiB burst let through at once
}

TEST_F(GatewayWorkerTest, PacketsStillQueuedAtStopAreDiscardedNotCountedAsSent) {
  std::vector<Frame> mig;
  for (int i = 0; i < 300; ++i) mig.push_back(Tcp("192.0.2.1", "198.51.100.2", 33000, 49152, 1000));
  Inject(0, mig);
  // 1 MB/s: 300 kB need 0.3 s; stop after 50 ms.
  GatewayCounters c = RunWorker(BaseConfig(), 50'000'000);
  const size_t sent = Drain(1).size();
  EXPECT_GT(c.discarded_at_exit, 0u);
  EXPECT_EQ(c.migration.sent_packets, sent);
  EXPECT_EQ(c.migration.sent_packets + c.migration.dropped_packets, mig.size());
  EXPECT_EQ(c.migration.dropped_packets, c.discarded_at_exit);
  EXPECT_LT(c.migration.sojourn_ns_max, 1'000'000'000u);
}

TEST_F(GatewayWorkerTest, ARuntimeUpdateReplacesAlgorithmThreesParameters) {
  std::vector<Frame> mig;
  GatewayConfig config = InjectMigration(100, &mig);
  // Posted before Run: applied at the first chore check, right at the start.
  GatewayConfig next = config;
  next.rate_variation.min_rate_mbyte_s = 2;
  next.rate_variation.max_rate_mbyte_s = 2;
  next.rate_variation.start_rate_mbyte_s = 2;
  ASSERT_TRUE(ValidateGatewayConfig(next).ok());
  auto update = std::make_unique<RuntimeUpdate>(ToRateVariationConfig(next.rate_variation));
  update->rate_variation = true;
  update->migration_ceil_bytes_per_sec = ToShaperConfig(next).migration.ceil_bytes_per_sec;
  GatewayCounters c = RunWorker(config, 20'000'000'000ull, std::move(update));
  EXPECT_EQ(c.runtime_updates, 1u);
  EXPECT_EQ(c.rate_bytes_per_sec, 2'000'000u);  // every step since is pinned to [2, 2]
  EXPECT_EQ(c.migration.sent_packets, mig.size());
  // 100 x 1454 bytes at 2 MB/s, less the 16 KiB burst: at least 64 ms.
  EXPECT_GE(static_cast<double>(c.elapsed_ns) * 1e-9, (100.0 * mig[0].size() - 16384) / 2e6);
}

std::vector<Frame> MalformedFrames() {
  using namespace test_frames;
  std::vector<Frame> bad;
  // IPv4 header cut short.
  bad.push_back(Ethernet(kEtherTypeIpv4, Frame{0x45, 0, 0, 40, 0, 0}));
  // IHL 3.
  bad.push_back(Ethernet(kEtherTypeIpv4, Ipv4Packet({.ihl_words = 3}, TcpSegment(1, 2))));
  // Total length beyond the frame.
  bad.push_back(Ethernet(kEtherTypeIpv4, Ipv4Packet({.total_length = 1400}, TcpSegment(1, 2))));
  // TCP data offset 2.
  bad.push_back(Ethernet(kEtherTypeIpv4, Ipv4Packet({}, TcpSegment(1, 2, kTcpAck, 0, 2))));
  // Nothing but an Ethernet header's first bytes.
  bad.push_back(Frame{1, 2, 3});
  return bad;
}

TEST_F(GatewayWorkerTest, MalformedFramesAreForwardedAndCountedByDefault) {
  const std::vector<Frame> bad = MalformedFrames();
  std::vector<Frame> in = bad;
  in.push_back(Udp("192.0.2.1", "198.51.100.2", 1, 2, 10));
  Inject(0, in);
  GatewayCounters c = RunWorker(BaseConfig());
  EXPECT_THAT(Drain(1), ElementsAreArray(in));
  uint64_t malformed = 0;
  for (size_t i = 0; i < c.parse_status.size(); ++i) {
    if (IsMalformed(static_cast<ParseStatus>(i))) malformed += c.parse_status[i];
  }
  EXPECT_EQ(malformed, bad.size());
  EXPECT_EQ(c.malformed_dropped, 0u);
}

TEST_F(GatewayWorkerTest, MalformedFramesAreDroppedAndCountedWhenConfigured) {
  const std::vector<Frame> bad = MalformedFrames();
  const Frame good = Udp("192.0.2.1", "198.51.100.2", 1, 2, 10);
  std::vector<Frame> in = bad;
  in.push_back(good);
  Inject(1, in);  // either direction
  GatewayConfig config = BaseConfig();
  config.dataplane.malformed = MalformedPolicy::kDrop;
  GatewayCounters c = RunWorker(config);
  EXPECT_THAT(Drain(0), ElementsAreArray({good}));
  EXPECT_EQ(c.malformed_dropped, bad.size());
}

TEST_F(GatewayWorkerTest, QemuStreamHeaderOnAnyPortSelectsMigrationAndMarksTheReverse) {
  const Frame header = {'Q', 'E', 'V', 'M', 0, 0, 0, 3};
  std::vector<Frame> in;
  in.push_back(Tcp("192.0.2.1", "198.51.100.2", 33001, 7000, 0));  // handshake-like, no payload
  in.push_back(Tcp("192.0.2.1", "198.51.100.2", 33001, 7000, 500, header));
  for (int i = 0; i < 20; ++i) in.push_back(Tcp("192.0.2.1", "198.51.100.2", 33001, 7000, 500));
  Inject(0, in);
  GatewayConfig config = BaseConfig();
  GatewayCounters c = RunWorker(config);
  EXPECT_EQ(c.classified_signature, 1u);
  // The packet without payload went before the decision; the header packet
  // and all after it are shaped.
  EXPECT_EQ(c.direction[kInsideToOutside].shaped_packets, 21u);
  EXPECT_THAT(Drain(1), ElementsAreArray(in));  // one flow: order kept through the queue
  bool saw_reverse = false;
  for (const FlowEntry& e : last_flows_) {
    if (e.key.src_port == 7000 && e.key.dst_port == 33001) {
      saw_reverse = true;
      EXPECT_TRUE(e.cls.reverse);
      EXPECT_EQ(e.cls.traffic_class, TrafficClass::kMigration);
      EXPECT_EQ(e.cls.source, ClassSource::kSignature);
    }
  }
  EXPECT_TRUE(saw_reverse);
}

// A reload's update: `next`'s Algorithm 3 and classifier, the latter with
// the signature ids of the classifier it replaces.
std::unique_ptr<RuntimeUpdate> ReloadUpdate(const GatewayConfig& next, const SignatureIds& ids) {
  auto update = std::make_unique<RuntimeUpdate>(ToRateVariationConfig(next.rate_variation));
  update->rate_variation = next.rate_variation.enabled;
  update->migration_ceil_bytes_per_sec = ToShaperConfig(next).migration.ceil_bytes_per_sec;
  absl::StatusOr<Classifier> classifier = Classifier::Create(next.classify, ids);
  EXPECT_TRUE(classifier.ok()) << classifier.status();
  update->classifier = std::make_unique<Classifier>(*std::move(classifier));
  absl::StatusOr<SignatureScanner> scanner = update->classifier->NewScanner();
  EXPECT_TRUE(scanner.ok()) << scanner.status();
  update->scanner.emplace(*std::move(scanner));
  return update;
}

// A reload's update: new rules (migration to TCP port `port`), Algorithm 3
// as in `config`.
std::unique_ptr<RuntimeUpdate> ReloadUpdate(const GatewayConfig& config, uint16_t port) {
  GatewayConfig next = config;
  next.classify.rules.clear();
  ClassRule rule;
  rule.name = "reloaded";
  rule.protocol = kProtoTcp;
  rule.dst_ports = {port, port};
  next.classify.rules.push_back(rule);
  return ReloadUpdate(next, SignatureIds{});
}

// A worker running in its own thread until stopped, for tests that change
// it while it runs.
class RunningWorker {
 public:
  // `before_run` gets the worker before its thread starts (e.g. to post
  // updates it must find pending at its first chore check).
  RunningWorker(const GatewayConfig& config, const Classifier& classifier, const std::string& table,
                const std::function<void(GatewayWorker&)>& before_run = nullptr) {
    auto flows = WorkerFlowTable::Create(table, 1024, SOCKET_ID_ANY);
    EXPECT_TRUE(flows.ok()) << flows.status();
    GatewayWorkerOptions o = WorkerOptionsFromConfig(config);
    o.burst = 32;
    o.seed = 7;
    o.exit_when_idle_ns = 0;  // runs until stopped
    o.duration_ns = 60'000'000'000ull;
    auto worker = GatewayWorker::Create(o, classifier, *std::move(flows));
    EXPECT_TRUE(worker.ok()) << worker.status();
    worker_ = *std::move(worker);
    if (before_run) before_run(*worker_);
    thread_ = std::thread([this] { worker_->Run(stop_); });
  }
  ~RunningWorker() { Stop(); }

  GatewayWorker& worker() { return *worker_; }
  // Waits (at most 10 s) until the published counters satisfy `done`.
  template <typename Done>
  bool WaitFor(Done done) {
    for (int i = 0; i < 1000 && !done(worker_->LiveCounters()); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done(worker_->LiveCounters());
  }
  GatewayCounters Stop() {
    if (thread_.joinable()) {
      stop_ = true;
      thread_.join();
    }
    return worker_->counters();
  }

 private:
  std::unique_ptr<GatewayWorker> worker_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_F(GatewayWorkerTest, ASetPostedBeforeTheWorkerAppliedAReloadKeepsTheReloadsRules) {
  GatewayConfig config = BaseConfig();
  absl::StatusOr<Classifier> classifier = Classifier::Create(config.classify);
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  classifier_ = *std::move(classifier);
  // Both posted before the worker runs, so it sees only what is pending
  // after the second: `shroud ctl set` right after `reload`, whose update
  // carries no rules.
  RunningWorker w(config, classifier_, "test_flows_reload_set", [&](GatewayWorker& worker) {
    worker.PostUpdate(ReloadUpdate(config, 5001));
    auto set = std::make_unique<RuntimeUpdate>(ToRateVariationConfig(config.rate_variation));
    set->rate_variation = false;
    set->migration_ceil_bytes_per_sec = ToShaperConfig(config).migration.ceil_bytes_per_sec;
    worker.PostUpdate(std::move(set));
  });
  const bool applied = w.WaitFor([](const GatewayCounters& c) { return c.runtime_updates >= 1; });
  std::vector<Frame> in;
  for (int i = 0; i < 20; ++i) in.push_back(Tcp("192.0.2.1", "198.51.100.2", 33000, 5001, 1000));
  Inject(0, in);
  const bool sent = w.WaitFor([&](const GatewayCounters& c) {
    return c.direction[kInsideToOutside].rx_packets >= in.size() &&
           c.migration.sent_packets + c.default_class.packets >= in.size();
  });
  const GatewayCounters c = w.Stop();
  ASSERT_TRUE(applied && sent);
  EXPECT_EQ(c.runtime_updates, 1u);  // the two became one
  EXPECT_EQ(c.rules_reloaded, 1u);
  EXPECT_EQ(c.classified_rule, 1u);
  EXPECT_EQ(c.migration.sent_packets, in.size());  // port 5001 is migration now
  EXPECT_EQ(Drain(1).size(), in.size());
}

TEST_F(GatewayWorkerTest, ARuleReloadDecidesRunningFlowsAgainAtTheirNextPacketAndCountsThemOnce) {
  GatewayConfig config = BaseConfig();
  config.classify.builtin_signatures = false;  // no rule: decided kNoMatch at once
  ASSERT_TRUE(ValidateGatewayConfig(config).ok());
  absl::StatusOr<Classifier> classifier = Classifier::Create(config.classify);
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  classifier_ = *std::move(classifier);
  RunningWorker w(config, classifier_, "test_flows_reload");
  std::vector<Frame> before, after;
  for (int i = 0; i < 10; ++i) before.push_back(Tcp("192.0.2.1", "198.51.100.2", 33000, 5001, 1000));
  for (int i = 0; i < 10; ++i) after.push_back(Tcp("192.0.2.1", "198.51.100.2", 33000, 5001, 1000));
  Inject(0, before);
  const bool seen_before = w.WaitFor([](const GatewayCounters& c) {
    return c.direction[kInsideToOutside].rx_packets >= 10;
  });
  w.worker().PostUpdate(ReloadUpdate(config, 5001));
  const bool reloaded = w.WaitFor([](const GatewayCounters& c) { return c.rules_reloaded >= 1; });
  Inject(0, after);
  const bool seen_after = w.WaitFor([](const GatewayCounters& c) {
    return c.direction[kInsideToOutside].rx_packets >= 20 && c.migration.sent_packets >= 10;
  });
  const GatewayCounters c = w.Stop();
  ASSERT_TRUE(seen_before && reloaded && seen_after);
  EXPECT_EQ(c.classified_no_match, 1u);  // its first decision, under the old rules
  EXPECT_EQ(c.classified_rule, 0u);      // not counted as a second flow ...
  EXPECT_EQ(c.reclassified, 1u);         // ... but as decided again
  EXPECT_EQ(c.migration.sent_packets, 10u);
  EXPECT_EQ(c.direction[kInsideToOutside].shaped_packets, 10u);
  EXPECT_EQ(Drain(1).size(), before.size() + after.size());
}

TEST_F(GatewayWorkerTest, AReloadWithoutItsSignatureStopsShapingAFlowThatSignatureDecided) {
  GatewayConfig config = BaseConfig();  // the built-in QEMU signatures, no rule for port 7000
  absl::StatusOr<Classifier> classifier = Classifier::Create(config.classify);
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  classifier_ = *std::move(classifier);
  RunningWorker w(config, classifier_, "test_flows_reload_signature");
  const Frame header = {'Q', 'E', 'V', 'M', 0, 0, 0, 3};
  std::vector<Frame> before, after;
  before.push_back(Tcp("192.0.2.1", "198.51.100.2", 33001, 7000, 500, header));
  for (int i = 0; i < 9; ++i) before.push_back(Tcp("192.0.2.1", "198.51.100.2", 33001, 7000, 500));
  for (int i = 0; i < 10; ++i) after.push_back(Tcp("192.0.2.1", "198.51.100.2", 33001, 7000, 500));
  Inject(0, before);
  const bool shaped_before = w.WaitFor([](const GatewayCounters& c) {
    return c.migration.sent_packets >= 10;
  });
  GatewayConfig next = config;
  next.classify.builtin_signatures = false;
  w.worker().PostUpdate(ReloadUpdate(next, classifier_.signature_ids()));
  const bool reloaded = w.WaitFor([](const GatewayCounters& c) { return c.rules_reloaded >= 1; });
  Inject(0, after);
  const bool seen_after = w.WaitFor([](const GatewayCounters& c) {
    return c.direction[kInsideToOutside].rx_packets >= 20;
  });
  const GatewayCounters c = w.Stop();
  ASSERT_TRUE(shaped_before && reloaded && seen_after);
  EXPECT_EQ(c.classified_signature, 1u);
  EXPECT_EQ(c.migration.sent_packets, before.size());  // none of `after`
  EXPECT_EQ(c.direction[kInsideToOutside].shaped_packets, before.size());
  EXPECT_EQ(c.reclassified, 1u);  // decided again: no rule, no signature left
  EXPECT_EQ(Drain(1).size(), before.size() + after.size());
}

TEST_F(GatewayWorkerTest, ReloadsThroughTheServiceCarryTheSignatureIdsOn) {
  // `shroud ctl reload` / SIGHUP: each classifier is built from the ids of the
  // one before, so a flow's signature id names the same signature after any
  // number of reloads.
  const std::string path = ::testing::TempDir() + "shroud-reload-ids.toml";
  auto write = [&](const std::string& text) { std::ofstream(path) << text; };
  write("[rate_variation]\nenabled = false\n");
  absl::StatusOr<GatewayConfig> config = LoadGatewayConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<Classifier> classifier = Classifier::Create(config->classify);
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  classifier_ = *std::move(classifier);
  const uint16_t qemu = classifier_.signature_ids().by_name.at("qemu-migration-stream");
  RunningWorker w(*config, classifier_, "test_flows_reload_ids");
  DataplaneRuntime rt;
  rt.config = *config;
  rt.config_path = path;
  rt.gateway = &w.worker();
  rt.signature_ids = classifier_.signature_ids();

  // "mine" comes first in the new database but takes a new id.
  write("[rate_variation]\nenabled = false\n[[classify.signature]]\nname = \"mine\"\n"
        "class = \"chaff\"\npattern = \"^MINE\"\n");
  absl::StatusOr<nlohmann::json> first = ReloadConfig(rt);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)["signatures"], 3);
  EXPECT_EQ(rt.signature_ids.by_name.at("qemu-migration-stream"), qemu);
  EXPECT_EQ(rt.signature_ids.by_name.at("mine"), 2);
  // Gone and back: the same id; a new name never gets a used one.
  write("[rate_variation]\nenabled = false\n[classify]\nbuiltin_signatures = false\n");
  ASSERT_TRUE(ReloadConfig(rt).ok());
  write("[rate_variation]\nenabled = false\n[[classify.signature]]\nname = \"yours\"\nclass = \"migration\"\n"
        "pattern = \"^YOURS\"\n");
  ASSERT_TRUE(ReloadConfig(rt).ok());
  EXPECT_EQ(rt.signature_ids.by_name.at("qemu-migration-stream"), qemu);
  EXPECT_EQ(rt.signature_ids.by_name.at("yours"), 3);
  EXPECT_EQ(rt.signature_ids.next, 4u);
  const bool applied = w.WaitFor([](const GatewayCounters& c) { return c.rules_reloaded >= 1; });
  w.Stop();
  EXPECT_TRUE(applied);
  std::remove(path.c_str());
}

TEST_F(GatewayWorkerTest, AppliedUpdatesAreFreedByTheCollectorNotByTheWorker) {
  // The worker hands every update it applied, with or without rules, to
  // CollectRetired (the main thread's): freeing one on the worker's core
  // could stall the rx rings.
  GatewayConfig config = BaseConfig();
  absl::StatusOr<Classifier> classifier = Classifier::Create(config.classify);
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  classifier_ = *std::move(classifier);
  RunningWorker w(config, classifier_, "test_flows_retired");
  auto set = std::make_unique<RuntimeUpdate>(ToRateVariationConfig(config.rate_variation));
  set->rate_variation = false;
  set->migration_ceil_bytes_per_sec = ToShaperConfig(config).migration.ceil_bytes_per_sec;
  w.worker().PostUpdate(std::move(set));  // rules-less, as `shroud ctl set`
  const bool set_applied = w.WaitFor([](const GatewayCounters& c) { return c.runtime_updates >= 1; });
  const size_t after_set = w.worker().CollectRetired();
  w.worker().PostUpdate(ReloadUpdate(config, 5001));  // with rules, as `shroud ctl reload`
  const bool reload_applied = w.WaitFor([](const GatewayCounters& c) { return c.rules_reloaded >= 1; });
  const size_t after_reload = w.worker().CollectRetired();
  const size_t again = w.worker().CollectRetired();
  const GatewayCounters c = w.Stop();
  ASSERT_TRUE(set_applied && reload_applied);
  EXPECT_EQ(after_set, 1u);
  EXPECT_EQ(after_reload, 1u);
  EXPECT_EQ(again, 0u);
  EXPECT_EQ(c.runtime_updates, 2u);
}

TEST_F(GatewayWorkerTest, AFullFlowTableStillShapesByRuleAndCountsIt) {
  std::vector<Frame> in;
  for (int i = 0; i < 40; ++i) in.push_back(Udp("192.0.2.1", "198.51.100.2", 1000 + i, 53, 10));
  for (int i = 0; i < 10; ++i) in.push_back(Tcp("192.0.2.1", "198.51.100.2", 33000, 49152, 100));
  Inject(0, in);
  GatewayConfig config = BaseConfig();
  config.flows.max_flows = 16;
  GatewayCounters c = RunWorker(config);
  EXPECT_EQ(c.flows.created, 16u);
  EXPECT_EQ(c.flows.table_full, 40u - 16u + 10u);
  EXPECT_EQ(c.direction[kInsideToOutside].shaped_packets, 10u);
  EXPECT_EQ(Drain(1).size(), in.size());
}

TEST_F(GatewayWorkerTest, IdleFlowsAreEvictedAndCounted) {
  std::vector<Frame> in;
  for (int i = 0; i < 20; ++i) in.push_back(Udp("192.0.2.1", "198.51.100.2", 1000 + i, 53, 10));
  Inject(0, in);
  GatewayConfig config = BaseConfig();
  config.flows.idle_timeout_ms = 1;  // the 30 ms idle run outlasts it
  // A small table is swept through many times in 30 ms even on a loaded
  // machine (the sweep covers 3.2 M slots per second of loop time).
  config.flows.max_flows = 256;
  GatewayCounters c = RunWorker(config);
  EXPECT_EQ(c.flows.created, 20u);
  EXPECT_EQ(c.flows.evicted_idle, 20u);
  EXPECT_EQ(c.flows_active, 0u);
  EXPECT_TRUE(last_flows_.empty());
}

TEST_F(GatewayWorkerTest, AlgorithmThreeStepsEveryIntervalWithinBounds) {
  std::vector<Frame> mig;
  GatewayConfig config = InjectMigration(400, &mig);
  GatewayCounters c = RunWorker(config);
  EXPECT_EQ(c.migration.sent_packets, mig.size());
  // One step at start and at most one per 10 ms after (a descheduled worker
  // skips steps rather than catching up, so only the upper bound is exact in
  // wall-clock time; the cadence itself is tested in simulated time in
  // rate_variation_test's ScheduleIsAnchoredAndReanchorsAfterAStall).
  const double max_steps = static_cast<double>(c.elapsed_ns) / 10e6 + 2;
  EXPECT_GE(c.rate_steps, 3u);  // 580 kB at <= 8 MB/s take over 70 ms
  EXPECT_LE(static_cast<double>(c.rate_steps), max_steps);
  const RateVariationConfig rv = ToRateVariationConfig(config.rate_variation);
  EXPECT_GE(static_cast<double>(c.rate_min_applied), rv.min_rate);
  EXPECT_LE(static_cast<double>(c.rate_max_applied), rv.max_rate);
  EXPECT_GT(c.rate_max_applied, c.rate_min_applied);  // it did vary
}

TEST_F(GatewayWorkerTest, ASessionDrawsItsProfileAndPausesLoseNoPacket) {
  std::vector<Frame> mig;
  GatewayConfig config = InjectMigration(400, &mig);
  config.rate_variation.min_rate_mbyte_s = 0.5;
  config.rate_variation.session_spread = true;
  config.rate_variation.bursty_min_rate_mbyte_s = 0.1;
  config.rate_variation.bursty_window = 50;
  config.rate_variation.bursty_pause_share = 0.9;
  config.rate_variation.pause_mean_ms = 20;
  config.rate_variation.pause_max_ms = 40;
  GatewayCounters c = RunWorker(config);
  // One migration, one session: its packets are closer together than the gap.
  EXPECT_EQ(c.rate_sessions, 1u);
  EXPECT_GE(c.rate_session_min_rate, 100'000u);
  EXPECT_LE(c.rate_session_min_rate, 500'000u);
  EXPECT_EQ(c.rate_session_window, 50u);
  EXPECT_LE(c.rate_paused_steps, c.rate_steps);
  // Pauses hold packets back; they never drop them.
  EXPECT_EQ(c.migration.sent_packets, mig.size());
  EXPECT_EQ(c.migration.dropped_packets, 0u);
}

}  // namespace
}  // namespace shroud

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using shroud::g_env;
  using shroud::kRingSize;
  if (shroud::test_frames::StartTestEal("gateway_worker_test", 256)) {
    g_env.pool = rte_pktmbuf_pool_create("test_pool", 8191, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                         SOCKET_ID_ANY);
    bool ok = g_env.pool != nullptr;
    for (int p = 0; ok && p < 2; ++p) {
      const std::string n = std::to_string(p);
      g_env.rx[p] = rte_ring_create(("rx" + n).c_str(), kRingSize, SOCKET_ID_ANY,
                                    RING_F_SP_ENQ | RING_F_SC_DEQ);
      g_env.tx[p] = rte_ring_create(("tx" + n).c_str(), kRingSize, SOCKET_ID_ANY,
                                    RING_F_SP_ENQ | RING_F_SC_DEQ);
      ok = g_env.rx[p] && g_env.tx[p];
      if (!ok) break;
      ok = shroud::test_frames::StartRingPort("ring" + n, g_env.rx[p], g_env.tx[p], g_env.pool) == p;
    }
    g_env.ok = ok;
    if (!ok) {
      fprintf(stderr, "FAIL: ring ports could not be set up\n");
      return 1;
    }
  } else {
    // 77 = skipped, for meson: the tests did not run, so they must not pass.
    fprintf(stderr, "skipped: rte_eal_init failed (see the EAL messages above)\n");
    return 77;
  }
  const int rc = RUN_ALL_TESTS();
  if (g_env.ok) {
    for (uint16_t p = 0; p < 2; ++p) rte_eth_dev_stop(p);
    rte_eal_cleanup();
  }
  return rc;
}
