#include "dataplane/core/runtime_settings.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <type_traits>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace shroud {
namespace {

using json = nlohmann::json;

// Debian's Abseil has its own string_view type; our API uses the standard one.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A settable field, typed, so reading and writing it cannot mix types up.
using FieldRef =
    std::variant<bool*, uint32_t*, double*, std::array<double, 2>*, ChaffPolicyKind*>;

struct Setting {
  std::string_view key;
  FieldRef (*field)(GatewayConfig&);
};

// The key is spelled once, from the struct member's own name, so the table
// cannot drift from the config's names (gateway_config.cc parses the same
// member under the same name).
#define SHROUD_SETTING(section, member) \
  Setting { #section "." #member, [](GatewayConfig& c) -> FieldRef { return &c.section.member; } }

constexpr std::array kSettings = {
    SHROUD_SETTING(rate_variation, enabled),
    SHROUD_SETTING(rate_variation, interval_ms),
    SHROUD_SETTING(rate_variation, window),
    SHROUD_SETTING(rate_variation, min_rate_mbyte_s),
    SHROUD_SETTING(rate_variation, max_rate_mbyte_s),
    SHROUD_SETTING(rate_variation, start_rate_mbyte_s),
    SHROUD_SETTING(rate_variation, d),
    SHROUD_SETTING(rate_variation, c_percent),
    SHROUD_SETTING(rate_variation, lower_cov),
    SHROUD_SETTING(rate_variation, upper_cov),
    SHROUD_SETTING(rate_variation, up_range),
    SHROUD_SETTING(rate_variation, up_fast_range),
    SHROUD_SETTING(rate_variation, down_range),
    SHROUD_SETTING(rate_variation, down_fast_range),
    SHROUD_SETTING(rate_variation, session_spread),
    SHROUD_SETTING(rate_variation, session_gap_ms),
    SHROUD_SETTING(rate_variation, bursty_min_rate_mbyte_s),
    SHROUD_SETTING(rate_variation, bursty_window),
    SHROUD_SETTING(rate_variation, bursty_pause_share),
    SHROUD_SETTING(rate_variation, min_pause_share),
    SHROUD_SETTING(rate_variation, pause_mean_ms),
    SHROUD_SETTING(rate_variation, pause_max_ms),
    SHROUD_SETTING(chaff, policy),
    SHROUD_SETTING(chaff, constant_rate_mbyte_s),
    SHROUD_SETTING(chaff, envelope_rate_multiple),
    SHROUD_SETTING(chaff, envelope_mbyte_s),
    SHROUD_SETTING(chaff, low_load_threshold_mbyte_s),
    SHROUD_SETTING(chaff, low_load_hysteresis),
    SHROUD_SETTING(chaff, low_load_fills_envelope),
    SHROUD_SETTING(chaff, background_time_constant_ms),
};

#undef SHROUD_SETTING

bool IsChaffKey(std::string_view key) { return key.starts_with("chaff."); }

const Setting* FindSetting(std::string_view key) {
  for (const Setting& s : kSettings) {
    if (s.key == key) return &s;
  }
  return nullptr;
}

constexpr std::array<ChaffPolicyKind, 4> kPolicies = {
    ChaffPolicyKind::kOff, ChaffPolicyKind::kConstant, ChaffPolicyKind::kFillToEnvelope,
    ChaffPolicyKind::kLowLoad};

// Messages quote what the client sent; a value or key of 60 KB (the request
// limit) must not make a 60 KB message.
std::string Shorten(std::string text, size_t max = 80) {
  if (text.size() > max) {
    text.resize(max);
    text += "...";
  }
  return text;
}

std::string Quoted(std::string_view s) { return absl::StrCat("\"", Av(s), "\""); }

std::string JsonText(const json& v) {
  // Replace, not throw, on invalid UTF-8 in a string the client sent.
  return Shorten(v.dump(-1, ' ', false, json::error_handler_t::replace));
}

std::string_view JsonTypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "a number";
    default: return "an unsupported value";
  }
}

std::string TypeError(std::string_view expected, const json& v) {
  return absl::StrCat("expected ", Av(expected), ", got ", Av(JsonTypeName(v)));
}

// Each reader returns "" when it stored the value, else the problem.
std::string Read(const json& v, bool* out) {
  if (!v.is_boolean()) return TypeError("a boolean (true or false)", v);
  *out = v.get<bool>();
  return "";
}

