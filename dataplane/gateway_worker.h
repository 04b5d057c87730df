// The gateway's poll-mode worker: one lcore owns both ports' queue 0, the flow
// table, the classifier's scratch, the shaper and Algorithm 3.
//
//   loop:
//     now = TSC in ns
//     rx inside  -> parse -> flow table (features, class) -> migration queue | forward outside
//     rx outside -> parse -> flow table (features, class) -> forward inside
//     shaper dequeue (tokens at `now`)                     -> tx outside
//     Algorithm 3 step when `int` has passed               -> shaper.SetRate (a store)
//       and the chaff policy's step                        -> shaper.SetRate(kChaff)
//     idle-flow sweep (a few slots), chores
//
// Chaff (issue 4, dataplane/core/chaff.h), when a pair key is configured:
//     rx outside: a frame inside the chaff pools whose tags verify is the
//       peer's chaff (or its answer to ours): dropped, never forwarded inside,
//       answered out the outside port unshaped; one that does not verify is
//       ordinary traffic and is forwarded as such
//     supply: while the policy says generate, keep a frame or two of our
//       chaff connection queued in the chaff class; the shaper paces them
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
#include <span>
#include <vector>

#include <mutex>
#include <optional>

#include "absl/status/statusor.h"
#include "dataplane/core/chaff.h"
#include "dataplane/core/classifier.h"
#include "dataplane/core/flow_features.h"
#include "dataplane/core/gateway_config.h"
#include "dataplane/core/packet_parser.h"
#include "dataplane/core/rate_variation.h"
#include "dataplane/core/token_bucket.h"
#include "dataplane/flow_exporter.h"
#include "dataplane/flow_table.h"
#include "dataplane/mirror_writer.h"

struct rte_mbuf;
struct rte_mempool;

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
  // Chaff: on when a key is given (recognition and answers; the policy in
  // `chaff` decides whether we send any). The worker allocates chaff frames
  // and answers from `mbuf_pool`, which is required then.
  std::optional<ChaffKey> chaff_key;
  ChaffConfig chaff;
  // Chaff connections open at a time, each rotating on its own; the worker
  // round-robins frames between them.
  uint32_t chaff_connections = 1;
  rte_mempool* mbuf_pool = nullptr;
  // Mirror (issue 5): this worker's ring; none = nothing mirrored. A changed
  // flow's record is written at most every export_interval_ns; the final
  // flush at stop waits up to flush_timeout_ns for an attached reader.
  std::optional<MirrorProducer> mirror;
  uint64_t export_interval_ns = 1'000'000'000ull;
  uint64_t flush_timeout_ns = 2'000'000'000ull;
  // Sleep this long after a loop that received and released nothing
  // (0: busy-poll). See IdleSleep in worker_cadence.h.
  uint64_t idle_sleep_ns = 0;
};

struct ChaffCounters {
  // Our chaff: frames the generator crafted into the chaff class (what the
  // shaper then sent or dropped is in GatewayCounters::chaff).
  uint64_t generated_packets = 0;
  uint64_t generated_bytes = 0;
  // Verified chaff from the WAN, dropped: the peer's connections (client
  // segments) and the peer's answers to ours (server segments).
  uint64_t absorbed_peer_packets = 0;
  uint64_t absorbed_answer_packets = 0;
  uint64_t absorbed_bytes = 0;
  // Answers we sent out the WAN port, unshaped: the responder's SYN-ACKs,
  // ACKs and FINs to the peer's chaff, and our generator's replies to its
  // answers (the first data segment after a SYN-ACK, the last ACK).
  uint64_t answered_packets = 0;
  uint64_t answered_bytes = 0;
  // Frames from the WAN inside the chaff pools whose tags did not verify
  // (forged, mangled, truncated, or real traffic on those addresses):
  // forwarded inside as ordinary traffic.
  uint64_t unverified_forwarded = 0;
  // Chaff frames or answers skipped because the mempool was empty.
  uint64_t no_mbuf = 0;
  // The generator's connections.
  uint64_t connections = 0;
  uint64_t syn_retransmits = 0;
  uint64_t abandoned = 0;
  // The policy's last decision and how many it made.
  uint64_t policy_steps = 0;
  bool generating = false;
  uint64_t class_rate_bytes_per_sec = 0;
};

// The options a GatewayConfig decides (burst, malformed policy, features,
// idle timeout, Algorithm 3, the shaper, chaff; seed = rate_variation.seed).
// The caller adds what the process decides: ports, mbuf pool, replay, stop
// conditions, and a seed when the config's is 0.
GatewayWorkerOptions WorkerOptionsFromConfig(const GatewayConfig& config);

