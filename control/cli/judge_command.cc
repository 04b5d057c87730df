// shroud judge: every run of scripts/evaluate judged by every detector.
#include <gflags/gflags.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "control/analysis/judge.h"
#include "control/cli/cli_common.h"
#include "control/cli/commands.h"
#include "dataplane/core/text_file.h"

DECLARE_bool(json);
DECLARE_string(migration_filter);
DECLARE_uint32(ks_window);
DECLARE_string(model);
DEFINE_string(chaff_nets, "192.0.2.128/25,198.51.100.128/25",
              "judge: flows with an address in these IPv4 networks are chaff (the gateways' "
              "pools in conf/gateway-pair-*.toml), not background");
DEFINE_string(bulk_ports, "5201-5299",
              "judge: background TCP flows on these ports are bulk transfers (the paper's FTP "
              "flows; the testbed's iperf3 users)");
DEFINE_double(timing_l2, 1e-2, "judge: L2 regularisation of the timing attacks' weights");
DEFINE_string(more_feature_windows, "",
              "judge: more maxent window triples, ';'-separated (e.g. "
              "\"100,200,300;500,1000,2000;1000,2000,3000\", the paper's others): each is judged "
              "as one more detector maxent_wA_B_C, trained like maxent (each window in --windows)");

namespace shroud::cli {
namespace {

absl::StatusOr<std::vector<JudgeRunSpec>> ReadManifest(const std::string& path) {
  absl::StatusOr<std::string> text = ReadTextFile(path);
  if (!text.ok()) return text.status();
  nlohmann::json doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("runs") || !doc["runs"].is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a JSON object {\"runs\": [{\"id\", \"mode\", \"capture\"}, ...]}"));
  }
  const std::filesystem::path base = std::filesystem::path(path).parent_path();
  std::vector<JudgeRunSpec> specs;
  for (size_t i = 0; i < doc["runs"].size(); ++i) {
    const nlohmann::json& r = doc["runs"][i];
    JudgeRunSpec s;
    for (auto [key, out] : {std::pair{"id", &s.id}, {"mode", &s.mode}, {"capture", &s.capture}}) {
      if (!r.is_object() || !r.contains(key) || !r[key].is_string() || r[key].get<std::string>().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": runs[", i, "] needs a non-empty string \"", key, "\""));
      }
      *out = r[key].get<std::string>();
    }
    if (s.mode != "native" && s.mode != "stealth") {
      return absl::InvalidArgumentError(absl::StrCat(path, ": runs[", i, "] (", s.id,
                                                     "): mode must be \"native\" or \"stealth\", got \"",
                                                     s.mode, "\""));
    }
    for (const JudgeRunSpec& earlier : specs) {
      if (earlier.id == s.id) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": runs[", i, "]: id \"", s.id, "\" appears twice"));
      }
    }
    std::filesystem::path capture(s.capture);
    if (capture.is_relative()) s.capture = (base / capture).string();
    specs.push_back(std::move(s));
  }
  if (specs.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no runs"));
  return specs;
}

absl::Status ParsePortRange(const std::string& text, FlowLabelRules* rules) {
  std::vector<std::string> parts = absl::StrSplit(text, '-');
  int lo = 0, hi = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &lo) || !absl::SimpleAtoi(parts[1], &hi) ||
      lo < 0 || hi > 65535 || lo > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("--bulk_ports: expected LO-HI within 0-65535, got '", text, "'"));
  }
  rules->bulk_port_lo = static_cast<uint16_t>(lo);
  rules->bulk_port_hi = static_cast<uint16_t>(hi);
  return absl::OkStatus();
}

// The triples only; JudgeOptionsError checks them against the windows.
absl::StatusOr<std::vector<MaxEntWindows>> MoreFeatureWindowsFromFlags() {
  std::vector<MaxEntWindows> out;
  for (absl::string_view part : absl::StrSplit(FLAGS_more_feature_windows, ';', absl::SkipWhitespace())) {
    absl::StatusOr<MaxEntWindows> triple = ParseTriple("more_feature_windows", std::string(part));
    if (!triple.ok()) return triple.status();
    out.push_back(*triple);
  }
  return out;
}

nlohmann::json VerdictJson(const std::optional<DetectorResult>& v) {
  if (!v.has_value()) return nullptr;
  return {{"flagged", v->flagged}, {"score", NumberOrNull(v->score)}, {"decided", v->decided}};
}

