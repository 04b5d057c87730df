#include "control/daemon/flow_store.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace shroud {
namespace {

bool SameConfig(const FeatureConfig& a, const FeatureConfig& b) {
  if (a.burst_gap_ns != b.burst_gap_ns || a.pattern_window != b.pattern_window ||
      a.pattern_delta != b.pattern_delta ||
      a.pattern_count_threshold != b.pattern_count_threshold ||
      a.pattern_min_distances != b.pattern_min_distances ||
      a.byte_window_count != b.byte_window_count) {
    return false;
  }
  for (size_t i = 0; i < a.byte_window_count; ++i) {
    if (a.byte_windows[i] != b.byte_windows[i]) return false;
  }
  return true;
}

}  // namespace

std::string FlowClassName(MirrorFlowClass c) {
  switch (c) {
    case MirrorFlowClass::kUnclassified: return "unclassified";
    case MirrorFlowClass::kDefault: return "default";
    case MirrorFlowClass::kMigration: return "migration";
    case MirrorFlowClass::kChaff: return "chaff";
  }
  return absl::StrCat(static_cast<int>(c));
}

bool IsEndRecord(MirrorRecordType type) {
  return type == MirrorRecordType::kEndIdle || type == MirrorRecordType::kEndStop ||
         type == MirrorRecordType::kEndReplaced;
}

std::string FormatTransition(const VerdictTransition& t) {
  const FlowVerdict& v = t.after;
  std::string maxent = std::isnan(v.maxent.score) ? "-" : absl::StrFormat("%.2f", v.maxent.score);
  return absl::StrFormat("%s flow=%s worker=%d class=%s packets=%d pattern=%s maxent=%s",
                         t.newly_flagged() ? "DETECTION" : "CLEARED", FormatFlowKey(t.id.key),
                         t.id.worker, FlowClassName(t.flow_class), t.packets,
                         v.pattern.flagged ? absl::StrCat("yes(", v.pattern.score, ")") : "no",
                         maxent);
}

FlowStore::FlowStore(MaxEntModel model, FlowStoreOptions options)
    : model_(std::move(model)), options_(options) {}

FlowVerdict FlowStore::Evaluate(const StoredFlow& flow) const {
  const FlowView view = flow.view();
  if (flow.run->detectors.has_value()) return flow.run->detectors->Evaluate(view);
  // The model does not fit this run's windows: what `shroud analyze` cannot
  // compute either is left undecided rather than guessed.
  FlowVerdict v;
  v.pattern = PatternAttack().Evaluate(view);
  v.maxent.score = std::numeric_limits<double>::quiet_NaN();
  v.migration = v.pattern.flagged;
  return v;
}

FlowVerdict FlowStore::Detected(const StoredFlow& flow) const {
  FlowVerdict v = flow.verdict;
  if (flow.record.features.packets < options_.detection_min_packets) {
    v.pattern.flagged = false;
    v.maxent.flagged = false;
    v.migration = false;
  }
  return v;
}

void FlowStore::CountTransition(const FlowVerdict& before, const FlowVerdict& after) {
  if (!before.pattern.flagged && after.pattern.flagged) ++counters_.detections_pattern;
  if (!before.maxent.flagged && after.maxent.flagged) ++counters_.detections_maxent;
  if (!before.migration && after.migration) {
    ++counters_.detections_any;
    ++flagged_count_;
  }
  if (before.migration && !after.migration) {
    ++counters_.cleared_any;
    --flagged_count_;
  }
}

absl::Status FlowStore::BeginRun(uint64_t run_id, const FeatureConfig& config, uint64_t now_ns,
                                 std::vector<VerdictTransition>* transitions) {
  if (absl::Status s = config.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("run %016x: invalid feature configuration: %s", run_id, s.message()));
  }
  if (current_ != nullptr && current_->run_id == run_id && SameConfig(current_->config, config)) {
    return absl::OkStatus();  // re-attached to the same run: nothing changes
  }
  auto run = std::make_shared<RunContext>();
  run->run_id = run_id;
  run->config = config;
  absl::StatusOr<PaperDetectors> detectors = PaperDetectors::Create(model_, config);
  if (detectors.ok()) {
    run->detectors = *std::move(detectors);
  } else {
    run->detector_error = std::string(detectors.status().message());
  }
  const bool same_run = current_ != nullptr && current_->run_id == run_id;
  current_ = std::move(run);

  if (same_run) {
    // The same run under a new configuration: its flows are re-evaluated
    // with the detectors built for it.
    for (auto& [id, flow] : flows_) {
      if (id.run_id != run_id) continue;
      flow.run = current_;
      const FlowVerdict before = Detected(flow);
      flow.verdict = Evaluate(flow);
      const FlowVerdict after = Detected(flow);
      CountTransition(before, after);
      if (transitions != nullptr && before.migration != after.migration) {
        transitions->push_back(VerdictTransition{id, flow.record.flow_class,
                                                 flow.record.features.packets, before, after});
      }
    }
    return absl::OkStatus();
  }
  // A new dataplane run: the old run's flows will get no more records. They
  // end in the order they were last updated, so the retention keeps the most
  // recently active.
  std::vector<std::pair<uint64_t, FlowStoreKey>> old_live;
  for (const auto& [id, flow] : flows_) {
    if (!flow.ended && id.run_id != run_id) old_live.emplace_back(flow.last_update_ns, id);
  }
  std::sort(old_live.begin(), old_live.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [unused, id] : old_live) MarkEnded(id, flows_.find(id)->second, now_ns);
  EnforceEndedLimit();
  return absl::OkStatus();
}

