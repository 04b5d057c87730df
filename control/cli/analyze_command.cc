// shroud analyze: per-flow features and both detectors' verdicts for captures.
#include <gflags/gflags.h>

#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "control/analysis/detectors.h"
#include "control/capture/capture_analysis.h"
#include "control/cli/cli_common.h"
#include "control/cli/commands.h"

DEFINE_bool(json, false, "One JSON object per flow per line instead of a table");

namespace shroud::cli {
namespace {

void PrintJsonRow(const std::string& capture, const FlowRecord& flow, const FlowVerdict& v,
                  const FeatureConfig& config, uint64_t stream_packets) {
  nlohmann::json row;
  row["capture"] = capture;
  row["flow"] = FormatFlowKey(flow.key);
  row["packets"] = flow.features.packets;
  row["bytes"] = flow.features.bytes;
  row["duration_s"] = flow.features.duration_seconds();
  nlohmann::json cov = nlohmann::json::object();
  for (size_t i = 0; i < config.byte_window_count; ++i) {
    cov[std::to_string(config.byte_windows[i])] =
        NumberOrNull(ByteWindowCov(flow.features, config, i, stream_packets));
  }
  row["cov"] = cov;
  row["pattern"] = v.pattern.flagged;
  row["pattern_counter"] = flow.features.a1_pattern_counter;
  row["pattern_windows"] = flow.features.a1_windows;
  row["maxent"] = NumberOrNull(v.maxent.score);
  row["migration"] = v.migration;
  std::cout << row.dump() << "\n";
}

}  // namespace

void PrintAnalyzeHelp() {
  PrintCommandHelp(
      "usage: shroud analyze [options] CAPTURE...\n\n"
      "Reads pcap/pcapng captures and prints, for every directional flow with at least\n"
      "--min_packets packets, its totals, the coefficient of variation of its bytes per\n"
      "window of W stream packets (Algorithm 2's features), and the verdicts of the\n"
      "pattern-matching attack (Algorithm 1) and the maximum-entropy attack (Algorithm 2).\n"
      "MIGRATION is the adversary's combined verdict: either attack flags the flow.\n"
      "Each capture is analysed on its own (its own packet stream).\n\n"
      "Exit status: 0 when every capture was read, 1 when any could not be (the others\n"
      "are still analysed), 2 on bad usage.",
      {"analyze_command.cc"});
}

int RunAnalyze(const CommandArgs& args) {
  if (args.positional.empty()) {
    std::cerr << "shroud analyze: no capture given (see shroud analyze --help)\n";
    return 2;
  }
  if (!args.migration.empty() || !args.background.empty()) {
    std::cerr << "shroud analyze: --migration/--background belong to train and eval\n";
    return 2;
  }
  absl::StatusOr<CaptureOptions> options = CaptureOptionsFromFlags();
  if (!options.ok()) {
    std::cerr << "shroud analyze: " << options.status().message() << "\n";
    return 2;
  }
  std::string model_origin;
  absl::StatusOr<MaxEntModel> model = ModelFromFlags(&model_origin);
  if (!model.ok()) {
    std::cerr << "shroud analyze: " << model.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<PaperDetectors> detectors = PaperDetectors::Create(*model, options->features);
  if (!detectors.ok()) {
    std::cerr << "shroud analyze: " << detectors.status().message() << "\n";
    return 2;
  }
  const FeatureConfig& config = options->features;
  const uint64_t min_packets = MinPacketsFromFlags();
  int exit_code = 0;
  size_t total_flows = 0, total_flagged = 0;
  for (const std::string& path : args.positional) {
    absl::StatusOr<CaptureAnalysis> analysis = AnalyzeCapture(path, *options);
    if (!analysis.ok()) {
      std::cerr << "shroud analyze: " << analysis.status().message() << "\n";
      exit_code = 1;
      continue;
    }
    const FlowTable& table = *analysis->table;
    const uint64_t stream = table.stream_packets();
    uint64_t malformed = 0;
    for (size_t s = 0; s < table.status_counts().size(); ++s) {
      if (IsMalformed(static_cast<ParseStatus>(s))) malformed += table.status_counts()[s];
    }
    if (!FLAGS_json) {
      std::cout << absl::StrFormat(
          "capture %s: %s, %d frames, %d IP packets, %d flows (%d malformed frames, %d non-IP)\n",
          analysis->path, LinkTypeName(analysis->linktype), analysis->frames, stream,
          table.flows().size(), malformed,
          table.status_counts()[static_cast<size_t>(ParseStatus::kNotIp)]);
      std::cout << absl::StrFormat("%-46s %9s %12s %8s", "FLOW", "PACKETS", "BYTES", "DUR_S");
      for (size_t w = 0; w < config.byte_window_count; ++w) {
        std::cout << absl::StrFormat(" %7s", absl::StrCat("COV", config.byte_windows[w]));
      }
      std::cout << absl::StrFormat(" %8s %7s %9s\n", "PATTERN", "MAXENT", "MIGRATION");
    }
    size_t shown = 0;
    for (const FlowRecord& flow : table.flows()) {
      if (flow.features.packets < min_packets) continue;
      ++shown;
      FlowView view{flow.key, flow.features, stream, config};
      FlowVerdict v = detectors->Evaluate(view);
      total_flagged += v.migration ? 1 : 0;
      if (FLAGS_json) {
        PrintJsonRow(analysis->path, flow, v, config, stream);
        continue;
      }
      std::cout << absl::StrFormat("%-46s %9d %12d %8.1f", FormatFlowKey(flow.key),
                                   flow.features.packets, flow.features.bytes,
                                   flow.features.duration_seconds());
      for (size_t w = 0; w < config.byte_window_count; ++w) {
        std::cout << absl::StrFormat(" %7s", FormatCov(ByteWindowCov(flow.features, config, w, stream)));
      }
      std::cout << absl::StrFormat(" %8s %7s %9s\n",
                                   v.pattern.flagged ? absl::StrCat("yes(", flow.features.a1_pattern_counter, ")") : "no",
                                   FormatCov(v.maxent.score), v.migration ? "MIGRATION" : "-");
    }
    total_flows += shown;
    if (!FLAGS_json) {
      std::cout << absl::StrFormat("%d of %d flows have >= %d packets\n\n", shown,
                                   table.flows().size(), min_packets);
    }
  }
  if (!FLAGS_json) {
    std::cout << absl::StrFormat("%d flows analysed, %d flagged as migration (maxent model: %s)\n",
                                 total_flows, total_flagged, model_origin);
  }
  return exit_code;
}

}  // namespace shroud::cli