nlohmann::json ComparisonJson(const NamedComparison& c) {
  nlohmann::json j{{"a", c.a}, {"b", c.b}};
  if (!c.result.ok()) {
    j["error"] = std::string(c.result.status().message());
    return j;
  }
  const GroupComparison& g = *c.result;
  j["n_a"] = g.n_a;
  j["n_b"] = g.n_b;
  j["chi2"] = NumberOrNull(g.chi_square.statistic);
  j["df"] = g.chi_square.degrees_of_freedom;
  j["chi2_p"] = NumberOrNull(g.chi_square.p_value);
  j["categories_us"] = g.chi_square.categories;
  j["percent_a"] = g.chi_square.observed;
  j["percent_b"] = g.chi_square.expected;
  j["ks_window"] = g.ks_window;
  j["ks_d"] = NumberOrNull(g.ks.statistic);
  j["ks_p"] = NumberOrNull(g.ks.p_value);
  return j;
}

void PrintJson(const JudgeResult& r, const JudgeOptions& o, uint64_t min_packets) {
  const FeatureConfig& config = o.config;
  nlohmann::json doc;
  doc["tool"] = "shroud judge";
  doc["min_packets"] = min_packets;
  std::vector<uint32_t> windows(config.byte_windows.begin(),
                                config.byte_windows.begin() + config.byte_window_count);
  doc["feature_config"] = {{"windows", windows},
                           {"pwin", config.pattern_window},
                           {"delta", config.pattern_delta},
                           {"pct", config.pattern_count_threshold},
                           {"burst_gap_ms", config.burst_gap_ns / 1e6}};
  std::map<std::string, std::string> descriptions = {
      {"pattern", "Algorithm 1 (pattern matching), Pwin/delta/PCt as configured"},
      {"maxent", "Algorithm 2 (maximum entropy) trained on the other native runs"},
      {"maxent_shipped", "Algorithm 2 with the shipped (or --model) model, as the live tap"},
      {"timing", "ours: logistic model on richer timing features, trained on the other native runs"},
      {"timing_adaptive",
       "ours: the timing model trained on the other stealth runs' migrations (knows shroud)"}};
  for (const MaxEntWindows& w : o.more_maxent_windows) {
    descriptions[MaxEntDetectorName(w)] =
        absl::StrCat("Algorithm 2 as maxent, on the window triple ", absl::StrJoin(w, "/"),
                     " packets (maxent's is ", absl::StrJoin(o.maxent_windows, "/"), ")");
  }
  const std::vector<std::string> names = JudgeDetectorNames(o);
  doc["detectors"] = nlohmann::json::array();
  for (const std::string& d : names) {
    doc["detectors"].push_back({{"name", d}, {"description", descriptions.at(d)}});
  }
  doc["runs"] = nlohmann::json::array();
  for (const JudgedRun& jr : r.runs) {
    const RunFlows& run = *jr.run;
    nlohmann::json jrun{{"id", run.spec.id},
                        {"mode", run.spec.mode},
                        {"capture", run.spec.capture},
                        {"stream_packets", run.stream_packets},
                        {"models", jr.models}};
    nlohmann::json weights = nlohmann::json::object();
    for (const auto& [detector, w] : jr.weights) {
      for (const auto& [feature, value] : w) weights[detector][feature] = NumberOrNull(value);
    }
    jrun["model_weights"] = weights;
    jrun["flows"] = nlohmann::json::array();
    const std::vector<std::string> feature_names = TimingFeatureNames(config);
    for (size_t i = 0; i < run.flows.size(); ++i) {
      const JudgedFlow& f = run.flows[i];
      nlohmann::json cov = nlohmann::json::object();
      for (size_t w = 0; w < config.byte_window_count; ++w) {
        cov[std::to_string(config.byte_windows[w])] =
            NumberOrNull(ByteWindowCov(f.flow.features, config, w, f.flow.stream_packets));
      }
      nlohmann::json verdicts = nlohmann::json::object();
      for (const std::string& d : names) verdicts[d] = VerdictJson(jr.verdicts[i].at(d));
      // What our timing attacks see of the flow, so a reader can tell why it
      // was (not) flagged and compare groups feature by feature.
      nlohmann::json timing = nlohmann::json::object();
      const std::vector<double> x = TimingFeatures(f.flow.view(config));
      for (size_t k = 0; k < x.size() && k < feature_names.size(); ++k) {
        timing[feature_names[k]] = NumberOrNull(x[k]);
      }
      jrun["flows"].push_back({{"flow", FormatFlowKey(f.flow.key)},
                               {"label", FlowLabelName(f.label)},
                               {"bulk", f.bulk},
                               {"ack_direction", f.ack_direction},
                               {"packets", f.flow.features.packets},
                               {"bytes", f.flow.features.bytes},
                               {"duration_s", f.flow.features.duration_seconds()},
                               {"cov", cov},
                               {"timing_features", timing},
                               {"verdicts", verdicts}});
    }
    doc["runs"].push_back(std::move(jrun));
  }
  doc["comparisons"] = nlohmann::json::array();
  for (const NamedComparison& c : r.comparisons) doc["comparisons"].push_back(ComparisonJson(c));
  std::cout << doc.dump(1) << "\n";
}

