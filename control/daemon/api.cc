#include "control/daemon/api.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include "absl/strings/string_view.h"
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "control/analysis/evaluation.h"

namespace shroud::control {
namespace {

// As `shroud analyze --json` writes numbers (cli_common's NumberOrNull): NaN
// (a CoV or score with too little data) becomes null.
nlohmann::json NumberOrNull(double v) {
  return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v);
}

absl::Status BadParameter(absl::string_view name, absl::string_view value, absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("query parameter '", name, "': ", want, ", got '", value, "'"));
}


absl::StatusOr<uint64_t> ParseUint(absl::string_view name, const std::string& value, uint64_t min,
                                   uint64_t max) {
  uint64_t v = 0;
  // SimpleAtoi accepts a leading '+' and surrounding spaces; a query value is
  // plain digits or wrong.
  const bool digits = !value.empty() && std::all_of(value.begin(), value.end(), [](char c) {
    return c >= '0' && c <= '9';
  });
  if (!digits || !absl::SimpleAtoi(value, &v) || v < min || v > max) {
    return BadParameter(name, value,
                        absl::StrCat("must be a whole number from ", min, " to ", max));
  }
  return v;
}

// Population statistics of the defined values (NaN is skipped).
nlohmann::json Summary(std::vector<double> values) {
  std::erase_if(values, [](double v) { return std::isnan(v); });
  nlohmann::json j;
  j["n"] = values.size();
  if (values.empty()) {
    j["mean"] = nullptr;
    j["median"] = nullptr;
    j["stddev"] = nullptr;
    return j;
  }
  std::sort(values.begin(), values.end());
  double sum = 0;
  for (double v : values) sum += v;
  const double mean = sum / static_cast<double>(values.size());
  double sq = 0;
  for (double v : values) sq += (v - mean) * (v - mean);
  const size_t n = values.size();
  const double median = n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
  j["mean"] = NumberOrNull(mean);
  j["median"] = NumberOrNull(median);
  j["stddev"] = NumberOrNull(std::sqrt(sq / static_cast<double>(n)));
  return j;
}

nlohmann::json GroupJson(const std::vector<const LabelledFlow*>& group,
                         const FeatureConfig& config) {
  nlohmann::json cov = nlohmann::json::object();
  for (size_t w = 0; w < config.byte_window_count; ++w) {
    std::vector<double> values;
    values.reserve(group.size());
    for (const LabelledFlow* f : group) {
      values.push_back(ByteWindowCov(f->features, config, w, f->stream_packets));
    }
    cov[std::to_string(config.byte_windows[w])] = Summary(std::move(values));
  }
  return {{"n", group.size()}, {"cov", cov}};
}

nlohmann::json ComparisonJson(absl::string_view name_a, const std::vector<const LabelledFlow*>& a,
                              absl::string_view name_b, const std::vector<const LabelledFlow*>& b,
                              const FeatureConfig& config, const EvaluationQuery& query) {
  nlohmann::json j{{"a", std::string(name_a)}, {"b", std::string(name_b)}, {"n_a", a.size()}, {"n_b", b.size()}};
  if (a.empty() || b.empty()) {
    j["error"] = absl::StrFormat(
        "needs flows in both groups: %s has %d and %s has %d flows of >= %d packets", name_a,
        a.size(), name_b, b.size(), query.min_packets);
    return j;
  }
  absl::StatusOr<GroupComparison> c = CompareGroups(a, b, config, query.ks_window);
  if (!c.ok()) {
    j["error"] = std::string(c.status().message());
    return j;
  }
  j["chi2"] = NumberOrNull(c->chi_square.statistic);
  j["df"] = c->chi_square.degrees_of_freedom;
  j["chi2_p"] = NumberOrNull(c->chi_square.p_value);
  j["categories_us"] = c->chi_square.categories;
  j["ks_window"] = c->ks_window;
  j["ks_d"] = NumberOrNull(c->ks.statistic);
  j["ks_p"] = NumberOrNull(c->ks.p_value);
  return j;
}

bool SameWindowsAndPattern(const FeatureConfig& a, const FeatureConfig& b) {
  // Everything ByteWindowCov and the IPT sketch depend on; the pattern
  // attack's parameters do not enter the evaluation.
  if (a.byte_window_count != b.byte_window_count) return false;
  for (size_t i = 0; i < a.byte_window_count; ++i) {
    if (a.byte_windows[i] != b.byte_windows[i]) return false;
  }
  return true;
}