void FlowStore::EndRun(uint64_t run_id, uint64_t now_ns) {
  std::vector<std::pair<uint64_t, FlowStoreKey>> live;
  for (const auto& [id, flow] : flows_) {
    if (!flow.ended && id.run_id == run_id) live.emplace_back(flow.last_update_ns, id);
  }
  std::sort(live.begin(), live.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [unused, id] : live) MarkEnded(id, flows_.find(id)->second, now_ns);
  EnforceEndedLimit();
}

void FlowStore::MarkEnded(const FlowStoreKey& id, StoredFlow& flow, uint64_t now_ns) {
  if (flow.ended) return;
  flow.ended = true;
  flow.ended_ns = now_ns;
  flow.end_sequence = ++end_sequence_;
  --live_count_;
  ended_order_.emplace_back(id, flow.end_sequence);
}

void FlowStore::EnforceEndedLimit() {
  while (ended_flows() > options_.max_ended_flows && !ended_order_.empty()) {
    auto [id, sequence] = ended_order_.front();
    ended_order_.pop_front();
    auto it = flows_.find(id);
    if (it == flows_.end() || !it->second.ended || it->second.end_sequence != sequence) continue;
    if (Detected(it->second).migration) --flagged_count_;
    flows_.erase(it);
    ++counters_.evicted_ended;
  }
  // Entries of flows that came back to life are skipped lazily above; drop
  // them in one pass when they would otherwise pile up.
  if (ended_order_.size() > 2 * ended_flows() + 1024) {
    std::deque<std::pair<FlowStoreKey, uint64_t>> kept;
    for (const auto& entry : ended_order_) {
      auto it = flows_.find(entry.first);
      if (it != flows_.end() && it->second.ended && it->second.end_sequence == entry.second) {
        kept.push_back(entry);
      }
    }
    ended_order_ = std::move(kept);
  }
}

std::optional<VerdictTransition> FlowStore::Apply(const MirrorRecord& record, uint64_t now_ns) {
  ++counters_.records;
  if (current_ == nullptr) {
    ++counters_.unknown_run;
    return std::nullopt;
  }
  const FlowStoreKey id{current_->run_id, record.worker, record.key};
  const bool ends = IsEndRecord(record.type);
  auto it = flows_.find(id);
  FlowVerdict before;
  if (it != flows_.end() && it->second.ended) {
    // The dataplane ended this flow before; a record after that is a new flow
    // of the same 5-tuple (its features start from zero again).
    if (Detected(it->second).migration) --flagged_count_;
    flows_.erase(it);
    it = flows_.end();
  }
  if (it == flows_.end()) {
    // An end record of a flow never seen live (the control process attached
    // late) takes no live slot, so only live flows count against the limit.
    if (!ends && live_count_ >= options_.max_live_flows) {
      ++counters_.dropped_flows;
      return std::nullopt;
    }
    StoredFlow flow;
    flow.run = current_;
    flow.first_update_ns = now_ns;
    it = flows_.emplace(id, std::move(flow)).first;
    ++live_count_;
  } else {
    before = Detected(it->second);
  }
  StoredFlow& flow = it->second;
  flow.record = record;
  flow.last_update_ns = now_ns;
  flow.verdict = Evaluate(flow);
  // Copied before the retention runs: with max_ended_flows = 0 an ending flow
  // is evicted at once.
  const FlowVerdict after = Detected(flow);
  CountTransition(before, after);
  if (ends) {
    MarkEnded(id, flow, now_ns);
    EnforceEndedLimit();
  }
  if (before.migration == after.migration) return std::nullopt;
  return VerdictTransition{id, record.flow_class, record.features.packets, before, after};
}

const StoredFlow* FlowStore::Find(const FlowStoreKey& id) const {
  auto it = flows_.find(id);
  return it == flows_.end() ? nullptr : &it->second;
}

}  // namespace shroud
