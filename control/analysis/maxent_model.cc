// Maximum-entropy (logistic regression) model over a CoV triple.
//
// Model file format, version 1 (JSON, UTF-8):
//
//   {
//     "format": "shroud-maxent",          // required, exactly this string
//     "version": 1,                       // required integer; readers reject others
//     "windows": [100, 500, 1000],        // required: 3 packet window sizes, positive
//                                         //   integers, strictly ascending
//     "transform": "log",                 // required: "log" (phi(x) = log(x + 1e-4))
//                                         //   or "identity" (phi(x) = x)
//     "standardize": {                    // required: z_i = (phi(x_i) - mean_i) / scale_i
//       "mean": [m0, m1, m2],             //   3 finite numbers
//       "scale": [s0, s1, s2]             //   3 finite numbers > 0
//     },
//     "bias": b,                          // required finite number
//     "weights": [w0, w1, w2],            // required: 3 finite numbers
//     "trained": {"migration": N,         // optional provenance: training rows per
//                 "background": M},       //   class (non-negative integers)
//     "comment": "..."                    // optional free text
//   }
//
// P(migration | x) = 1 / (1 + exp(-(b + w . z))). Feature i of the triple is
// the coefficient of variation of the bytes per window of windows[i] packets.
// Unknown members are ignored so that a later version-1 writer may add
// provenance without breaking older readers; anything that changes how a
// prediction is computed must bump "version". Doubles are written in the
// shortest form that reads back to the same value, so a saved model predicts
// bit-for-bit what the in-memory one did.

#include "control/analysis/maxent_model.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "dataplane/core/text_file.h"