// --- Prometheus text ---

std::string EscapeLabelValue(absl::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Counters are integers; print them without an exponent while exact.
  if (v == std::floor(v) && std::fabs(v) < 9.007199254740992e15) {
    return absl::StrFormat("%.0f", v);
  }
  return absl::StrFormat("%.17g", v);
}

class MetricsWriter {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;

  void Family(absl::string_view name, absl::string_view type, absl::string_view help) {
    absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  }
  void Sample(absl::string_view name, const Labels& labels, double value) {
    absl::StrAppend(&out_, name);
    if (!labels.empty()) {
      out_ += "{";
      for (size_t i = 0; i < labels.size(); ++i) {
        absl::StrAppend(&out_, i == 0 ? "" : ",", labels[i].first, "=\"",
                        EscapeLabelValue(labels[i].second), "\"");
      }
      out_ += "}";
    }
    absl::StrAppend(&out_, " ", FormatValue(value), "\n");
  }
  void One(absl::string_view name, absl::string_view type, absl::string_view help, double value) {
    Family(name, type, help);
    Sample(name, {}, value);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// A number at `pointer` in the dataplane's status (booleans count as 0/1).
std::optional<double> NumberAt(const nlohmann::json& doc, const std::string& pointer) {
  // A status of an unexpected shape (a number where an object was) makes
  // the lookup throw: that field is simply absent.
  try {
    const nlohmann::json::json_pointer p(pointer);
    if (!doc.contains(p)) return std::nullopt;
    const nlohmann::json& v = doc.at(p);
    if (v.is_number()) return v.get<double>();
    if (v.is_boolean()) return v.get<bool>() ? 1.0 : 0.0;
  } catch (const nlohmann::json::exception&) {
  }
  return std::nullopt;
}

struct GatewaySample {
  const char* pointer;  // JSON pointer into the status counters
  std::vector<std::pair<std::string, std::string>> labels;
};
struct GatewayFamily {
  const char* name;
  const char* type;
  const char* help;
  std::vector<GatewaySample> samples;
};

// The dataplane's {"cmd":"status"} answer (include/shroud/ctl_protocol.h;
// the counters are dataplane/counters_json.h's schemas) as metrics. Families
// whose fields the answer does not carry (gateway counters from a tap and the
// other way round, an older dataplane) are left out.
const std::vector<GatewayFamily>& GatewayFamilies() {
  static const auto* families = new std::vector<GatewayFamily>{
      {"shroud_gateway_rate_bytes_per_second", "gauge",
       "Migration class rate Algorithm 3 currently applies",
       {{"/status/counters/rate_variation/rate_bytes_per_sec", {}}}},
      {"shroud_gateway_rate_steps_total", "counter", "Algorithm 3 rate steps taken",
       {{"/status/counters/rate_variation/steps", {}}}},
      {"shroud_gateway_rx_packets_total", "counter",
       "Packets received, by the side they arrived on",
       {{"/status/counters/inside_to_outside/rx_packets", {{"direction", "inside"}}},
        {"/status/counters/outside_to_inside/rx_packets", {{"direction", "outside"}}}}},
      {"shroud_gateway_rx_bytes_total", "counter", "Bytes received, by the side they arrived on",
       {{"/status/counters/inside_to_outside/rx_bytes", {{"direction", "inside"}}},
        {"/status/counters/outside_to_inside/rx_bytes", {{"direction", "outside"}}}}},
      {"shroud_gateway_tx_packets_total", "counter",
       "Packets sent, by the side they arrived on",
       {{"/status/counters/inside_to_outside/tx_packets", {{"direction", "inside"}}},
        {"/status/counters/outside_to_inside/tx_packets", {{"direction", "outside"}}}}},
      {"shroud_gateway_tx_bytes_total", "counter", "Bytes sent, by the side they arrived on",
       {{"/status/counters/inside_to_outside/tx_bytes", {{"direction", "inside"}}},
        {"/status/counters/outside_to_inside/tx_bytes", {{"direction", "outside"}}}}},
      {"shroud_gateway_tx_dropped_total", "counter",
       "Packets the transmit queue refused, by the side they arrived on",
       {{"/status/counters/inside_to_outside/tx_dropped", {{"direction", "inside"}}},
        {"/status/counters/outside_to_inside/tx_dropped", {{"direction", "outside"}}}}},
      {"shroud_gateway_shaped_packets_total", "counter",
       "Packets that went through the shaper, by the side they arrived on",
       {{"/status/counters/inside_to_outside/shaped_packets", {{"direction", "inside"}}},
        {"/status/counters/outside_to_inside/shaped_packets", {{"direction", "outside"}}}}},
      {"shroud_gateway_shaper_sent_packets_total", "counter", "Packets the shaper sent, by class",
       {{"/status/counters/shaper/migration/sent_packets", {{"class", "migration"}}},
        {"/status/counters/shaper/chaff/sent_packets", {{"class", "chaff"}}},
        {"/status/counters/shaper/default/packets", {{"class", "default"}}}}},
      {"shroud_gateway_shaper_sent_bytes_total", "counter", "Bytes the shaper sent, by class",
       {{"/status/counters/shaper/migration/sent_bytes", {{"class", "migration"}}},
        {"/status/counters/shaper/chaff/sent_bytes", {{"class", "chaff"}}},
        {"/status/counters/shaper/default/bytes", {{"class", "default"}}}}},
      {"shroud_gateway_shaper_dropped_packets_total", "counter",
       "Packets the shaper dropped (queue full), by class",
       {{"/status/counters/shaper/migration/dropped_packets", {{"class", "migration"}}},
        {"/status/counters/shaper/chaff/dropped_packets", {{"class", "chaff"}}}}},
      {"shroud_gateway_shaper_backlog_packets", "gauge", "Packets waiting in the shaper, by class",
       {{"/status/counters/shaper/migration/backlog_packets", {{"class", "migration"}}},
        {"/status/counters/shaper/chaff/backlog_packets", {{"class", "chaff"}}}}},
      {"shroud_dataplane_flows_active", "gauge", "Flows in the dataplane's flow table",
       {{"/status/counters/flows/active", {}}}},
      {"shroud_dataplane_flows_created_total", "counter", "Flows the dataplane created",
       {{"/status/counters/flows/created", {}}}},
      {"shroud_dataplane_flows_evicted_idle_total", "counter",
       "Flows the dataplane ended after their idle timeout",
       {{"/status/counters/flows/evicted_idle", {}}}},
      {"shroud_dataplane_flows_table_full_total", "counter",
       "Flows the dataplane could not track (table full)",
       {{"/status/counters/flows/table_full", {}}}},
      {"shroud_dataplane_uptime_seconds", "gauge", "Seconds since the dataplane started",
       {{"/status/uptime_s", {}}}},
      {"shroud_tap_rx_packets_total", "counter", "Packets the tap received",
       {{"/status/counters/rx_packets", {}}}},
      {"shroud_tap_rx_bytes_total", "counter", "Bytes the tap received",
       {{"/status/counters/rx_bytes", {}}}},
      {"shroud_dataplane_mirror_records_total", "counter",
       "Feature records the dataplane exported to the mirror, by kind",
       {{"/status/counters/mirror/updates", {{"kind", "update"}}},
        {"/status/counters/mirror/ends", {{"kind", "end"}}},
        {"/status/counters/mirror/finals", {{"kind", "final"}}}}},
      {"shroud_gateway_malformed_dropped_total", "counter", "Malformed frames dropped",
       {{"/status/counters/malformed_dropped", {}}}},
      {"shroud_gateway_chaff_generated_packets_total", "counter", "Chaff packets generated",
       {{"/status/counters/chaff/generated_packets", {}}}},
      {"shroud_gateway_chaff_absorbed_packets_total", "counter",
       "Chaff packets of the peer gateway absorbed",
       {{"/status/counters/chaff/absorbed_peer_packets", {}}}},
      {"shroud_gateway_runtime_updates_total", "counter", "Run-time parameter updates applied",
       {{"/status/counters/runtime_updates", {}}}},
  };
  return *families;
}

}  // namespace

// Refuses unknown and repeated parameters; returns the single value of each.
absl::StatusOr<std::map<std::string, std::string>> SingleValues(
    const QueryParams& params, const std::set<absl::string_view>& known) {
  std::map<std::string, std::string> out;
  for (const auto& [name, value] : params) {
    if (!known.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown query parameter '", name,
                                                     "' (known: ", absl::StrJoin(known, ", "),
                                                     ")"));
    }
    if (!out.emplace(name, value).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("query parameter '", name, "' given more than once"));
    }
  }
  return out;
}

