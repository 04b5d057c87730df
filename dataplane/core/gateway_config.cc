#include "dataplane/core/gateway_config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <toml.hpp>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "dataplane/core/text_file.h"

namespace shroud {

std::string_view DataplaneModeName(DataplaneMode m) {
  return m == DataplaneMode::kGateway ? "gateway" : "tap";
}

std::string_view MalformedPolicyName(MalformedPolicy p) {
  return p == MalformedPolicy::kForward ? "forward" : "drop";
}

namespace {

// Debian's Abseil has its own string_view type; our API uses the standard one.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Gathers every problem instead of stopping at the first, so one run of the
// dataplane shows the operator all of them. Each message reads
// "origin:line: key: problem", the way compilers report, so editors can jump
// to it.
class Diagnostics {
 public:
  explicit Diagnostics(std::string origin) : origin_(std::move(origin)) {}

  void SetLine(const std::string& key, uint32_t line) { lines_[key] = line; }
  uint32_t LineOf(const std::string& key) const {
    auto it = lines_.find(key);
    return it == lines_.end() ? 0 : it->second;
  }

  void Error(const std::string& key, absl::string_view problem) {
    ErrorAt(key, LineOf(key), problem);
  }
  void ErrorAt(const std::string& key, uint32_t line, absl::string_view problem) {
    std::string where = origin_;
    if (line > 0) absl::StrAppend(&where, ":", line);
    errors_.push_back({line, absl::StrCat(where, where.empty() ? "" : ": ", key, ": ", problem)});
  }

  bool ok() const { return errors_.empty(); }
  size_t count() const { return errors_.size(); }

  // In file order (problems without a line last), one per line.
  absl::Status ToStatus() const {
    if (errors_.empty()) return absl::OkStatus();
    std::vector<std::pair<uint32_t, std::string>> sorted = errors_;
    std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
      uint32_t la = a.first == 0 ? UINT32_MAX : a.first;
      uint32_t lb = b.first == 0 ? UINT32_MAX : b.first;
      return la < lb;
    });
    std::vector<std::string> lines;
    for (auto& [line, message] : sorted) lines.push_back(std::move(message));
    return absl::InvalidArgumentError(absl::StrJoin(lines, "\n"));
  }

 private:
  std::string origin_;
  std::map<std::string, uint32_t> lines_;
  std::vector<std::pair<uint32_t, std::string>> errors_;  // (line or 0, message)
};

std::string_view TypeName(const toml::value& v) {
  switch (v.type()) {
    case toml::value_t::boolean:
      return "a boolean";
    case toml::value_t::integer:
      return "an integer";
    case toml::value_t::floating:
      return "a float";
    case toml::value_t::string:
      return "a string";
    case toml::value_t::array:
      return "an array";
    case toml::value_t::table:
      return "a table";
    case toml::value_t::empty:
      return "nothing";
    default:
      return "a date/time";
  }
}

std::string Quoted(std::string_view s) { return absl::StrCat("\"", Av(s), "\""); }