struct DirectionCounters {
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;
  uint64_t forwarded_packets = 0;  // handed to tx unshaped
  uint64_t forwarded_bytes = 0;
  uint64_t shaped_packets = 0;     // handed to a shaper queue
  uint64_t tx_packets = 0;         // accepted by the tx port
  uint64_t tx_bytes = 0;
  uint64_t tx_dropped = 0;         // refused by the tx port (ring full), freed
  uint64_t tx_retried = 0;         // refusals of a frame kept for the next flush (a frame
                                   // refused again counts again)
};

struct GatewayCounters {
  std::array<DirectionCounters, 2> direction;
  std::array<uint64_t, static_cast<size_t>(ParseStatus::kCount)> parse_status{};
  uint64_t malformed_dropped = 0;
  WorkerFlowTableCounters flows;
  uint64_t flows_active = 0;
  // Flows whose class got decided, by how (each flow once, by its first
  // decision) ...
  uint64_t classified_rule = 0;
  uint64_t classified_signature = 0;
  uint64_t classified_no_match = 0;
  // ... and decisions again after a reload changed the rules.
  uint64_t reclassified = 0;
  uint64_t scanner_errors = 0;
  ShaperClassCounters migration;
  ShaperClassCounters chaff;
  DefaultClassCounters default_class;
  bool chaff_enabled = false;
  ChaffCounters chaff_traffic;
  // Still queued in the shaper when the worker stopped; freed, and counted
  // in their class's dropped_packets too (never as sent). Also frames a
  // replay had received but not yet released. (Frames a port still refused at
  // the stop count as that direction's tx_dropped.)
  uint64_t discarded_at_exit = 0;
  // Algorithm 3.
  uint64_t rate_steps = 0;
  uint64_t rate_bytes_per_sec = 0;  // current migration rate
  uint64_t rate_min_applied = 0;
  uint64_t rate_max_applied = 0;
  double rate_window_cov = 0.0;
  // Session spread (rate_variation.session_spread): sessions started, and
  // the current one's minR and win (0 when off or before the first).
  uint64_t rate_sessions = 0;
  uint64_t rate_session_min_rate = 0;  // bytes/s
  uint32_t rate_session_window = 0;
  uint64_t rate_paused_steps = 0;  // steps the migration class was held at 0
  uint64_t elapsed_ns = 0;
  uint64_t loops = 0;
  uint64_t runtime_updates = 0;  // RuntimeUpdates applied
  uint64_t rules_reloaded = 0;   // of which replaced the classifier
  FlowExporterCounters records;  // mirror
  uint64_t mirror_ring_dropped = 0;
};

// A run-time change of parameters (SIGHUP reloads the config file): Algorithm
// 3 and the chaff policy. The main thread builds it and posts it; the worker
// picks it up at its next chore check (every ~1000 loops), never on the
// per-packet path.
struct RuntimeUpdate {
  // `config` must pass Validate(). Algorithm 3's state (its rate window) is
  // built here, by the poster, so the worker only swaps it in.
  explicit RuntimeUpdate(const RateVariationConfig& config)
      : rate_variation_config(config), rate_variation_state(config) {}

  bool rate_variation = true;
  RateVariationConfig rate_variation_config;
  RateVariation rate_variation_state;  // a fresh window under the new bounds
  uint64_t migration_ceil_bytes_per_sec = 0;
  // The chaff class's ceil follows the policy's top rate (0: unchanged).
  uint64_t chaff_ceil_bytes_per_sec = 0;
  ChaffPolicyConfig chaff_policy;  // applied when chaff is configured
  // Reloaded rules and signatures (null: unchanged), with the worker's new
  // scanner (its scratch) built by the poster too; the classifier must carry
  // on the signature ids of the one it replaces (Classifier::Create's `ids`).
  // Flows are decided again at their next packet (Classifier::Refresh).
  std::unique_ptr<Classifier> classifier;
  std::optional<SignatureScanner> scanner;
  // Set by the worker when it retires this update: one retired before it
  // that no CollectRetired had taken yet, freed with it off the worker.
  std::unique_ptr<RuntimeUpdate> older_retired;
};

class GatewayWorker {
 public:
  static absl::StatusOr<std::unique_ptr<GatewayWorker>> Create(const GatewayWorkerOptions& options,
                                                               const Classifier& classifier,
                                                               std::unique_ptr<WorkerFlowTable> flows);
  ~GatewayWorker();

  // The poll loop; returns when `stop` is set, the duration has passed or the
  // replay went idle. Frees whatever is still queued.
  void Run(const std::atomic<bool>& stop);