absl::StatusOr<FlowFilter> ParseFlowQuery(const QueryParams& params, uint64_t default_min_packets) {
  absl::StatusOr<std::map<std::string, std::string>> values =
      SingleValues(params, {"migration", "min_packets", "limit"});
  if (!values.ok()) return values.status();
  FlowFilter filter;
  filter.min_packets = default_min_packets;
  for (const auto& [name, value] : *values) {
    if (name == "migration") {
      if (value == "1" || value == "true") {
        filter.migration_only = true;
      } else if (value == "0" || value == "false") {
        filter.migration_only = false;
      } else {
        return BadParameter(name, value, "must be 0, 1, false or true");
      }
    } else if (name == "min_packets") {
      absl::StatusOr<uint64_t> v = ParseUint(name, value, 0, std::numeric_limits<uint64_t>::max());
      if (!v.ok()) return v.status();
      filter.min_packets = *v;
    } else if (name == "limit") {
      absl::StatusOr<uint64_t> v = ParseUint(name, value, 1, kMaxFlowLimit);
      if (!v.ok()) return v.status();
      filter.limit = static_cast<size_t>(*v);
    }
  }
  return filter;
}

absl::StatusOr<EvaluationQuery> ParseEvaluationQuery(const QueryParams& params,
                                                     uint64_t default_min_packets) {
  absl::StatusOr<std::map<std::string, std::string>> values =
      SingleValues(params, {"min_packets", "ks_window"});
  if (!values.ok()) return values.status();
  EvaluationQuery query;
  query.min_packets = default_min_packets;
  for (const auto& [name, value] : *values) {
    if (name == "min_packets") {
      absl::StatusOr<uint64_t> v = ParseUint(name, value, 0, std::numeric_limits<uint64_t>::max());
      if (!v.ok()) return v.status();
      query.min_packets = *v;
    } else if (name == "ks_window") {
      absl::StatusOr<uint64_t> v = ParseUint(name, value, 1, std::numeric_limits<uint32_t>::max());
      if (!v.ok()) return v.status();
      query.ks_window = static_cast<uint32_t>(*v);
    }
  }
  return query;
}

