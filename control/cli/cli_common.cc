#include "control/cli/cli_common.h"

#include <gflags/gflags.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "default_model.h"

DEFINE_double(burst_gap_ms, 10.0,
              "Algorithm 1: a packet starts a burst when the gap to the flow's previous packet "
              "exceeds this many milliseconds");
DEFINE_uint32(pwin, 1000, "Algorithm 1: Pwin, the window of packets per CoV evaluation");
DEFINE_double(delta, 0.05, "Algorithm 1: delta, CoV threshold of burst distances");
DEFINE_uint32(pct, 3, "Algorithm 1: PCt, detect when the pattern was seen more than this often");
DEFINE_string(windows, "100,200,300,500,1000,2000,3000",
              "Algorithm 2: window sizes W (packets of the whole stream), ascending, at most 8");
DEFINE_uint64(min_packets, 1000,
              "Skip flows with fewer packets, as the paper's attacker discards short flows");
DEFINE_string(model, "",
              "Maximum-entropy model file (JSON, see conf/maxent-default.json); default: the "
              "model compiled into this binary");
DEFINE_string(migration_filter, "tcp dst portrange 49152-49215",
              "train/eval: in --migration captures, flows whose first packet matches this "
              "tcpdump-syntax filter are migrations; their other flows are background");
DEFINE_string(feature_windows, "100,500,1000",
              "The window triple of the maxent features (each must be in --windows); the paper "
              "tried 100,200,300 / 100,500,1000 / 500,1000,2000 / 1000,2000,3000");
DEFINE_bool(balance_classes, true,
            "train/eval: weigh migration and background flows equally when fitting the maxent "
            "model (raises TPR and FPR); off keeps the corpus' own proportions");
DEFINE_double(l2, 1e-3, "train/eval: L2 regularisation of the maxent weights");
DEFINE_uint64(max_flows, 50'000'000, "Stop tracking new flows beyond this many per capture");

namespace shroud::cli {

absl::StatusOr<FeatureConfig> FeatureConfigFromFlags() {
  FeatureConfig config;
  if (!(FLAGS_burst_gap_ms > 0 && FLAGS_burst_gap_ms < 1e6)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--burst_gap_ms must be in (0, 1e6), got ", FLAGS_burst_gap_ms));
  }
  config.burst_gap_ns = static_cast<uint64_t>(FLAGS_burst_gap_ms * 1e6);
  config.pattern_window = FLAGS_pwin;
  config.pattern_delta = FLAGS_delta;
  config.pattern_count_threshold = FLAGS_pct;
  std::vector<std::string> parts = absl::StrSplit(FLAGS_windows, ',', absl::SkipWhitespace());
  if (parts.empty() || parts.size() > kMaxByteWindows) {
    return absl::InvalidArgumentError(absl::StrCat("--windows takes 1 to ", kMaxByteWindows,
                                                   " sizes, got '", FLAGS_windows, "'"));
  }
  config.byte_windows.fill(0);
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!absl::SimpleAtoi(parts[i], &config.byte_windows[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("--windows: '", parts[i], "' is not a whole number"));
    }
  }
  config.byte_window_count = parts.size();
  if (absl::Status s = config.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("feature flags: ", s.message()));
  }
  return config;
}

absl::StatusOr<CaptureOptions> CaptureOptionsFromFlags() {
  absl::StatusOr<FeatureConfig> features = FeatureConfigFromFlags();
  if (!features.ok()) return features.status();
  if (FLAGS_max_flows == 0) return absl::InvalidArgumentError("--max_flows must be at least 1");
  CaptureOptions options;
  options.features = *features;
  options.max_flows = FLAGS_max_flows;
  options.warn = [](const std::string& message) {
    std::cerr << "shroud: warning: " << message << "\n";
  };
  return options;
}

uint64_t MinPacketsFromFlags() { return FLAGS_min_packets; }

absl::StatusOr<MaxEntModel> ModelFromFlags(std::string* origin) {
  if (!FLAGS_model.empty()) {
    *origin = FLAGS_model;
    return MaxEntModel::Load(FLAGS_model);
  }
  *origin = "built-in default (conf/maxent-default.json)";
  return MaxEntModel::FromJson(std::string(kDefaultMaxEntModel), "built-in default model");
}

