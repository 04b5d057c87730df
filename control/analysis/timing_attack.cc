#include "control/analysis/timing_attack.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace shroud {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Gaps below this are back-to-back segments of one burst (a sender with a
// full window, or a token bucket releasing a backlog).
constexpr uint32_t kBackToBackUs = 20;

double Sigmoid(double z) {
  return z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z));
}
double Softplus(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }
double SafeLog(double v) { return std::log(std::max(v, 0.0) + 1e-3); }

// Solves A x = b for a symmetric positive definite A (n x n, row-major);
// false when A is not positive definite.
bool CholeskySolve(std::vector<double> a, std::vector<double> b, size_t n, std::vector<double>* x) {
  for (size_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (size_t k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    if (!(d > 0)) return false;
    a[j * n + j] = std::sqrt(d);
    for (size_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (size_t k = 0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = s / a[j * n + j];
    }
  }
  for (size_t i = 0; i < n; ++i) {  // L y = b
    for (size_t k = 0; k < i; ++k) b[i] -= a[i * n + k] * b[k];
    b[i] /= a[i * n + i];
  }
  for (size_t i = n; i-- > 0;) {  // L^T x = y
    for (size_t k = i + 1; k < n; ++k) b[i] -= a[k * n + i] * b[k];
    b[i] /= a[i * n + i];
  }
  *x = std::move(b);
  return true;
}

}  // namespace

std::vector<std::string> TimingFeatureNames(const FeatureConfig& config) {
  std::vector<std::string> names;
  for (size_t i = 0; i < config.byte_window_count; ++i) {
    names.push_back(absl::StrCat("log_cov_", config.byte_windows[i]));
  }
  for (const char* n : {"pattern_share", "log_mean_packet_bytes", "log_bytes_per_s",
                        "stream_share", "ipt_top1_share", "ipt_topk_share",
                        "ipt_back_to_back_share", "log_ipt_median_us", "ipt_entropy"}) {
    names.push_back(n);
  }
  return names;
}

std::vector<double> TimingFeatures(const FlowView& flow) {
  const FlowFeatures& f = flow.features;
  const FeatureConfig& config = flow.config;
  std::vector<double> x;
  x.reserve(config.byte_window_count + 9);
  for (size_t i = 0; i < config.byte_window_count; ++i) {
    const double cov = ByteWindowCov(f, config, i, flow.stream_packets);
    x.push_back(std::isnan(cov) ? kNaN : SafeLog(cov));
  }
  // How often Algorithm 1's regular-burst pattern held, not only whether it
  // held more than PCt times.
  x.push_back(f.a1_windows == 0 ? kNaN
                                : static_cast<double>(f.a1_pattern_counter) / f.a1_windows);
  x.push_back(f.packets == 0 ? kNaN : std::log(static_cast<double>(f.bytes) / f.packets));
  const double duration = f.duration_seconds();
  x.push_back(duration > 0 ? std::log(static_cast<double>(f.bytes) / duration) : kNaN);
  const uint64_t span = f.last_stream_index - f.first_stream_index + 1;
  x.push_back(f.packets == 0 ? kNaN : static_cast<double>(f.packets) / static_cast<double>(span));
  // The inter-packet-time sketch: the k most common 1 us categories.
  const double gaps = f.packets > 1 ? static_cast<double>(f.packets - 1) : 0.0;
  std::vector<IptCategoryCount> top = TopIptCategories(f);
  if (gaps == 0 || top.empty()) {
    for (int i = 0; i < 5; ++i) x.push_back(kNaN);
    return x;
  }
  double covered = 0, back_to_back = 0, top1 = top.front().count;
  for (const IptCategoryCount& c : top) {
    covered += c.count;
    if (c.category_us < kBackToBackUs) back_to_back += c.count;
  }
  x.push_back(std::min(1.0, top1 / gaps));
  x.push_back(std::min(1.0, covered / gaps));
  x.push_back(std::min(1.0, back_to_back / gaps));
  std::vector<IptCategoryCount> by_time = top;
  std::sort(by_time.begin(), by_time.end(),
            [](const auto& a, const auto& b) { return a.category_us < b.category_us; });
  double seen = 0, median = by_time.back().category_us;
  for (const IptCategoryCount& c : by_time) {
    seen += c.count;
    if (seen >= covered / 2) {
      median = c.category_us;
      break;
    }
  }
  x.push_back(std::log1p(median));
  double entropy = 0;
  for (const IptCategoryCount& c : top) {
    const double p = c.count / covered;
    if (p > 0) entropy -= p * std::log(p);
  }
  x.push_back(entropy);
  return x;
}

double TimingModel::Predict(const std::vector<double>& x) const {
  if (x.size() != weights.size()) return kNaN;
  double z = bias;
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = std::isnan(x[i]) ? mean[i] : x[i];
    if (!std::isfinite(v)) return kNaN;
    z += weights[i] * (v - mean[i]) / scale[i];
  }
  return Sigmoid(z);
}

