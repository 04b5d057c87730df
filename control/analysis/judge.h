// The testbed's verdicts: every migration run's capture judged by every
// detector, each trained only on runs other than the one it judges.
//
// scripts/evaluate records the WAN of each run (a native or a stealth
// migration under background load). Per run, the flows are labelled
// (migration by the port filter, chaff by the gateways' address pools,
// everything else background; bulk = background on the iperf3 ports, the
// paper's "FTP flows") and judged by:
//   pattern          Algorithm 1 (no training)
//   maxent           Algorithm 2 trained on the *other* native runs
//                    (leave-one-run-out; a stealth run: all native runs),
//                    the paper's adversary, who knows native migrations
//   maxent_wA_B_C    the same on another window triple A/B/C (the paper
//                    tried four; an adversary may pick any), one detector
//                    per triple in JudgeOptions::more_maxent_windows
//   maxent_shipped   Algorithm 2 with the given model (what the tap runs)
//   timing           ours, richer timing features, trained like maxent
//   timing_adaptive  ours, trained on the other *stealth* runs' migrations
//                    against everything else: an adversary who knows shroud
//                    is in the path and has labelled examples of its output
//                    (stealth runs only)
// plus the paper's Table III comparisons (chi-square over exact IPT
// categories, KS over the CoV): each mode's migrations against the background
// flows of the same mode's runs (chaff: against stealth runs' background).
#ifndef SHROUD_CONTROL_ANALYSIS_JUDGE_H_
#define SHROUD_CONTROL_ANALYSIS_JUDGE_H_

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "control/analysis/detectors.h"
#include "control/analysis/evaluation.h"
#include "control/analysis/maxent_model.h"
#include "control/analysis/timing_attack.h"
#include "control/capture/capture_analysis.h"

namespace shroud {

struct JudgeRunSpec {
  std::string id;
  std::string mode;  // "native" or "stealth"
  std::string capture;
};

enum class FlowLabel { kMigration, kBackground, kChaff };
const char* FlowLabelName(FlowLabel label);

struct Ipv4Net {
  std::array<uint8_t, 4> address{};
  int prefix = 32;
  bool Contains(const std::array<uint8_t, 16>& addr) const;
};
// "192.0.2.128/25,198.51.100.128/25" -> nets; errors name the bad item.
absl::StatusOr<std::vector<Ipv4Net>> ParseIpv4Nets(const std::string& text);

struct FlowLabelRules {
  std::string migration_filter = "tcp dst portrange 49152-49215";
  std::vector<Ipv4Net> chaff_nets;  // a flow with either address in one is chaff
  uint16_t bulk_port_lo = 5201, bulk_port_hi = 5299;
  uint64_t min_packets = 1000;
};

// A TCP flow whose reverse direction carries at least this many times its
// bytes is that connection's ACK direction.
inline constexpr uint64_t kAckDirectionByteRatio = 10;

struct JudgedFlow {
  LabelledFlow flow;  // is_migration == (label == kMigration)
  FlowLabel label = FlowLabel::kBackground;
  bool bulk = false;
  // The ACK direction of a TCP connection (kAckDirectionByteRatio; only when
  // the reverse flow is long enough to be judged too). The migration's own
  // ACK direction is never judged, so Table III leaves these out of its
  // background and chaff groups: like is compared with like.
  bool ack_direction = false;
};

struct RunFlows {
  JudgeRunSpec spec;
  uint64_t stream_packets = 0;
  std::vector<JudgedFlow> flows;  // >= min_packets; a migration's ACK direction is left out
};

// Reads one run's capture and labels its flows.
absl::StatusOr<RunFlows> LoadRun(const JudgeRunSpec& spec, const FlowLabelRules& rules,
                                 const CaptureOptions& options);

// Labels flows already read (the pure half of LoadRun, for tests). Table III
// uses each flow's exact IPT histogram when it has one (IptHistogram).
RunFlows LabelFlows(const JudgeRunSpec& spec, const std::vector<LabelledFlow>& flows,
                    uint64_t stream_packets, const FlowLabelRules& rules);

using MaxEntWindows = std::array<uint32_t, kMaxEntFeatures>;

struct JudgeOptions {
  FeatureConfig config;
  MaxEntModel shipped;
  MaxEntWindows maxent_windows = {100, 500, 1000};
  // Each also judged as detector MaxEntDetectorName(w), trained as maxent is
  // (every window in config; none equal to maxent_windows or to another).
  std::vector<MaxEntWindows> more_maxent_windows;
  MaxEntTrainingOptions maxent_training;
  TimingTrainingOptions timing_training;
  uint32_t ks_window = 1000;
};

// "maxent_w100_200_300".
std::string MaxEntDetectorName(const MaxEntWindows& windows);

// The detectors' names, in output order: pattern, maxent, maxent_shipped,
// timing, timing_adaptive, then one per more_maxent_windows.
std::vector<std::string> JudgeDetectorNames(const JudgeOptions& options);

struct JudgedRun {
  const RunFlows* run = nullptr;
  // detector -> how its model was obtained for this run (or why none).
  std::map<std::string, std::string> models;
  // detector -> (feature, standardised weight) of the timing models used for
  // this run: what the adversary leaned on.
  std::map<std::string, std::vector<std::pair<std::string, double>>> weights;
  // Per flow (same order as run->flows): detector -> verdict, nullopt when
  // the detector does not apply to this run or had no model.
  std::vector<std::map<std::string, std::optional<DetectorResult>>> verdicts;
};

struct NamedComparison {
  std::string a, b;
  absl::StatusOr<GroupComparison> result = absl::UnknownError("not computed");
};

struct JudgeResult {
  std::vector<JudgedRun> runs;
  std::vector<NamedComparison> comparisons;
};

// Why options cannot be judged with: a more_maxent_windows triple that is
// not ascending, has a window not in config, or is given twice (or is
// maxent_windows). OK otherwise.
absl::Status JudgeOptionsError(const JudgeOptions& options);

// Errors on a run with an unknown mode or a duplicate id, and on options
// JudgeOptionsError refuses; a detector that cannot be trained for a run is
// recorded in `models`, not an error.
absl::StatusOr<JudgeResult> JudgeRuns(const std::vector<RunFlows>& runs, const JudgeOptions& options);

}  // namespace shroud

#endif  // SHROUD_CONTROL_ANALYSIS_JUDGE_H_
