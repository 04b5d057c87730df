// Two gateways back to back, in-process, on DPDK ring ports (--no-huge):
//
//   inside A (port 0) -- gateway A -- (port 1) == WAN rings == (port 3) -- gateway B -- (port 2) inside B
//
// Gateway A's outside tx ring is gateway B's outside rx ring and the other way
// round, so everything one sends across the WAN is what the other receives.
// Each gateway runs the shipped pair config (conf/gateway-pair-{a,b}.toml)
// with chaff on (fill_to_envelope), its GatewayWorker::Run on its own
// std::thread for a bounded time. EAL is initialised once; the workers are
// non-EAL threads, which is fine for what they use: each owns its ports'
// queue 0 and its own flow table, every ring has one producer and one
// consumer (RING_F_SP_ENQ | RING_F_SC_DEQ), and the shared mempool's ring is
// multi-producer/multi-consumer (non-EAL threads bypass its per-lcore cache).
//
// What must hold (issue 4): not one chaff packet reaches inside B (nor A);
// every non-chaff packet does, byte for byte; dummy responses never reach
// inside A; a forged chaff packet (wrong key, mangled tag, truncated) is
// forwarded as ordinary traffic; a replayed valid chaff packet is absorbed.
// Also: without the key the peer's chaff is ordinary traffic, and the
// low_load policy turns chaff off under load and back on, as the worker
// measures the load.
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/core/chaff.h"
#include "dataplane/core/gateway_config.h"
#include "dataplane/counters_json.h"
#include "dataplane/gateway_worker.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/allocation_counter.h"
#include "tests/frame_builder.h"
#include "tests/ring_frames.h"

namespace shroud {
namespace {

// Heap allocations made by the worker threads (see RunConcurrently).
std::atomic<uint64_t> g_worker_allocations{0};

using test_frames::Frame;
using ::testing::ElementsAreArray;

constexpr unsigned kRingSize = 8192;
constexpr uint64_t kMs = 1'000'000;

enum Side : int { kA = 0, kB = 1 };
constexpr const char* kSideName[2] = {"A", "B"};
constexpr uint16_t kInsidePort[2] = {0, 2};
constexpr uint16_t kOutsidePort[2] = {1, 3};

struct Env {
  rte_mempool* pool = nullptr;
  rte_ring* inside_rx[2] = {};  // what the test sends from the hosts of side A / B
  rte_ring* inside_tx[2] = {};  // what reaches the hosts of side A / B
  rte_ring* wan[2] = {};        // wan[kA]: A -> B, wan[kB]: B -> A
  bool ok = false;
};
Env g_env;

void Inject(rte_ring* ring, const std::vector<Frame>& frames) {
  test_frames::InjectFrames(g_env.pool, ring, frames);
}

std::vector<Frame> Drain(rte_ring* ring) { return test_frames::DrainFrames(ring); }

void DrainAll() {
  for (int s = 0; s < 2; ++s) {
    Drain(g_env.inside_rx[s]);
    Drain(g_env.inside_tx[s]);
    Drain(g_env.wan[s]);
  }
}

using test_frames::EthernetTcp4;
using test_frames::EthernetUdp4;

// The shipped pair config of `side`, with a fixed seed and short chaff
// connections so that a run of a second sees several open and close.
GatewayConfig PairConfig(Side side) {
  const std::string path = std::string(getenv("SHROUD_SOURCE_ROOT") ? getenv("SHROUD_SOURCE_ROOT")
                                                                    : ".") +
                           "/conf/gateway-pair-" + (side == kA ? "a" : "b") + ".toml";
  absl::StatusOr<GatewayConfig> c = LoadGatewayConfig(path);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return GatewayConfig{};
  c->rate_variation.seed = side == kA ? 11 : 12;
  c->chaff.rotation_mean_ms = 150;
  return *c;
}

// What the dataplane's main does with a config, for one side's ports.
class Gateway {
 public:
  Gateway(Side side, const GatewayConfig& config, uint64_t duration_ns,
          uint64_t exit_when_idle_ns = 0) {
    absl::Status valid = ValidateGatewayConfig(config);
    EXPECT_TRUE(valid.ok()) << valid;
    absl::StatusOr<Classifier> classifier = Classifier::Create(config.classify);
    EXPECT_TRUE(classifier.ok()) << classifier.status();
    classifier_ = *std::move(classifier);
    static int table_seq = 0;
    auto flows = WorkerFlowTable::Create("pair_flows" + std::to_string(table_seq++),
                                   config.flows.max_flows, SOCKET_ID_ANY);
    EXPECT_TRUE(flows.ok()) << flows.status();
    GatewayWorkerOptions o = WorkerOptionsFromConfig(config);
    o.inside_port = kInsidePort[side];
    o.outside_port = kOutsidePort[side];
    o.burst = 32;
    o.duration_ns = duration_ns;
    o.exit_when_idle_ns = exit_when_idle_ns;
    if (config.chaff.enabled()) o.mbuf_pool = g_env.pool;
    auto worker = GatewayWorker::Create(o, classifier_, *std::move(flows));
    EXPECT_TRUE(worker.ok()) << worker.status();
    if (worker.ok()) worker_ = *std::move(worker);
  }

