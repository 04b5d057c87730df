// The tap's poll-mode worker (--mode=tap): the adversary on a mirror port.
// One worker per rx queue; each owns its queue on every port, its flow table
// and its mirror ring. Nothing is transmitted: every frame is parsed, fed to
// its flow's features (the same code as `shroud analyze`) and freed.
//
//   loop:
//     rx burst (each port, this worker's queue) -> parse -> bulk flow lookup
//       -> FlowFeatures::Observe at the packet's time -> free
//     paced sweep: evict idle flows (end record), write changed flows (update)
//   at stop: a final record for every flow still in the table
//
// Packet times: a capture replayed through net_pcap carries each packet's
// capture time in the mbuf's rx timestamp (microseconds); the tap uses it, so
// the replay's speed changes nothing and the verdicts equal `shroud analyze`'s
// on the same file. Elsewhere (a NIC's rx timestamp is in device ticks) the
// worker's TSC gives the time.
//
// Algorithm 2 counts packets of the whole observed stream. Workers of a
// multi-queue tap share one stream counter (an atomic, one add per burst), so
// a window of W packets is W packets of all queues together, as one capture of
// the mirror port would have it; the order of packets within concurrent bursts
// of different workers is the only thing that differs from a capture.
#ifndef SHROUD_DATAPLANE_TAP_WORKER_H_
#define SHROUD_DATAPLANE_TAP_WORKER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "dataplane/core/flow_features.h"
#include "dataplane/core/packet_parser.h"
#include "dataplane/flow_exporter.h"
#include "dataplane/flow_table.h"
#include "dataplane/mirror_writer.h"

struct rte_mbuf;

namespace shroud {

inline constexpr uint16_t kTapMaxBurst = 256;

struct TapWorkerOptions {
  std::vector<uint16_t> ports = {0};
  uint16_t queue = 0;
  uint16_t burst = 32;
  FeatureConfig features;
  uint64_t idle_timeout_ns = 120'000'000'000ull;
  // A changed flow's record is written at most this often.
  uint64_t export_interval_ns = 1'000'000'000ull;
  // Capture times from the rx timestamp (net_pcap, microseconds). -1: TSC.
  int timestamp_offset = -1;
  uint64_t timestamp_flag = 0;
  // Shared stream counter of a multi-queue tap (null: this worker alone).
  std::atomic<uint64_t>* shared_stream = nullptr;
  // The mirror ring of this worker (none: features are kept, nothing mirrored).
  std::optional<MirrorProducer> mirror;
  uint8_t worker_index = 0;
  // Final flush: how long to wait for an attached reader to make room.
  uint64_t flush_timeout_ns = 5'000'000'000ull;
  uint64_t exit_when_idle_ns = 0;  // stop once nothing arrived for this long (0: never)
  uint64_t duration_ns = 0;        // stop after this long (0: never)
  uint64_t stats_interval_ns = 0;  // log a counter line this often (0: never)
  uint64_t idle_sleep_ns = 0;      // sleep after a loop that received nothing (0: busy-poll)
};

struct TapCounters {
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;  // wire bytes (a cut capture's from the IP header)
  // Frames of a replayed capture cut at its snaplen whose wire length came
  // from their IP header (net_pcap does not pass the pcap record's length on).
  uint64_t wire_length_from_ip = 0;
  std::array<uint64_t, static_cast<size_t>(ParseStatus::kCount)> parse_status{};
  WorkerFlowTableCounters flows;
  uint64_t flows_active = 0;
  uint64_t stream_packets = 0;  // this worker's view of the shared stream
  FlowExporterCounters records;
  uint64_t mirror_ring_dropped = 0;
  uint64_t elapsed_ns = 0;
  uint64_t loops = 0;
};

// All workers' counters as one (stream_packets: the largest view of the
// shared stream).
TapCounters SumTapCounters(const std::vector<TapCounters>& workers);

class TapWorker {
 public:
  static absl::StatusOr<std::unique_ptr<TapWorker>> Create(const TapWorkerOptions& options,
                                                           std::unique_ptr<WorkerFlowTable> flows);

  // The poll loop; returns when `stop` is set, the duration passed or the
  // input went idle, after the final flush.
  void Run(const std::atomic<bool>& stop);

  // Any thread: the counters as of the last ~100 ms (the worker publishes
  // them without ever waiting for a reader).
  TapCounters LiveCounters() const;
  // Valid after Run returned.
  TapCounters counters() const;
  const WorkerFlowTable& flows() const { return *flows_; }

 private:
  explicit TapWorker(const TapWorkerOptions& options, std::unique_ptr<WorkerFlowTable> flows);
  uint64_t TscNs() const;
  uint64_t StreamPackets() const;
  void ProcessBurst(rte_mbuf** pkts, uint16_t n, uint64_t tsc_now);
  void Publish();

  TapWorkerOptions options_;
  std::unique_ptr<WorkerFlowTable> flows_;
  StreamPosition stream_;
  std::optional<FlowExporter> exporter_;
  uint64_t tsc_start_ = 0;
  uint64_t tsc_to_ns_mult_ = 0;
  uint64_t flow_now_ = 0;  // time of the latest packet (capture or TSC clock)
  bool use_rx_timestamps_ = false;
  std::array<ParsedPacket, kTapMaxBurst> parsed_;
  std::array<ParseStatus, kTapMaxBurst> status_;
  TapCounters counters_;

  mutable std::mutex published_mu_;  // the worker only try_locks it
  TapCounters published_;
};

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_TAP_WORKER_H_
