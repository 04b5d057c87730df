#include "control/daemon/dashboard_api.h"

#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace shroud::control {
namespace {


absl::StatusOr<std::optional<uint64_t>> OptionalUint(
    const std::map<std::string, std::string>& values, const std::string& name) {
  auto it = values.find(name);
  if (it == values.end()) return std::nullopt;
  const std::string& v = it->second;
  uint64_t n = 0;
  const bool digits = !v.empty() && std::all_of(v.begin(), v.end(), [](char c) {
    return c >= '0' && c <= '9';
  });
  if (!digits || !absl::SimpleAtoi(v, &n)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "query parameter '", name, "': must be a whole number from 0 to ",
        std::numeric_limits<uint64_t>::max(), ", got '", v, "'"));
  }
  return n;
}

// Polled several times a second: shortest decimal of a rounded value keeps
// the answers small ("0.052" rather than "0.052341000000000004"). Resolution
// far below what the graph or the kernel's timestamps resolve.
double Round(double v, double scale) { return std::round(v * scale) / scale; }
nlohmann::json Ms(double v) { return Round(v, 1e3); }        // 1 us
nlohmann::json Seconds(double v) { return Round(v, 1e4); }   // 0.1 ms

nlohmann::json QuantilesJson(const rttmon::RttQuantiles& q) {
  if (q.count == 0) return nullptr;
  return {{"min", Ms(q.min_ms)}, {"median", Ms(q.median_ms)}, {"p95", Ms(q.p95_ms)},
          {"p99", Ms(q.p99_ms)}, {"max", Ms(q.max_ms)},       {"count", q.count}};
}

nlohmann::json SampleJson(const rttmon::RttSample& s) {
  nlohmann::json j{{"seq", s.seq}, {"t_s", Seconds(s.sent_s)}};
  switch (s.kind) {
    case rttmon::RttSample::Kind::kReply:
      j["rtt_ms"] = Ms(s.rtt_ms);
      break;
    case rttmon::RttSample::Kind::kLost:
      j["lost"] = true;
      break;
    case rttmon::RttSample::Kind::kLate:
      j["rtt_ms"] = Ms(s.rtt_ms);
      j["late"] = true;
      break;
  }
  return j;
}

}  // namespace

absl::StatusOr<RttQuery> ParseRttQuery(const QueryParams& params) {
  absl::StatusOr<std::map<std::string, std::string>> values =
      SingleValues(params, {"since", "events_after"});
  if (!values.ok()) return values.status();
  RttQuery q;
  absl::StatusOr<std::optional<uint64_t>> since = OptionalUint(*values, "since");
  if (!since.ok()) return since.status();
  q.since = *since;
  absl::StatusOr<std::optional<uint64_t>> after = OptionalUint(*values, "events_after");
  if (!after.ok()) return after.status();
  q.events_after = *after;
  return q;
}

