// Maximum-entropy (binary multinomial-logistic) model over a triple of
// coefficients of variation, the paper's Algorithm 2 classifier.
//
// The paper used Apache OpenNLP's MAXENT with real-valued features. A
// conditional maximum-entropy model with real-valued feature functions and
// two outcomes is exactly logistic regression, so that is what this is:
// P(migration | x) = 1 / (1 + exp(-(b + w . phi(x)))), trained by maximising
// the L2-regularised log-likelihood. phi() is the feature transform the model
// file names (see maxent_model.cc), followed by standardisation with the
// training set's mean and standard deviation.
#ifndef SHROUD_CONTROL_ANALYSIS_MAXENT_MODEL_H_
#define SHROUD_CONTROL_ANALYSIS_MAXENT_MODEL_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shroud {

inline constexpr int kMaxEntFeatures = 3;
using CovTriple = std::array<double, kMaxEntFeatures>;

enum class FeatureTransform {
  kIdentity,  // phi(x) = x
  kLog,       // phi(x) = log(x + 1e-4): CoVs of migrations sit near 0, where a log spreads them
};

struct MaxEntTrainingOptions {
  FeatureTransform transform = FeatureTransform::kLog;
  double l2 = 1e-3;         // regularisation strength on the weights (not the bias)
  int max_iterations = 2000;
  double tolerance = 1e-9;  // stop when the gradient's max-norm falls below this
  // Weigh the classes so each contributes half of the likelihood: migration
  // flows are rare next to background flows.
  bool balance_classes = true;
};

struct MaxEntModel {
  static constexpr int kFormatVersion = 1;

  std::array<uint32_t, kMaxEntFeatures> windows{};  // packet window sizes of the triple
  FeatureTransform transform = FeatureTransform::kLog;
  std::array<double, kMaxEntFeatures> mean{};       // standardisation of phi(x)
  std::array<double, kMaxEntFeatures> scale{1, 1, 1};
  double bias = 0;
  std::array<double, kMaxEntFeatures> weights{};
  // Provenance, written to and read from the file; not used for prediction.
  uint64_t trained_migration = 0;
  uint64_t trained_background = 0;
  std::string comment;

  // P(migration | x). NaN input (too short a flow), or a feature outside the
  // transform's domain (infinite; negative under kLog), yields NaN.
  double Predict(const CovTriple& x) const;

  // Versioned JSON; see maxent_model.cc for the documented format. Errors
  // name the file and the problem (missing, not JSON, wrong format name,
  // unsupported version, missing or bad field).
  absl::Status Save(const std::string& path) const;
  static absl::StatusOr<MaxEntModel> Load(const std::string& path);
  std::string ToJson() const;
  static absl::StatusOr<MaxEntModel> FromJson(const std::string& text, const std::string& origin);
};

// Trains on labelled triples (label true = migration). Rows with a NaN (or a
// feature outside the transform's domain) are skipped. Errors when either
// class has no usable row, the sizes differ, the windows are not positive and
// strictly ascending, or an option is out of range. Reaching max_iterations
// is not an error: the model's comment records the settings and whether
// training converged.
absl::StatusOr<MaxEntModel> TrainMaxEnt(const std::vector<CovTriple>& x,
                                        const std::vector<bool>& is_migration,
                                        const std::array<uint32_t, kMaxEntFeatures>& windows,
                                        const MaxEntTrainingOptions& options = {});

}  // namespace shroud

#endif  // SHROUD_CONTROL_ANALYSIS_MAXENT_MODEL_H_
