// The tap worker in-process on DPDK ring ports (--no-huge): a real capture's
// frames go in with their capture times in the rx timestamp, as net_pcap
// delivers them; the records the worker mirrors must carry exactly the
// features `shroud analyze` computes offline for the same file.
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_eth_ring.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_ring.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "control/capture/capture_analysis.h"
#include "control/capture/pcap_reader.h"
#include "control/mirror/mirror_reader.h"
#include "dataplane/flow_table.h"
#include "dataplane/mirror_writer.h"
#include "dataplane/tap_worker.h"
#include "gtest/gtest.h"
#include "tests/frame_builder.h"
#include "tests/ring_frames.h"
#include "tests/test_util.h"

namespace shroud {
namespace {

using test_frames::EthernetUdp4;
using test_frames::Frame;

constexpr unsigned kRingSize = 32768;

struct Env {
  rte_mempool* pool = nullptr;
  rte_ring* rx[2] = {};
  int ts_offset = -1;
  uint64_t ts_flag = 0;
  bool ok = false;
};
Env g_env;

struct TimedFrame {
  Frame bytes;
  uint64_t time_us = 0;
};

std::vector<TimedFrame> ReadCapture(const std::string& path) {
  std::vector<TimedFrame> out;
  absl::StatusOr<std::unique_ptr<PcapReader>> reader = PcapReader::Open(path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return out;
  CaptureRecord r;
  for (;;) {
    absl::StatusOr<bool> more = (*reader)->Next(&r);
    EXPECT_TRUE(more.ok()) << more.status();
    if (!more.ok() || !*more) break;
    // What net_pcap hands over: the captured bytes only, and the time in us.
    out.push_back({Frame(r.data, r.data + r.captured), r.time_ns / 1000});
  }
  return out;
}

// Enqueues frames with their capture time in the rx timestamp, as net_pcap does.
void Inject(rte_ring* ring, const std::vector<TimedFrame>& frames) {
  for (const TimedFrame& f : frames) {
    rte_mbuf* m = test_frames::FrameToMbuf(g_env.pool, f.bytes);
    ASSERT_NE(m, nullptr);
    *RTE_MBUF_DYNFIELD(m, g_env.ts_offset, rte_mbuf_timestamp_t*) = f.time_us;
    m->ol_flags |= g_env.ts_flag;
    ASSERT_EQ(rte_ring_enqueue(ring, m), 0);
  }
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/shroud-tap-test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf " + path_).c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::unique_ptr<WorkerFlowTable> NewTable(const std::string& name, uint32_t max_flows) {
  absl::StatusOr<std::unique_ptr<WorkerFlowTable>> t = WorkerFlowTable::Create(name, max_flows, SOCKET_ID_ANY);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

TEST(TapWorkerTest, ReplayedCaptureMirrorsTheFeaturesShroudAnalyzeComputes) {
  ASSERT_TRUE(g_env.ok);
  // A capture cut at a 68-byte snaplen: the tap must recover wire lengths.
  const std::string capture = std::string(getenv("SHROUD_SOURCE_ROOT")) +
                              "/data/captures/bg-light-s1.pcap";
  const std::vector<TimedFrame> frames = ReadCapture(capture);
  ASSERT_GT(frames.size(), 10000u);
  ASSERT_LT(frames.size(), kRingSize);

  CaptureOptions offline_options;
  absl::StatusOr<CaptureAnalysis> offline = AnalyzeCapture(capture, offline_options);
  ASSERT_TRUE(offline.ok()) << offline.status();

  TempDir dir;
  MirrorWriterOptions mo;
  mo.path = dir.path() + "/mirror";
  mo.rings = 1;
  mo.ring_capacity = 4096;
  mo.mode = MirrorMode::kTap;
  absl::StatusOr<std::unique_ptr<MirrorWriter>> writer = MirrorWriter::Create(mo);
  ASSERT_TRUE(writer.ok()) << writer.status();
  absl::StatusOr<std::unique_ptr<MirrorReader>> reader = MirrorReader::Open(mo.path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<MirrorRecord> scratch;
  (*reader)->Poll(scratch, 1);  // attach: the final flush then waits for room

  Inject(g_env.rx[0], frames);
  TapWorkerOptions o;
  o.ports = {0};
  o.timestamp_offset = g_env.ts_offset;
  o.timestamp_flag = g_env.ts_flag;
  o.idle_timeout_ns = 3600'000'000'000ull;  // offline analysis never evicts
  o.mirror = (*writer)->producer(0);
  o.exit_when_idle_ns = 200'000'000;
  absl::StatusOr<std::unique_ptr<TapWorker>> worker = TapWorker::Create(o, NewTable("tap_t1", 4096));
  ASSERT_TRUE(worker.ok()) << worker.status();
  std::atomic<bool> stop{false};
  std::vector<MirrorRecord> records;
  std::thread t([&] { (*worker)->Run(stop); });
  // Read while it runs, as shroud-control does, so the final flush finds room.
  while ((*worker)->LiveCounters().records.finals == 0) {
    (*reader)->Poll(records, 4096);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (records.size() > 1'000'000) break;
  }
  t.join();
  while ((*reader)->Poll(records, 4096) > 0) {
  }

  const TapCounters c = (*worker)->counters();
  EXPECT_EQ(c.rx_packets, frames.size());
  EXPECT_EQ(c.stream_packets, offline->table->stream_packets());
  EXPECT_GT(c.wire_length_from_ip, 0u) << "the capture is cut at 68 bytes";
  EXPECT_EQ(c.records.dropped, 0u);

  std::map<FlowKey, MirrorRecord> finals;
  for (const MirrorRecord& r : records) {
    if (r.type == MirrorRecordType::kEndStop) finals[r.key] = r;
  }
  ASSERT_EQ(finals.size(), offline->table->flows().size());
  for (const FlowRecord& f : offline->table->flows()) {
    auto it = finals.find(f.key);
    ASSERT_NE(it, finals.end()) << FormatFlowKey(f.key);
    const MirrorRecord& r = it->second;
    EXPECT_EQ(r.stream_packets, offline->table->stream_packets());
    EXPECT_EQ(r.flow_class, MirrorFlowClass::kUnclassified);
    EXPECT_EQ(r.features.packets, f.features.packets) << FormatFlowKey(f.key);
    EXPECT_EQ(r.features.bytes, f.features.bytes) << FormatFlowKey(f.key);
    EXPECT_EQ(r.features.first_ns, f.features.first_ns) << FormatFlowKey(f.key);
    EXPECT_EQ(std::memcmp(&r.features, &f.features, sizeof(FlowFeatures)), 0)
        << "features differ for " << FormatFlowKey(f.key);
  }
}

// Two workers on two ports share one stream counter: Algorithm 2's windows
// count the packets of both, as one capture of the mirror port would.
TEST(TapWorkerTest, WorkersShareOneStream) {
  ASSERT_TRUE(g_env.ok);
  std::vector<TimedFrame> a, b;
  for (uint32_t i = 0; i < 3000; ++i) {
    const uint64_t t = 1'000'000 + i * 100;
    a.push_back({EthernetUdp4("192.0.2.1", "192.0.2.2", 1000 + i % 7, 53, 100), t});
    b.push_back({EthernetUdp4("198.51.100.1", "198.51.100.2", 2000 + i % 5, 53, 200), t + 50});
  }
  Inject(g_env.rx[0], a);
  Inject(g_env.rx[1], b);
  std::atomic<uint64_t> stream{0};
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<TapWorker>> workers;
  for (uint16_t p = 0; p < 2; ++p) {
    TapWorkerOptions o;
    o.ports = {p};
    o.timestamp_offset = g_env.ts_offset;
    o.timestamp_flag = g_env.ts_flag;
    o.shared_stream = &stream;
    o.worker_index = static_cast<uint8_t>(p);
    o.exit_when_idle_ns = 200'000'000;
    absl::StatusOr<std::unique_ptr<TapWorker>> w =
        TapWorker::Create(o, NewTable("tap_t2_" + std::to_string(p), 1024));
    ASSERT_TRUE(w.ok()) << w.status();
    workers.push_back(*std::move(w));
  }
  std::thread t0([&] { workers[0]->Run(stop); });
  std::thread t1([&] { workers[1]->Run(stop); });
  t0.join();
  t1.join();
  EXPECT_EQ(stream.load(), 6000u);
  uint64_t packets = 0;
  for (const auto& w : workers) {
    EXPECT_EQ(w->counters().stream_packets, 6000u);
    for (uint32_t i = 0; i < w->flows().capacity(); ++i) {
      const FlowEntry& e = w->flows().slot(i);
      if (!e.in_use) continue;
      packets += e.features.packets;
      // Each flow's packets sit at stream indices of both workers' bursts.
      EXPECT_LT(e.features.last_stream_index, 6000u);
    }
  }
  EXPECT_EQ(packets, 6000u);
}

// A full ring drops records and counts them; the worker does not wait.
TEST(TapWorkerTest, FullRingDropsAndCounts) {
  ASSERT_TRUE(g_env.ok);
  TempDir dir;
  MirrorWriterOptions mo;
  mo.path = dir.path() + "/mirror";
  mo.ring_capacity = 8;
  absl::StatusOr<std::unique_ptr<MirrorWriter>> writer = MirrorWriter::Create(mo);
  ASSERT_TRUE(writer.ok()) << writer.status();
  std::vector<TimedFrame> frames;
  for (uint32_t i = 0; i < 200; ++i) {
    frames.push_back({EthernetUdp4("203.0.113.1", "203.0.113.2", static_cast<uint16_t>(3000 + i), 53, 80),
                      2'000'000 + i * 10});
  }
  Inject(g_env.rx[0], frames);
  TapWorkerOptions o;
  o.timestamp_offset = g_env.ts_offset;
  o.timestamp_flag = g_env.ts_flag;
  o.mirror = (*writer)->producer(0);
  o.exit_when_idle_ns = 100'000'000;
  o.flush_timeout_ns = 1'000'000'000;  // no reader: nothing waits anyway
  absl::StatusOr<std::unique_ptr<TapWorker>> w = TapWorker::Create(o, NewTable("tap_t3", 1024));
  ASSERT_TRUE(w.ok()) << w.status();
  std::atomic<bool> stop{false};
  (*w)->Run(stop);
  const TapCounters c = (*w)->counters();
  EXPECT_EQ(c.rx_packets, 200u);
  EXPECT_EQ(c.flows_active, 200u);
  // Nobody reads a ring of 8: 8 records got in, every other attempt (an
  // update per flow at its first interval, a final record per flow) was
  // dropped and counted, once per attempt.
  EXPECT_EQ(c.records.updates + c.records.ends + c.records.finals, 8u);
  EXPECT_EQ(c.records.dropped, c.mirror_ring_dropped);
  EXPECT_GE(c.records.dropped, 200u);
  EXPECT_LE(c.records.dropped, 2u * 200u);
}

}  // namespace
}  // namespace shroud

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using shroud::g_env;
  if (!shroud::test_frames::StartTestEal("tap_worker_test", 256)) {
    fprintf(stderr, "skipped: rte_eal_init failed (see the EAL messages above)\n");
    return 77;
  }
  g_env.pool = rte_pktmbuf_pool_create("tap_pool", 40959, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                       SOCKET_ID_ANY);
  bool ok = g_env.pool != nullptr &&
            rte_mbuf_dyn_rx_timestamp_register(&g_env.ts_offset, &g_env.ts_flag) == 0;
  for (int p = 0; ok && p < 2; ++p) {
    const std::string n = std::to_string(p);
    g_env.rx[p] = rte_ring_create(("taprx" + n).c_str(), shroud::kRingSize, SOCKET_ID_ANY,
                                  RING_F_SP_ENQ | RING_F_SC_DEQ);
    rte_ring* tx = rte_ring_create(("taptx" + n).c_str(), 1024, SOCKET_ID_ANY, 0);
    ok = g_env.rx[p] && tx;
    if (!ok) break;
    ok = shroud::test_frames::StartRingPort("tapring" + n, g_env.rx[p], tx, g_env.pool) == p;
  }
  g_env.ok = ok;
  if (!ok) {
    fprintf(stderr, "FAIL: ring ports could not be set up\n");
    return 1;
  }
  const int rc = RUN_ALL_TESTS();
  for (uint16_t p = 0; p < 2; ++p) rte_eth_dev_stop(p);
  rte_eal_cleanup();
  return rc;
}