std::string Read(const json& v, uint32_t* out) {
  constexpr uint64_t kMax = std::numeric_limits<uint32_t>::max();
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > kMax) return absl::StrCat("too large: ", u, " (max ", kMax, ")");
    *out = static_cast<uint32_t>(u);
    return "";
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < 0) return absl::StrCat("must not be negative, got ", i);
    if (static_cast<uint64_t>(i) > kMax) return absl::StrCat("too large: ", i, " (max ", kMax, ")");
    *out = static_cast<uint32_t>(i);
    return "";
  }
  if (v.is_number_float()) {
    // JSON has one number type; 20.0 is the integer 20 to most encoders.
    const double d = v.get<double>();
    if (std::isfinite(d) && d < 0.0) return absl::StrCat("must not be negative, got ", JsonText(v));
    if (!std::isfinite(d) || d != std::floor(d)) {
      return absl::StrCat("expected an integer, got ", JsonText(v));
    }
    if (d > static_cast<double>(kMax)) return absl::StrCat("too large: ", JsonText(v), " (max ", kMax, ")");
    *out = static_cast<uint32_t>(d);
    return "";
  }
  return TypeError("an integer", v);
}

std::string Read(const json& v, double* out) {
  if (!v.is_number()) return TypeError("a number", v);
  *out = v.get<double>();
  return "";
}

std::string Read(const json& v, std::array<double, 2>* out) {
  if (!v.is_array() || v.size() != 2) {
    return absl::StrCat("expected an array of two numbers, e.g. [1.0, 1.4], got ",
                        v.is_array() ? absl::StrCat("an array of ", v.size())
                                     : std::string(JsonTypeName(v)));
  }
  std::array<double, 2> pair{};
  for (size_t i = 0; i < 2; ++i) {
    if (!v[i].is_number()) {
      return absl::StrCat("expected an array of two numbers, element ", i, " is ",
                          Av(JsonTypeName(v[i])));
    }
    pair[i] = v[i].get<double>();
  }
  *out = pair;
  return "";
}

std::string Read(const json& v, ChaffPolicyKind* out) {
  std::vector<std::string> names;
  for (ChaffPolicyKind k : kPolicies) names.push_back(Quoted(ChaffPolicyKindName(k)));
  if (!v.is_string()) {
    return TypeError(absl::StrCat("a string (", absl::StrJoin(names, ", "), ")"), v);
  }
  const std::string& text = v.get_ref<const std::string&>();
  for (ChaffPolicyKind k : kPolicies) {
    if (text == ChaffPolicyKindName(k)) {
      *out = k;
      return "";
    }
  }
  return absl::StrCat("must be ", absl::StrJoin(names, " or "), ", got ", JsonText(v));
}

json ToJson(const FieldRef& field) {
  return std::visit(
      [](auto* p) -> json {
        using T = std::remove_cv_t<std::remove_pointer_t<decltype(p)>>;
        if constexpr (std::is_same_v<T, ChaffPolicyKind>) {
          return std::string(ChaffPolicyKindName(*p));
        } else if constexpr (std::is_same_v<T, std::array<double, 2>>) {
          return json::array({(*p)[0], (*p)[1]});
        } else {
          return *p;
        }
      },
      field);
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The known key `key` most likely meant, or "": the key without its section
// ("window"), a prefix of one without its unit ("rate_variation.max_rate"),
// or a typo a few edits away.
std::string_view ClosestKey(std::string_view key) {
  if (key.empty() || key.size() > 128) return {};
  for (const Setting& s : kSettings) {
    if (s.key.size() > key.size() && s.key.ends_with(key) && s.key[s.key.size() - key.size() - 1] == '.') {
      return s.key;
    }
  }
  if (key.size() >= 8) {
    for (const Setting& s : kSettings) {
      if (s.key.starts_with(key)) return s.key;
    }
  }
  std::string_view best;
  size_t best_distance = std::max<size_t>(2, key.size() / 5) + 1;
  for (const Setting& s : kSettings) {
    const size_t distance = EditDistance(key, s.key);
    if (distance < best_distance) {
      best = s.key;
      best_distance = distance;
    }
  }
  return best;
}

std::string UnknownKey(std::string_view key) {
  std::string message = absl::StrCat(Shorten(std::string(key)), ": unknown key");
  if (std::string_view closest = ClosestKey(key); !closest.empty()) {
    absl::StrAppend(&message, "; did you mean ", Av(closest), "?");
  } else {
    absl::StrAppend(&message, " (`shroud ctl get` lists the settable keys)");
  }
  return message;
}

// Equality of the parts of the config without an operator==.
bool SamePrefix(const IpPrefix& a, const IpPrefix& b) {
  return a.version == b.version && a.addr == b.addr && a.length == b.length;
}
bool SamePrefixes(const std::vector<IpPrefix>& a, const std::vector<IpPrefix>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), SamePrefix);
}
bool SamePorts(const PortRange& a, const PortRange& b) {
  return a.first == b.first && a.last == b.last;
}
bool SameKey(const std::optional<ChaffKey>& a, const std::optional<ChaffKey>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a.has_value() || a->bytes == b->bytes;
}
bool SameWindows(const FeatureConfig& a, const FeatureConfig& b) {
  if (a.byte_window_count != b.byte_window_count) return false;
  const size_t n = std::min(a.byte_window_count, a.byte_windows.size());
  return std::equal(a.byte_windows.begin(), a.byte_windows.begin() + n, b.byte_windows.begin());
}

}  // namespace

