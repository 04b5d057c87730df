#include "control/daemon/control_state.h"

#include <cmath>
#include <limits>
#include <utility>

namespace shroud::control {
namespace {

constexpr absl::Duration kDefaultRateInterval = absl::Milliseconds(200);

size_t RateCapacity(absl::Duration interval) {
  return static_cast<size_t>(std::ceil(kRateHistory / interval)) + 1;
}

}  // namespace

ControlState::ControlState(FlowStore store, uint64_t default_min_packets,
                           GatewayStatusFn gateway, absl::Time start)
    : default_min_packets_(default_min_packets),
      gateway_(std::move(gateway)),
      start_(start),
      store_(std::move(store)),
      rate_(RateCapacity(kDefaultRateInterval), absl::ToDoubleMilliseconds(kDefaultRateInterval)) {}

absl::StatusOr<std::shared_ptr<const RunContext>> ControlState::BeginRun(
    uint64_t run_id, const FeatureConfig& config, uint64_t now_ns,
    std::vector<VerdictTransition>* transitions) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = store_.BeginRun(run_id, config, now_ns, transitions); !s.ok()) return s;
  return store_.current_run();
}

void ControlState::EndRun(uint64_t run_id, uint64_t now_ns) {
  absl::MutexLock lock(&mu_);
  store_.EndRun(run_id, now_ns);
}

void ControlState::Apply(const std::vector<MirrorRecord>& records, uint64_t now_ns,
                         std::vector<VerdictTransition>* transitions) {
  absl::MutexLock lock(&mu_);
  for (const MirrorRecord& r : records) {
    if (std::optional<VerdictTransition> t = store_.Apply(r, now_ns); t.has_value()) {
      transitions->push_back(*t);
    }
  }
}

void ControlState::SetMirrorStatus(MirrorStatus status) {
  absl::MutexLock lock(&mu_);
  mirror_ = std::move(status);
}

void ControlState::CountAttach() {
  absl::MutexLock lock(&mu_);
  ++attaches_;
}

ControlState::Summary ControlState::GetSummary() const {
  absl::ReaderMutexLock lock(&mu_);
  Summary s;
  s.records = store_.counters().records;
  s.live = store_.live_flows();
  s.ended = store_.ended_flows();
  s.flagged = store_.flagged_flows();
  s.dropped_flows = store_.counters().dropped_flows;
  for (const RingMetrics& r : mirror_.rings) s.ring_dropped += r.dropped;
  return s;
}

nlohmann::json ControlState::AllFlowsJson(uint64_t min_packets) const {
  FlowFilter filter;
  filter.min_packets = min_packets;
  filter.limit = std::numeric_limits<size_t>::max();
  size_t matched = 0;
  std::vector<StoredFlow> flows;
  {
    absl::ReaderMutexLock lock(&mu_);
    flows = SelectFlows(store_, filter, &matched);
  }
  return FlowsJson(flows, matched, filter);
}

absl::StatusOr<nlohmann::json> ControlState::Flows(const QueryParams& params) {
  absl::StatusOr<FlowFilter> filter = ParseFlowQuery(params, default_min_packets_);
  if (!filter.ok()) return filter.status();
  size_t matched = 0;
  std::vector<StoredFlow> flows;
  {
    absl::ReaderMutexLock lock(&mu_);
    flows = SelectFlows(store_, *filter, &matched);
  }
  return FlowsJson(flows, matched, *filter);
}

absl::StatusOr<nlohmann::json> ControlState::Evaluation(const QueryParams& params) {
  absl::StatusOr<EvaluationQuery> query = ParseEvaluationQuery(params, default_min_packets_);
  if (!query.ok()) return query.status();
  FlowFilter filter;
  filter.min_packets = query->min_packets;
  filter.limit = kMaxEvaluationFlows;
  size_t matched = 0;
  std::vector<StoredFlow> flows;
  {
    absl::ReaderMutexLock lock(&mu_);
    flows = SelectFlows(store_, filter, &matched);
  }
  nlohmann::json doc = EvaluationJson(flows, *query);
  doc["flows_matched"] = matched;  // > flows when kMaxEvaluationFlows cut the set
  return doc;
}

absl::StatusOr<nlohmann::json> ControlState::Gateway() {
  if (!gateway_) {
    return absl::UnavailableError("no dataplane control socket configured");
  }
  return gateway_();
}

std::string ControlState::Metrics() {
  ControlMetrics m;
  // The dataplane is asked outside the lock: its socket may be slow.
  if (gateway_) {
    absl::StatusOr<nlohmann::json> status = gateway_();
    if (status.ok()) m.gateway_status = *std::move(status);
  }
  m.uptime_seconds = absl::ToDoubleSeconds(absl::Now() - start_);
  {
    absl::ReaderMutexLock lock(&mu_);
    m.live_flows = store_.live_flows();
    m.ended_flows = store_.ended_flows();
    m.flagged_flows = store_.flagged_flows();
    m.store = store_.counters();
    m.attached = mirror_.attached;
    m.dataplane_up = mirror_.dataplane_up;
    m.run_id = mirror_.run_id;
    m.rings = mirror_.rings;
    m.attaches = attaches_;
  }
  return MetricsText(m);
}

void ControlState::SetRttSource(RttSnapshotFn snapshot) {
  absl::MutexLock lock(&dash_mu_);
  rtt_ = std::move(snapshot);
}

void ControlState::SetRateInterval(absl::Duration interval) {
  absl::MutexLock lock(&dash_mu_);
  rate_ = RateTrace(RateCapacity(interval), absl::ToDoubleMilliseconds(interval));
}

void ControlState::ObserveGatewayStatus(absl::Time now,
                                        const absl::StatusOr<nlohmann::json>& answer) {
  absl::MutexLock lock(&dash_mu_);
  rate_.Observe(absl::ToDoubleSeconds(now - start_), answer);
}

absl::StatusOr<nlohmann::json> ControlState::Rtt(const QueryParams& params) {
  absl::StatusOr<RttQuery> query = ParseRttQuery(params);
  if (!query.ok()) return query.status();
  RttSnapshotFn snapshot;
  {
    absl::ReaderMutexLock lock(&dash_mu_);
    snapshot = rtt_;
  }
  if (!snapshot) return RttDisabledJson();
  // The monitor copies under its own lock; rendering happens out of it.
  return RttJson(snapshot(), *query);
}

absl::StatusOr<nlohmann::json> ControlState::Rate(const QueryParams& params) {
  absl::StatusOr<RateTrace::Query> query = ParseRateQuery(params);
  if (!query.ok()) return query.status();
  const double now_s = absl::ToDoubleSeconds(absl::Now() - start_);
  absl::ReaderMutexLock lock(&dash_mu_);
  return rate_.ToJson(*query, now_s);
}

}  // namespace shroud::control
