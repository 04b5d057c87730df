// The adversary's detectors. Each looks at one flow's features and says how
// migration-like it is. Adding a stronger detector means adding a Detector
// subclass; the evaluation and the CLI iterate over whatever they are given.
#ifndef SHROUD_CONTROL_ANALYSIS_DETECTORS_H_
#define SHROUD_CONTROL_ANALYSIS_DETECTORS_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "control/analysis/maxent_model.h"
#include "dataplane/core/flow_features.h"
#include "shroud/feature_config.h"
#include "shroud/flow_key.h"

namespace shroud {

// What a detector sees of a flow.
struct FlowView {
  const FlowKey& key;
  const FlowFeatures& features;
  uint64_t stream_packets;  // packets of the whole observed stream so far
  const FeatureConfig& config;
};

struct DetectorResult {
  double score = 0;      // detector-specific: higher = more migration-like
  bool flagged = false;  // the detector's verdict
  bool decided = false;  // false when the flow gave too little data to judge
};

class Detector {
 public:
  virtual ~Detector() = default;
  virtual std::string_view name() const = 0;
  virtual DetectorResult Evaluate(const FlowView& flow) const = 0;
};

// Algorithm 1. The work happens per packet in FlowFeatures::Observe (burst
// starts, distances, CoV per Pwin window, pattern counter); this reads the
// verdict: migration when the counter exceeds PCt. Score = pattern counter.
class PatternAttack final : public Detector {
 public:
  std::string_view name() const override { return "pattern"; }
  DetectorResult Evaluate(const FlowView& flow) const override;
};

// Algorithm 2: a trained maximum-entropy model over the CoV of the flow's
// bytes per window for the model's three window sizes. Score = P(migration).
class MaxEntAttack final : public Detector {
 public:
  // Errors when the model's windows are not all in the feature configuration.
  static absl::StatusOr<std::unique_ptr<MaxEntAttack>> Create(MaxEntModel model,
                                                              const FeatureConfig& config,
                                                              double threshold = 0.5);
  std::string_view name() const override { return "maxent"; }
  DetectorResult Evaluate(const FlowView& flow) const override;
  // The feature triple for a flow (NaN where a window has too little data).
  CovTriple Features(const FlowView& flow) const;
  const MaxEntModel& model() const { return model_; }

 private:
  MaxEntAttack(MaxEntModel model, std::array<size_t, kMaxEntFeatures> slots, double threshold)
      : model_(std::move(model)), slots_(slots), threshold_(threshold) {}
  MaxEntModel model_;
  std::array<size_t, kMaxEntFeatures> slots_;
  double threshold_;
};

// The CoV triple for `windows` (which must be in config), NaN where undefined.
absl::StatusOr<CovTriple> CovFeatures(const FlowView& flow,
                                      const std::array<uint32_t, kMaxEntFeatures>& windows);

// The verdicts `shroud analyze` prints and the control process serves.
struct FlowVerdict {
  DetectorResult pattern;
  DetectorResult maxent;
  bool migration = false;  // combined: either paper detector flags the flow
};

// The paper's pair of detectors, as one unit: the adversary flags a flow when
// either attack does (the paper reports them separately; a real adversary
// would use both).
class PaperDetectors {
 public:
  static absl::StatusOr<PaperDetectors> Create(MaxEntModel model, const FeatureConfig& config);
  FlowVerdict Evaluate(const FlowView& flow) const;
  const MaxEntAttack& maxent() const { return *maxent_; }
  const PatternAttack& pattern() const { return pattern_; }

 private:
  PatternAttack pattern_;
  std::shared_ptr<MaxEntAttack> maxent_;
};

}  // namespace shroud

#endif  // SHROUD_CONTROL_ANALYSIS_DETECTORS_H_