absl::StatusOr<TimingModel> TrainTiming(const std::vector<std::vector<double>>& x,
                                        const std::vector<bool>& is_migration,
                                        const std::vector<std::string>& names,
                                        const TimingTrainingOptions& options) {
  if (x.size() != is_migration.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(x.size(), " feature rows but ", is_migration.size(), " labels"));
  }
  if (!(options.l2 > 0) || !std::isfinite(options.l2)) {
    return absl::InvalidArgumentError(absl::StrCat("l2 must be > 0, got ", options.l2));
  }
  if (options.max_iterations < 1) {
    return absl::InvalidArgumentError("max_iterations must be >= 1");
  }
  const size_t d = names.size();
  uint64_t n_mig = 0, n_bg = 0;
  for (size_t r = 0; r < x.size(); ++r) {
    if (x[r].size() != d) {
      return absl::InvalidArgumentError(
          absl::StrCat("row ", r, " has ", x[r].size(), " features, expected ", d));
    }
    ++(is_migration[r] ? n_mig : n_bg);
  }
  if (n_mig == 0 || n_bg == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training needs flows of both classes, got ", n_mig, " migration and ", n_bg,
        " background"));
  }
  const size_t n = x.size();
  TimingModel model;
  model.names = names;
  model.trained_migration = n_mig;
  model.trained_background = n_bg;
  model.mean.assign(d, 0.0);
  model.scale.assign(d, 1.0);
  // Standardise over the rows where the feature is defined; NaN becomes the
  // mean (0 after standardising), i.e. "no evidence either way".
  for (size_t i = 0; i < d; ++i) {
    double sum = 0, count = 0;
    for (const auto& row : x) {
      if (std::isfinite(row[i])) sum += row[i], ++count;
    }
    const double mean = count > 0 ? sum / count : 0.0;
    double sq = 0;
    for (const auto& row : x) {
      if (std::isfinite(row[i])) sq += (row[i] - mean) * (row[i] - mean);
    }
    const double sd = count > 0 ? std::sqrt(sq / count) : 0.0;
    model.mean[i] = mean;
    model.scale[i] = sd > 1e-12 ? sd : 1.0;
  }
  std::vector<std::vector<double>> phi(n, std::vector<double>(d + 1, 1.0));
  for (size_t r = 0; r < n; ++r) {
    for (size_t i = 0; i < d; ++i) {
      phi[r][i + 1] = std::isfinite(x[r][i]) ? (x[r][i] - model.mean[i]) / model.scale[i] : 0.0;
    }
  }
  std::vector<double> w(n);
  for (size_t r = 0; r < n; ++r) {
    w[r] = options.balance_classes ? 0.5 / static_cast<double>(is_migration[r] ? n_mig : n_bg)
                                   : 1.0 / static_cast<double>(n);
  }
  const size_t p = d + 1;
  std::vector<double> theta(p, 0.0);
  auto objective = [&](const std::vector<double>& t) {
    double f = 0;
    for (size_t r = 0; r < n; ++r) {
      double z = 0;
      for (size_t i = 0; i < p; ++i) z += t[i] * phi[r][i];
      f += w[r] * Softplus(is_migration[r] ? -z : z);
    }
    for (size_t i = 1; i < p; ++i) f += 0.5 * options.l2 * t[i] * t[i];
    return f;
  };
  double f = objective(theta);
  for (int it = 0; it < options.max_iterations; ++it) {
    std::vector<double> grad(p, 0.0), hess(p * p, 0.0);
    for (size_t r = 0; r < n; ++r) {
      double z = 0;
      for (size_t i = 0; i < p; ++i) z += theta[i] * phi[r][i];
      const double pr = Sigmoid(z);
      const double res = w[r] * (pr - (is_migration[r] ? 1.0 : 0.0));
      const double cur = w[r] * pr * (1.0 - pr);
      for (size_t i = 0; i < p; ++i) {
        grad[i] += res * phi[r][i];
        for (size_t k = 0; k <= i; ++k) hess[i * p + k] += cur * phi[r][i] * phi[r][k];
      }
    }
    for (size_t i = 0; i < p; ++i) {
      for (size_t k = 0; k < i; ++k) hess[k * p + i] = hess[i * p + k];
    }
    for (size_t i = 1; i < p; ++i) {
      grad[i] += options.l2 * theta[i];
      hess[i * p + i] += options.l2;
    }
    double gmax = 0;
    for (double g : grad) gmax = std::max(gmax, std::abs(g));
    if (gmax <= options.tolerance) {
      model.converged = true;
      break;
    }
    std::vector<double> neg(p), step;
    for (size_t i = 0; i < p; ++i) neg[i] = -grad[i];
    if (!CholeskySolve(hess, neg, p, &step)) step = neg;
    double slope = 0;
    for (size_t i = 0; i < p; ++i) slope += grad[i] * step[i];
    bool improved = false;
    std::vector<double> cand(p);
    double fc = f;
    for (double a = 1.0; a > 1e-12; a *= 0.5) {
      for (size_t i = 0; i < p; ++i) cand[i] = theta[i] + a * step[i];
      fc = objective(cand);
      if (fc <= f + 1e-4 * a * slope) {
        improved = true;
        break;
      }
    }
    if (!improved) {
      model.converged = true;
      break;
    }
    theta = cand;
    f = fc;
  }
  for (double t : theta) {
    if (!std::isfinite(t)) return absl::InternalError("training diverged (non-finite parameters)");
  }
  model.bias = theta[0];
  model.weights.assign(theta.begin() + 1, theta.end());
  return model;
}

absl::StatusOr<TimingAttack> TimingAttack::Create(TimingModel model, const FeatureConfig& config,
                                                  std::string name, double threshold) {
  if (model.names != TimingFeatureNames(config) || model.weights.size() != model.names.size() ||
      model.mean.size() != model.names.size() || model.scale.size() != model.names.size()) {
    return absl::InvalidArgumentError(
        "the timing model's features do not match this feature configuration (other windows?)");
  }
  return TimingAttack(std::move(model), std::move(name), threshold);
}

DetectorResult TimingAttack::Evaluate(const FlowView& flow) const {
  const std::vector<double> x = TimingFeatures(flow);
  DetectorResult r;
  if (std::all_of(x.begin(), x.end(), [](double v) { return std::isnan(v); })) {
    r.score = kNaN;
    return r;
  }
  r.score = model_.Predict(x);
  r.decided = !std::isnan(r.score);
  r.flagged = r.decided && r.score >= threshold_;
  return r;
}

}  // namespace shroud
