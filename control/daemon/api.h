// What shroud-control serves, as pure functions: query parsing, flow
// selection, the JSON of /api/flows and /api/evaluation, and the Prometheus
// text of /metrics. No I/O and no locking; the HTTP shell (http_server.h)
// and the daemon's shared state (control_state.h) call these.
#ifndef SHROUD_CONTROL_DAEMON_API_H_
#define SHROUD_CONTROL_DAEMON_API_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "control/daemon/flow_store.h"

namespace shroud::control {

inline constexpr size_t kDefaultFlowLimit = 1000;
inline constexpr size_t kMaxFlowLimit = 100'000;
// /api/evaluation looks at no more than this many flows (the most recently
// updated), so one request cannot copy the whole table of a busy tap.
inline constexpr size_t kMaxEvaluationFlows = 500'000;
// `shroud eval --ks_window`'s default.
inline constexpr uint32_t kDefaultKsWindow = 1000;

// Query parameters as the HTTP library hands them over (name -> value,
// repeated names allowed so that they can be refused).
using QueryParams = std::multimap<std::string, std::string>;

// Refuses unknown and repeated query parameters (a typo must not silently
// return everything); returns the single value of each. Every route's query
// follows these rules and messages.
absl::StatusOr<std::map<std::string, std::string>> SingleValues(
    const QueryParams& params, const std::set<absl::string_view>& known);

// Which flows a request wants.
struct FlowFilter {
  bool migration_only = false;  // only flows either detector flags
  uint64_t min_packets = 0;
  size_t limit = kDefaultFlowLimit;
};

// /api/flows?migration=0|1&min_packets=N&limit=N. `default_min_packets`
// applies when min_packets is absent (the daemon's --min_packets, which
// defaults to `shroud analyze`'s). Errors (InvalidArgument) name the
// parameter; unknown or repeated parameters are errors too, so that a typo
// does not silently return everything.
absl::StatusOr<FlowFilter> ParseFlowQuery(const QueryParams& params, uint64_t default_min_packets);

struct EvaluationQuery {
  uint64_t min_packets = 0;
  uint32_t ks_window = kDefaultKsWindow;
};
// /api/evaluation?min_packets=N&ks_window=W.
absl::StatusOr<EvaluationQuery> ParseEvaluationQuery(const QueryParams& params,
                                                     uint64_t default_min_packets);

// The flows matching `filter`, copied out of the store (so they can be
// rendered without holding the store's lock): the most recently updated
// first, at most filter.limit of them. `matched` gets how many matched before
// the limit.
std::vector<StoredFlow> SelectFlows(const FlowStore& store, const FlowFilter& filter,
                                    size_t* matched);

// One flow with exactly the fields (names and values) of `shroud analyze
// --json` for the same features -- flow, packets, bytes, duration_s,
// cov{W: CoV or null}, pattern, pattern_counter, pattern_windows, maxent
// (P(migration) or null), migration -- plus class (the dataplane's class),
// state ("live" or "ended") and worker. Analyze's "capture" has no live
// counterpart.
nlohmann::json FlowJson(const StoredFlow& flow);

// {"flows": [FlowJson...], "matched": M, "returned": N, "limit": L, "min_packets": P,
//  "migration_only": bool}
nlohmann::json FlowsJson(const std::vector<StoredFlow>& flows, size_t matched,
                         const FlowFilter& filter);

// The indistinguishability evaluation over the given flows (those with at
// least query.min_packets packets are used):
// {"min_packets", "flows", "skipped_other_config", "windows": [W...],
//  "groups": {"class": {"migration": G, "default": G, ...},
//             "verdict": {"flagged": G, "not_flagged": G}},
//  "comparisons": {"migration_vs_default": C, "flagged_vs_not_flagged": C}}
// where G = {"n": flows, "cov": {"W": {"n", "mean", "median", "stddev"}}} (over
// the flows whose CoV at W is defined; population stddev; null when n = 0)
// and C is `shroud eval --json`'s table3 (n_a, n_b, chi2, df, chi2_p,
// categories_us, ks_window, ks_d, ks_p) or {"n_a", "n_b", "error"} when it
// cannot be computed, e.g. "needs flows in both groups". Flows are evaluated
// under one feature configuration: that of the first flow (the most recently
// updated); flows of runs with another configuration are counted in
// skipped_other_config.
nlohmann::json EvaluationJson(const std::vector<StoredFlow>& flows, const EvaluationQuery& query);

// --- /metrics ---

struct RingMetrics {
  uint64_t published = 0, consumed = 0, dropped = 0;
};

struct ControlMetrics {
  size_t live_flows = 0;
  size_t ended_flows = 0;
  size_t flagged_flows = 0;
  FlowStoreCounters store;
  bool attached = false;      // a mirror file is mapped
  bool dataplane_up = false;  // attached, running and heartbeating
  uint64_t attaches = 0;      // mirror files attached since start
  uint64_t run_id = 0;        // of the attached mirror (0: none)
  std::vector<RingMetrics> rings;  // of the attached mirror
  double uptime_seconds = 0;
  // The dataplane's {"cmd":"status"} answer when its control socket answered.
  std::optional<nlohmann::json> gateway_status;
};

// Prometheus text exposition format (version 0.0.4): # HELP and # TYPE before
// every family, one sample per line.
std::string MetricsText(const ControlMetrics& m);

// The JSON body of an error response: {"error": message, "status": code}.
std::string ErrorBody(int status, absl::string_view message);

}  // namespace shroud::control

#endif  // SHROUD_CONTROL_DAEMON_API_H_
