// The control process's live view of the dataplane's flows: the functional
// core of shroud-control. It applies the MirrorRecords the dataplane mirrors,
// keeps the latest record of every flow with the adversary's verdict on it
// (the same PaperDetectors and the same FlowView as `shroud analyze`), and
// reports verdict transitions. No I/O, no clock, no locking: time is an
// argument and the caller serialises access (the daemon guards it with a
// mutex, see control_state.h).
//
// Identity. A flow is (run_id, worker, FlowKey): the dataplane numbers its
// stream per worker, so the same 5-tuple on two workers is two observation
// points, and a dataplane restart (new run_id) starts every flow afresh.
//
// Runs. Each dataplane run has its own feature configuration (it is in the
// mirror header) and so its own detectors: features only mean something under
// the configuration they were computed with, so a flow is always evaluated
// with its own run's configuration. BeginRun() makes a run current and marks
// the live flows of every other run ended; their verdicts stay as computed.
//
// Bounds. Live flows are capped at max_live_flows: a record that would create
// a live flow beyond it is counted in dropped_flows() and forgotten. Ended
// flows (end records, EndRun, a new run) are kept for inspection up to
// max_ended_flows; beyond that the flow that ended first is evicted.
#ifndef SHROUD_CONTROL_DAEMON_FLOW_STORE_H_
#define SHROUD_CONTROL_DAEMON_FLOW_STORE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "control/analysis/detectors.h"
#include "control/analysis/maxent_model.h"
#include "shroud/feature_config.h"
#include "shroud/flow_key.h"
#include "shroud/mirror.h"

namespace shroud {

// "unclassified", "default", "migration", "chaff" (or the number).
std::string FlowClassName(MirrorFlowClass c);
// kEndIdle, kEndStop and kEndReplaced end a flow; kUpdate does not.
bool IsEndRecord(MirrorRecordType type);

struct FlowStoreKey {
  uint64_t run_id = 0;
  uint8_t worker = 0;
  FlowKey key;

  friend bool operator==(const FlowStoreKey& a, const FlowStoreKey& b) {
    return a.run_id == b.run_id && a.worker == b.worker && a.key == b.key;
  }
  template <typename H>
  friend H AbslHashValue(H h, const FlowStoreKey& k) {
    return H::combine(std::move(h), k.run_id, k.worker, k.key);
  }
};

// One run's feature configuration and the detectors built for it.
struct RunContext {
  uint64_t run_id = 0;
  FeatureConfig config;
  // Empty when the model cannot be used with this configuration (its windows
  // are not in the run's window set): the pattern attack still runs, the
  // maxent score is NaN (null in JSON) and never flags.
  std::optional<PaperDetectors> detectors;
  std::string detector_error;  // why `detectors` is empty
};

struct StoredFlow {
  MirrorRecord record;        // the latest record of the flow
  FlowVerdict verdict;        // of `record` under its run's configuration
  uint64_t first_update_ns = 0;  // caller's clock when the flow's first record was applied
  uint64_t last_update_ns = 0;   // ... and its latest
  uint64_t ended_ns = 0;      // when it ended; 0 while live
  bool ended = false;
  uint64_t end_sequence = 0;  // FlowStore's bookkeeping of the retention order
  std::shared_ptr<const RunContext> run;