namespace shroud {
namespace {

using Json = nlohmann::json;
constexpr int kP = kMaxEntFeatures + 1;  // parameters: bias, then weights
constexpr double kLogOffset = 1e-4;
constexpr char kFormatName[] = "shroud-maxent";

// phi(x); NaN when x is outside the transform's domain, so that an invalid
// feature propagates to the prediction instead of producing a confident guess.
double Transform(FeatureTransform transform, double x) {
  if (!std::isfinite(x)) return std::numeric_limits<double>::quiet_NaN();
  switch (transform) {
    case FeatureTransform::kIdentity:
      return x;
    case FeatureTransform::kLog:
      if (x < 0) return std::numeric_limits<double>::quiet_NaN();
      return std::log(x + kLogOffset);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

const char* TransformName(FeatureTransform transform) {
  return transform == FeatureTransform::kLog ? "log" : "identity";
}

// log(1 + exp(z)) without overflow for large z or lost precision for small.
double Softplus(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }

double Sigmoid(double z) {
  if (z >= 0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}

absl::Status ValidateWindows(const std::array<uint32_t, kMaxEntFeatures>& windows) {
  for (int i = 0; i < kMaxEntFeatures; ++i) {
    if (windows[i] == 0 || (i > 0 && windows[i] <= windows[i - 1])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "windows must be positive and strictly ascending, got [%d, %d, %d]", windows[0],
          windows[1], windows[2]));
    }
  }
  return absl::OkStatus();
}

// Checks what the file format requires of the numbers, so that Save never
// writes a file that Load would reject (nlohmann writes NaN as null).
absl::Status ValidateModel(const MaxEntModel& m) {
  if (absl::Status s = ValidateWindows(m.windows); !s.ok()) return s;
  auto finite = [](const std::array<double, kMaxEntFeatures>& v) {
    return std::all_of(v.begin(), v.end(), [](double d) { return std::isfinite(d); });
  };
  if (!finite(m.mean)) return absl::InvalidArgumentError("standardize mean is not finite");
  for (double s : m.scale) {
    if (!std::isfinite(s) || s <= 0) {
      return absl::InvalidArgumentError("standardize scale must be finite and > 0");
    }
  }
  if (!std::isfinite(m.bias)) return absl::InvalidArgumentError("bias is not finite");
  if (!finite(m.weights)) return absl::InvalidArgumentError("weights are not finite");
  return absl::OkStatus();
}

// ---- JSON reading: each helper names the field and what it must be. ----

absl::Status FieldError(const std::string& origin, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(origin, ": field '", field, "' ", what));
}

absl::StatusOr<const Json*> Member(const Json& object, const std::string& origin,
                                   absl::string_view field, absl::string_view what) {
  auto it = object.find(std::string(field));
  if (it == object.end()) return FieldError(origin, field, absl::StrCat("is missing (", what, ")"));
  return &*it;
}

absl::StatusOr<double> FiniteNumber(const Json& object, const std::string& origin,
                                    absl::string_view field) {
  absl::StatusOr<const Json*> v = Member(object, origin, field, "must be a finite number");
  if (!v.ok()) return v.status();
  if (!(*v)->is_number()) return FieldError(origin, field, "must be a finite number");
  const double d = (*v)->get<double>();
  if (!std::isfinite(d)) return FieldError(origin, field, "must be a finite number");
  return d;
}

// `name` is the field as messages show it ("standardize.mean"), `field` the
// member looked up in `object`.
absl::StatusOr<std::array<double, kMaxEntFeatures>> NumberTriple(const Json& object,
                                                                 const std::string& origin,
                                                                 absl::string_view field,
                                                                 absl::string_view name) {
  const std::string what = absl::StrCat("must be an array of ", kMaxEntFeatures, " finite numbers");
  auto it = object.find(std::string(field));
  if (it == object.end()) return FieldError(origin, name, absl::StrCat("is missing (", what, ")"));
  const Json& array = *it;
  if (!array.is_array() || array.size() != kMaxEntFeatures) return FieldError(origin, name, what);
  std::array<double, kMaxEntFeatures> out{};
  for (int i = 0; i < kMaxEntFeatures; ++i) {
    if (!array[i].is_number()) return FieldError(origin, name, what);
    out[i] = array[i].get<double>();
    if (!std::isfinite(out[i])) return FieldError(origin, name, what);
  }
  return out;
}

absl::StatusOr<uint64_t> Count(const Json& object, const std::string& origin,
                               absl::string_view field) {
  auto it = object.find(std::string(field));
  if (it == object.end()) return 0;
  if (!it->is_number_unsigned()) return FieldError(origin, field, "must be a non-negative integer");
  return it->get<uint64_t>();
}

absl::StatusOr<MaxEntModel> FromJsonValue(const Json& root, const std::string& origin) {
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": top level is not a JSON object"));
  }
  auto format = root.find("format");
  if (format == root.end() || !format->is_string() || format->get<std::string>() != kFormatName) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": format is not ", kFormatName));
  }
  auto version = root.find("version");
  if (version == root.end() || !version->is_number_integer()) {
    return FieldError(origin, "version", "must be an integer");
  }
  if (version->get<int64_t>() != MaxEntModel::kFormatVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": version ", version->get<int64_t>(),
                     " is not supported (this build reads version ", MaxEntModel::kFormatVersion,
                     ")"));
  }

  MaxEntModel model;
  const std::string windows_what =
      absl::StrCat("must be an array of ", kMaxEntFeatures,
                   " positive integers in strictly ascending order");
  absl::StatusOr<const Json*> windows = Member(root, origin, "windows", windows_what);
  if (!windows.ok()) return windows.status();
  if (!(*windows)->is_array() || (*windows)->size() != kMaxEntFeatures) {
    return FieldError(origin, "windows", windows_what);
  }
  for (int i = 0; i < kMaxEntFeatures; ++i) {
    const Json& w = (**windows)[i];
    if (!w.is_number_unsigned() || w.get<uint64_t>() == 0 ||
        w.get<uint64_t>() > std::numeric_limits<uint32_t>::max() ||
        (i > 0 && w.get<uint64_t>() <= model.windows[i - 1])) {
      return FieldError(origin, "windows", windows_what);
    }
    model.windows[i] = static_cast<uint32_t>(w.get<uint64_t>());
  }

  absl::StatusOr<const Json*> transform =
      Member(root, origin, "transform", "must be \"log\" or \"identity\"");
  if (!transform.ok()) return transform.status();
  if (**transform == "log") {
    model.transform = FeatureTransform::kLog;
  } else if (**transform == "identity") {
    model.transform = FeatureTransform::kIdentity;
  } else {
    return FieldError(origin, "transform", "must be \"log\" or \"identity\"");
  }

  absl::StatusOr<const Json*> standardize =
      Member(root, origin, "standardize", "must be an object with 'mean' and 'scale'");
  if (!standardize.ok()) return standardize.status();
  if (!(*standardize)->is_object()) {
    return FieldError(origin, "standardize", "must be an object with 'mean' and 'scale'");
  }
  absl::StatusOr<std::array<double, kMaxEntFeatures>> mean =
      NumberTriple(**standardize, origin, "mean", "standardize.mean");
  if (!mean.ok()) return mean.status();
  absl::StatusOr<std::array<double, kMaxEntFeatures>> scale =
      NumberTriple(**standardize, origin, "scale", "standardize.scale");
  if (!scale.ok()) return scale.status();
  for (double s : *scale) {
    if (s <= 0) {
      return FieldError(origin, "standardize.scale",
                        "must hold numbers > 0 (standard deviations)");
    }
  }
  model.mean = *mean;
  model.scale = *scale;

  absl::StatusOr<double> bias = FiniteNumber(root, origin, "bias");
  if (!bias.ok()) return bias.status();
  model.bias = *bias;
  absl::StatusOr<std::array<double, kMaxEntFeatures>> weights =
      NumberTriple(root, origin, "weights", "weights");
  if (!weights.ok()) return weights.status();
  model.weights = *weights;

  if (auto trained = root.find("trained"); trained != root.end()) {
    if (!trained->is_object()) {
      return FieldError(origin, "trained", "must be an object with 'migration' and 'background'");
    }
    absl::StatusOr<uint64_t> migration = Count(*trained, origin, "migration");
    if (!migration.ok()) return migration.status();
    absl::StatusOr<uint64_t> background = Count(*trained, origin, "background");
    if (!background.ok()) return background.status();
    model.trained_migration = *migration;
    model.trained_background = *background;
  }
  if (auto comment = root.find("comment"); comment != root.end()) {
    if (!comment->is_string()) return FieldError(origin, "comment", "must be a string");
    model.comment = comment->get<std::string>();
  }
  return model;
}