  bool ok() const { return worker_ != nullptr; }
  void Run() { worker_->Run(stop_); }
  GatewayCounters counters() const { return worker_->counters(); }

 private:
  Classifier classifier_;
  std::unique_ptr<GatewayWorker> worker_;
  std::atomic<bool> stop_{false};
};

// Runs the gateways, each on its own thread, until each one's duration (or
// idle exit) ends.
void RunConcurrently(const std::vector<Gateway*>& gateways) {
  std::vector<std::thread> threads;
  for (Gateway* g : gateways) {
    threads.emplace_back([g] {
      const uint64_t before = test::ThreadAllocations();
      g->Run();
      g_worker_allocations += test::ThreadAllocations() - before;
    });
  }
  for (std::thread& t : threads) t.join();
}

std::vector<Frame> Sorted(std::vector<Frame> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<Frame> FramesOfPort(const std::vector<Frame>& frames, uint16_t dst_port) {
  std::vector<Frame> out;
  for (const Frame& f : frames) {
    // Ethernet 14 + IPv4 20: the destination port at 36.
    if (f.size() >= 38 && f[23] == test_frames::kIpProtoTcp &&
        (f[36] << 8 | f[37]) == dst_port) {
      out.push_back(f);
    }
  }
  return out;
}

size_t CountVerified(const ChaffVerifier& v, const std::vector<Frame>& frames) {
  size_t n = 0;
  for (const Frame& f : frames) n += v.Verify(f).has_value() ? 1 : 0;
  return n;
}

ChaffVerifier VerifierOf(const GatewayConfig& c) {
  return ChaffVerifier(ChaffKeys(*c.chaff.key), ToChaffConfig(c).pools);
}

class GatewayPairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!g_env.ok) GTEST_SKIP() << "DPDK EAL could not start (see the log above)";
    DrainAll();
  }
  void TearDown() override {
    if (g_env.ok) DrainAll();
  }
};

// Ordinary traffic from the hosts of one side to the other's: UDP, an ARP
// frame, TCP on the very addresses and ports the chaff pools use (ordinary
// traffic that the far gateway must check and forward), and, from A only, a
// migration that A shapes.
struct Traffic {
  std::vector<Frame> a_to_b;
  std::vector<Frame> b_to_a;
  size_t a_to_b_in_pools = 0;
  size_t b_to_a_in_pools = 0;
  size_t migration = 0;
};

