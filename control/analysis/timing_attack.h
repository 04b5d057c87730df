// Our stronger adversary: a logistic model over richer timing features than
// the paper's maxent triple.
//
// The paper's Algorithm 2 sees three coefficients of variation. A flow's
// per-flow state (FlowFeatures) holds more than that: the CoV at every
// configured window, how often Algorithm 1's burst pattern held, the
// inter-packet-time sketch (how concentrated the gaps are, how many are
// back-to-back), the packet size and rate, and the flow's share of the stream
// while it is active. An adversary with a tap has all of it for free, so a
// fair test of the defence lets the adversary use it. The model is the same
// kind as maxent's (L2-regularised logistic regression on standardised
// features, classes balanced), so the comparison isolates the features.
#ifndef SHROUD_CONTROL_ANALYSIS_TIMING_ATTACK_H_
#define SHROUD_CONTROL_ANALYSIS_TIMING_ATTACK_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "control/analysis/detectors.h"

namespace shroud {

// Feature names in order, for a feature configuration (one CoV per window).
std::vector<std::string> TimingFeatureNames(const FeatureConfig& config);

// The feature vector of a flow, in TimingFeatureNames order. NaN where the
// flow gives too little data (a CoV with fewer than two complete windows).
std::vector<double> TimingFeatures(const FlowView& flow);

struct TimingTrainingOptions {
  double l2 = 1e-2;
  int max_iterations = 200;
  double tolerance = 1e-9;
  bool balance_classes = true;  // migration flows are rare next to background
};

struct TimingModel {
  std::vector<std::string> names;
  std::vector<double> mean;   // of the training rows, per feature (imputes NaN)
  std::vector<double> scale;  // standard deviation (1 for a constant feature)
  double bias = 0;
  std::vector<double> weights;
  uint64_t trained_migration = 0;
  uint64_t trained_background = 0;
  bool converged = false;

  // P(migration | x); a NaN feature is replaced by the training mean.
  double Predict(const std::vector<double>& x) const;
};

// Damped Newton on the L2-regularised weighted log-likelihood. Errors when a
// class has no row, rows have the wrong size, or an option is out of range.
absl::StatusOr<TimingModel> TrainTiming(const std::vector<std::vector<double>>& x,
                                        const std::vector<bool>& is_migration,
                                        const std::vector<std::string>& names,
                                        const TimingTrainingOptions& options = {});

class TimingAttack final : public Detector {
 public:
  // `name` tells apart models trained on different data ("timing",
  // "timing_adaptive"). Errors when the model's features do not match the
  // configuration's.
  static absl::StatusOr<TimingAttack> Create(TimingModel model, const FeatureConfig& config,
                                             std::string name = "timing", double threshold = 0.5);
  std::string_view name() const override { return name_; }
  // Score = P(migration); undecided (NaN score) only when every feature is NaN.
  DetectorResult Evaluate(const FlowView& flow) const override;
  const TimingModel& model() const { return model_; }

 private:
  TimingAttack(TimingModel model, std::string name, double threshold)
      : model_(std::move(model)), name_(std::move(name)), threshold_(threshold) {}
  TimingModel model_;
  std::string name_;
  double threshold_;
};

}  // namespace shroud

#endif  // SHROUD_CONTROL_ANALYSIS_TIMING_ATTACK_H_