std::vector<StoredFlow> SelectFlows(const FlowStore& store, const FlowFilter& filter,
                                    size_t* matched) {
  // Pointers into the store: valid until it changes, which the caller's lock
  // rules out while this runs.
  struct Hit {
    const FlowStoreKey* id;
    const StoredFlow* flow;
  };
  std::vector<Hit> hits;
  store.ForEach([&](const FlowStoreKey& id, const StoredFlow& flow) {
    if (flow.record.features.packets < filter.min_packets) return;
    if (filter.migration_only && !flow.verdict.migration) return;
    hits.push_back(Hit{&id, &flow});
  });
  if (matched != nullptr) *matched = hits.size();
  // Most recently updated first; ties in a fixed order so output is stable.
  auto newer = [](const Hit& a, const Hit& b) {
    if (a.flow->last_update_ns != b.flow->last_update_ns) {
      return a.flow->last_update_ns > b.flow->last_update_ns;
    }
    return std::tie(a.id->run_id, a.id->worker, a.id->key) <
           std::tie(b.id->run_id, b.id->worker, b.id->key);
  };
  const size_t n = std::min(hits.size(), filter.limit);
  std::partial_sort(hits.begin(), hits.begin() + static_cast<ptrdiff_t>(n), hits.end(), newer);
  std::vector<StoredFlow> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*hits[i].flow);
  return out;
}