Traffic OrdinaryTraffic() {
  Traffic t;
  for (int i = 0; i < 150; ++i) {
    t.a_to_b.push_back(EthernetUdp4("192.0.2.10", "198.51.100.20", 5000 + i % 5, 53, 20 + i));
    t.b_to_a.push_back(EthernetUdp4("198.51.100.20", "192.0.2.10", 53, 5000 + i % 5, 40 + i));
  }
  for (int i = 0; i < 60; ++i) {
    // Client 192.0.2.130:40000+ (A's chaff pool) to server 198.51.100.140:443
    // (B's): a real HTTPS connection there looks like chaff to the prefilter.
    t.a_to_b.push_back(EthernetTcp4("192.0.2.130", "198.51.100.140", 40000 + i % 3, 443, 100 + i * 20));
    ++t.a_to_b_in_pools;
    t.b_to_a.push_back(EthernetTcp4("198.51.100.140", "192.0.2.130", 443, 40000 + i % 3, i % 2 ? 0 : 700 + i));
    ++t.b_to_a_in_pools;
  }
  t.a_to_b.push_back(test_frames::Ethernet(test_frames::kEtherTypeArp, Frame(28, 1)));
  t.b_to_a.push_back(test_frames::Ethernet(test_frames::kEtherTypeArp, Frame(28, 2)));
  // A migration to B's host prefix (the pair config's rule): shaped by A.
  for (int i = 0; i < 80; ++i) {
    t.a_to_b.push_back(EthernetTcp4("192.0.2.10", "198.51.100.20", 33000, 49152, 1000 + i));
    ++t.migration;
    if (i % 4 == 0) t.b_to_a.push_back(EthernetTcp4("198.51.100.20", "192.0.2.10", 49152, 33000, 0, test_frames::kTcpAck));
  }
  return t;
}

