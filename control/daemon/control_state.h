// The state shroud-control shares between its mirror-reading loop (the only
// writer) and the HTTP threads (readers): the FlowStore and what the loop
// knows about the mirror, behind one absl::Mutex. HTTP requests copy what
// they need out under the lock and render outside it, so a large response
// never holds up the loop (and with it the dataplane's rings).
#ifndef SHROUD_CONTROL_DAEMON_CONTROL_STATE_H_
#define SHROUD_CONTROL_DAEMON_CONTROL_STATE_H_

#include <functional>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "control/daemon/api.h"
#include "control/daemon/dashboard_api.h"
#include "control/daemon/flow_store.h"
#include "control/daemon/http_server.h"

namespace shroud::control {

// Asks the dataplane for its status ({"cmd":"status"} over its control
// socket). Unavailable when nothing answers; FailedPrecondition when it
// answers with an error.
using GatewayStatusFn = std::function<absl::StatusOr<nlohmann::json>()>;

// A copy of the RTT monitor's current state (RttMonitor::Snapshot).
using RttSnapshotFn = std::function<rttmon::RttSnapshot()>;

// The migration rate trace keeps this much history (the dashboard's window).
inline constexpr absl::Duration kRateHistory = absl::Seconds(60);

// What the mirror loop knows about the mirror it follows.
struct MirrorStatus {
  bool attached = false;
  bool dataplane_up = false;
  uint64_t run_id = 0;
  std::vector<RingMetrics> rings;
};

class ControlState final : public ApiSource {
 public:
  // `default_min_packets` applies to /api/flows and /api/evaluation when the
  // query does not say. `gateway` may be empty (no control socket known).
  ControlState(FlowStore store, uint64_t default_min_packets, GatewayStatusFn gateway,
               absl::Time start);

  // --- the mirror loop ---
  absl::StatusOr<std::shared_ptr<const RunContext>> BeginRun(
      uint64_t run_id, const FeatureConfig& config, uint64_t now_ns,
      std::vector<VerdictTransition>* transitions);
  void EndRun(uint64_t run_id, uint64_t now_ns);
  // Applies records in order; appends the verdict transitions they cause.
  void Apply(const std::vector<MirrorRecord>& records, uint64_t now_ns,
             std::vector<VerdictTransition>* transitions);
  void SetMirrorStatus(MirrorStatus status);
  void CountAttach();

  struct Summary {
    uint64_t records = 0;
    size_t live = 0, ended = 0, flagged = 0;
    uint64_t dropped_flows = 0;
    uint64_t ring_dropped = 0;  // over the rings of the attached mirror
  };
  Summary GetSummary() const;

  // All flows with >= min_packets packets as /api/flows renders them (for
  // --flows_json at exit).
  nlohmann::json AllFlowsJson(uint64_t min_packets) const;

  // --- the dashboard (issue 6) ---
  // The RTT monitor /api/rtt shows (none: {"enabled": false}). Set once,
  // before serving; `snapshot` must stay callable while the state lives.
  void SetRttSource(RttSnapshotFn snapshot);
  // The rate trace's sampling interval (before any Observe): sizes the ring
  // to kRateHistory. Default 200 ms.
  void SetRateInterval(absl::Duration interval);
  // One sample of the dataplane's status for /api/rate (the rate sampler's
  // thread calls this every interval).
  void ObserveGatewayStatus(absl::Time now, const absl::StatusOr<nlohmann::json>& answer);

  // --- ApiSource (HTTP threads) ---
  absl::StatusOr<nlohmann::json> Flows(const QueryParams& params) override;
  absl::StatusOr<nlohmann::json> Evaluation(const QueryParams& params) override;
  absl::StatusOr<nlohmann::json> Gateway() override;
  std::string Metrics() override;
  absl::StatusOr<nlohmann::json> Rtt(const QueryParams& params) override;
  absl::StatusOr<nlohmann::json> Rate(const QueryParams& params) override;

 private:
  const uint64_t default_min_packets_;
  const GatewayStatusFn gateway_;
  const absl::Time start_;
  mutable absl::Mutex mu_;
  FlowStore store_ ABSL_GUARDED_BY(mu_);
  MirrorStatus mirror_ ABSL_GUARDED_BY(mu_);
  uint64_t attaches_ ABSL_GUARDED_BY(mu_) = 0;

  // The dashboard's sources: separate lock, so that neither the rate sampler
  // nor a poll of /api/rtt ever waits on the mirror loop.
  mutable absl::Mutex dash_mu_;
  RttSnapshotFn rtt_ ABSL_GUARDED_BY(dash_mu_);
  RateTrace rate_ ABSL_GUARDED_BY(dash_mu_);
};

}  // namespace shroud::control

#endif  // SHROUD_CONTROL_DAEMON_CONTROL_STATE_H_
