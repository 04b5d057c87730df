// The live dashboard's data (issue 6), as pure functions: the JSON of
// /api/rtt (the RTT monitor's graph, traffic light and events) and of
// /api/rate (the gateway's migration rate, sampled by shroud-control into a
// bounded ring). No I/O, no clock, no locking: the daemon's state
// (control_state.h) takes the snapshots and calls these.
//
// Both routes are incremental so that a page polling every 200-500 ms costs
// little: the answer carries a cursor ("next") that the page passes back as
// ?since=, and only what is new after it is sent again.
#ifndef SHROUD_CONTROL_DAEMON_DASHBOARD_API_H_
#define SHROUD_CONTROL_DAEMON_DASHBOARD_API_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "control/daemon/api.h"
#include "control/rttmon/rtt_monitor.h"

namespace shroud::control {

// --- /api/rtt ---

struct RttQuery {
  // Samples with a sequence number above this (absent: every sample kept).
  std::optional<uint64_t> since;
  // Closed events with an id above this (absent: the last kMaxRttEvents).
  std::optional<uint64_t> events_after;
};

// Closed events one answer carries at most (the newest): the page lists the
// recent ones, the totals count all.
inline constexpr size_t kMaxRttEvents = 50;

// /api/rtt?since=SEQ&events_after=ID. InvalidArgument naming the parameter
// for a bad value, an unknown or a repeated parameter.
absl::StatusOr<RttQuery> ParseRttQuery(const QueryParams& params);

// The answer of /api/rtt when the monitor runs:
//   {"enabled": true, "target", "address", "family": "ipv4"|"ipv6", "socket",
//    "interval_ms", "timeout_ms", "started_unix" (identifies the monitor's run:
//    a page seeing it change starts over), "now_s", "running", "error"?,
//    "state": "green"|"yellow"|"red", "baseline_ready", "baseline_ms",
//    "spread_ms", "peak_threshold_ms", "outage_threshold_ms", "silence_ms",
//    "last_rtt_ms" (the newest reply's RTT, null before any),
//    "samples": [{"seq", "t_s", "rtt_ms"} | {"seq", "t_s", "lost": true} |
//                {"seq", "t_s", "rtt_ms", "late": true}],
//    "next": SEQ or null,
//    "open_event": EVENT or null, "events": [EVENT...], "events_total",
//    "red_events", "yellow_events", "downtime_ms_total",
//    "counters": {"sent", "received", "lost", "late", "duplicates",
//                 "send_errors", "icmp_errors", "skipped_slots", "outstanding"},
//    "rtt_ms": {"min", "median", "p95", "p99", "max", "count"} or null}
// Times are seconds since the monitor started; EVENT is rttmon::EventToJson.
//
// Samples appear when a probe is resolved: a reply at once, a loss only after
// the timeout, so a later probe's reply can be listed before an earlier
// probe's loss. "next" is therefore the highest sequence number up to which
// every probe kept is resolved (null while none is): passing it back as
// ?since= never misses a probe, and repeats at most the timeout's worth of
// later replies (the page overwrites by seq). A probe first lost and
// answered later (late) is marked late in the answers that include it again;
// one already behind the cursor stays drawn as lost, which it was.
nlohmann::json RttJson(const rttmon::RttSnapshot& snapshot, const RttQuery& query);

// The answer of /api/rtt when shroud-control runs without --rttmon.
nlohmann::json RttDisabledJson();

// --- /api/rate ---

struct RatePoint {
  uint64_t seq = 0;   // 1, 2, ... in sampling order
  double t_s = 0;     // seconds since shroud-control started
  double rate_bytes_per_sec = 0;
};

// What a sample of the dataplane's status says about the migration rate:
// counters.rate_variation.rate_bytes_per_sec of a gateway's {"cmd":"status"}
// answer ({"ok": true, "status": {...}}). NotFound when the dataplane is not
// a gateway (a tap shapes nothing), DataLoss when the field is missing.
absl::StatusOr<double> MigrationRateFromStatus(const nlohmann::json& answer);

// The gateway's migration rate over time, sampled every ~200 ms into a ring
// of bounded size (the oldest points go first); keeps what the last sample
// said about the dataplane so the page can tell "no dataplane" from "a tap".
class RateTrace {
 public:
  // `interval_ms`: how often the daemon samples (reported to the page).
  RateTrace(size_t capacity, double interval_ms);

  // One sample at t_s: the dataplane's status answer, or why none was had.
  void Observe(double t_s, const absl::StatusOr<nlohmann::json>& status_answer);

  struct Query {
    std::optional<uint64_t> since;  // points with a seq above this
  };
  // {"attached": bool (the dataplane's control socket answered the last
  //  sample), "available": bool (it is a gateway with a rate), "mode":
  //  "gateway"|"tap"|null, "error": why not available (absent when it is),
  //  "now_s", "interval_ms", "points": [{"seq", "t_s", "rate_bytes_per_sec"}],
  //  "next": SEQ or null, "min_applied_bytes_per_sec"/"max_applied_bytes_per_sec"
  //  (the bounds the gateway applied so far, null when unknown)}.
  // Points outlive a detach (the trace keeps its history; the page scrolls it
  // off); "points" is [] when nothing was ever sampled.
  nlohmann::json ToJson(const Query& query, double now_s) const;

  size_t size() const { return points_.size(); }

 private:
  size_t capacity_;
  double interval_ms_;
  std::deque<RatePoint> points_;
  uint64_t next_seq_ = 1;
  bool attached_ = false;
  bool available_ = false;
  std::optional<std::string> mode_;
  std::string error_ = "not sampled yet";
  std::optional<double> min_applied_, max_applied_;
};

// /api/rate?since=SEQ.
absl::StatusOr<RateTrace::Query> ParseRateQuery(const QueryParams& params);

}  // namespace shroud::control

#endif  // SHROUD_CONTROL_DAEMON_DASHBOARD_API_H_