std::string Mark(const std::optional<DetectorResult>& v) {
  if (!v.has_value()) return "n/a";
  if (!v->decided) return "?";
  return v->flagged ? "FLAG" : "-";
}

void PrintText(const JudgeResult& r, const JudgeOptions& o) {
  const std::vector<std::string> names = JudgeDetectorNames(o);
  std::cout << absl::StrFormat("%-26s %-8s %8s", "RUN", "MODE", "MIG_PKTS");
  for (const std::string& d : names) std::cout << absl::StrFormat(" %15s", d);
  std::cout << "   BACKGROUND FLAGGED/FLOWS per detector\n";
  for (const JudgedRun& jr : r.runs) {
    const RunFlows& run = *jr.run;
    int mig = -1;
    size_t bg = 0;
    std::map<std::string, size_t> flagged;
    for (size_t i = 0; i < run.flows.size(); ++i) {
      const JudgedFlow& f = run.flows[i];
      if (f.label == FlowLabel::kMigration &&
          (mig < 0 || f.flow.features.packets > run.flows[mig].flow.features.packets)) {
        mig = static_cast<int>(i);
      }
      if (f.label != FlowLabel::kBackground) continue;
      ++bg;
      for (const std::string& d : names) {
        const auto& v = jr.verdicts[i].at(d);
        flagged[d] += v.has_value() && v->flagged ? 1 : 0;
      }
    }
    std::cout << absl::StrFormat("%-26s %-8s %8s", run.spec.id, run.spec.mode,
                                 mig < 0 ? "none" : std::to_string(run.flows[mig].flow.features.packets));
    for (const std::string& d : names) {
      std::cout << absl::StrFormat(" %15s", mig < 0 ? "" : Mark(jr.verdicts[mig].at(d)));
    }
    std::cout << "  ";
    for (const std::string& d : names) std::cout << " " << flagged[d] << "/" << bg;
    std::cout << "\n";
  }
  std::cout << "\nTable III (each mode's migrations against the same mode's background):\n";
  for (const NamedComparison& c : r.comparisons) {
    if (!c.result.ok()) {
      std::cout << absl::StrFormat("  %-18s vs %-11s not computed: %s\n", c.a, c.b,
                                   c.result.status().message());
      continue;
    }
    std::cout << absl::StrFormat("  %-18s vs %-11s n=%d/%d chi-square p=%.4g  KS(CoV@%d) p=%.4g\n", c.a,
                                 c.b, c.result->n_a, c.result->n_b, c.result->chi_square.p_value,
                                 c.result->ks_window, c.result->ks.p_value);
  }
}

}  // namespace

void PrintJudgeHelp() {
  PrintCommandHelp(
      "usage: shroud judge [options] RUNS.json\n\n"
      "Judges the migration runs of scripts/evaluate. RUNS.json is {\"runs\": [{\"id\", \"mode\":\n"
      "\"native\"|\"stealth\", \"capture\": the run's WAN capture (relative to RUNS.json)}]}.\n"
      "Flows are labelled migration (--migration_filter), chaff (--chaff_nets) or background\n"
      "(bulk: --bulk_ports), and judged by pattern (Algorithm 1), maxent (Algorithm 2 trained\n"
      "on the other native runs: leave-one-run-out; stealth runs: all native runs),\n"
      "maxent_shipped (--model or the built-in model), timing (ours: richer timing features,\n"
      "trained like maxent) and timing_adaptive (ours, trained on the other stealth runs'\n"
      "migrations; stealth runs only); --more_feature_windows adds maxent on other window\n"
      "triples (maxent_wA_B_C). Also the paper's Table III comparisons per mode,\n"
      "data directions only (a TCP flow whose reverse carries 10x its bytes is an ACK\n"
      "direction: the migration's is never judged, so neither are the others' there).\n"
      "A table for people on stdout; --json for the document scripts/lib/evaluate_report.py\n"
      "reads, with every flow's CoVs, timing features (what the timing attacks see) and\n"
      "verdicts.",
      {"judge_command.cc"});
}