// Writes `data` to `path` so that readers see either the old file or the
// whole new one: a temporary file in the same directory, synced, then renamed
// over the target.
absl::Status WriteFileAtomically(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp-XXXXXX";
  const int fd = mkstemp(tmp.data());
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot create a temporary file next to it"));
  }
  auto fail = [&](const std::string& what) {
    const int error = errno;
    close(fd);
    unlink(tmp.c_str());
    return absl::ErrnoToStatus(error, absl::StrCat(path, ": ", what));
  };
  // mkstemp creates 0600; a model is not a secret and is meant to be shared.
  if (fchmod(fd, 0644) != 0) return fail("cannot set permissions on temporary file");
  size_t written = 0;
  while (written < data.size()) {
    const ssize_t n = write(fd, data.data() + written, data.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("cannot write");
    }
    written += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) return fail("cannot sync");
  if (close(fd) != 0) {
    const int error = errno;
    unlink(tmp.c_str());
    return absl::ErrnoToStatus(error, absl::StrCat(path, ": cannot close"));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    unlink(tmp.c_str());
    return absl::ErrnoToStatus(error, absl::StrCat(path, ": cannot rename temporary file into place"));
  }
  return absl::OkStatus();
}

// Row-major 4x4 solve by Cholesky; false when the matrix is not numerically
// positive definite.
bool CholeskySolve(std::array<double, kP * kP> a, std::array<double, kP> b,
                   std::array<double, kP>& x) {
  for (int j = 0; j < kP; ++j) {
    double d = a[j * kP + j];
    for (int k = 0; k < j; ++k) d -= a[j * kP + k] * a[j * kP + k];
    if (!(d > 0)) return false;
    d = std::sqrt(d);
    a[j * kP + j] = d;
    for (int i = j + 1; i < kP; ++i) {
      double s = a[i * kP + j];
      for (int k = 0; k < j; ++k) s -= a[i * kP + k] * a[j * kP + k];
      a[i * kP + j] = s / d;
    }
  }
  for (int i = 0; i < kP; ++i) {
    for (int k = 0; k < i; ++k) b[i] -= a[i * kP + k] * b[k];
    b[i] /= a[i * kP + i];
  }
  for (int i = kP - 1; i >= 0; --i) {
    for (int k = i + 1; k < kP; ++k) b[i] -= a[k * kP + i] * b[k];
    b[i] /= a[i * kP + i];
  }
  x = b;
  return true;
}

}  // namespace