absl::StatusOr<std::array<uint32_t, kMaxEntFeatures>> ParseTriple(const std::string& flag,
                                                                  const std::string& value) {
  std::vector<std::string> parts = absl::StrSplit(value, ',', absl::SkipWhitespace());
  std::array<uint32_t, kMaxEntFeatures> out{};
  if (parts.size() != kMaxEntFeatures) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " takes three window sizes like 100,500,1000, got '", value, "'"));
  }
  for (int i = 0; i < kMaxEntFeatures; ++i) {
    if (!absl::SimpleAtoi(parts[i], &out[i]) || out[i] == 0 || (i > 0 && out[i] <= out[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, ": '", value, "' must be three ascending positive whole numbers"));
    }
  }
  return out;
}


namespace {

absl::StatusOr<std::array<uint32_t, kMaxEntFeatures>> FeatureWindowsFromFlags(
    const FeatureConfig& config) {
  absl::StatusOr<std::array<uint32_t, kMaxEntFeatures>> triple =
      ParseTriple("feature_windows", FLAGS_feature_windows);
  if (!triple.ok()) return triple;
  for (uint32_t w : *triple) {
    if (config.WindowSlot(w) < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--feature_windows: ", w, " is not one of --windows (", FLAGS_windows, ")"));
    }
  }
  return triple;
}

absl::StatusOr<MaxEntTrainingOptions> TrainingOptionsFromFlags() {
  if (!std::isfinite(FLAGS_l2) || FLAGS_l2 < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--l2 must be a number >= 0, got ", FLAGS_l2));
  }
  MaxEntTrainingOptions options;
  options.l2 = FLAGS_l2;
  options.balance_classes = FLAGS_balance_classes;
  return options;
}

}  // namespace

absl::StatusOr<MaxEntFlags> MaxEntFlagsFromFlags() {
  MaxEntFlags flags;
  absl::StatusOr<CaptureOptions> capture = CaptureOptionsFromFlags();
  if (!capture.ok()) return capture.status();
  flags.capture = *std::move(capture);
  absl::StatusOr<std::array<uint32_t, kMaxEntFeatures>> windows =
      FeatureWindowsFromFlags(flags.capture.features);
  if (!windows.ok()) return windows.status();
  flags.windows = *windows;
  absl::StatusOr<MaxEntTrainingOptions> training = TrainingOptionsFromFlags();
  if (!training.ok()) return training.status();
  flags.training = *training;
  return flags;
}

absl::StatusOr<std::vector<LabelledFlow>> CollectFromArgs(const std::vector<std::string>& migration,
                                                          const std::vector<std::string>& background,
                                                          const CaptureOptions& options,
                                                          bool exact_ipt) {
  LabelledCaptures captures;
  captures.migration = migration;
  captures.background = background;
  captures.migration_filter = FLAGS_migration_filter;
  captures.min_packets = MinPacketsFromFlags();
  captures.exact_ipt = exact_ipt;
  return CollectLabelledFlows(captures, options);
}


std::vector<std::string> TakeListFlag(const std::string& name, int* argc, char** argv) {
  std::vector<std::string> values;
  const std::string bare = "--" + name;
  const std::string with_eq = bare + "=";
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    std::string arg = argv[i];
    if (arg == bare) {
      while (i + 1 < *argc && argv[i + 1][0] != '-') values.push_back(argv[++i]);
      continue;
    }
    if (arg.rfind(with_eq, 0) == 0) {
      for (absl::string_view v : absl::StrSplit(arg.substr(with_eq.size()), ',', absl::SkipEmpty())) {
        values.emplace_back(v);
      }
      continue;
    }
    argv[out++] = argv[i];
  }
  *argc = out;
  return values;
}