nlohmann::json RttJson(const rttmon::RttSnapshot& s, const RttQuery& query) {
  nlohmann::json j;
  j["enabled"] = true;
  AddProbeIdentityJson(s, j);
  j["now_s"] = Seconds(s.elapsed_s);
  j["running"] = s.running;
  if (!s.error.empty()) j["error"] = s.error;

  const rttmon::RttDetectorStatus& d = s.detector;
  j["state"] = rttmon::RttStateName(d.state);
  j["baseline_ready"] = d.baseline_ready;
  j["baseline_ms"] = d.baseline_ready ? Ms(d.baseline_ms) : nlohmann::json(nullptr);
  j["spread_ms"] = d.baseline_ready ? Ms(d.spread_ms) : nlohmann::json(nullptr);
  j["peak_threshold_ms"] = d.baseline_ready ? Ms(d.peak_threshold_ms) : nlohmann::json(nullptr);
  j["outage_threshold_ms"] = Ms(d.outage_threshold_ms);
  j["silence_ms"] = Ms(d.silence_ms);

  nlohmann::json last_rtt = nullptr;
  for (auto it = s.samples.rbegin(); it != s.samples.rend(); ++it) {
    if (it->kind == rttmon::RttSample::Kind::kReply) {
      last_rtt = Ms(it->rtt_ms);
      break;
    }
  }
  j["last_rtt_ms"] = last_rtt;

  // The samples are sorted by seq and contiguous except for the probes still
  // in flight (resolved later). Everything below the oldest kept sample is
  // history that was trimmed, not a probe in flight, so the cursor may jump
  // over it.
  nlohmann::json samples = nlohmann::json::array();
  std::optional<uint64_t> next = query.since;
  if (!s.samples.empty()) {
    const uint64_t front = s.samples.front().seq;
    if (front > 0 && (!next.has_value() || *next < front - 1)) next = front - 1;
    bool contiguous = true;
    for (const rttmon::RttSample& x : s.samples) {
      if (query.since.has_value() && x.seq <= *query.since) continue;
      samples.push_back(SampleJson(x));
      // x.seq > next here: next is since or front - 1, and x.seq exceeds both.
      if (contiguous && x.seq == (next.has_value() ? *next + 1 : 0)) {
        next = x.seq;
      } else {
        contiguous = false;  // a probe before x is still in flight
      }
    }
  }
  j["samples"] = std::move(samples);
  j["next"] = next.has_value() ? nlohmann::json(*next) : nlohmann::json(nullptr);

  j["open_event"] = d.open_event.has_value()
                        ? rttmon::EventToJson(*d.open_event, s.origin_mono_ns)
                        : nlohmann::json(nullptr);
  nlohmann::json events = nlohmann::json::array();
  size_t first = 0;
  if (s.events.size() > kMaxRttEvents) first = s.events.size() - kMaxRttEvents;
  for (size_t i = first; i < s.events.size(); ++i) {
    const rttmon::RttEvent& e = s.events[i];
    if (query.events_after.has_value() && e.id <= *query.events_after) continue;
    events.push_back(rttmon::EventToJson(e, s.origin_mono_ns));
  }
  j["events"] = std::move(events);
  j["events_total"] = s.events_total;
  j["red_events"] = s.red_events;
  j["yellow_events"] = s.yellow_events;
  j["downtime_ms_total"] = Ms(s.downtime_ms_total);

  const rttmon::RttCounters& c = s.counters;
  j["counters"] = {{"sent", c.sent},
                   {"received", c.received},
                   {"lost", c.lost},
                   {"late", c.late},
                   {"duplicates", c.duplicates},
                   {"send_errors", c.send_errors},
                   {"icmp_errors", c.async_errors},
                   {"skipped_slots", c.skipped_slots},
                   {"outstanding", c.outstanding}};
  j["rtt_ms"] = QuantilesJson(s.rtt);
  return j;
}

nlohmann::json RttDisabledJson() {
  return {{"enabled", false},
          {"hint", "the RTT monitor is off: start shroud-control with --rttmon=TARGET"}};
}

// --- /api/rate ---

absl::StatusOr<double> MigrationRateFromStatus(const nlohmann::json& answer) {
  if (!answer.is_object() || !answer.contains("status") || !answer["status"].is_object()) {
    return absl::DataLossError("the dataplane's status answer has no \"status\" object");
  }
  const nlohmann::json& status = answer["status"];
  const std::string mode = status.value("mode", std::string());
  if (mode != "gateway") {
    return absl::NotFoundError(absl::StrCat(
        "the dataplane is a ", mode.empty() ? std::string("dataplane of unknown mode") : mode,
        ", not a gateway: it shapes no migration"));
  }
  const nlohmann::json* rate = nullptr;
  if (status.contains("counters") && status["counters"].is_object() &&
      status["counters"].contains("rate_variation") &&
      status["counters"]["rate_variation"].is_object() &&
      status["counters"]["rate_variation"].contains("rate_bytes_per_sec")) {
    rate = &status["counters"]["rate_variation"]["rate_bytes_per_sec"];
  }
  if (rate == nullptr || !rate->is_number()) {
    return absl::DataLossError(
        "the gateway's status has no counters.rate_variation.rate_bytes_per_sec");
  }
  return rate->get<double>();
}