  uint64_t run_id() const { return run->run_id; }
  const FeatureConfig& config() const { return run->config; }
  FlowView view() const {
    return FlowView{record.key, record.features, record.stream_packets, run->config};
  }
};

// A flow whose verdict changed with the record just applied. The verdicts
// are as detected: a flow below FlowStoreOptions::detection_min_packets is
// never flagged in them (its scores are the detectors').
struct VerdictTransition {
  FlowStoreKey id;
  MirrorFlowClass flow_class = MirrorFlowClass::kUnclassified;
  uint64_t packets = 0;
  FlowVerdict before;  // all false for a flow first seen
  FlowVerdict after;
  bool newly_flagged() const { return !before.migration && after.migration; }
  bool cleared() const { return before.migration && !after.migration; }
};

// The "DETECTION flow=... pattern=... maxent=..." / "CLEARED flow=..." log line.
std::string FormatTransition(const VerdictTransition& t);

struct FlowStoreOptions {
  size_t max_live_flows = 4'000'000;
  size_t max_ended_flows = 100'000;
  // Detections (transitions, their counters, flagged_flows()) only count flows
  // with at least this many packets: the paper's attacker discards shorter
  // flows, and `shroud analyze` does not show them (--min_packets). The
  // stored verdicts are not affected.
  uint64_t detection_min_packets = 0;
};

struct FlowStoreCounters {
  uint64_t records = 0;          // records applied (including dropped ones)
  uint64_t dropped_flows = 0;    // records of new flows refused at max_live_flows
  uint64_t evicted_ended = 0;    // ended flows evicted by retention
  uint64_t unknown_run = 0;      // records applied before any BeginRun (refused)
  // Transitions to flagged, per detector, once per flow and transition.
  uint64_t detections_pattern = 0;
  uint64_t detections_maxent = 0;
  uint64_t detections_any = 0;
  uint64_t cleared_any = 0;      // flows un-flagged again
};

class FlowStore {
 public:
  FlowStore(MaxEntModel model, FlowStoreOptions options);

  // Makes `run_id` the current run with `config` (from its mirror header).
  // Live flows of every other run are marked ended. Calling it again for the
  // current run with a different configuration rebuilds the detectors and
  // re-evaluates that run's flows (their transitions go to `transitions`).
  // Errors when the configuration is invalid (the run is not started then).
  // A model that does not fit the configuration is not an error: the run
  // starts with the pattern attack only and RunContext::detector_error says
  // why (the caller logs it).
  absl::Status BeginRun(uint64_t run_id, const FeatureConfig& config, uint64_t now_ns,
                        std::vector<VerdictTransition>* transitions = nullptr);
  // Marks every live flow of `run_id` ended (the dataplane stopped or died).
  void EndRun(uint64_t run_id, uint64_t now_ns);

  // Applies one record of the current run. Returns the verdict transition it
  // caused, if any. Records arriving before any BeginRun are refused
  // (counters().unknown_run).
  std::optional<VerdictTransition> Apply(const MirrorRecord& record, uint64_t now_ns);

  // The current run (null before the first BeginRun).
  const std::shared_ptr<const RunContext>& current_run() const { return current_; }
  size_t live_flows() const { return live_count_; }
  size_t ended_flows() const { return flows_.size() - live_count_; }
  // Flows currently flagged (either detector), live or ended, with at least
  // detection_min_packets packets.
  size_t flagged_flows() const { return flagged_count_; }
  const FlowStoreCounters& counters() const { return counters_; }
  const FlowStoreOptions& options() const { return options_; }

  const StoredFlow* Find(const FlowStoreKey& id) const;
  // Calls fn(id, flow) for every flow, in no particular order.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (const auto& [id, flow] : flows_) fn(id, flow);
  }

 private:
  FlowVerdict Evaluate(const StoredFlow& flow) const;
  // The verdict with the flags cleared when the flow is too short to count.
  FlowVerdict Detected(const StoredFlow& flow) const;
  void MarkEnded(const FlowStoreKey& id, StoredFlow& flow, uint64_t now_ns);
  void EnforceEndedLimit();
  void CountTransition(const FlowVerdict& before, const FlowVerdict& after);

  MaxEntModel model_;
  FlowStoreOptions options_;
  std::shared_ptr<const RunContext> current_;
  absl::flat_hash_map<FlowStoreKey, StoredFlow> flows_;
  size_t live_count_ = 0;
  size_t flagged_count_ = 0;
  // Ended flows in the order they ended, with their end_sequence so an entry
  // for a flow that since came back to life (or ended again, or was replaced
  // by a new flow of the same key) is recognised as stale and skipped.
  std::deque<std::pair<FlowStoreKey, uint64_t>> ended_order_;
  uint64_t end_sequence_ = 0;
  FlowStoreCounters counters_;
};

}  // namespace shroud

#endif  // SHROUD_CONTROL_DAEMON_FLOW_STORE_H_