const std::vector<std::string_view>& SettableKeys() {
  static const std::vector<std::string_view>* const keys = [] {
    auto* v = new std::vector<std::string_view>;
    for (const Setting& s : kSettings) v->push_back(s.key);
    return v;
  }();
  return *keys;
}

absl::StatusOr<GatewayConfig> ApplySettings(const GatewayConfig& running, const json& values) {
  if (!values.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "settings: expected a JSON object of key -> value, got ", Av(JsonTypeName(values))));
  }
  if (values.size() > kMaxSettingsPerCall) {
    return absl::InvalidArgumentError(absl::StrCat("settings: at most ", kMaxSettingsPerCall,
                                                   " keys per call, got ", values.size()));
  }
  if (values.empty()) {
    return absl::InvalidArgumentError(
        "settings: nothing to set; give at least one key (`shroud ctl get` lists them)");
  }
  GatewayConfig next = running;
  std::vector<std::string> errors;
  std::vector<std::string> set_keys;
  for (const auto& [key, value] : values.items()) {
    const Setting* setting = FindSetting(key);
    if (setting == nullptr) {
      errors.push_back(UnknownKey(key));
      continue;
    }
    if (IsChaffKey(key) && !running.chaff.enabled()) {
      errors.push_back(absl::StrCat(
          key, ": chaff is not configured (the running config has no chaff.key); restart the "
               "dataplane with a [chaff] key (chaff.key or chaff.key_file) to use it"));
      continue;
    }
    const std::string problem =
        std::visit([&](auto* field) { return Read(value, field); }, setting->field(next));
    if (!problem.empty()) {
      errors.push_back(absl::StrCat(key, ": ", problem));
      continue;
    }
    set_keys.push_back(key);
  }
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));

  absl::Status valid = ValidateGatewayConfig(next);
  if (valid.ok()) return next;
  // The validator names the key it checks, which is not always one that was
  // set ("min_rate_mbyte_s must be <= max_rate_mbyte_s" after a set of
  // max_rate_mbyte_s), so such lines also say which keys caused them.
  const std::string set = absl::StrJoin(set_keys, ", ");
  for (absl::string_view line : absl::StrSplit(valid.message(), '\n')) {
    const size_t colon = line.find(": ");
    const absl::string_view key = colon == absl::string_view::npos ? "" : line.substr(0, colon);
    if (std::find(set_keys.begin(), set_keys.end(), key) != set_keys.end()) {
      errors.emplace_back(line);
    } else if (!key.empty()) {
      errors.push_back(absl::StrCat(set, ": conflicts with ", line));
    } else {
      errors.push_back(absl::StrCat(set, ": ", line));
    }
  }
  return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
}

json SettableValues(const GatewayConfig& config) {
  // The table's accessors take a mutable config; nothing is written here.
  GatewayConfig& c = const_cast<GatewayConfig&>(config);
  json out = json::object();
  for (const Setting& s : kSettings) {
    if (IsChaffKey(s.key) && !config.chaff.enabled()) continue;
    out[std::string(s.key)] = ToJson(s.field(c));
  }
  return out;
}

json SettingChanges(const GatewayConfig& from, const GatewayConfig& to) {
  const json before = SettableValues(from);
  const json after = SettableValues(to);
  json changes = json::object();
  for (const auto& [key, value] : after.items()) {
    auto it = before.find(key);
    if (it == before.end() || *it != value) changes[key] = value;
  }
  return changes;
}

