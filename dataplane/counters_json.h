// The gateway's final counters as log lines and as JSON (--counters_json),
// the form tests and scripts read. No DPDK types.
#ifndef SHROUD_DATAPLANE_COUNTERS_JSON_H_
#define SHROUD_DATAPLANE_COUNTERS_JSON_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "dataplane/gateway_worker.h"
#include "dataplane/tap_worker.h"
#include "nlohmann/json.hpp"

namespace shroud {

// rte_eth_stats of one port, as the PMD reports them.
struct PortCounters {
  uint16_t port = 0;
  std::string name;
  uint64_t rx_packets = 0, rx_bytes = 0, tx_packets = 0, tx_bytes = 0;
  uint64_t rx_missed = 0, rx_errors = 0, tx_errors = 0, rx_nombuf = 0;
};

// Schema (version 1):
//   {"version": 1, "seed": N, "elapsed_s": x, "runtime_updates": n, "rules_reloaded": n,
//    "mirror": {"updates", "ends", "finals", "dropped", "ring_dropped"},
//    "ports": [{"port", "name", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes",
//               "rx_missed", "rx_errors", "tx_errors", "rx_nombuf"}],
//    "inside_to_outside"/"outside_to_inside": {"rx_packets", "rx_bytes",
//        "forwarded_packets", "forwarded_bytes", "shaped_packets", "tx_packets",
//        "tx_bytes", "tx_dropped", "tx_retried"},
//    "parse": {"<status>": n, ...}, "malformed_dropped": n,
//    "flows": {"active", "created", "evicted_idle", "table_full"},
//    "classified": {"rule", "signature", "no_match"}, "scanner_errors": n,
//    "shaper": {"migration"/"chaff": {"enqueued_packets", "enqueued_bytes",
//        "sent_packets", "sent_bytes", "dropped_packets", "dropped_bytes",
//        "oversize_packets", "borrowed_bytes", "backlog_packets",
//        "sojourn_ns_max", "lane_turns", "sojourn_ns_mean"}, "default": {"packets", "bytes"},
//        "discarded_at_exit": n},
//    "chaff": {"enabled", "generated_packets", "generated_bytes", "sent_packets",
//        "sent_bytes", "absorbed_peer_packets", "absorbed_answer_packets",
//        "absorbed_bytes", "answered_packets", "answered_bytes",
//        "unverified_forwarded", "no_mbuf", "connections", "syn_retransmits",
//        "abandoned", "policy_steps", "generating", "class_rate_bytes_per_sec"},
//    "rate_variation": {"steps", "rate_bytes_per_sec", "min_applied_bytes_per_sec",
//        "max_applied_bytes_per_sec", "window_cov", "sessions",
//        "session_min_rate_bytes_per_sec", "session_window", "paused_steps"}}
nlohmann::json CountersToJson(const GatewayCounters& c, const std::vector<PortCounters>& ports,
                              uint64_t seed);

// The mirror exporter's counters: records written by type, records refused.
nlohmann::json MirrorJson(const FlowExporterCounters& r, uint64_t ring_dropped);

// Tap mode (version 1): {"version": 1, "mode": "tap", "ports": [...as above],
//   "rx_packets", "rx_bytes", "stream_packets", "parse": {...},
//   "flows": {"active", "created", "evicted_idle", "table_full"}, "mirror": {...},
//   "workers": [{"rx_packets", "rx_bytes", "flows_active", "flows_created",
//                "flows_evicted_idle", "flows_table_full", "mirror", "elapsed_s"}]}
nlohmann::json TapCountersToJson(const std::vector<TapCounters>& workers,
                                 const std::vector<PortCounters>& ports);

absl::Status WriteCountersJson(const std::string& path, const GatewayCounters& c,
                               const std::vector<PortCounters>& ports, uint64_t seed);

// Writes `j` to `path` (through a temporary file and a rename).
absl::Status WriteJsonFile(const std::string& path, const nlohmann::json& j);

// A few lines for the log at exit.
std::vector<std::string> FormatCounters(const GatewayCounters& c,
                                        const std::vector<PortCounters>& ports);

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_COUNTERS_JSON_H_