namespace {

// The commands a flag of control/cli applies to, where that is not just the
// command whose file defines it ("<command>_command.cc").
absl::string_view SharedFlagCommands(absl::string_view flag) {
  static const auto* const kCommands = new absl::flat_hash_map<absl::string_view, absl::string_view>{
      {"json", "analyze,ctl,eval,judge,ratewalk,rttmon"},
      {"ks_window", "eval,judge"},
      {"model", "analyze,eval,judge"},
      {"migration_filter", "train,eval,judge"},
      {"feature_windows", "train,eval,judge"},
      {"l2", "train,eval,judge"},
      {"balance_classes", "train,eval,judge"},
      // Algorithm 1's options: the maxent model train writes does not read them.
      {"burst_gap_ms", "analyze,eval,judge"},
      {"pwin", "analyze,eval,judge"},
      {"delta", "analyze,eval,judge"},
      {"pct", "analyze,eval,judge"},
      {"windows", "analyze,train,eval,judge"},
      {"min_packets", "analyze,train,eval,judge"},
      {"max_flows", "analyze,train,eval,judge"},
  };
  auto it = kCommands->find(flag);
  return it == kCommands->end() ? absl::string_view() : it->second;
}

// "eval" for ".../control/cli/eval_command.cc"; empty for other files.
absl::string_view CommandOfFile(absl::string_view file) {
  constexpr absl::string_view kSuffix = "_command.cc";
  if (!absl::EndsWith(file, kSuffix)) return {};
  file.remove_suffix(kSuffix.size());
  const size_t slash = file.rfind('/');
  return slash == absl::string_view::npos ? file : file.substr(slash + 1);
}

bool IsToolFlag(const gflags::CommandLineFlagInfo& f) {
  return f.filename.find("control/cli/") != std::string::npos;
}

// Whether `command` reads flag `f`, and the commands that do.
absl::string_view FlagCommands(const gflags::CommandLineFlagInfo& f) {
  absl::string_view shared = SharedFlagCommands(f.name);
  return shared.empty() ? CommandOfFile(f.filename) : shared;
}

bool FlagApplies(const gflags::CommandLineFlagInfo& f, absl::string_view command) {
  const absl::string_view commands = FlagCommands(f);
  if (commands.empty()) return true;  // a flag no table knows: never refused
  for (absl::string_view c : absl::StrSplit(commands, ',')) {
    if (c == command) return true;
  }
  return false;
}

}  // namespace

void PrintCommandHelp(const std::string& usage, const std::vector<std::string>& flag_files) {
  std::cout << usage << "\n";
  std::vector<gflags::CommandLineFlagInfo> flags;
  gflags::GetAllFlags(&flags);
  const absl::string_view command = flag_files.empty() ? "" : CommandOfFile(flag_files[0]);
  auto print_if = [&](auto wanted, const char* title) {
    bool any = false;
    for (const auto& f : flags) {
      if (!IsToolFlag(f) || !wanted(f)) continue;
      if (!any) std::cout << "\n" << title << ":\n";
      any = true;
      std::cout << absl::StrFormat("  --%-16s %s (default: %s)\n", f.name, f.description,
                                   f.default_value.empty() ? "\"\"" : f.default_value);
    }
  };
  auto own = [&](const gflags::CommandLineFlagInfo& f) {
    for (const auto& file : flag_files) {
      if (f.filename.find(file) != std::string::npos) return FlagApplies(f, command);
    }
    return false;
  };
  print_if(own, "Options");
  // --json's own description is analyze's; a command whose usage explains
  // its --json does not list it again.
  const bool usage_has_json = absl::StrContains(usage, "--json");
  print_if(
      [&](const gflags::CommandLineFlagInfo& f) {
        return !own(f) && FlagApplies(f, command) && !FlagCommands(f).empty() &&
               !(f.name == "json" && usage_has_json);
      },
      "Shared options");
}

absl::Status CheckFlagsApply(absl::string_view command) {
  std::vector<gflags::CommandLineFlagInfo> flags;
  gflags::GetAllFlags(&flags);
  std::vector<std::string> wrong;
  for (const auto& f : flags) {
    if (f.is_default || !IsToolFlag(f) || FlagApplies(f, command)) continue;
    wrong.push_back(absl::StrCat("--", f.name, " (", FlagCommands(f), ")"));
  }
  if (wrong.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(wrong.size() == 1 ? "option " : "options ", absl::StrJoin(wrong, ", "),
                   wrong.size() == 1 ? " is" : " are", " not read by ", command,
                   " (in brackets: the commands that read it; see shroud ", command, " --help)"));
}

nlohmann::json NumberOrNull(double v) {
  return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v);
}

std::string FormatCov(double v) { return std::isnan(v) ? "-" : absl::StrFormat("%.3f", v); }

}  // namespace shroud::cli