std::vector<std::string> RestartOnlyChanges(const GatewayConfig& running,
                                            const GatewayConfig& next) {
  std::vector<std::string> out;
  auto check = [&out](const char* key, bool same) {
    if (!same) out.emplace_back(key);
  };
  // [dataplane]: ports, rings and the mempool are set up once.
  const DataplaneSection& da = running.dataplane;
  const DataplaneSection& db = next.dataplane;
  check("dataplane.mode", da.mode == db.mode);
  check("dataplane.rx_queues", da.rx_queues == db.rx_queues);
  check("dataplane.rx_descriptors", da.rx_descriptors == db.rx_descriptors);
  check("dataplane.tx_descriptors", da.tx_descriptors == db.tx_descriptors);
  check("dataplane.mempool_mbufs", da.mempool_mbufs == db.mempool_mbufs);
  check("dataplane.burst_size", da.burst_size == db.burst_size);
  check("dataplane.malformed", da.malformed == db.malformed);
  // [flows]: the rte_hash is sized at start.
  check("flows.max_flows", running.flows.max_flows == next.flows.max_flows);
  check("flows.idle_timeout_ms", running.flows.idle_timeout_ms == next.flows.idle_timeout_ms);
  // [features]: per-flow state is laid out by these.
  const FeatureConfig& fa = running.features;
  const FeatureConfig& fb = next.features;
  check("features.burst_gap_ms", fa.burst_gap_ns == fb.burst_gap_ns);
  check("features.pattern_window", fa.pattern_window == fb.pattern_window);
  check("features.pattern_delta", fa.pattern_delta == fb.pattern_delta);
  check("features.pattern_count_threshold",
        fa.pattern_count_threshold == fb.pattern_count_threshold);
  check("features.pattern_min_distances", fa.pattern_min_distances == fb.pattern_min_distances);
  check("features.byte_windows", SameWindows(fa, fb));
  // [classify] reloads live: not compared.
  // [shaper]: the hierarchy and its queues are built at start.
  const ShaperSection& sa = running.shaper;
  const ShaperSection& sb = next.shaper;
  check("shaper.link_rate_mbyte_s", sa.link_rate_mbyte_s == sb.link_rate_mbyte_s);
  check("shaper.migration_queue_ms", sa.migration_queue_ms == sb.migration_queue_ms);
  check("shaper.chaff_queue_ms", sa.chaff_queue_ms == sb.chaff_queue_ms);
  check("shaper.queue_packets", sa.queue_packets == sb.queue_packets);
  check("shaper.migration_borrows_chaff", sa.migration_borrows_chaff == sb.migration_borrows_chaff);
  check("shaper.migration_waits_for_root", sa.migration_waits_for_root == sb.migration_waits_for_root);
  check("shaper.chaff_rate_mbyte_s", sa.chaff_rate_mbyte_s == sb.chaff_rate_mbyte_s);
  check("shaper.train_max_frames", sa.train_max_frames == sb.train_max_frames);
  check("shaper.flow_lanes", sa.flow_lanes == sb.flow_lanes);
  check("shaper.flow_lane_quantum_bytes", sa.flow_lane_quantum_bytes == sb.flow_lane_quantum_bytes);
  // [rate_variation] applies live, but the seed only seeds Algorithm 3 once.
  check("rate_variation.seed", running.rate_variation.seed == next.rate_variation.seed);
  // [chaff]: the key decides whether a generator exists at all; pools,
  // connections, rotation and TCP details are the generator's construction.
  // key_file alone is only where the key came from.
  const ChaffSection& ca = running.chaff;
  const ChaffSection& cb = next.chaff;
  check("chaff.key", SameKey(ca.key, cb.key));
  check("chaff.local_prefixes", SamePrefixes(ca.local_prefixes, cb.local_prefixes));
  check("chaff.remote_prefixes", SamePrefixes(ca.remote_prefixes, cb.remote_prefixes));
  check("chaff.client_ports", SamePorts(ca.client_ports, cb.client_ports));
  check("chaff.server_ports", SamePorts(ca.server_ports, cb.server_ports));
  check("chaff.connections", ca.connections == cb.connections);
  check("chaff.rotation", ca.rotation == cb.rotation);
  check("chaff.rotation_mean_ms", ca.rotation_mean_ms == cb.rotation_mean_ms);
  check("chaff.rotation_uniform_spread", ca.rotation_uniform_spread == cb.rotation_uniform_spread);
  check("chaff.rotation_lognormal_sigma",
        ca.rotation_lognormal_sigma == cb.rotation_lognormal_sigma);
  check("chaff.rotation_pareto_shape", ca.rotation_pareto_shape == cb.rotation_pareto_shape);
  check("chaff.respond", ca.respond == cb.respond);
  check("chaff.peer_responds", ca.peer_responds == cb.peer_responds);
  check("chaff.src_mac", ca.src_mac == cb.src_mac);
  check("chaff.dst_mac", ca.dst_mac == cb.dst_mac);
  check("chaff.mtu", ca.mtu == cb.mtu);
  check("chaff.ttl", ca.ttl == cb.ttl);
  return out;
}

}  // namespace shroud