double MaxEntModel::Predict(const CovTriple& x) const {
  double z = bias;
  for (int i = 0; i < kMaxEntFeatures; ++i) {
    const double phi = Transform(transform, x[i]);
    if (std::isnan(phi)) return std::numeric_limits<double>::quiet_NaN();
    z += weights[i] * (phi - mean[i]) / scale[i];
  }
  return Sigmoid(z);
}

std::string MaxEntModel::ToJson() const {
  // Ordered so that the file reads like the documented format: what it is
  // first, provenance last.
  nlohmann::ordered_json j = {
      {"format", kFormatName},
      {"version", kFormatVersion},
      {"windows", windows},
      {"transform", TransformName(transform)},
      {"standardize", {{"mean", mean}, {"scale", scale}}},
      {"bias", bias},
      {"weights", weights},
      {"trained", {{"migration", trained_migration}, {"background", trained_background}}},
      {"comment", comment},
  };
  // Replace, not throw, on invalid UTF-8 in the comment: it is free text.
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

absl::Status MaxEntModel::Save(const std::string& path) const {
  if (absl::Status s = ValidateModel(*this); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": refusing to save: ", s.message()));
  }
  std::string text;
  try {
    text = ToJson();
  } catch (const std::exception& e) {  // allocation failure
    return absl::InternalError(absl::StrCat(path, ": cannot serialise model: ", e.what()));
  }
  return WriteFileAtomically(path, text);
}

absl::StatusOr<MaxEntModel> MaxEntModel::Load(const std::string& path) {
  absl::StatusOr<std::string> text = ReadTextFile(path);
  if (!text.ok()) return text.status();
  return FromJson(*text, path);
}

absl::StatusOr<MaxEntModel> MaxEntModel::FromJson(const std::string& text,
                                                  const std::string& origin) {
  try {
    Json root;
    try {
      root = Json::parse(text);
    } catch (const Json::parse_error& e) {
      // e.what() repeats the position as line/column; keep only the reason.
      absl::string_view what = e.what();
      const size_t colon = what.find(": ");
      const absl::string_view reason =
          colon == absl::string_view::npos ? what : what.substr(colon + 2);
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": not valid JSON at byte ", e.byte, " (", reason, ")"));
    } catch (const Json::out_of_range& e) {
      // JSON cannot spell NaN or infinity; a literal that overflows a double
      // (1e999) is the one way a non-finite number gets in.
      absl::string_view what = e.what();
      const size_t bracket = what.find("] ");
      if (bracket != absl::string_view::npos) what.remove_prefix(bracket + 2);
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": non-finite number (", what, ")"));
    }
    return FromJsonValue(root, origin);
  } catch (const std::exception& e) {
    // The accessors are type-checked before use, so this is a bug or an
    // allocation failure; either way it must not escape.
    return absl::InternalError(absl::StrCat(origin, ": cannot read model: ", e.what()));
  }
}

