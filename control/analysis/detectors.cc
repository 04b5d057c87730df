#include "control/analysis/detectors.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace shroud {

DetectorResult PatternAttack::Evaluate(const FlowView& flow) const {
  DetectorResult r;
  r.score = flow.features.a1_pattern_counter;
  r.flagged = flow.features.pattern_detected(flow.config);
  // Flagged flows are decided; otherwise only flows that produced enough
  // evaluated windows could have been flagged.
  r.decided = r.flagged || flow.features.a1_windows > flow.config.pattern_count_threshold;
  return r;
}

absl::StatusOr<CovTriple> CovFeatures(const FlowView& flow,
                                      const std::array<uint32_t, kMaxEntFeatures>& windows) {
  CovTriple x;
  for (int i = 0; i < kMaxEntFeatures; ++i) {
    int slot = flow.config.WindowSlot(windows[i]);
    if (slot < 0) {
      return absl::InvalidArgumentError(absl::StrCat("window ", windows[i],
                                                     " is not in the feature window set ",
                                                     flow.config.WindowsToString()));
    }
    x[i] = ByteWindowCov(flow.features, flow.config, static_cast<size_t>(slot), flow.stream_packets);
  }
  return x;
}

absl::StatusOr<std::unique_ptr<MaxEntAttack>> MaxEntAttack::Create(MaxEntModel model,
                                                                   const FeatureConfig& config,
                                                                   double threshold) {
  std::array<size_t, kMaxEntFeatures> slots{};
  for (int i = 0; i < kMaxEntFeatures; ++i) {
    int slot = config.WindowSlot(model.windows[i]);
    if (slot < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("the maxent model uses window ", model.windows[i],
                       ", which is not in the configured window set ", config.WindowsToString()));
    }
    slots[i] = static_cast<size_t>(slot);
  }
  if (!(threshold > 0 && threshold < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("maxent threshold must be in (0,1), got ", threshold));
  }
  return std::unique_ptr<MaxEntAttack>(new MaxEntAttack(std::move(model), slots, threshold));
}

CovTriple MaxEntAttack::Features(const FlowView& flow) const {
  CovTriple x;
  for (int i = 0; i < kMaxEntFeatures; ++i) {
    x[i] = ByteWindowCov(flow.features, flow.config, slots_[i], flow.stream_packets);
  }
  return x;
}

DetectorResult MaxEntAttack::Evaluate(const FlowView& flow) const {
  DetectorResult r;
  double p = model_.Predict(Features(flow));
  r.score = p;
  r.decided = !std::isnan(p);
  r.flagged = r.decided && p >= threshold_;
  return r;
}

absl::StatusOr<PaperDetectors> PaperDetectors::Create(MaxEntModel model,
                                                      const FeatureConfig& config) {
  auto maxent = MaxEntAttack::Create(std::move(model), config);
  if (!maxent.ok()) return maxent.status();
  PaperDetectors d;
  d.maxent_ = std::shared_ptr<MaxEntAttack>(std::move(*maxent));
  return d;
}

FlowVerdict PaperDetectors::Evaluate(const FlowView& flow) const {
  FlowVerdict v;
  v.pattern = pattern_.Evaluate(flow);
  v.maxent = maxent_->Evaluate(flow);
  v.migration = v.pattern.flagged || v.maxent.flagged;
  return v;
}

}  // namespace shroud