int RunJudge(const CommandArgs& args) {
  if (args.positional.size() != 1 || !args.migration.empty() || !args.background.empty()) {
    std::cerr << "shroud judge: expected exactly one RUNS.json (see shroud judge --help)\n";
    return 2;
  }
  absl::StatusOr<MaxEntFlags> flags = MaxEntFlagsFromFlags();
  if (!flags.ok()) {
    std::cerr << "shroud judge: " << flags.status().message() << "\n";
    return 2;
  }
  const CaptureOptions& options = flags->capture;
  FlowLabelRules rules;
  rules.migration_filter = FLAGS_migration_filter;
  rules.min_packets = MinPacketsFromFlags();
  absl::StatusOr<std::vector<Ipv4Net>> nets = ParseIpv4Nets(FLAGS_chaff_nets);
  if (!nets.ok()) {
    std::cerr << "shroud judge: --chaff_nets: " << nets.status().message() << "\n";
    return 2;
  }
  rules.chaff_nets = *nets;
  if (absl::Status s = ParsePortRange(FLAGS_bulk_ports, &rules); !s.ok()) {
    std::cerr << "shroud judge: " << s.message() << "\n";
    return 2;
  }
  if (!(FLAGS_timing_l2 > 0) || !std::isfinite(FLAGS_timing_l2)) {
    std::cerr << "shroud judge: --timing_l2 must be a number > 0, got " << FLAGS_timing_l2 << "\n";
    return 2;
  }
  if (options.features.WindowSlot(FLAGS_ks_window) < 0) {
    std::cerr << "shroud judge: --ks_window " << FLAGS_ks_window << " is not one of --windows\n";
    return 2;
  }
  JudgeOptions o;
  o.config = options.features;
  std::string origin;
  absl::StatusOr<MaxEntModel> model = ModelFromFlags(&origin);
  if (!model.ok()) {
    std::cerr << "shroud judge: " << model.status().message() << "\n";
    return 2;
  }
  o.shipped = *model;
  o.maxent_windows = flags->windows;
  absl::StatusOr<std::vector<MaxEntWindows>> more = MoreFeatureWindowsFromFlags();
  if (!more.ok()) {
    std::cerr << "shroud judge: " << more.status().message() << "\n";
    return 2;
  }
  o.more_maxent_windows = *std::move(more);
  if (absl::Status s = JudgeOptionsError(o); !s.ok()) {
    std::cerr << "shroud judge: --more_feature_windows: " << s.message() << "\n";
    return 2;
  }
  o.maxent_training = flags->training;
  o.timing_training.l2 = FLAGS_timing_l2;
  o.timing_training.balance_classes = o.maxent_training.balance_classes;
  o.ks_window = FLAGS_ks_window;

  absl::StatusOr<std::vector<JudgeRunSpec>> specs = ReadManifest(args.positional[0]);
  if (!specs.ok()) {
    std::cerr << "shroud judge: " << specs.status().message() << "\n";
    return 2;
  }
  std::vector<RunFlows> runs;
  for (const JudgeRunSpec& s : *specs) {
    absl::StatusOr<RunFlows> run = LoadRun(s, rules, options);
    if (!run.ok()) {
      std::cerr << "shroud judge: " << run.status().message() << "\n";
      return 1;
    }
    runs.push_back(*std::move(run));
  }
  absl::StatusOr<JudgeResult> result = JudgeRuns(runs, o);
  if (!result.ok()) {
    std::cerr << "shroud judge: " << result.status().message() << "\n";
    return 1;
  }
  if (FLAGS_json) {
    PrintJson(*result, o, rules.min_packets);
  } else {
    PrintText(*result, o);
  }
  return 0;
}

}  // namespace shroud::cli