absl::StatusOr<MaxEntModel> TrainMaxEnt(const std::vector<CovTriple>& x,
                                        const std::vector<bool>& is_migration,
                                        const std::array<uint32_t, kMaxEntFeatures>& windows,
                                        const MaxEntTrainingOptions& options) {
  if (x.size() != is_migration.size()) {
    return absl::InvalidArgumentError(absl::StrCat(x.size(), " feature rows but ",
                                                   is_migration.size(), " labels"));
  }
  if (absl::Status s = ValidateWindows(windows); !s.ok()) return s;
  if (!(options.l2 >= 0) || !std::isfinite(options.l2)) {
    return absl::InvalidArgumentError(absl::StrCat("l2 must be >= 0, got ", options.l2));
  }
  if (options.max_iterations < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_iterations must be >= 1, got ", options.max_iterations));
  }
  if (!(options.tolerance >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tolerance must be >= 0, got ", options.tolerance));
  }

  // Transformed usable rows; a row with any invalid feature is dropped whole.
  std::vector<std::array<double, kMaxEntFeatures>> phi;
  std::vector<bool> label;
  uint64_t n_migration = 0, n_background = 0;
  for (size_t r = 0; r < x.size(); ++r) {
    std::array<double, kMaxEntFeatures> row{};
    bool usable = true;
    for (int i = 0; i < kMaxEntFeatures; ++i) {
      row[i] = Transform(options.transform, x[r][i]);
      usable = usable && !std::isnan(row[i]);
    }
    if (!usable) continue;
    phi.push_back(row);
    label.push_back(is_migration[r]);
    ++(is_migration[r] ? n_migration : n_background);
  }
  if (n_migration == 0 || n_background == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training needs usable rows of both classes, got ", n_migration, " migration and ",
        n_background, " background"));
  }
  const size_t n = phi.size();

  MaxEntModel model;
  model.windows = windows;
  model.transform = options.transform;
  model.trained_migration = n_migration;
  model.trained_background = n_background;

  // Standardise with the plain (unweighted) training statistics so that the
  // L2 penalty treats the three windows alike whatever their spread.
  for (int i = 0; i < kMaxEntFeatures; ++i) {
    double sum = 0;
    for (const auto& row : phi) sum += row[i];
    const double mean = sum / static_cast<double>(n);
    double squares = 0;
    for (const auto& row : phi) squares += (row[i] - mean) * (row[i] - mean);
    const double sd = std::sqrt(squares / static_cast<double>(n));
    // A constant feature carries no information; its rounded mean would leave
    // an sd of ~1e-15 that blows rounding noise up to unit size, so test
    // constancy exactly rather than sd == 0.
    const auto [lo, hi] = std::minmax_element(phi.begin(), phi.end(),
                                              [i](const auto& a, const auto& b) { return a[i] < b[i]; });
    const bool constant = (*lo)[i] == (*hi)[i];
    model.mean[i] = mean;
    model.scale[i] = !constant && sd > 0 && std::isfinite(sd) ? sd : 1.0;
    for (auto& row : phi) row[i] = (row[i] - mean) / model.scale[i];
  }

  // Per-row weights sum to 1 overall, so the objective is a mean and l2 means
  // the same thing whatever the number of rows. Balanced: each class sums to 1/2.
  std::vector<double> row_weight(n);
  for (size_t r = 0; r < n; ++r) {
    row_weight[r] = options.balance_classes
                        ? 0.5 / static_cast<double>(label[r] ? n_migration : n_background)
                        : 1.0 / static_cast<double>(n);
  }

  // theta = (bias, w0, w1, w2). Objective: weighted mean negative
  // log-likelihood + l2/2 |w|^2 (bias unpenalised). It is convex, and strictly
  // so in w when l2 > 0, so damped Newton converges from zero and is
  // deterministic; on separable data the L2 term keeps the optimum finite.
  std::array<double, kP> theta{};
  auto objective = [&](const std::array<double, kP>& t) {
    double f = 0;
    for (size_t r = 0; r < n; ++r) {
      double z = t[0];
      for (int i = 0; i < kMaxEntFeatures; ++i) z += t[i + 1] * phi[r][i];
      // -log P(y|x): softplus(-z) for a migration, softplus(z) for background.
      f += row_weight[r] * Softplus(label[r] ? -z : z);
    }
    for (int i = 1; i < kP; ++i) f += 0.5 * options.l2 * t[i] * t[i];
    return f;
  };

  double f = objective(theta);
  double grad_norm = std::numeric_limits<double>::infinity();
  int iteration = 0;
  bool converged = false;
  for (; iteration < options.max_iterations; ++iteration) {
    std::array<double, kP> grad{};
    std::array<double, kP * kP> hess{};
    for (size_t r = 0; r < n; ++r) {
      const std::array<double, kP> v = {1.0, phi[r][0], phi[r][1], phi[r][2]};
      double z = 0;
      for (int i = 0; i < kP; ++i) z += theta[i] * v[i];
      const double p = Sigmoid(z);
      const double residual = row_weight[r] * (p - (label[r] ? 1.0 : 0.0));
      const double curvature = row_weight[r] * p * (1.0 - p);
      for (int i = 0; i < kP; ++i) {
        grad[i] += residual * v[i];
        for (int k = 0; k < kP; ++k) hess[i * kP + k] += curvature * v[i] * v[k];
      }
    }
    for (int i = 1; i < kP; ++i) {
      grad[i] += options.l2 * theta[i];
      hess[i * kP + i] += options.l2;
    }
    grad_norm = 0;
    for (double g : grad) grad_norm = std::max(grad_norm, std::abs(g));
    if (grad_norm <= options.tolerance) {
      converged = true;
      break;
    }

    // Newton direction; plain steepest descent where the Hessian is singular
    // (only possible with l2 = 0 and saturated probabilities).
    std::array<double, kP> neg_grad;
    for (int i = 0; i < kP; ++i) neg_grad[i] = -grad[i];
    std::array<double, kP> step;
    if (!CholeskySolve(hess, neg_grad, step)) step = neg_grad;
    double slope = 0;
    for (int i = 0; i < kP; ++i) slope += grad[i] * step[i];

    // Backtracking (Armijo) line search: full Newton steps near the optimum,
    // shorter ones while the sigmoids are saturated far from it.
    double alpha = 1.0;
    std::array<double, kP> candidate;
    double f_candidate = f;
    bool improved = false;
    for (int tries = 0; tries < 60; ++tries, alpha *= 0.5) {
      for (int i = 0; i < kP; ++i) candidate[i] = theta[i] + alpha * step[i];
      f_candidate = objective(candidate);
      if (f_candidate <= f + 1e-4 * alpha * slope) {
        improved = true;
        break;
      }
    }
    // No step decreases the objective any more: we are at the optimum to
    // within rounding, whatever the requested tolerance.
    if (!improved) {
      converged = true;
      break;
    }
    theta = candidate;
    f = f_candidate;
  }
  if (!std::all_of(theta.begin(), theta.end(), [](double t) { return std::isfinite(t); })) {
    return absl::InternalError("training diverged (non-finite parameters)");
  }

  model.bias = theta[0];
  for (int i = 0; i < kMaxEntFeatures; ++i) model.weights[i] = theta[i + 1];
  model.comment = absl::StrFormat(
      "logistic regression, %s transform, l2=%g, %s classes; %s after %d Newton iterations, "
      "max|gradient|=%.3g",
      TransformName(options.transform), options.l2,
      options.balance_classes ? "balanced" : "unbalanced",
      converged ? "converged" : "NOT converged", iteration, grad_norm);
  return model;
}

}  // namespace shroud
