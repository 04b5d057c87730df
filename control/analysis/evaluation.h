// The paper's indistinguishability evaluation over labelled flows: Table II/IV
// (CoV per window), Table III (chi-square over inter-packet times, plus KS),
// and detection rates (Figures 3/4/7/8).
#ifndef SHROUD_CONTROL_ANALYSIS_EVALUATION_H_
#define SHROUD_CONTROL_ANALYSIS_EVALUATION_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "control/analysis/detectors.h"
#include "control/analysis/maxent_model.h"
#include "control/analysis/stats.h"
#include "control/capture/capture_analysis.h"

namespace shroud {

struct LabelledFlow {
  std::string capture;
  FlowKey key;
  FlowFeatures features;
  uint64_t stream_packets = 0;  // of the capture the flow came from
  bool is_migration = false;
  // Exact inter-packet-time histogram (1 us category -> count) when the flow
  // was read from a capture by CollectLabelledFlows; empty for live flows,
  // which have only the features' top-k sketch. See IptHistogram.
  std::map<uint32_t, double> exact_ipt;

  FlowView view(const FeatureConfig& config) const {
    return FlowView{key, features, stream_packets, config};
  }
};

struct LabelledCaptures {
  // Flows matching `migration_filter` are migrations, their reverse
  // directions (ACKs) are left out, every other flow is background.
  std::vector<std::string> migration;
  std::vector<std::string> background;  // every flow is background
  std::string migration_filter = "tcp dst portrange 49152-49215";
  uint64_t min_packets = 1000;          // shorter flows are skipped, as the paper's attacker does
  // Count each flow's exact inter-packet times (LabelledFlow::exact_ipt) for
  // Table III; training and detection need only the features.
  bool exact_ipt = true;
};

// Reads every capture and returns the flows with at least min_packets packets,
// labelled. Errors name the file.
absl::StatusOr<std::vector<LabelledFlow>> CollectLabelledFlows(const LabelledCaptures& captures,
                                                               const CaptureOptions& options);

// Per-flow IPT histogram (1 us category -> count) from the flow's sketch.
std::map<uint32_t, double> IptHistogram(const FlowFeatures& features);
// The flow's exact histogram when it has one, else its sketch's. Table III
// needs the exact one: in a flow whose gaps spread over thousands of 1 us
// categories the sketch's tail entries are arbitrary categories holding the
// tail's mass.
std::map<uint32_t, double> IptHistogram(const LabelledFlow& flow);

struct GroupComparison {
  size_t n_a = 0, n_b = 0;
  ChiSquareResult chi_square;  // Table III
  uint32_t ks_window = 0;      // KS compares the groups' per-flow CoV at this window
  KsResult ks;
};

// Group A against group B. Errors when a group is empty or the KS window is
// not configured.
absl::StatusOr<GroupComparison> CompareGroups(const std::vector<const LabelledFlow*>& a,
                                              const std::vector<const LabelledFlow*>& b,
                                              const FeatureConfig& config, uint32_t ks_window);

struct DetectionRate {
  std::string detector;
  size_t true_positives = 0, false_negatives = 0;
  size_t false_positives = 0, true_negatives = 0;
  void Count(bool is_migration, bool flagged) {
    if (is_migration) {
      ++(flagged ? true_positives : false_negatives);
    } else {
      ++(flagged ? false_positives : true_negatives);
    }
  }
  double tpr() const {
    size_t p = true_positives + false_negatives;
    return p == 0 ? 0.0 : static_cast<double>(true_positives) / static_cast<double>(p);
  }
  double fpr() const {
    size_t n = false_positives + true_negatives;
    return n == 0 ? 0.0 : static_cast<double>(false_positives) / static_cast<double>(n);
  }
};

// A detector's rates over labelled flows; an undecided flow counts as not
// flagged.
DetectionRate MeasureDetector(const Detector& detector, const std::vector<LabelledFlow>& flows,
                              const FeatureConfig& config);

struct CrossValidationOptions {
  int folds = 5;  // each fold trains on 80 % and tests on 20 % (the paper's split)
  uint64_t seed = 1;
  std::array<uint32_t, kMaxEntFeatures> windows = {100, 500, 1000};
  MaxEntTrainingOptions training;
};

// Stratified k-fold cross-validation of the maxent attack: every flow is
// tested exactly once by a model that did not see it. Errors when a class has
// fewer flows than folds.
absl::StatusOr<DetectionRate> CrossValidateMaxEnt(const std::vector<LabelledFlow>& flows,
                                                  const FeatureConfig& config,
                                                  const CrossValidationOptions& options);

// Trains the maxent model on all labelled flows.
absl::StatusOr<MaxEntModel> TrainOnFlows(const std::vector<LabelledFlow>& flows,
                                         const FeatureConfig& config,
                                         const std::array<uint32_t, kMaxEntFeatures>& windows,
                                         const MaxEntTrainingOptions& options);

}  // namespace shroud

#endif  // SHROUD_CONTROL_ANALYSIS_EVALUATION_H_