  // Any thread: replaces a not yet applied update (validated by the caller),
  // keeping its new rules when this one brings none: a `ctl set` right after
  // a `reload` must not lose the reload's classifier.
  void PostUpdate(std::unique_ptr<RuntimeUpdate> update);
  // Any thread (the main loop calls it every ~20 ms): frees the updates the
  // worker applied and what they replaced, above all an old classifier's
  // Hyperscan database and scratch, so that freeing them never stalls the
  // worker's core. Returns how many updates it freed.
  size_t CollectRetired() {
    std::unique_ptr<RuntimeUpdate> u(retired_update_.exchange(nullptr, std::memory_order_acq_rel));
    size_t n = 0;
    for (const RuntimeUpdate* p = u.get(); p != nullptr; p = p->older_retired.get()) ++n;
    return n;
  }

  // Valid after Run returned (the worker thread owns them until then).
  GatewayCounters counters() const;
  // Any thread: the counters as of the last ~100 ms; the worker publishes
  // them with a try_lock, so a reader never stalls it.
  GatewayCounters LiveCounters() const;
  const WorkerFlowTable& flows() const { return *flows_; }

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
                SignatureScanner scanner, std::unique_ptr<WorkerFlowTable> flows, Shaper shaper);

  uint64_t NowNs() const;
  uint16_t Receive(Direction dir, uint64_t now, rte_mbuf** out);
  // One rx burst: parse every packet, look their flows up in one bulk call,
  // then decide per packet in arrival order.
  void ProcessBurst(Direction dir, rte_mbuf** pkts, uint16_t n, uint64_t now);
  void Process(Direction dir, rte_mbuf* m, const ParsedPacket& p, ParseStatus status,
               FlowEntry* looked_up, uint64_t now);
  void Forward(Direction dir, rte_mbuf* m, uint32_t wire_bytes, uint64_t now);
  void Flush(Direction dir);
  // Session spread: a migration packet after a silence starts a session;
  // the chore path logs it.
  void StartSessionIfNew(uint64_t now);
  void LogNewSession();
  void StepRate(uint64_t now);
  // Chaff (only when chaff_ is set).
  bool AbsorbChaff(rte_mbuf* m, const ParsedPacket& p, uint64_t now);
  void SupplyChaff(uint64_t now);
  size_t AnswerToOurs(const ChaffSegment& seg, uint64_t now, std::span<uint8_t> out);
  ChaffGeneratorCounters GeneratorTotals() const;
  void StepChaff(uint64_t now);
  void LogStats(uint64_t now) const;
  void DiscardQueued();

  GatewayWorkerOptions options_;
  const Classifier* classifier_;
  std::unique_ptr<Classifier> owned_classifier_;  // after a rules reload
  SignatureScanner scanner_;
  std::unique_ptr<WorkerFlowTable> flows_;
  Shaper shaper_;
  uint32_t next_lane_ = 0;  // the migration lane the next new migration flow gets
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
  RateSessionProfile last_session_;  // the latest session's draw
  uint64_t logged_sessions_ = 0;     // sessions LogNewSession has reported
  uint64_t next_sweep_ns_ = 0;

  // Per-burst scratch (no allocation on the fast path).
  std::array<ParsedPacket, kMaxBurst> parsed_;
  std::array<ParseStatus, kMaxBurst> status_;

  // Chaff state, all of it created with the worker; absent when off.
  struct Chaff {
    ChaffVerifier verifier;
    std::vector<ChaffGenerator> generators;  // sized at Create, never after
    ChaffFlightScheduler scheduler;
    ChaffResponder responder;
    ChaffPolicy policy;
    bool respond = true;
    size_t max_frame_bytes = 0;
    ChaffDecision decision;
    uint64_t last_step_ns = 0;
    uint64_t next_step_ns = 0;  // when Algorithm 3 does not step (it is off)
    uint64_t interval_ns = 0;
    uint64_t last_migration_sent_bytes = 0;
    uint64_t last_default_bytes = 0;
    uint64_t last_answered_bytes = 0;
  };
  std::optional<Chaff> chaff_;
  bool rate_paused_ = false;  // the migration class held at 0 this interval (StepRate)
  // Separate from rng_, so Algorithm 3's rates for a seed are the same with
  // chaff on or off.
  std::mt19937_64 chaff_rng_;

  void ApplyUpdate(uint64_t now);
  void Publish();
  std::optional<FlowExporter> exporter_;
  mutable std::mutex published_mu_;  // the worker only try_locks it
  GatewayCounters published_;
  std::atomic<RuntimeUpdate*> pending_update_{nullptr};
  std::mutex post_mu_;  // posters only; never taken by the worker
  std::atomic<RuntimeUpdate*> retired_update_{nullptr};
  // The rules generation flows are decided under (FlowClass::rules_epoch).
  uint16_t rules_epoch_ = 0;
  // A flow decided under older rules is decided again (Classifier::Refresh).
  void RefreshIfStale(FlowEntry& e) const;

  GatewayCounters counters_;
};

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_GATEWAY_WORKER_H_