std::string FormatNumber(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

// Reads the keys of one TOML table, recording where each was, and reports
// keys nobody asked for (typos) when finished.
class TableReader {
 public:
  // `table` null: the table is absent and every key keeps its default.
  TableReader(const toml::value* table, std::string path, Diagnostics* diag)
      : table_(table), path_(std::move(path)), diag_(diag) {}

  std::string KeyPath(std::string_view key) const {
    return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", Av(key));
  }

  // The value of `key`, or null when absent.
  const toml::value* Take(std::string_view key) {
    known_.emplace(key);
    if (table_ == nullptr) return nullptr;
    const toml::table& t = table_->as_table();
    auto it = t.find(std::string(key));
    if (it == t.end()) return nullptr;
    diag_->SetLine(KeyPath(key), it->second.location().line());
    return &it->second;
  }

  void TypeError(std::string_view key, const toml::value& v, std::string_view expected) {
    diag_->Error(KeyPath(key), absl::StrCat("expected ", Av(expected), ", got ", Av(TypeName(v))));
  }

  // An integer that fits T (range checks proper happen in validation, on the
  // struct, but a negative count must not wrap around into a huge one first).
  template <typename T>
  void Unsigned(std::string_view key, T* out) {
    const toml::value* v = Take(key);
    if (v == nullptr) return;
    if (!v->is_integer()) return TypeError(key, *v, "an integer");
    int64_t i = v->as_integer();
    // toml11 saturates an integer literal beyond int64 at its limits rather
    // than failing, so the limits themselves mean "out of range".
    if (i == std::numeric_limits<int64_t>::max()) {
      return diag_->Error(KeyPath(key), absl::StrCat("out of range (at most ",
                                                     std::numeric_limits<int64_t>::max() - 1, ")"));
    }
    if (i < 0) {
      return diag_->Error(KeyPath(key), i == std::numeric_limits<int64_t>::min()
                                            ? std::string("must not be negative")
                                            : absl::StrCat("must not be negative, got ", i));
    }
    if constexpr (sizeof(T) < sizeof(int64_t)) {
      if (static_cast<uint64_t>(i) > std::numeric_limits<T>::max()) {
        return diag_->Error(KeyPath(key), absl::StrCat("too large: ", i));
      }
    }
    *out = static_cast<T>(i);
  }

  // A float; integers are accepted too ("link_rate_mbyte_s = 125").
  void Number(std::string_view key, double* out) {
    const toml::value* v = Take(key);
    if (v == nullptr) return;
    if (v->is_integer()) {
      *out = static_cast<double>(v->as_integer());
    } else if (v->is_floating()) {
      *out = v->as_floating();
    } else {
      TypeError(key, *v, "a number");
    }
  }

  void Bool(std::string_view key, bool* out) {
    const toml::value* v = Take(key);
    if (v == nullptr) return;
    if (!v->is_boolean()) return TypeError(key, *v, "a boolean (true or false)");
    *out = v->as_boolean();
  }

  // True when present and a string.
  bool String(std::string_view key, std::string* out) {
    const toml::value* v = Take(key);
    if (v == nullptr) return false;
    if (!v->is_string()) {
      TypeError(key, *v, "a string");
      return false;
    }
    *out = v->as_string().str;
    return true;
  }

  // A [low, high] pair of numbers.
  void Pair(std::string_view key, std::array<double, 2>* out) {
    const toml::value* v = Take(key);
    if (v == nullptr) return;
    if (!v->is_array() || v->as_array().size() != 2) {
      return diag_->Error(KeyPath(key), "expected an array of two numbers, e.g. [1.0, 1.4]");
    }
    std::array<double, 2> pair{};
    for (size_t i = 0; i < 2; ++i) {
      const toml::value& e = v->as_array()[i];
      if (e.is_integer()) {
        pair[i] = static_cast<double>(e.as_integer());
      } else if (e.is_floating()) {
        pair[i] = e.as_floating();
      } else {
        return diag_->Error(KeyPath(key), absl::StrCat("expected an array of two numbers, element ",
                                                       i, " is ", Av(TypeName(e))));
      }
    }
    *out = pair;
  }

  // One of `choices` (the config spelling) mapped to its value.
  template <typename T>
  void Enum(std::string_view key, std::initializer_list<std::pair<std::string_view, T>> choices,
            T* out) {
    std::string text;
    if (!String(key, &text)) return;
    std::vector<std::string> names;
    for (const auto& [name, value] : choices) {
      if (text == name) {
        *out = value;
        return;
      }
      names.push_back(Quoted(name));
    }
    diag_->Error(KeyPath(key),
                 absl::StrCat("must be ", absl::StrJoin(names, " or "), ", got ", Quoted(text)));
  }

  Diagnostics* diag() { return diag_; }

  // Every key of the table that no Take() asked for is an error: a typo must
  // not silently leave the default in place.
  void Finish() {
    if (table_ == nullptr) return;
    std::vector<std::pair<uint32_t, std::string>> unknown;
    for (const auto& [key, value] : table_->as_table()) {
      if (known_.count(key) == 0) unknown.emplace_back(value.location().line(), key);
    }
    std::sort(unknown.begin(), unknown.end());
    std::string known = absl::StrJoin(known_, ", ");
    for (const auto& [line, key] : unknown) {
      diag_->ErrorAt(KeyPath(key), line, absl::StrCat("unknown key; known keys here: ", known));
    }
  }

 private:
  const toml::value* table_;
  std::string path_;
  Diagnostics* diag_;
  std::set<std::string> known_;
};

// A sub-table of `parent` (e.g. [dataplane]); null when absent or not a table.
const toml::value* SubTable(TableReader& parent, std::string_view key) {
  const toml::value* v = parent.Take(key);
  if (v == nullptr) return nullptr;
  if (!v->is_table()) {
    parent.diag()->Error(parent.KeyPath(key), absl::StrCat("expected a table ([", Av(key),
                                                           "]), got ", Av(TypeName(*v))));
    return nullptr;
  }
  return v;
}

// The elements of an array of tables ([[classify.rule]]); empty when absent.
std::vector<const toml::value*> TableArray(TableReader& parent, std::string_view key) {
  std::vector<const toml::value*> out;
  const toml::value* v = parent.Take(key);
  if (v == nullptr) return out;
  std::string path = parent.KeyPath(key);
  if (!v->is_array()) {
    parent.diag()->Error(
        path, absl::StrCat("expected an array of tables ([[", path, "]]), got ", Av(TypeName(*v))));
    return out;
  }
  const auto& array = v->as_array();
  for (size_t i = 0; i < array.size(); ++i) {
    std::string element = absl::StrCat(path, "[", i, "]");
    parent.diag()->SetLine(element, array[i].location().line());
    if (!array[i].is_table()) {
      parent.diag()->Error(
          element, absl::StrCat("expected a table ([[", path, "]]), got ", Av(TypeName(array[i]))));
      continue;
    }
    out.push_back(&array[i]);
  }
  return out;
}

// --- sections --------------------------------------------------------------

void ParseDataplane(TableReader& r, DataplaneSection* d) {
  r.Enum<DataplaneMode>(
      "mode", {{"gateway", DataplaneMode::kGateway}, {"tap", DataplaneMode::kTap}}, &d->mode);
  r.Unsigned("rx_queues", &d->rx_queues);
  r.Unsigned("rx_descriptors", &d->rx_descriptors);
  r.Unsigned("tx_descriptors", &d->tx_descriptors);
  r.Unsigned("mempool_mbufs", &d->mempool_mbufs);
  r.Unsigned("burst_size", &d->burst_size);
  r.Enum<MalformedPolicy>(
      "malformed", {{"forward", MalformedPolicy::kForward}, {"drop", MalformedPolicy::kDrop}},
      &d->malformed);
}

void ParseFlows(TableReader& r, FlowsSection* f) {
  r.Unsigned("max_flows", &f->max_flows);
  r.Unsigned("idle_timeout_ms", &f->idle_timeout_ms);
}

void ParseFeatures(TableReader& r, FeatureConfig* f) {
  double burst_gap_ms = static_cast<double>(f->burst_gap_ns) / 1e6;
  r.Number("burst_gap_ms", &burst_gap_ms);
  // Converted here, so the range is checked on the value as written.
  if (!(burst_gap_ms > 0.0 && burst_gap_ms <= 60'000.0)) {
    r.diag()->Error(r.KeyPath("burst_gap_ms"),
                    absl::StrCat("must be in (0, 60000] ms, got ", FormatNumber(burst_gap_ms)));
  } else {
    f->burst_gap_ns = static_cast<uint64_t>(std::llround(burst_gap_ms * 1e6));
  }
  r.Unsigned("pattern_window", &f->pattern_window);
  r.Number("pattern_delta", &f->pattern_delta);
  r.Unsigned("pattern_count_threshold", &f->pattern_count_threshold);
  if (const toml::value* v = r.Take("byte_windows"); v != nullptr) {
    std::string key = r.KeyPath("byte_windows");
    if (!v->is_array()) {
      r.TypeError("byte_windows", *v, "an array of integers, e.g. [100, 500, 1000]");
      return;
    }
    const auto& array = v->as_array();
    if (array.empty() || array.size() > kMaxByteWindows) {
      r.diag()->Error(key, absl::StrCat("between 1 and ", kMaxByteWindows,
                                        " window sizes are supported, got ", array.size()));
      return;
    }
    std::array<uint32_t, kMaxByteWindows> windows{};
    for (size_t i = 0; i < array.size(); ++i) {
      if (!array[i].is_integer() || array[i].as_integer() <= 0 ||
          array[i].as_integer() > std::numeric_limits<uint32_t>::max()) {
        r.diag()->Error(key, absl::StrCat("element ", i, " must be a positive integer (packets)"));
        return;
      }
      windows[i] = static_cast<uint32_t>(array[i].as_integer());
    }
    f->byte_windows = windows;
    f->byte_window_count = array.size();
  }
}

// "49152-49215", "16514" or 16514.
void ParsePorts(TableReader& r, std::string_view key, PortRange* out) {
  const toml::value* v = r.Take(key);
  if (v == nullptr) return;
  absl::StatusOr<PortRange> range;
  if (v->is_integer()) {
    int64_t port = v->as_integer();
    if (port < 0 || port > 65535) {
      return r.diag()->Error(r.KeyPath(key), absl::StrCat("port must be 0-65535, got ", port));
    }
    range = PortRange{static_cast<uint16_t>(port), static_cast<uint16_t>(port)};
  } else if (v->is_string()) {
    range = ParsePortRange(v->as_string().str);
  } else {
    return r.TypeError(key, *v, "a port number or a range string such as \"49152-49215\"");
  }
  if (!range.ok()) return r.diag()->Error(r.KeyPath(key), range.status().message());
  *out = *range;
}

void ParsePrefix(TableReader& r, std::string_view key, IpPrefix* out) {
  std::string text;
  if (!r.String(key, &text)) return;
  absl::StatusOr<IpPrefix> prefix = ParseIpPrefix(text);
  if (!prefix.ok()) return r.diag()->Error(r.KeyPath(key), prefix.status().message());
  *out = *prefix;
}

void ParseClass(TableReader& r, TrafficClass* out) {
  std::string text;
  if (!r.String("class", &text)) {
    if (r.Take("class") == nullptr) {
      r.diag()->Error(r.KeyPath("class"),
                      "missing; say which class: \"migration\", \"chaff\" or \"default\"");
    }
    return;
  }
  absl::StatusOr<TrafficClass> c = ParseTrafficClass(text);
  if (!c.ok()) return r.diag()->Error(r.KeyPath("class"), c.status().message());
  *out = *c;
}

void RequireName(TableReader& r, std::string* name) {
  if (r.String("name", name)) {
    if (name->empty()) r.diag()->Error(r.KeyPath("name"), "must not be empty");
    return;
  }
  // Present but not a string has been reported by String().
  if (r.Take("name") == nullptr) {
    r.diag()->Error(r.KeyPath("name"),
                    "missing; every entry needs a name (logs and counters use it)");
  }
}

void ParseRule(TableReader& r, ClassRule* rule) {
  RequireName(r, &rule->name);
  ParseClass(r, &rule->traffic_class);
  if (const toml::value* v = r.Take("protocol"); v != nullptr) {
    absl::StatusOr<int> protocol;
    if (v->is_integer()) {
      protocol = v->as_integer() >= 0 && v->as_integer() <= 255
                     ? absl::StatusOr<int>(static_cast<int>(v->as_integer()))
                     : absl::InvalidArgumentError(
                           absl::StrCat("protocol number must be 0-255, got ", v->as_integer()));
    } else if (v->is_string()) {
      protocol = ParseProtocol(v->as_string().str);
    } else {
      r.TypeError("protocol", *v, "a protocol name (tcp, udp, any, ...) or number");
    }
    if (v->is_integer() || v->is_string()) {
      if (protocol.ok()) {
        rule->protocol = *protocol;
      } else {
        r.diag()->Error(r.KeyPath("protocol"), protocol.status().message());
      }
    }
  }
  ParsePrefix(r, "src", &rule->src);
  ParsePrefix(r, "dst", &rule->dst);
  ParsePorts(r, "src_ports", &rule->src_ports);
  ParsePorts(r, "dst_ports", &rule->dst_ports);
  r.Bool("bidirectional", &rule->bidirectional);
}

void ParseSignature(TableReader& r, SignatureSpec* sig) {
  RequireName(r, &sig->name);
  if (!r.String("pattern", &sig->pattern) && r.Take("pattern") == nullptr) {
    r.diag()->Error(r.KeyPath("pattern"), "missing; give a Hyperscan (PCRE) pattern");
  }
  ParseClass(r, &sig->traffic_class);
}

void ParseClassify(TableReader& r, ClassifySection* c) {
  r.Unsigned("signature_scan_packets", &c->limits.packets);
  r.Unsigned("signature_scan_bytes", &c->limits.bytes);
  r.Bool("builtin_signatures", &c->builtin_signatures);
  std::vector<const toml::value*> rules = TableArray(r, "rule");
  for (size_t i = 0; i < rules.size(); ++i) {
    TableReader rr(rules[i], absl::StrCat(r.KeyPath("rule"), "[", i, "]"), r.diag());
    ClassRule rule;
    ParseRule(rr, &rule);
    rr.Finish();
    c->rules.push_back(std::move(rule));
  }
  std::vector<const toml::value*> signatures = TableArray(r, "signature");
  for (size_t i = 0; i < signatures.size(); ++i) {
    TableReader sr(signatures[i], absl::StrCat(r.KeyPath("signature"), "[", i, "]"), r.diag());
    SignatureSpec sig;
    ParseSignature(sr, &sig);
    sr.Finish();
    c->signatures.push_back(std::move(sig));
  }
}

void ParseShaper(TableReader& r, ShaperSection* s) {
  r.Number("link_rate_mbyte_s", &s->link_rate_mbyte_s);
  r.Unsigned("migration_queue_ms", &s->migration_queue_ms);
  r.Unsigned("chaff_queue_ms", &s->chaff_queue_ms);
  r.Unsigned("queue_packets", &s->queue_packets);
  r.Bool("migration_borrows_chaff", &s->migration_borrows_chaff);
  r.Bool("migration_waits_for_root", &s->migration_waits_for_root);
  r.Number("chaff_rate_mbyte_s", &s->chaff_rate_mbyte_s);
  r.Unsigned("train_max_frames", &s->train_max_frames);
  r.Unsigned("flow_lanes", &s->flow_lanes);
  r.Unsigned("flow_lane_quantum_bytes", &s->flow_lane_quantum_bytes);
}

void ParseRateVariation(TableReader& r, RateVariationSection* v) {
  r.Bool("enabled", &v->enabled);
  r.Unsigned("interval_ms", &v->interval_ms);
  r.Unsigned("window", &v->window);
  r.Number("min_rate_mbyte_s", &v->min_rate_mbyte_s);
  r.Number("max_rate_mbyte_s", &v->max_rate_mbyte_s);
  r.Number("start_rate_mbyte_s", &v->start_rate_mbyte_s);
  r.Number("d", &v->d);
  r.Number("c_percent", &v->c_percent);
  r.Number("lower_cov", &v->lower_cov);
  r.Number("upper_cov", &v->upper_cov);
  r.Pair("up_range", &v->up_range);
  r.Pair("up_fast_range", &v->up_fast_range);
  r.Pair("down_range", &v->down_range);
  r.Pair("down_fast_range", &v->down_fast_range);
  r.Bool("session_spread", &v->session_spread);
  r.Unsigned("session_gap_ms", &v->session_gap_ms);
  r.Number("bursty_min_rate_mbyte_s", &v->bursty_min_rate_mbyte_s);
  r.Unsigned("bursty_window", &v->bursty_window);
  r.Number("bursty_pause_share", &v->bursty_pause_share);
  r.Number("min_pause_share", &v->min_pause_share);
  r.Unsigned("pause_mean_ms", &v->pause_mean_ms);
  r.Unsigned("pause_max_ms", &v->pause_max_ms);
  // TOML integers are signed 64-bit; a seed needs no more than 63 bits.
  r.Unsigned("seed", &v->seed);
}

// An array of CIDR strings, e.g. ["192.0.2.0/24", "203.0.113.0/25"].
void ParsePrefixList(TableReader& r, std::string_view key, std::vector<IpPrefix>* out) {
  const toml::value* v = r.Take(key);
  if (v == nullptr) return;
  if (!v->is_array()) {
    return r.TypeError(key, *v, "an array of prefixes, e.g. [\"192.0.2.0/24\"]");
  }
  const std::string path = r.KeyPath(key);
  const auto& array = v->as_array();
  std::vector<IpPrefix> prefixes;
  for (size_t i = 0; i < array.size(); ++i) {
    const std::string element = absl::StrCat(path, "[", i, "]");
    r.diag()->SetLine(element, array[i].location().line());
    if (!array[i].is_string()) {
      return r.diag()->Error(element, absl::StrCat("expected a prefix string such as "
                                                   "\"192.0.2.0/24\", got ",
                                                   Av(TypeName(array[i]))));
    }
    absl::StatusOr<IpPrefix> prefix = ParseIpPrefix(array[i].as_string().str);
    if (!prefix.ok()) return r.diag()->Error(element, prefix.status().message());
    prefixes.push_back(*prefix);
  }
  *out = std::move(prefixes);
}

void ParseMac(TableReader& r, std::string_view key, MacAddress* out) {
  std::string text;
  if (!r.String(key, &text)) return;
  absl::StatusOr<MacAddress> mac = ParseMacAddress(text);
  if (!mac.ok()) return r.diag()->Error(r.KeyPath(key), mac.status().message());
  *out = *mac;
}

// The key file: an absolute path to a regular file that only its owner may
// read or write (as ssh insists for private keys), holding the 64 hex digits
// (`openssl rand -hex 32 > FILE`; surrounding whitespace is ignored).
// Messages never quote the file's contents.
absl::StatusOr<ChaffKey> ReadChaffKeyFile(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "must be an absolute path (the dataplane's working directory is not the config's), got ",
        Quoted(path)));
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, ": not a file"));
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return absl::PermissionDeniedError(absl::StrCat(
        path, ": group or others may access it (mode ", mode, "); `chmod 600 ", path, "`"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  // 64 hex digits and a newline; anything much longer is not a key file.
  std::string text(256, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  const absl::string_view digits = absl::StripAsciiWhitespace(text);
  absl::StatusOr<ChaffKey> key = ParseChaffKeyHex(std::string_view(digits.data(), digits.size()));
  std::fill(text.begin(), text.end(), '\0');
  if (!key.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", key.status().message()));
  return key;
}

void ParseChaff(TableReader& r, ChaffSection* c) {
  std::string hex;
  std::string file;
  const bool has_key = r.String("key", &hex);
  const bool has_file = r.String("key_file", &file);
  if (has_key && has_file) {
    r.diag()->Error(r.KeyPath("key_file"), "give either key or key_file, not both");
  } else if (has_key) {
    absl::StatusOr<ChaffKey> key = ParseChaffKeyHex(hex);
    std::fill(hex.begin(), hex.end(), '\0');
    if (key.ok()) {
      c->key = *key;
    } else {
      r.diag()->Error(r.KeyPath("key"), key.status().message());
    }
  } else if (has_file) {
    c->key_file = file;
    absl::StatusOr<ChaffKey> key = ReadChaffKeyFile(file);
    if (key.ok()) {
      c->key = *key;
    } else {
      r.diag()->Error(r.KeyPath("key_file"), key.status().message());
    }
  }
  r.Enum<ChaffPolicyKind>("policy",
                          {{"off", ChaffPolicyKind::kOff},
                           {"constant", ChaffPolicyKind::kConstant},
                           {"fill_to_envelope", ChaffPolicyKind::kFillToEnvelope},
                           {"low_load", ChaffPolicyKind::kLowLoad}},
                          &c->policy);
  r.Number("constant_rate_mbyte_s", &c->constant_rate_mbyte_s);
  r.Number("envelope_rate_multiple", &c->envelope_rate_multiple);
  r.Number("envelope_mbyte_s", &c->envelope_mbyte_s);
  r.Number("low_load_threshold_mbyte_s", &c->low_load_threshold_mbyte_s);
  r.Number("low_load_hysteresis", &c->low_load_hysteresis);
  r.Bool("low_load_fills_envelope", &c->low_load_fills_envelope);
  r.Unsigned("background_time_constant_ms", &c->background_time_constant_ms);
  ParsePrefixList(r, "local_prefixes", &c->local_prefixes);
  ParsePrefixList(r, "remote_prefixes", &c->remote_prefixes);
  ParsePorts(r, "client_ports", &c->client_ports);
  ParsePorts(r, "server_ports", &c->server_ports);
  r.Unsigned("connections", &c->connections);
  r.Enum<RotationDistribution>("rotation",
                               {{"exponential", RotationDistribution::kExponential},
                                {"uniform", RotationDistribution::kUniform},
                                {"lognormal", RotationDistribution::kLogNormal},
                                {"pareto", RotationDistribution::kPareto}},
                               &c->rotation);
  r.Unsigned("rotation_mean_ms", &c->rotation_mean_ms);
  r.Number("rotation_uniform_spread", &c->rotation_uniform_spread);
  r.Number("rotation_lognormal_sigma", &c->rotation_lognormal_sigma);
  r.Number("rotation_pareto_shape", &c->rotation_pareto_shape);
  r.Bool("respond", &c->respond);
  r.Bool("peer_responds", &c->peer_responds);
  ParseMac(r, "src_mac", &c->src_mac);
  ParseMac(r, "dst_mac", &c->dst_mac);
  r.Unsigned("mtu", &c->mtu);
  r.Unsigned("ttl", &c->ttl);
}

void ParseRoot(const toml::value& root, GatewayConfig* config, Diagnostics* diag) {
  TableReader top(&root, "", diag);
  struct Section {
    std::string_view name;
    void (*parse)(TableReader&, GatewayConfig*);
  };
  static constexpr Section kSections[] = {
      {"dataplane", [](TableReader& r, GatewayConfig* c) { ParseDataplane(r, &c->dataplane); }},
      {"flows", [](TableReader& r, GatewayConfig* c) { ParseFlows(r, &c->flows); }},
      {"features", [](TableReader& r, GatewayConfig* c) { ParseFeatures(r, &c->features); }},
      {"classify", [](TableReader& r, GatewayConfig* c) { ParseClassify(r, &c->classify); }},
      {"shaper", [](TableReader& r, GatewayConfig* c) { ParseShaper(r, &c->shaper); }},
      {"rate_variation",
       [](TableReader& r, GatewayConfig* c) { ParseRateVariation(r, &c->rate_variation); }},
      {"chaff", [](TableReader& r, GatewayConfig* c) { ParseChaff(r, &c->chaff); }},
  };
  for (const Section& section : kSections) {
    // Absent sections are parsed too (as empty), so defaults go through the
    // same code path.
    const toml::value* table = SubTable(top, section.name);
    TableReader r(table, std::string(section.name), diag);
    section.parse(r, config);
    r.Finish();
  }
  top.Finish();
}

// --- validation --------------------------------------------------------------

template <typename T>
void CheckRange(Diagnostics& d, const std::string& key, T value, T low, T high,
                std::string_view unit = "") {
  if (value < low || value > high) {
    d.Error(key, absl::StrCat("must be between ", low, " and ", high, Av(unit), ", got ", value));
  }
}

// low < value <= high (an open lower bound: rates and similar must be > 0).
void CheckPositive(Diagnostics& d, const std::string& key, double value, double high,
                   std::string_view unit = "") {
  if (!(std::isfinite(value) && value > 0.0 && value <= high)) {
    d.Error(key, absl::StrCat("must be > 0 and <= ", FormatNumber(high), Av(unit), ", got ",
                              FormatNumber(value)));
  }
}

void CheckClosed(Diagnostics& d, const std::string& key, double value, double low, double high) {
  if (!(std::isfinite(value) && value >= low && value <= high)) {
    d.Error(key, absl::StrCat("must be between ", FormatNumber(low), " and ", FormatNumber(high),
                              ", got ", FormatNumber(value)));
  }
}

bool IsPowerOfTwo(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

// The most a link can carry that we accept: 100 000 MB/s = 800 Gbit/s.
constexpr double kMaxRateMbps = 100'000.0;

void ValidateDataplane(const GatewayConfig& c, Diagnostics& d) {
  const DataplaneSection& dp = c.dataplane;
  CheckRange<uint32_t>(d, "dataplane.rx_queues", dp.rx_queues, 1, 128);
  // One shaper holds the migration class's rate; splitting it over RSS
  // workers would need them to share a bucket (a migration is one TCP flow,
  // so it would land on one worker anyway). Tap mode scales with queues.
  if (dp.mode == DataplaneMode::kGateway && dp.rx_queues > 1) {
    d.Error("dataplane.rx_queues",
            absl::StrCat("must be 1 in gateway mode (one worker owns the shaper; use more queues "
                         "in tap mode), got ",
                         dp.rx_queues));
  }
  // Powers of two satisfy every PMD's alignment rule (ixgbe: multiple of 8,
  // i40e: 32, mlx5 rounds up to a power of two), so the port never fails to
  // start over a ring size.
  for (const auto& [key, value] : {std::pair{"dataplane.rx_descriptors", dp.rx_descriptors},
                                   std::pair{"dataplane.tx_descriptors", dp.tx_descriptors}}) {
    if (value < 64 || value > 32768 || !IsPowerOfTwo(value)) {
      d.Error(key, absl::StrCat("must be a power of two between 64 and 32768, got ", value));
    }
  }
  // Vector rx paths return nothing for bursts smaller than 4 (their unroll
  // width), which would look like a dead link.
  CheckRange<uint32_t>(d, "dataplane.burst_size", dp.burst_size, 4, 512);
  if (dp.burst_size > dp.rx_descriptors) {
    d.Error("dataplane.burst_size", absl::StrCat("must not exceed dataplane.rx_descriptors (",
                                                 dp.rx_descriptors, "), got ", dp.burst_size));
  }
  // Every rx descriptor holds an mbuf from the start, tx rings and the shaper
  // queues hold more while traffic flows; a pool smaller than that stalls rx
  // as soon as the queues fill.
  const uint64_t ports = dp.mode == DataplaneMode::kGateway ? 2 : 1;
  const uint64_t rings =
      ports * dp.rx_queues * (static_cast<uint64_t>(dp.rx_descriptors) + dp.tx_descriptors);
  const uint64_t queues =
      dp.mode == DataplaneMode::kGateway ? 2ull * dp.rx_queues * c.shaper.queue_packets : 0;
  if (dp.mempool_mbufs > (1u << 26)) {
    d.Error("dataplane.mempool_mbufs",
            absl::StrCat("must be at most ", 1u << 26, ", got ", dp.mempool_mbufs));
  } else if (dp.mempool_mbufs < rings + queues) {
    d.Error("dataplane.mempool_mbufs",
            absl::StrCat("must be at least ", rings + queues, " (", ports, " port(s) x ",
                         dp.rx_queues, " queue(s) x (rx_descriptors + tx_descriptors) = ", rings,
                         queues > 0 ? absl::StrCat(", plus 2 shaper queues x shaper.queue_packets "
                                                   "per queue = ",
                                                   queues)
                                    : "",
                         "), got ", dp.mempool_mbufs));
  }
}

void ValidateFlows(const GatewayConfig& c, Diagnostics& d) {
  CheckRange<uint32_t>(d, "flows.max_flows", c.flows.max_flows, 16, 1u << 26);
  CheckRange<uint32_t>(d, "flows.idle_timeout_ms", c.flows.idle_timeout_ms, 1, 86'400'000);
}

void ValidateFeatures(const GatewayConfig& c, Diagnostics& d) {
  const size_t errors_before = d.count();
  const FeatureConfig& f = c.features;
  if (f.burst_gap_ns == 0 || f.burst_gap_ns > 60'000'000'000ull) {
    d.Error("features.burst_gap_ms",
            absl::StrCat("must be in (0, 60000] ms, got ", FormatNumber(f.burst_gap_ns / 1e6)));
  }
  CheckRange<uint32_t>(d, "features.pattern_window", f.pattern_window, 2, 10'000'000);
  if (!(std::isfinite(f.pattern_delta) && f.pattern_delta > 0.0 && f.pattern_delta < 10.0)) {
    d.Error("features.pattern_delta",
            absl::StrCat("must be in (0, 10), got ", FormatNumber(f.pattern_delta)));
  }
  CheckRange<uint32_t>(d, "features.pattern_count_threshold", f.pattern_count_threshold, 0,
                       10'000'000);
  bool windows_ok = f.byte_window_count >= 1 && f.byte_window_count <= kMaxByteWindows;
  for (size_t i = 0; windows_ok && i < f.byte_window_count; ++i) {
    if (f.byte_windows[i] == 0 || (i > 0 && f.byte_windows[i] <= f.byte_windows[i - 1])) {
      windows_ok = false;
    }
  }
  if (!windows_ok) {
    d.Error("features.byte_windows",
            absl::StrCat("must be 1 to ", kMaxByteWindows,
                         " positive window sizes in strictly ascending order, got [",
                         f.WindowsToString(), "]"));
  }
  if (d.count() > errors_before) return;
  // Anything FeatureConfig checks that the keys above do not cover.
  if (absl::Status s = f.Validate(); !s.ok()) d.Error("features", s.message());
}

void ValidateClassify(const GatewayConfig& c, Diagnostics& d) {
  const ClassifySection& cl = c.classify;
  // The per-flow counter is 8 bits (FlowClass::payloads_scanned).
  CheckRange<uint32_t>(d, "classify.signature_scan_packets", cl.limits.packets, 0, 255);
  CheckRange<uint32_t>(d, "classify.signature_scan_bytes", cl.limits.bytes, 1, 65535);
  std::map<std::string, size_t> names;
  for (size_t i = 0; i < cl.rules.size(); ++i) {
    const ClassRule& rule = cl.rules[i];
    std::string path = absl::StrCat("classify.rule[", i, "]");
    if (rule.name.empty()) {
      d.Error(path + ".name", "must not be empty");
    } else if (auto [it, inserted] = names.emplace(rule.name, i); !inserted) {
      d.Error(path + ".name", absl::StrCat("duplicate rule name ", Quoted(rule.name),
                                           " (also classify.rule[", it->second, "])"));
    }
    if (std::optional<RuleProblem> p = CheckClassRule(rule); p.has_value()) {
      d.Error(absl::StrCat(path, ".", p->field), p->message);
    }
  }
  names.clear();
  for (size_t i = 0; i < cl.signatures.size(); ++i) {
    const SignatureSpec& sig = cl.signatures[i];
    std::string path = absl::StrCat("classify.signature[", i, "]");
    if (sig.name.empty()) {
      d.Error(path + ".name", "must not be empty");
    } else if (auto [it, inserted] = names.emplace(sig.name, i); !inserted) {
      d.Error(path + ".name", absl::StrCat("duplicate signature name ", Quoted(sig.name),
                                           " (also classify.signature[", it->second, "])"));
    }
    // Each pattern is checked on its own here, so the error names its key;
    // the dataplane compiles them all into one database at start.
    absl::StatusOr<SignaturePatternInfo> info = InspectSignaturePattern(sig.pattern);
    if (!info.ok()) {
      d.Error(path + ".pattern",
              absl::StrCat("signature ", Quoted(sig.name), ": ", info.status().message()));
    } else if (info->min_length > cl.limits.bytes) {
      d.Error(path + ".pattern",
              absl::StrCat("signature ", Quoted(sig.name), " needs at least ", info->min_length,
                           " payload bytes to match, but classify.signature_scan_bytes is ",
                           cl.limits.bytes, ", so it could never match"));
    }
  }
  if (cl.builtin_signatures) {
    for (const SignatureSpec& builtin : BuiltinSignatures()) {
      if (names.count(builtin.name) > 0) continue;  // replaced by a config signature
      absl::StatusOr<SignaturePatternInfo> info = InspectSignaturePattern(builtin.pattern);
      if (info.ok() && info->min_length > cl.limits.bytes) {
        d.Error("classify.signature_scan_bytes",
                absl::StrCat("the built-in signature ", Quoted(builtin.name), " needs ",
                             info->min_length, " bytes, got ", cl.limits.bytes,
                             " (or set classify.builtin_signatures = false)"));
      }
    }
  }
}

void ValidateShaper(const GatewayConfig& c, Diagnostics& d) {
  const ShaperSection& s = c.shaper;
  CheckPositive(d, "shaper.link_rate_mbyte_s", s.link_rate_mbyte_s, kMaxRateMbps, " MB/s");
  CheckRange<uint32_t>(d, "shaper.migration_queue_ms", s.migration_queue_ms, 1, 10'000);
  CheckRange<uint32_t>(d, "shaper.chaff_queue_ms", s.chaff_queue_ms, 1, 10'000);
  CheckRange<uint32_t>(d, "shaper.queue_packets", s.queue_packets, 1, 1u << 20);
  CheckRange<uint32_t>(d, "shaper.train_max_frames", s.train_max_frames, 1, 1024);
  CheckRange<uint32_t>(d, "shaper.flow_lanes", s.flow_lanes, 1, LaneQueue::kMaxLanes);
  // A turn must fit the largest frame the shaper takes.
  CheckRange<uint32_t>(d, "shaper.flow_lane_quantum_bytes", s.flow_lane_quantum_bytes,
                       ShaperConfig{}.max_frame_bytes, 16u << 20);
  if (s.flow_lanes >= 1 && s.flow_lanes <= LaneQueue::kMaxLanes &&
      static_cast<uint64_t>(s.flow_lanes) * s.queue_packets > (1u << 20)) {
    d.Error("shaper.flow_lanes",
            absl::StrCat(s.flow_lanes, " lanes x shaper.queue_packets ", s.queue_packets,
                         " is more than ", 1u << 20,
                         " queue slots (each lane can hold the whole queue); lower either"));
  }
  if (!(std::isfinite(s.chaff_rate_mbyte_s) && s.chaff_rate_mbyte_s >= 0.0)) {
    d.Error("shaper.chaff_rate_mbyte_s", absl::StrCat("must be >= 0 MB/s (0 = no chaff), got ",
                                                   FormatNumber(s.chaff_rate_mbyte_s)));
  } else if (std::isfinite(s.link_rate_mbyte_s) && s.chaff_rate_mbyte_s > s.link_rate_mbyte_s) {
    d.Error("shaper.chaff_rate_mbyte_s",
            absl::StrCat("must not exceed shaper.link_rate_mbyte_s (", FormatNumber(s.link_rate_mbyte_s),
                         "), got ", FormatNumber(s.chaff_rate_mbyte_s)));
  }
}

void ValidateRateVariation(const GatewayConfig& c, Diagnostics& d) {
  const size_t errors_before = d.count();
  const RateVariationSection& v = c.rate_variation;
  CheckRange<uint32_t>(d, "rate_variation.interval_ms", v.interval_ms, 1, 60'000);
  // The CoV of fewer than two rates is meaningless; the window is a ring
  // buffer on the fast path, so it is bounded.
  CheckRange<uint32_t>(d, "rate_variation.window", v.window, 2, 65'536);
  CheckPositive(d, "rate_variation.min_rate_mbyte_s", v.min_rate_mbyte_s, kMaxRateMbps, " MB/s");
  CheckPositive(d, "rate_variation.max_rate_mbyte_s", v.max_rate_mbyte_s, kMaxRateMbps, " MB/s");
  CheckPositive(d, "rate_variation.start_rate_mbyte_s", v.start_rate_mbyte_s, kMaxRateMbps, " MB/s");
  CheckClosed(d, "rate_variation.d", v.d, 0.0, 10.0);
  CheckClosed(d, "rate_variation.c_percent", v.c_percent, 0.0, 100.0);
  CheckClosed(d, "rate_variation.lower_cov", v.lower_cov, 0.0, 10.0);
  CheckClosed(d, "rate_variation.upper_cov", v.upper_cov, 0.0, 10.0);
  // A gap shorter than a frame's time at minR would end a session inside
  // one migration; an hour is surely a unit mistake.
  CheckRange<uint32_t>(d, "rate_variation.session_gap_ms", v.session_gap_ms, 1, 3'600'000);
  CheckPositive(d, "rate_variation.bursty_min_rate_mbyte_s", v.bursty_min_rate_mbyte_s,
                kMaxRateMbps, " MB/s");
  CheckRange<uint32_t>(d, "rate_variation.bursty_window", v.bursty_window, 2, 65'536);
  CheckClosed(d, "rate_variation.bursty_pause_share", v.bursty_pause_share, 0.0, 0.9);
  CheckClosed(d, "rate_variation.min_pause_share", v.min_pause_share, 0.0, 0.9);
  CheckRange<uint32_t>(d, "rate_variation.pause_mean_ms", v.pause_mean_ms, 1, 10'000);
  CheckRange<uint32_t>(d, "rate_variation.pause_max_ms", v.pause_max_ms, 1, 10'000);
  for (const auto& [key, range] :
       {std::pair{"rate_variation.up_range", v.up_range},
        std::pair{"rate_variation.up_fast_range", v.up_fast_range},
        std::pair{"rate_variation.down_range", v.down_range},
        std::pair{"rate_variation.down_fast_range", v.down_fast_range}}) {
    // Factors multiply the rate: 0 would pin it at minR, and a factor above
    // 100 per 10 ms is surely a unit mistake.
    if (!(std::isfinite(range[0]) && std::isfinite(range[1]) && range[0] > 0.0 &&
          range[0] <= range[1] && range[1] <= 100.0)) {
      d.Error(key, absl::StrCat("must be [low, high] with 0 < low <= high <= 100, got [",
                                FormatNumber(range[0]), ", ", FormatNumber(range[1]), "]"));
    }
  }
  // The cross-checks below assume each value is sane on its own.
  if (d.count() > errors_before) return;
  if (v.min_rate_mbyte_s > v.max_rate_mbyte_s) {
    d.Error("rate_variation.min_rate_mbyte_s",
            absl::StrCat("must be <= rate_variation.max_rate_mbyte_s (", FormatNumber(v.max_rate_mbyte_s),
                         "), got ", FormatNumber(v.min_rate_mbyte_s)));
  }
  if (v.start_rate_mbyte_s < v.min_rate_mbyte_s || v.start_rate_mbyte_s > v.max_rate_mbyte_s) {
    d.Error("rate_variation.start_rate_mbyte_s",
            absl::StrCat("must be within [min_rate_mbyte_s, max_rate_mbyte_s] = [",
                         FormatNumber(v.min_rate_mbyte_s), ", ", FormatNumber(v.max_rate_mbyte_s),
                         "], got ", FormatNumber(v.start_rate_mbyte_s)));
  }
  if (v.min_pause_share > v.bursty_pause_share) {
    d.Error("rate_variation.min_pause_share",
            absl::StrCat("must be <= rate_variation.bursty_pause_share (",
                         FormatNumber(v.bursty_pause_share), "), got ", FormatNumber(v.min_pause_share)));
  }
  if (v.pause_max_ms < v.pause_mean_ms) {
    d.Error("rate_variation.pause_max_ms",
            absl::StrCat("must be >= rate_variation.pause_mean_ms (", v.pause_mean_ms, "), got ",
                         v.pause_max_ms));
  }
  if (v.session_spread && v.bursty_min_rate_mbyte_s > v.start_rate_mbyte_s) {
    d.Error("rate_variation.bursty_min_rate_mbyte_s",
            absl::StrCat("must be <= rate_variation.start_rate_mbyte_s (",
                         FormatNumber(v.start_rate_mbyte_s), "), got ",
                         FormatNumber(v.bursty_min_rate_mbyte_s)));
  }
  if (v.lower_cov >= v.upper_cov) {
    d.Error("rate_variation.lower_cov",
            absl::StrCat("must be < rate_variation.upper_cov (", FormatNumber(v.upper_cov),
                         "), got ", FormatNumber(v.lower_cov)));
  }
  const double link = c.shaper.link_rate_mbyte_s;
  if (std::isfinite(link) && link > 0.0 && v.max_rate_mbyte_s > link) {
    d.Error("rate_variation.max_rate_mbyte_s",
            absl::StrCat("must not exceed shaper.link_rate_mbyte_s (",
                         FormatNumber(c.shaper.link_rate_mbyte_s), " MB/s), got ",
                         FormatNumber(v.max_rate_mbyte_s),
                         " (rates are MB/s = 10^6 bytes/s, not "
                         "megabits)"));
  }
  // The core's own checks, so the two can never disagree on what is valid.
  if (d.count() > errors_before) return;
  if (absl::Status core = ToRateVariationConfig(v).Validate(); !core.ok()) {
    d.Error("rate_variation", core.message());
  }
}

void ValidateChaff(const GatewayConfig& c, Diagnostics& d) {
  const size_t errors_before = d.count();
  const ChaffSection& ch = c.chaff;
  const std::string policy(ChaffPolicyKindName(ch.policy));
  if (ch.policy != ChaffPolicyKind::kOff && !ch.enabled()) {
    d.Error("chaff.policy", absl::StrCat(Quoted(policy), " needs the pair's key: set chaff.key "
                                         "or chaff.key_file (the same on both gateways)"));
  }
  if (ch.policy != ChaffPolicyKind::kOff && c.shaper.chaff_rate_mbyte_s != 0.0) {
    d.Error("shaper.chaff_rate_mbyte_s",
            absl::StrCat("must be 0 with chaff.policy = ", Quoted(policy),
                         ": the policy sets the chaff class's rate every interval, got ",
                         FormatNumber(c.shaper.chaff_rate_mbyte_s)));
  }
  CheckPositive(d, "chaff.constant_rate_mbyte_s", ch.constant_rate_mbyte_s, kMaxRateMbps, " MB/s");
  CheckPositive(d, "chaff.envelope_mbyte_s", ch.envelope_mbyte_s, kMaxRateMbps, " MB/s");
  if (!(ch.envelope_rate_multiple == 0.0 ||
        (ch.envelope_rate_multiple >= 1.0 && ch.envelope_rate_multiple <= 100.0))) {
    d.Error("chaff.envelope_rate_multiple",
            absl::StrCat("must be 0 (a constant envelope of chaff.envelope_mbyte_s) or between 1 "
                         "and 100 (times Algorithm 3's rate), got ",
                         FormatNumber(ch.envelope_rate_multiple)));
  }
  CheckPositive(d, "chaff.low_load_threshold_mbyte_s", ch.low_load_threshold_mbyte_s,
                kMaxRateMbps, " MB/s");
  if (!(ch.low_load_hysteresis >= 0.0 && ch.low_load_hysteresis < 1.0)) {
    d.Error("chaff.low_load_hysteresis",
            absl::StrCat("must be in [0, 1), got ", FormatNumber(ch.low_load_hysteresis)));
  }
  CheckRange<uint32_t>(d, "chaff.background_time_constant_ms", ch.background_time_constant_ms, 0,
                       3'600'000);
  // The pools' own checks (IPv4, disjoint sides, disjoint port ranges); the
  // core names its fields "pools.<key>", which are our keys under [chaff].
  ChaffPoolConfig pools;
  pools.local_prefixes = ch.local_prefixes;
  pools.remote_prefixes = ch.remote_prefixes;
  pools.client_ports = ch.client_ports;
  pools.server_ports = ch.server_ports;
  if (absl::Status s = pools.Validate(); !s.ok()) {
    const std::pair<std::string, std::string> field_problem =
        absl::StrSplit(s.message(), absl::MaxSplits(": ", 1));
    std::string field = field_problem.first;
    if (absl::StartsWith(field, "pools.")) field.erase(0, 6);
    // Errors about a list element go to the element's line when known.
    const std::string key = absl::StrCat("chaff.", field);
    std::string problem = field_problem.second.empty() ? std::string(s.message())
                                                       : field_problem.second;
    problem = absl::StrReplaceAll(problem, {{"pools.", "chaff."}});
    d.Error(key, problem);
  }
  CheckRange<uint32_t>(d, "chaff.connections", ch.connections, 1, kMaxChaffConnections);
  CheckRange<uint32_t>(d, "chaff.rotation_mean_ms", ch.rotation_mean_ms, 1,
                       std::numeric_limits<uint32_t>::max(), " ms");
  if (!(ch.rotation_uniform_spread > 0.0 && ch.rotation_uniform_spread <= 1.0)) {
    d.Error("chaff.rotation_uniform_spread",
            absl::StrCat("must be in (0, 1], got ", FormatNumber(ch.rotation_uniform_spread)));
  }
  if (!(ch.rotation_lognormal_sigma > 0.0 && ch.rotation_lognormal_sigma <= 5.0)) {
    d.Error("chaff.rotation_lognormal_sigma",
            absl::StrCat("must be in (0, 5], got ", FormatNumber(ch.rotation_lognormal_sigma)));
  }
  if (!(ch.rotation_pareto_shape > 1.0 && ch.rotation_pareto_shape <= 100.0)) {
    d.Error("chaff.rotation_pareto_shape",
            absl::StrCat("must be in (1, 100] (the mean is infinite at 1), got ",
                         FormatNumber(ch.rotation_pareto_shape)));
  }
  // A chaff frame is written into one mbuf of 2 KiB data room.
  CheckRange<uint32_t>(d, "chaff.mtu", ch.mtu, 576, 1500);
  CheckRange<uint32_t>(d, "chaff.ttl", ch.ttl, 1, 255);
  if (d.count() > errors_before) return;
  // Whatever else the core checks, so the two never disagree.
  if (absl::Status s = ToChaffConfig(c).Validate(); !s.ok()) d.Error("chaff", s.message());
}

}  // namespace

absl::StatusOr<MacAddress> ParseMacAddress(std::string_view text) {
  const std::vector<std::string> parts =
      absl::StrSplit(Av(text), absl::ByAnyChar(":-"));
  MacAddress mac{};
  bool ok = parts.size() == mac.size();
  for (size_t i = 0; ok && i < parts.size(); ++i) {
    ok = parts[i].size() == 2 && absl::ascii_isxdigit(parts[i][0]) &&
         absl::ascii_isxdigit(parts[i][1]);
    if (ok) mac[i] = static_cast<uint8_t>(std::stoul(parts[i], nullptr, 16));
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected a MAC address such as \"02:00:5e:10:00:01\", got ", Quoted(text)));
  }
  if ((mac[0] & 1) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Quoted(text), " is a multicast/broadcast address; give a unicast MAC"));
  }
  return mac;
}

uint64_t ChaffTopRateBytesPerSec(const GatewayConfig& config) {
  const ChaffSection& ch = config.chaff;
  const RateVariationSection& v = config.rate_variation;
  // The highest migration rate r Algorithm 3 can set; chaff borrows up to it.
  const double top_r = (v.enabled ? v.max_rate_mbyte_s : v.start_rate_mbyte_s) * 1e6;
  const double envelope = ch.envelope_rate_multiple > 0.0 ? ch.envelope_rate_multiple * top_r
                                                          : ch.envelope_mbyte_s * 1e6;
  const double constant = ch.constant_rate_mbyte_s * 1e6 + top_r;
  double top = 0.0;
  switch (ch.policy) {
    case ChaffPolicyKind::kOff: return 0;
    case ChaffPolicyKind::kConstant: top = constant; break;
    case ChaffPolicyKind::kFillToEnvelope: top = std::max(envelope, top_r); break;
    case ChaffPolicyKind::kLowLoad:
      top = ch.low_load_fills_envelope ? std::max(envelope, top_r) : constant;
      break;
  }
  if (!(top < static_cast<double>(kMaxRateBytesPerSec))) return kMaxRateBytesPerSec;
  return static_cast<uint64_t>(std::llround(top));
}

ChaffConfig ToChaffConfig(const GatewayConfig& config) {
  const ChaffSection& ch = config.chaff;
  auto bytes_per_sec = [](double mbyte_s) {
    if (!(mbyte_s * 1e6 < static_cast<double>(kMaxRateBytesPerSec))) return kMaxRateBytesPerSec;
    return static_cast<uint64_t>(std::llround(mbyte_s * 1e6));
  };
  ChaffConfig c;
  c.policy.kind = ch.policy;
  c.policy.constant_rate_bytes_per_sec = bytes_per_sec(ch.constant_rate_mbyte_s);
  c.policy.envelope_rate_multiple = ch.envelope_rate_multiple;
  c.policy.envelope_bytes_per_sec = bytes_per_sec(ch.envelope_mbyte_s);
  // ToShaperConfig always lets chaff borrow migration's unused tokens.
  c.policy.chaff_borrows_from_migration = true;
  c.policy.low_load_threshold_bytes_per_sec = bytes_per_sec(ch.low_load_threshold_mbyte_s);
  c.policy.low_load_hysteresis = ch.low_load_hysteresis;
  c.policy.low_load_fills_envelope = ch.low_load_fills_envelope;
  c.policy.background_time_constant_ns = uint64_t{ch.background_time_constant_ms} * 1'000'000;
  c.pools.local_prefixes = ch.local_prefixes;
  c.pools.remote_prefixes = ch.remote_prefixes;
  c.pools.client_ports = ch.client_ports;
  c.pools.server_ports = ch.server_ports;
  c.rotation.distribution = ch.rotation;
  c.rotation.mean_ns = uint64_t{ch.rotation_mean_ms} * 1'000'000;
  c.rotation.uniform_spread = ch.rotation_uniform_spread;
  c.rotation.lognormal_sigma = ch.rotation_lognormal_sigma;
  c.rotation.pareto_shape = ch.rotation_pareto_shape;
  c.tcp.src_mac = ch.src_mac;
  c.tcp.dst_mac = ch.dst_mac;
  c.tcp.mtu = static_cast<uint16_t>(std::min<uint32_t>(ch.mtu, 0xFFFF));
  c.tcp.ttl = static_cast<uint8_t>(std::min<uint32_t>(ch.ttl, 255));
  c.tcp.wait_for_syn_ack = ch.peer_responds;
  c.respond = ch.respond;
  return c;
}

RateVariationConfig ToRateVariationConfig(const RateVariationSection& v) {
  RateVariationConfig config;
  config.min_rate = v.min_rate_mbyte_s * 1e6;
  config.max_rate = v.max_rate_mbyte_s * 1e6;
  config.start_rate = v.start_rate_mbyte_s * 1e6;
  config.interval_ns = uint64_t{v.interval_ms} * 1'000'000;
  config.window = v.window;
  config.d = v.d;
  config.c_percent = v.c_percent;
  config.lower_cov = v.lower_cov;
  config.upper_cov = v.upper_cov;
  const std::array<std::array<double, 2>, 4> ranges = {v.up_range, v.up_fast_range, v.down_range,
                                                       v.down_fast_range};
  for (size_t i = 0; i < ranges.size(); ++i) config.ranges[i] = {ranges[i][0], ranges[i][1]};
  config.session_spread = v.session_spread;
  config.session_gap_ns = uint64_t{v.session_gap_ms} * 1'000'000;
  config.bursty_min_rate = v.bursty_min_rate_mbyte_s * 1e6;
  config.bursty_window = v.bursty_window;
  config.bursty_pause_share = v.bursty_pause_share;
  config.min_pause_share = v.min_pause_share;
  config.pause_mean_ns = uint64_t{v.pause_mean_ms} * 1'000'000;
  config.pause_max_ns = uint64_t{v.pause_max_ms} * 1'000'000;
  return config;
}

ShaperConfig ToShaperConfig(const GatewayConfig& config) {
  const ShaperSection& s = config.shaper;
  const RateVariationSection& v = config.rate_variation;
  auto bytes_per_sec = [](double mbyte_s) {
    return static_cast<uint64_t>(std::llround(mbyte_s * 1e6));
  };
  ShaperConfig shaper;
  shaper.link_rate_bytes_per_sec = bytes_per_sec(s.link_rate_mbyte_s);
  const uint64_t start = bytes_per_sec(v.start_rate_mbyte_s);
  const uint64_t migration_ceil = v.enabled ? bytes_per_sec(v.max_rate_mbyte_s) : start;
  shaper.migration.rate_bytes_per_sec = start;
  shaper.migration.ceil_bytes_per_sec = migration_ceil;
  shaper.migration.queue_depth_ms = s.migration_queue_ms;
  shaper.migration.queue_packets = s.queue_packets;
  shaper.migration.train_max_frames = s.train_max_frames;
  shaper.migration.flow_lanes = s.flow_lanes;
  shaper.migration.lane_quantum_bytes = s.flow_lane_quantum_bytes;
  shaper.migration.waits_for_root = s.migration_waits_for_root;
  const uint64_t chaff_rate = bytes_per_sec(s.chaff_rate_mbyte_s);
  shaper.chaff.rate_bytes_per_sec = chaff_rate;
  shaper.chaff.ceil_bytes_per_sec =
      std::max({chaff_rate, migration_ceil, ChaffTopRateBytesPerSec(config)});
  shaper.chaff.queue_depth_ms = s.chaff_queue_ms;
  shaper.chaff.queue_packets = s.queue_packets;
  shaper.chaff.train_max_frames = s.train_max_frames;
  shaper.chaff_borrows_from_migration = true;
  shaper.migration_borrows_from_chaff = s.migration_borrows_chaff;
  return shaper;
}

namespace {

void ValidateInto(const GatewayConfig& config, Diagnostics& d) {
  ValidateDataplane(config, d);
  ValidateFlows(config, d);
  ValidateFeatures(config, d);
  ValidateClassify(config, d);
  const size_t before_shaping = d.count();
  ValidateShaper(config, d);
  ValidateRateVariation(config, d);
  ValidateChaff(config, d);
  // The shaper's own checks on the hierarchy these sections build (a queue
  // too short for one frame, say), once each value is sane on its own.
  if (d.count() == before_shaping) {
    if (absl::Status s = ToShaperConfig(config).Validate(); !s.ok()) {
      d.Error("shaper", absl::StrCat(s.message(), " (from the [shaper] and [rate_variation] "
                                     "settings; see ToShaperConfig in gateway_config.h)"));
    }
  }
}

// toml11's messages start with "[error] toml::function_name: "; the function
// name means nothing to an operator. The rest (a snippet of the offending
// line with a caret) is kept.
std::string CleanTomlMessage(std::string message) {
  constexpr std::string_view kError = "[error] ";
  if (message.starts_with(kError)) message.erase(0, kError.size());
  if (message.starts_with("toml::")) {
    size_t colon = message.find(": ");
    size_t newline = message.find('\n');
    if (colon != std::string::npos && colon < newline) message.erase(0, colon + 2);
  }
  return message;
}

}  // namespace

namespace {

// toml11 parses nested arrays and inline tables by recursion, so a few
// thousand '[' in a row overflow the stack and kill the process (a reload
// would kill a running gateway). A config needs a handful of levels; count
// them outside strings and comments before toml11 sees the text.
constexpr int kMaxConfigNesting = 32;
// A config is a few KB; a megabyte is a wrong file.
constexpr size_t kMaxConfigBytes = size_t{1} << 20;

absl::Status CheckNestingDepth(std::string_view text, const std::string& name) {
  int depth = 0;
  int line = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') {
      ++line;
    } else if (c == '#') {
      while (i + 1 < text.size() && text[i + 1] != '\n') ++i;
    } else if (c == '"' || c == '\'') {
      // Basic ("...", with \ escapes) or literal ('...') strings, single- or
      // triple-quoted (multi-line); an unterminated one is toml11's to report.
      const bool triple = text.substr(i, 3) == std::string_view(c == '"' ? "\"\"\"" : "'''");
      const std::string_view close = triple ? text.substr(i, 3) : text.substr(i, 1);
      for (i += close.size(); i < text.size(); ++i) {
        if (c == '"' && text[i] == '\\') {
          ++i;
          if (i < text.size() && text[i] == '\n') ++line;
          continue;
        }
        if (text[i] == '\n') {
          ++line;
          if (!triple) break;
        }
        if (text.substr(i, close.size()) == close) {
          i += close.size() - 1;
          break;
        }
      }
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxConfigNesting) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, ":", line, ": invalid TOML: arrays or inline tables nested deeper than ",
            kMaxConfigNesting, " levels"));
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateGatewayConfig(const GatewayConfig& config) {
  Diagnostics d("");
  ValidateInto(config, d);
  return d.ToStatus();
}

absl::StatusOr<GatewayConfig> ParseGatewayConfig(std::string_view text, std::string_view origin) {
  std::string name(origin);
  if (absl::Status depth = CheckNestingDepth(text, name); !depth.ok()) return depth;
  toml::value root;
  try {
    std::istringstream in{std::string(text)};
    root = toml::parse(in, name);
  } catch (const toml::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ":", e.location().line(),
                                                   ": invalid TOML: ", CleanTomlMessage(e.what())));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": invalid TOML: ", e.what()));
  }
  Diagnostics diag(name);
  GatewayConfig config;
  try {
    ParseRoot(root, &config, &diag);
  } catch (const std::exception& e) {
    // The readers check every type before converting, so toml11 should never
    // throw here; if it does, report rather than crash the dataplane.
    return absl::InternalError(absl::StrCat(name, ": reading the config failed: ", e.what()));
  }
  // Validation runs even after reading errors, so one pass shows every
  // problem: a key that failed to read keeps its (valid) default and adds no
  // error of its own.
  ValidateInto(config, diag);
  if (!diag.ok()) return diag.ToStatus();
  return config;
}

absl::StatusOr<GatewayConfig> LoadGatewayConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadTextFile(path, kMaxConfigBytes);
  if (!text.ok()) return text.status();
  // A file emptied by a failed edit or a `>` redirect would otherwise run the
  // gateway on defaults (no classify rules, no shaping); a config that means
  // "all defaults" says so with at least a comment.
  if (absl::StripAsciiWhitespace(*text).empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the config is empty (for all defaults, leave out --config or "
                           "write a comment)"));
  }
  return ParseGatewayConfig(*text, path);
}

}  // namespace shroud