nlohmann::json FlowJson(const StoredFlow& flow) {
  const FlowFeatures& f = flow.record.features;
  const FeatureConfig& config = flow.config();
  const uint64_t stream_packets = flow.record.stream_packets;
  nlohmann::json row;
  row["flow"] = FormatFlowKey(flow.record.key);
  row["packets"] = f.packets;
  row["bytes"] = f.bytes;
  row["duration_s"] = f.duration_seconds();
  nlohmann::json cov = nlohmann::json::object();
  for (size_t i = 0; i < config.byte_window_count; ++i) {
    cov[std::to_string(config.byte_windows[i])] =
        NumberOrNull(ByteWindowCov(f, config, i, stream_packets));
  }
  row["cov"] = cov;
  row["pattern"] = flow.verdict.pattern.flagged;
  row["pattern_counter"] = f.a1_pattern_counter;
  row["pattern_windows"] = f.a1_windows;
  row["maxent"] = NumberOrNull(flow.verdict.maxent.score);
  row["migration"] = flow.verdict.migration;
  row["class"] = FlowClassName(flow.record.flow_class);
  row["state"] = flow.ended ? "ended" : "live";
  row["worker"] = flow.record.worker;
  return row;
}

nlohmann::json FlowsJson(const std::vector<StoredFlow>& flows, size_t matched,
                         const FlowFilter& filter) {
  nlohmann::json rows = nlohmann::json::array();
  for (const StoredFlow& f : flows) rows.push_back(FlowJson(f));
  return {{"flows", std::move(rows)},
          {"matched", matched},
          {"returned", flows.size()},
          {"limit", filter.limit},
          {"min_packets", filter.min_packets},
          {"migration_only", filter.migration_only}};
}

nlohmann::json EvaluationJson(const std::vector<StoredFlow>& flows, const EvaluationQuery& query) {
  nlohmann::json doc;
  doc["min_packets"] = query.min_packets;
  const FeatureConfig* config = nullptr;
  std::vector<LabelledFlow> labelled;
  std::vector<MirrorFlowClass> classes;
  std::vector<bool> flagged;
  size_t skipped = 0;
  for (const StoredFlow& f : flows) {
    if (f.record.features.packets < query.min_packets) continue;
    if (config == nullptr) config = &f.config();
    if (!SameWindowsAndPattern(*config, f.config())) {
      ++skipped;
      continue;
    }
    labelled.push_back(LabelledFlow{"", f.record.key, f.record.features, f.record.stream_packets,
                                    f.record.flow_class == MirrorFlowClass::kMigration});
    classes.push_back(f.record.flow_class);
    flagged.push_back(f.verdict.migration);
  }
  doc["flows"] = labelled.size();
  doc["skipped_other_config"] = skipped;
  FeatureConfig fallback;  // only for the window list when there is no flow
  const FeatureConfig& cfg = config != nullptr ? *config : fallback;
  doc["windows"] = std::vector<uint32_t>(cfg.byte_windows.begin(),
                                         cfg.byte_windows.begin() + cfg.byte_window_count);

  constexpr MirrorFlowClass kClasses[] = {MirrorFlowClass::kMigration, MirrorFlowClass::kDefault,
                                          MirrorFlowClass::kChaff,
                                          MirrorFlowClass::kUnclassified};
  std::map<MirrorFlowClass, std::vector<const LabelledFlow*>> by_class;
  std::vector<const LabelledFlow*> yes, no;
  for (size_t i = 0; i < labelled.size(); ++i) {
    by_class[classes[i]].push_back(&labelled[i]);
    (flagged[i] ? yes : no).push_back(&labelled[i]);
  }
  nlohmann::json class_groups = nlohmann::json::object();
  for (MirrorFlowClass c : kClasses) {
    // The two compared classes always appear, the others when present.
    const bool compared = c == MirrorFlowClass::kMigration || c == MirrorFlowClass::kDefault;
    if (!compared && by_class[c].empty()) continue;
    class_groups[FlowClassName(c)] = GroupJson(by_class[c], cfg);
  }
  doc["groups"] = {{"class", class_groups},
                   {"verdict", {{"flagged", GroupJson(yes, cfg)},
                                {"not_flagged", GroupJson(no, cfg)}}}};
  doc["comparisons"] = {
      {"migration_vs_default",
       ComparisonJson("migration", by_class[MirrorFlowClass::kMigration], "default",
                      by_class[MirrorFlowClass::kDefault], cfg, query)},
      {"flagged_vs_not_flagged", ComparisonJson("flagged", yes, "not_flagged", no, cfg, query)}};
  return doc;
}