TEST_F(GatewayPairTest, ChaffCrossesTheWanBothWaysAndNeverReachesAnInsideHost) {
  const GatewayConfig config_a = PairConfig(kA);
  const GatewayConfig config_b = PairConfig(kB);
  ASSERT_TRUE(config_a.chaff.enabled() && config_b.chaff.enabled());
  ASSERT_EQ(config_a.chaff.policy, ChaffPolicyKind::kFillToEnvelope);
  const Traffic t = OrdinaryTraffic();
  Inject(g_env.inside_rx[kA], t.a_to_b);
  Inject(g_env.inside_rx[kB], t.b_to_a);

  // B outlives A, so everything A sent has reached B when B stops; what B
  // sent in its last 0.4 s stays in the B -> A ring and is checked below.
  Gateway a(kA, config_a, 1'200 * kMs);
  Gateway b(kB, config_b, 1'600 * kMs);
  ASSERT_TRUE(a.ok() && b.ok());
  // The counter counts (a string too long for the small-string buffer).
  g_worker_allocations = 0;
  std::thread([] {
    const uint64_t before = test::ThreadAllocations();
    std::string s(100, 'x');
    g_worker_allocations += test::ThreadAllocations() - before;
  }).join();
  ASSERT_EQ(g_worker_allocations.load(), 1u);
  g_worker_allocations = 0;
  RunConcurrently({&a, &b});
  const uint64_t allocations = g_worker_allocations.load();
  const GatewayCounters ca = a.counters();
  const GatewayCounters cb = b.counters();
  for (const std::string& line : FormatCounters(ca, {})) std::cout << "A " << line << "\n";
  for (const std::string& line : FormatCounters(cb, {})) std::cout << "B " << line << "\n";

  const std::vector<Frame> at_b = Drain(g_env.inside_tx[kB]);
  const std::vector<Frame> at_a = Drain(g_env.inside_tx[kA]);
  const std::vector<Frame> left_on_wan_to_a = Drain(g_env.wan[kB]);

  // Every ordinary packet arrived, byte for byte, and nothing else did: no
  // chaff, no dummy response.
  EXPECT_EQ(at_b.size(), t.a_to_b.size());
  EXPECT_TRUE(Sorted(at_b) == Sorted(t.a_to_b)) << "inside B did not get exactly A's traffic";
  EXPECT_EQ(at_a.size(), t.b_to_a.size());
  EXPECT_TRUE(Sorted(at_a) == Sorted(t.b_to_a)) << "inside A did not get exactly B's traffic";
  // The migration kept its order through A's shaper.
  EXPECT_THAT(FramesOfPort(at_b, 49152), ElementsAreArray(FramesOfPort(t.a_to_b, 49152)));
  const ChaffVerifier verifier_a = VerifierOf(config_a);
  const ChaffVerifier verifier_b = VerifierOf(config_b);
  EXPECT_EQ(CountVerified(verifier_b, at_b), 0u);
  EXPECT_EQ(CountVerified(verifier_a, at_a), 0u);

  // Chaff flowed both ways, on several connections, and was answered.
  for (const GatewayCounters* c : {&ca, &cb}) {
    const char* name = kSideName[c == &ca ? kA : kB];
    EXPECT_TRUE(c->chaff_enabled) << name;
    EXPECT_GT(c->chaff_traffic.generated_packets, 100u) << name;
    EXPECT_GT(c->chaff.sent_packets, 100u) << name;
    EXPECT_GE(c->chaff_traffic.connections, 3u) << name << ": rotation";
    EXPECT_GT(c->chaff_traffic.absorbed_peer_packets, 100u) << name;
    EXPECT_GT(c->chaff_traffic.absorbed_answer_packets, 10u) << name;
    EXPECT_GT(c->chaff_traffic.answered_packets, 10u) << name;
    EXPECT_EQ(c->chaff_traffic.no_mbuf, 0u) << name;
    EXPECT_EQ(c->direction[kInsideToOutside].tx_dropped, 0u) << name;
    EXPECT_GT(c->chaff_traffic.policy_steps, 50u) << name;
    EXPECT_TRUE(c->chaff_traffic.generating) << name;
    EXPECT_EQ(c->chaff.dropped_packets, c->discarded_at_exit - c->migration.dropped_packets)
        << name << ": no chaff tail drop, only what was queued at stop";
  }
  EXPECT_EQ(ca.migration.sent_packets, t.migration);
  EXPECT_EQ(ca.migration.dropped_packets, 0u);
  // Ordinary traffic on chaff addresses was checked and forwarded.
  EXPECT_EQ(cb.chaff_traffic.unverified_forwarded, t.a_to_b_in_pools);
  EXPECT_EQ(ca.chaff_traffic.unverified_forwarded, t.b_to_a_in_pools);

  // Conservation across the WAN: every chaff frame or answer A sent was
  // absorbed by B (B outlived A), and everything B sent was absorbed by A or
  // is still on the wire to A, where all of it verifies as chaff.
  EXPECT_EQ(cb.chaff_traffic.absorbed_peer_packets + cb.chaff_traffic.absorbed_answer_packets,
            ca.chaff.sent_packets + ca.chaff_traffic.answered_packets);
  EXPECT_EQ(ca.chaff_traffic.absorbed_peer_packets + ca.chaff_traffic.absorbed_answer_packets +
                left_on_wan_to_a.size(),
            cb.chaff.sent_packets + cb.chaff_traffic.answered_packets);
  EXPECT_EQ(CountVerified(verifier_a, left_on_wan_to_a), left_on_wan_to_a.size());

  // Thousands of frames crafted, verified, answered and forwarded by the two
  // workers, and not one heap allocation (glog's log line at stop included).
  EXPECT_EQ(allocations, 0u) << "heap allocations on the worker threads";
  std::cout << "heap allocations on the two worker threads: " << allocations << "\n";
}

// Chaff frames of the pair, crafted by the core exactly as gateway A would.
struct CraftedChaff {
  std::vector<Frame> syns;  // the connections' first SYNs
  std::vector<Frame> data;  // full data segments, in order
};

CraftedChaff CraftChaff(ChaffConfig config, const ChaffKeys& keys, const ChaffConfig& peer,
                        size_t data_frames) {
  CraftedChaff out;
  config.rotation.mean_ns = 3'600'000 * kMs;  // one connection for all the frames asked for
  absl::StatusOr<ChaffGenerator> gen = ChaffGenerator::Create(config, keys);
  EXPECT_TRUE(gen.ok()) << gen.status();
  const ChaffVerifier at_peer(keys, peer.pools);
  const ChaffResponder responder(peer.tcp);
  std::mt19937_64 rng(5);
  std::vector<uint8_t> buf(4096), reply(4096);
  uint64_t now = 1'000 * kMs;
  size_t n = gen->NextFrame(now, rng, buf);
  out.syns.emplace_back(buf.begin(), buf.begin() + n);
  if (config.tcp.wait_for_syn_ack) {
    // The handshake as the peer's responder would answer it.
    std::optional<ChaffSegment> syn = at_peer.Verify(out.syns.back());
    EXPECT_TRUE(syn.has_value());
    const size_t r = responder.Respond(*syn, out.syns.back(), now, reply);
    const ChaffVerifier at_us(keys, [&] {
      ChaffPoolConfig mirrored = peer.pools;
      std::swap(mirrored.local_prefixes, mirrored.remote_prefixes);
      return mirrored;
    }());
    std::optional<ChaffSegment> synack = at_us.Verify({reply.data(), r});
    EXPECT_TRUE(synack.has_value());
    n = gen->OnServerSegment(*synack, now + kMs, buf);
    out.data.emplace_back(buf.begin(), buf.begin() + n);
  }
  now += 30 * kMs;
  for (int guard = 0; out.data.size() < data_frames && guard < 1000; ++guard) {
    n = gen->NextFrame(now, rng, buf);
    now += kMs;
    if (n > 100) out.data.emplace_back(buf.begin(), buf.begin() + n);
  }
  return out;
}

TEST_F(GatewayPairTest, ForgedChaffIsForwardedAndReplayedChaffIsAbsorbed) {
  const GatewayConfig config_a = PairConfig(kA);
  GatewayConfig config_b = PairConfig(kB);
  config_b.chaff.policy = ChaffPolicyKind::kOff;  // B only absorbs and answers here
  const ChaffKeys pair_keys(*config_a.chaff.key);
  const CraftedChaff valid = CraftChaff(ToChaffConfig(config_a), pair_keys, ToChaffConfig(config_b), 6);
  ASSERT_EQ(valid.data.size(), 6u);

  // Another key, the same pools: chaff of a gateway that is not B's peer.
  ChaffConfig stranger = ToChaffConfig(config_a);
  stranger.tcp.wait_for_syn_ack = false;
  const ChaffKeys other_keys(*ParseChaffKeyHex(
      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
  const CraftedChaff wrong_key = CraftChaff(stranger, other_keys, ToChaffConfig(config_b), 2);

  std::vector<Frame> forged;
  forged.push_back(wrong_key.syns[0]);
  forged.push_back(wrong_key.data[0]);
  forged.push_back(wrong_key.data[1]);
  {  // mangled tag: one bit of the 8-byte tag at the start of the payload
    Frame f = valid.data[2];
    f[14 + 20 + 32 + 3] ^= 0x10;
    forged.push_back(f);
  }
  {  // mangled covered field: the sequence number
    Frame f = valid.data[3];
    f[14 + 20 + 7] ^= 0x01;
    forged.push_back(f);
  }
  {  // truncated on the wire: the IP header still claims the full length
    Frame f(valid.data[4].begin(), valid.data[4].begin() + 200);
    forged.push_back(f);
  }
  {  // truncated consistently: IP total length rewritten, checksum fixed
    Frame f(valid.data[5].begin(), valid.data[5].begin() + 400);
    const uint16_t total = static_cast<uint16_t>(f.size() - 14);
    f[16] = static_cast<uint8_t>(total >> 8);
    f[17] = static_cast<uint8_t>(total);
    f[24] = f[25] = 0;
    const uint16_t sum = test_frames::ChecksumFinish(test_frames::ChecksumAdd(0, &f[14], 20));
    f[24] = static_cast<uint8_t>(sum >> 8);
    f[25] = static_cast<uint8_t>(sum);
    forged.push_back(f);
  }
  {  // the SYN with a flipped ISN bit
    Frame f = valid.syns[0];
    f[14 + 20 + 4] ^= 0x80;
    forged.push_back(f);
  }
  const ChaffVerifier verifier_b = VerifierOf(config_b);
  ASSERT_EQ(CountVerified(verifier_b, forged), 0u);
  ASSERT_EQ(CountVerified(verifier_b, valid.data), valid.data.size());

  // On the WAN into B: the handshake, the valid segments, each of them again
  // (replays) and the SYN a third time, interleaved with the forgeries.
  std::vector<Frame> wan;
  wan.push_back(valid.syns[0]);
  size_t absorbed = 1;
  for (size_t i = 0; i < valid.data.size(); ++i) {
    wan.push_back(valid.data[i]);
    wan.push_back(valid.data[i]);  // replayed at once
    absorbed += 2;
    if (i < forged.size()) wan.push_back(forged[i]);
  }
  for (size_t i = valid.data.size(); i < forged.size(); ++i) wan.push_back(forged[i]);
  wan.push_back(valid.syns[0]);
  wan.push_back(valid.data[0]);  // a late replay
  absorbed += 2;
  Inject(g_env.wan[kA], wan);

  Gateway b(kB, config_b, 5'000 * kMs, /*exit_when_idle_ns=*/50 * kMs);
  ASSERT_TRUE(b.ok());
  RunConcurrently({&b});
  const GatewayCounters cb = b.counters();

  // Inside B: exactly the forgeries, unchanged and in order.
  EXPECT_THAT(Drain(g_env.inside_tx[kB]), ElementsAreArray(forged));
  EXPECT_EQ(cb.chaff_traffic.absorbed_peer_packets, absorbed);
  EXPECT_EQ(cb.chaff_traffic.absorbed_answer_packets, 0u);
  // The frame cut short on the wire does not even parse; every other forgery
  // was checked as possible chaff and forwarded.
  EXPECT_EQ(cb.chaff_traffic.unverified_forwarded, forged.size() - 1);
  EXPECT_EQ(cb.chaff_traffic.generated_packets, 0u);
  // B's answers went back out the WAN, and all of them are chaff to A: one
  // SYN-ACK per SYN, and ACKs (delayed: every second segment), replays
  // answered like the originals.
  const std::vector<Frame> answers = Drain(g_env.wan[kB]);
  EXPECT_EQ(answers.size(), cb.chaff_traffic.answered_packets);
  EXPECT_GE(answers.size(), 2u + 3u);
  const ChaffVerifier verifier_a = VerifierOf(config_a);
  for (const Frame& f : answers) {
    std::optional<ChaffSegment> seg = verifier_a.Verify(f);
    ASSERT_TRUE(seg.has_value());
    EXPECT_EQ(seg->direction, ChaffDirection::kServerToClient);
  }
}

TEST_F(GatewayPairTest, WithoutTheKeyThePeersChaffIsOrdinaryTraffic) {
  // The switch is the key: a gateway without one forwards the peer's chaff
  // inside like anything else (and so a peer that sends chaff needs its key).
  const GatewayConfig config_a = PairConfig(kA);
  const CraftedChaff valid =
      CraftChaff(ToChaffConfig(config_a), ChaffKeys(*config_a.chaff.key),
                 ToChaffConfig(PairConfig(kB)), 4);
  GatewayConfig config_b = PairConfig(kB);
  config_b.chaff = ChaffSection{};
  std::vector<Frame> wan = valid.syns;
  wan.insert(wan.end(), valid.data.begin(), valid.data.end());
  Inject(g_env.wan[kA], wan);
  Gateway b(kB, config_b, 5'000 * kMs, 50 * kMs);
  ASSERT_TRUE(b.ok());
  RunConcurrently({&b});
  EXPECT_THAT(Drain(g_env.inside_tx[kB]), ElementsAreArray(wan));
  EXPECT_FALSE(b.counters().chaff_enabled);
  EXPECT_TRUE(Drain(g_env.wan[kB]).empty());
}

TEST_F(GatewayPairTest, LowLoadPolicyTurnsChaffOffUnderLoadAndBackOn) {
  // Gateway A alone with policy low_load: chaff while the outgoing
  // background is below 0.5 MB/s (smoothed over 200 ms), none while the
  // hosts send 2 MB/s, chaff again once they stop. The test thread is the
  // only producer of A's inside ring and the only consumer of the WAN ring
  // while A runs.
  GatewayConfig config = PairConfig(kA);
  config.chaff.policy = ChaffPolicyKind::kLowLoad;
  config.chaff.low_load_threshold_mbyte_s = 0.5;
  config.chaff.low_load_hysteresis = 0.2;
  config.chaff.background_time_constant_ms = 200;
  config.chaff.peer_responds = false;  // no B here
  const ChaffVerifier at_b = VerifierOf(PairConfig(kB));
  constexpr int kPhaseMs = 1000;
  Gateway a(kA, config, 3 * kPhaseMs * kMs);
  ASSERT_TRUE(a.ok());
  std::thread worker([&a] { a.Run(); });
  const auto start = std::chrono::steady_clock::now();
  auto elapsed_ms = [&start] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start)
        .count();
  };
  // Chaff frames seen on the WAN, by 100 ms slot of their arrival there.
  std::vector<size_t> chaff_per_slot(3 * kPhaseMs / 100 + 10, 0);
  const Frame background = EthernetUdp4("192.0.2.10", "198.51.100.20", 5000, 53, 958);  // 1000 bytes
  for (long t = 0; (t = elapsed_ms()) < 3 * kPhaseMs + 100;) {
    if (t >= kPhaseMs && t < 2 * kPhaseMs) {
      Inject(g_env.inside_rx[kA], std::vector<Frame>(10, background));  // 10 kB per 5 ms
    }
    for (const Frame& f : Drain(g_env.wan[kA])) {
      if (at_b.Verify(f).has_value()) ++chaff_per_slot[std::min<size_t>(t / 100, chaff_per_slot.size() - 1)];
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  worker.join();
  const GatewayCounters c = a.counters();
  auto chaff_between = [&](int from_ms, int to_ms) {
    size_t n = 0;
    for (int slot = from_ms / 100; slot < to_ms / 100; ++slot) n += chaff_per_slot[slot];
    return n;
  };
  std::cout << "chaff frames per 100 ms:";
  for (size_t n : chaff_per_slot) std::cout << " " << n;
  std::cout << "\n";
  EXPECT_GT(chaff_between(100, 900), 20u) << "idle: chaff on";
  // Load from 1.0 s: chaff stops within about 60 ms (the smoothed rate
  // crosses 0.5 MB/s); from 1.2 s on nothing but the frame or two already
  // queued may leave.
  EXPECT_LE(chaff_between(1200, 2000), 2u) << "under load: chaff off";
  // Load gone at 2.0 s: back on once the smoothed rate falls below 0.4 MB/s
  // (about 320 ms).
  EXPECT_GT(chaff_between(2500, 3000), 10u) << "idle again: chaff on";
  EXPECT_GT(c.chaff_traffic.policy_steps, 250u);
  EXPECT_GT(c.direction[kInsideToOutside].forwarded_packets, 1000u);
}

}  // namespace
}  // namespace shroud

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using shroud::g_env;
  using shroud::kRingSize;
  if (!shroud::test_frames::StartTestEal("gateway_pair_test", 512)) {
    // 77 = skipped, for meson: the tests did not run, so they must not pass.
    fprintf(stderr, "skipped: rte_eal_init failed (see the EAL messages above)\n");
    return 77;
  }
  g_env.pool = rte_pktmbuf_pool_create("pair_pool", 32767, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                       SOCKET_ID_ANY);
  bool ok = g_env.pool != nullptr;
  auto ring = [](const std::string& name) {
    return rte_ring_create(name.c_str(), kRingSize, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  };
  for (int s = 0; ok && s < 2; ++s) {
    const std::string n = std::to_string(s);
    g_env.inside_rx[s] = ring("in_rx" + n);
    g_env.inside_tx[s] = ring("in_tx" + n);
    g_env.wan[s] = ring("wan" + n);
    ok = g_env.inside_rx[s] && g_env.inside_tx[s] && g_env.wan[s];
  }
  // Ports in id order: A inside, A outside, B inside, B outside.
  struct PortRings {
    const char* name;
    rte_ring* rx;
    rte_ring* tx;
  };
  const PortRings ports[4] = {
      {"a_inside", g_env.inside_rx[0], g_env.inside_tx[0]},
      {"a_outside", g_env.wan[1], g_env.wan[0]},
      {"b_inside", g_env.inside_rx[1], g_env.inside_tx[1]},
      {"b_outside", g_env.wan[0], g_env.wan[1]},
  };
  for (int p = 0; ok && p < 4; ++p) {
    ok = shroud::test_frames::StartRingPort(ports[p].name, ports[p].rx, ports[p].tx, g_env.pool) == p;
  }
  if (!ok) {
    fprintf(stderr, "FAIL: ring ports could not be set up\n");
    return 1;
  }
  g_env.ok = true;
  const int rc = RUN_ALL_TESTS();
  for (uint16_t p = 0; p < 4; ++p) rte_eth_dev_stop(p);
  rte_eal_cleanup();
  return rc;
}
