// Pieces shared by the `shroud` subcommands: the feature/detector flags, the
// model, list arguments, help, and number formatting.
#ifndef SHROUD_CONTROL_CLI_CLI_COMMON_H_
#define SHROUD_CONTROL_CLI_CLI_COMMON_H_

#include <array>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "control/analysis/evaluation.h"
#include "control/analysis/maxent_model.h"
#include "control/capture/capture_analysis.h"
#include "shroud/feature_config.h"

namespace shroud::cli {

// Feature configuration from --burst_gap_ms, --pwin, --delta, --pct, --windows.
absl::StatusOr<FeatureConfig> FeatureConfigFromFlags();
// CaptureOptions with the features above and --max_flows (>= 1), warning on
// stderr about flows beyond it.
absl::StatusOr<CaptureOptions> CaptureOptionsFromFlags();
// --min_packets.
uint64_t MinPacketsFromFlags();
// --model FILE, or the model compiled into this binary (conf/maxent-default.json).
absl::StatusOr<MaxEntModel> ModelFromFlags(std::string* origin);
// "100,500,1000" -> {100,500,1000}; errors name the flag.
absl::StatusOr<std::array<uint32_t, kMaxEntFeatures>> ParseTriple(const std::string& flag,
                                                                  const std::string& value);

// What every command that trains maxent takes from its flags (train, eval,
// judge), each checked, so a bad flag is a usage error before any capture is
// read.
struct MaxEntFlags {
  CaptureOptions capture;
  std::array<uint32_t, kMaxEntFeatures> windows{};  // --feature_windows, each in --windows
  MaxEntTrainingOptions training;                   // --l2 (finite, >= 0), --balance_classes
};
absl::StatusOr<MaxEntFlags> MaxEntFlagsFromFlags();
// Reads --migration/--background captures with `options`, labels the flows
// (--migration_filter) and drops short ones (--min_packets); exact_ipt: also
// count exact inter-packet times (eval's Table III).
absl::StatusOr<std::vector<LabelledFlow>> CollectFromArgs(const std::vector<std::string>& migration,
                                                          const std::vector<std::string>& background,
                                                          const CaptureOptions& options,
                                                          bool exact_ipt);

// Removes "--NAME a b c" (values up to the next argument starting with '-')
// and "--NAME=a,b" from argv, returning the values. gflags has no repeated
// list flags, and `--migration A.pcap B.pcap` is how people write it.
std::vector<std::string> TakeListFlag(const std::string& name, int* argc, char** argv);

// Prints the usage of one subcommand ("<command>_command.cc" names it) with
// the flags defined in that file and the shared ones that apply to it.
void PrintCommandHelp(const std::string& usage, const std::vector<std::string>& flag_files);

// An error naming every flag of this tool set on the command line that
// `command` does not read (e.g. `analyze --l2`, `ctl --windows`): silently
// ignoring it would let a user believe it changed the result.
absl::Status CheckFlagsApply(absl::string_view command);

// A number for JSON output, null for NaN (a CoV with too little data).
nlohmann::json NumberOrNull(double v);

// "0.123" with 3 decimals, "-" for NaN (text tables).
std::string FormatCov(double v);

}  // namespace shroud::cli

#endif  // SHROUD_CONTROL_CLI_CLI_COMMON_H_