std::string MetricsText(const ControlMetrics& m) {
  MetricsWriter w;
  w.Family("shroud_control_flows", "gauge", "Flows in the control process's view, by state");
  w.Sample("shroud_control_flows", {{"state", "live"}}, static_cast<double>(m.live_flows));
  w.Sample("shroud_control_flows", {{"state", "ended"}}, static_cast<double>(m.ended_flows));
  w.One("shroud_control_flagged_flows", "gauge",
        "Flows in the view that either detector flags as migration",
        static_cast<double>(m.flagged_flows));
  w.Family("shroud_control_detections_total", "counter",
           "Flows newly flagged as migration, by detector (any: either)");
  w.Sample("shroud_control_detections_total", {{"detector", "pattern"}},
           static_cast<double>(m.store.detections_pattern));
  w.Sample("shroud_control_detections_total", {{"detector", "maxent"}},
           static_cast<double>(m.store.detections_maxent));
  w.Sample("shroud_control_detections_total", {{"detector", "any"}},
           static_cast<double>(m.store.detections_any));
  w.One("shroud_control_cleared_total", "counter", "Flagged flows no longer flagged",
        static_cast<double>(m.store.cleared_any));
  w.One("shroud_control_records_total", "counter", "Mirror records applied",
        static_cast<double>(m.store.records));
  w.One("shroud_control_flows_dropped_total", "counter",
        "Records of new flows refused because the live flow limit was reached",
        static_cast<double>(m.store.dropped_flows));
  w.One("shroud_control_flows_evicted_total", "counter",
        "Ended flows evicted by the retention limit", static_cast<double>(m.store.evicted_ended));
  w.One("shroud_control_mirror_attached", "gauge", "1 while a mirror file is mapped",
        m.attached ? 1 : 0);
  w.One("shroud_control_mirror_attaches_total", "counter", "Mirror files attached",
        static_cast<double>(m.attaches));
  w.One("shroud_control_dataplane_up", "gauge",
        "1 while the attached dataplane runs and heartbeats", m.dataplane_up ? 1 : 0);
  w.One("shroud_control_uptime_seconds", "gauge", "Seconds since shroud-control started",
        m.uptime_seconds);
  if (!m.rings.empty()) {
    w.Family("shroud_mirror_published_total", "counter",
             "Records the dataplane published into a mirror ring (this run)");
    for (size_t k = 0; k < m.rings.size(); ++k) {
      w.Sample("shroud_mirror_published_total", {{"ring", std::to_string(k)}},
               static_cast<double>(m.rings[k].published));
    }
    w.Family("shroud_mirror_consumed_total", "counter",
             "Records taken out of a mirror ring by the control process (this run)");
    for (size_t k = 0; k < m.rings.size(); ++k) {
      w.Sample("shroud_mirror_consumed_total", {{"ring", std::to_string(k)}},
               static_cast<double>(m.rings[k].consumed));
    }
    w.Family("shroud_mirror_dropped_total", "counter",
             "Records the dataplane dropped because a mirror ring was full (this run)");
    for (size_t k = 0; k < m.rings.size(); ++k) {
      w.Sample("shroud_mirror_dropped_total", {{"ring", std::to_string(k)}},
               static_cast<double>(m.rings[k].dropped));
    }
  }
  w.One("shroud_dataplane_status_up", "gauge",
        "1 when the dataplane's control socket answered the status request",
        m.gateway_status.has_value() ? 1 : 0);
  if (m.gateway_status.has_value()) {
    const nlohmann::json& counters = *m.gateway_status;
    for (const GatewayFamily& family : GatewayFamilies()) {
      std::vector<std::pair<const GatewaySample*, double>> present;
      for (const GatewaySample& s : family.samples) {
        if (std::optional<double> v = NumberAt(counters, s.pointer); v.has_value()) {
          present.emplace_back(&s, *v);
        }
      }
      if (present.empty()) continue;
      w.Family(family.name, family.type, family.help);
      for (const auto& [sample, value] : present) w.Sample(family.name, sample->labels, value);
    }
  }
  return w.Take();
}

std::string ErrorBody(int status, absl::string_view message) {
  return nlohmann::json{{"error", std::string(message)}, {"status", status}}.dump();
}

}  // namespace shroud::control
