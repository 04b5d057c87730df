// The gateway's poll-mode worker: one lcore owns both ports' queue 0, the flow
// table, the classifier's scratch, the shaper and Algorithm 3.
//
//   loop:
//     now = TSC in ns
//     rx inside  -> parse -> flow table (features, class) -> migration queue | forward outside
//     rx outside -> parse -> flow table (features, class) -> forward inside
//     shaper dequeue (tokens at `now`)                     -> tx outside
//     Algorithm 3 step when `int` has passed               -> shaper.SetRate (a store)
//     idle-flow sweep (a few slots), chores
//
// Everything that decides (parsing, features, classification, token buckets,
// Algorithm 3) is the functional core in dataplane/core; this file only moves
// mbufs between it and the ports. Nothing here allocates, locks or makes a
// syscall per packet.
#ifndef SHROUD_DATAPLANE_GATEWAY_WORKER_H_
#define SHROUD_DATAPLANE_GATEWAY_WORKER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <random>

#include "absl/status/statusor.h"
#include "dataplane/core/classifier.h"
#include "dataplane/core/flow_features.h"
#include "dataplane/core/gateway_config.h"
#include "dataplane/core/packet_parser.h"
#include "dataplane/core/rate_variation.h"
#include "dataplane/core/token_bucket.h"
#include "dataplane/flow_table.h"

struct rte_mbuf;

namespace shroud {

inline constexpr uint16_t kMaxBurst = 512;

enum Direction : uint8_t { kInsideToOutside = 0, kOutsideToInside = 1 };

struct GatewayWorkerOptions {
  uint16_t inside_port = 0;
  uint16_t outside_port = 1;
  uint16_t burst = 32;
  MalformedPolicy malformed = MalformedPolicy::kForward;
  FeatureConfig features;
  uint64_t idle_timeout_ns = 30'000'000'000ull;
  bool rate_variation = true;
  RateVariationConfig rate_variation_config;
  uint64_t seed = 1;
  ShaperConfig shaper;
  // Replay pacing: > 0 holds each received packet that carries an rx
  // timestamp (net_pcap does) until its offset from the first one, divided by
  // this speed-up, has passed. 0: forward as fast as packets arrive.
  double replay_speed = 0.0;
  int timestamp_offset = -1;    // mbuf dynfield of the rx timestamp (-1: none)
  uint64_t timestamp_flag = 0;  // its ol_flags bit
  // Stop once nothing was received for this long, no replayed packet is
  // waiting and the shaper is empty (0: never). For replays.
  uint64_t exit_when_idle_ns = 0;
  // Stop after this long (0: never).
  uint64_t duration_ns = 0;
  // Log a counter line this often (0: never).
  uint64_t stats_interval_ns = 0;
};

struct DirectionCounters {
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;
  uint64_t forwarded_packets = 0;  // handed to tx unshaped
  uint64_t forwarded_bytes = 0;
  uint64_t shaped_packets = 0;     // handed to a shaper queue
  uint64_t tx_packets = 0;         // accepted by the tx port
  uint64_t tx_bytes = 0;
  uint64_t tx_dropped = 0;         // refused by the tx port (ring full), freed
};

struct GatewayCounters {
  std::array<DirectionCounters, 2> direction;
  std::array<uint64_t, static_cast<size_t>(ParseStatus::kCount)> parse_status{};
  uint64_t malformed_dropped = 0;
  FlowTableCounters flows;
  uint64_t flows_active = 0;
  // Flows whose class got decided, by how.
  uint64_t classified_rule = 0;
  uint64_t classified_signature = 0;
  uint64_t classified_no_match = 0;
  uint64_t scanner_errors = 0;
  ShaperClassCounters migration;
  ShaperClassCounters chaff;
  DefaultClassCounters default_class;
  // Still queued in the shaper when the worker stopped; freed, and counted
  // in their class's dropped_packets too (never as sent).
  uint64_t discarded_at_exit = 0;
  // Algorithm 3.
  uint64_t rate_steps = 0;
  uint64_t rate_bytes_per_sec = 0;  // current migration rate
  uint64_t rate_min_applied = 0;
  uint64_t rate_max_applied = 0;
  double rate_window_cov = 0.0;
  uint64_t elapsed_ns = 0;
  uint64_t loops = 0;
};

class GatewayWorker {
 public:
  static absl::StatusOr<std::unique_ptr<GatewayWorker>> Create(const GatewayWorkerOptions& options,
                                                               const Classifier& classifier,
                                                               std::unique_ptr<FlowTable> flows);
  ~GatewayWorker();

  // The poll loop; returns when `stop` is set, the duration has passed or the
  // replay went idle. Frees whatever is still queued.
  void Run(const std::atomic<bool>& stop);

  // Valid after Run returned (the worker thread owns them until then).
  GatewayCounters counters() const;
  const FlowTable& flows() const { return *flows_; }

 private:
  struct Staging {  // replay pacing: one rx burst waiting for its due times
    std::array<rte_mbuf*, kMaxBurst> pkts{};
    uint16_t head = 0;
    uint16_t count = 0;
  };
  struct TxBuffer {
    std::array<rte_mbuf*, 2 * kMaxBurst> pkts{};
    uint16_t count = 0;
  };

  GatewayWorker(const GatewayWorkerOptions& options, const Classifier& classifier,
                SignatureScanner scanner, std::unique_ptr<FlowTable> flows, Shaper shaper);

  uint64_t NowNs() const;
  uint16_t Receive(Direction dir, uint64_t now, rte_mbuf** out);
  // One rx burst: parse every packet, look their flows up in one bulk call,
  // then decide per packet in arrival order.
  void ProcessBurst(Direction dir, rte_mbuf** pkts, uint16_t n, uint64_t now);
  void Process(Direction dir, rte_mbuf* m, const ParsedPacket& p, ParseStatus status,
               FlowEntry* looked_up, uint64_t now);
  void Forward(Direction dir, rte_mbuf* m, uint32_t wire_bytes, uint64_t now);
  void Flush(Direction dir);
  void StepRate(uint64_t now);
  void LogStats(uint64_t now) const;
  void DiscardQueued();

  GatewayWorkerOptions options_;
  const Classifier& classifier_;
  SignatureScanner scanner_;
  std::unique_ptr<FlowTable> flows_;
  Shaper shaper_;
  StreamPosition stream_;
  RateVariation rate_variation_;
  std::mt19937_64 rng_;

  uint64_t tsc_start_ = 0;
  uint64_t tsc_to_ns_mult_ = 0;  // ns = tsc * mult >> 32

  std::array<Staging, 2> staging_;
  std::array<TxBuffer, 2> tx_;  // by direction: [kInsideToOutside] goes out the outside port
  bool replay_started_ = false;
  uint64_t replay_base_ts_ = 0;  // rx timestamp of the first packet (pcap: microseconds)
  uint64_t replay_base_ns_ = 0;
  uint64_t last_rx_ns_ = 0;
  uint64_t next_sweep_ns_ = 0;

  // Per-burst scratch (no allocation on the fast path).
  std::array<ParsedPacket, kMaxBurst> parsed_;
  std::array<ParseStatus, kMaxBurst> status_;

  GatewayCounters counters_;
};

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_GATEWAY_WORKER_H_