RateTrace::RateTrace(size_t capacity, double interval_ms)
    : capacity_(std::max<size_t>(capacity, 1)), interval_ms_(interval_ms) {}

void RateTrace::Observe(double t_s, const absl::StatusOr<nlohmann::json>& status_answer) {
  if (!status_answer.ok()) {
    attached_ = false;
    available_ = false;
    mode_.reset();
    error_ = std::string(status_answer.status().message());
    return;
  }
  attached_ = true;
  const nlohmann::json& answer = *status_answer;
  if (answer.contains("status") && answer["status"].is_object() &&
      answer["status"].contains("mode") && answer["status"]["mode"].is_string()) {
    mode_ = answer["status"]["mode"].get<std::string>();
  } else {
    mode_.reset();
  }
  absl::StatusOr<double> rate = MigrationRateFromStatus(answer);
  if (!rate.ok()) {
    available_ = false;
    error_ = std::string(rate.status().message());
    return;
  }
  available_ = true;
  error_.clear();
  // The bounds are informative only; a status without them keeps the last.
  const nlohmann::json& rv = answer["status"]["counters"]["rate_variation"];
  if (rv.contains("min_applied_bytes_per_sec") && rv["min_applied_bytes_per_sec"].is_number()) {
    min_applied_ = rv["min_applied_bytes_per_sec"].get<double>();
  }
  if (rv.contains("max_applied_bytes_per_sec") && rv["max_applied_bytes_per_sec"].is_number()) {
    max_applied_ = rv["max_applied_bytes_per_sec"].get<double>();
  }
  points_.push_back({next_seq_++, t_s, *rate});
  while (points_.size() > capacity_) points_.pop_front();
}

nlohmann::json RateTrace::ToJson(const Query& query, double now_s) const {
  nlohmann::json j;
  j["attached"] = attached_;
  j["available"] = available_;
  j["mode"] = mode_.has_value() ? nlohmann::json(*mode_) : nlohmann::json(nullptr);
  if (!available_) j["error"] = error_;
  j["now_s"] = Seconds(now_s);
  j["interval_ms"] = interval_ms_;
  nlohmann::json points = nlohmann::json::array();
  for (const RatePoint& p : points_) {
    if (query.since.has_value() && p.seq <= *query.since) continue;
    points.push_back({{"seq", p.seq}, {"t_s", Seconds(p.t_s)}, {"rate_bytes_per_sec", p.rate_bytes_per_sec}});
  }
  j["points"] = std::move(points);
  // Points only ever arrive in order, so the cursor is simply the newest.
  if (!points_.empty()) {
    j["next"] = points_.back().seq;
  } else {
    j["next"] = query.since.has_value() ? nlohmann::json(*query.since) : nlohmann::json(nullptr);
  }
  j["min_applied_bytes_per_sec"] =
      min_applied_.has_value() ? nlohmann::json(*min_applied_) : nlohmann::json(nullptr);
  j["max_applied_bytes_per_sec"] =
      max_applied_.has_value() ? nlohmann::json(*max_applied_) : nlohmann::json(nullptr);
  return j;
}

absl::StatusOr<RateTrace::Query> ParseRateQuery(const QueryParams& params) {
  absl::StatusOr<std::map<std::string, std::string>> values = SingleValues(params, {"since"});
  if (!values.ok()) return values.status();
  absl::StatusOr<std::optional<uint64_t>> since = OptionalUint(*values, "since");
  if (!since.ok()) return since.status();
  return RateTrace::Query{*since};
}

}  // namespace shroud::control
