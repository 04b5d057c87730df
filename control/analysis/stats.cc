#include "control/analysis/stats.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "boost/math/distributions/chi_squared.hpp"
#include "boost/math/distributions/complement.hpp"
#include "boost/math/distributions/kolmogorov_smirnov.hpp"
#include "boost/math/policies/policy.hpp"

namespace shroud {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Boost.Math throws on domain errors by default; this library never lets an
// exception escape, so every Boost call uses a policy that returns NaN
// instead (the inputs are validated first, so NaN here means a bug, not data).
using NoThrowPolicy = boost::math::policies::policy<
    boost::math::policies::domain_error<boost::math::policies::ignore_error>,
    boost::math::policies::pole_error<boost::math::policies::ignore_error>,
    boost::math::policies::overflow_error<boost::math::policies::ignore_error>,
    boost::math::policies::evaluation_error<boost::math::policies::ignore_error>>;

// A group's per-flow histograms, each normalised to sum 1, averaged so that
// every flow weighs the same regardless of its packet count.
absl::StatusOr<std::map<uint32_t, double>> AverageDistribution(
    const std::vector<std::map<uint32_t, double>>& group, const char* name) {
  if (group.empty()) return absl::InvalidArgumentError(absl::StrCat("group ", name, " is empty"));
  std::map<uint32_t, double> sum;
  size_t flows = 0;
  for (const auto& histogram : group) {
    double total = 0;
    for (const auto& [category, count] : histogram) {
      if (!std::isfinite(count) || count < 0) {
        return absl::InvalidArgumentError(absl::StrCat("group ", name, " has count ", count,
                                                       " in category ", category));
      }
      total += count;
    }
    // A flow with no counts has no distribution; it cannot take part.
    if (total <= 0) continue;
    ++flows;
    for (const auto& [category, count] : histogram) {
      if (count > 0) sum[category] += count / total;
    }
  }
  if (flows == 0) {
    return absl::InvalidArgumentError(absl::StrCat("group ", name, " has no counts"));
  }
  for (auto& [category, value] : sum) value /= static_cast<double>(flows);
  return sum;
}

double Lookup(const std::map<uint32_t, double>& m, uint32_t key) {
  auto it = m.find(key);
  return it == m.end() ? 0.0 : it->second;
}

}  // namespace

double CoefficientOfVariation(std::span<const double> values) {
  const size_t n = values.size();
  if (n < 2) return kNaN;
  double sum = 0;
  for (double v : values) sum += v;
  const double mean = sum / static_cast<double>(n);
  if (mean == 0 || !std::isfinite(mean)) return kNaN;
  // Corrected two-pass algorithm (Chan, Golub & LeVeque): the second term
  // cancels the rounding error left in the mean, and centring first avoids
  // the catastrophic cancellation of sum(x^2) - n*mean^2 for large byte
  // counts with a small spread, which is exactly what migrations look like.
  double squares = 0;
  double deviations = 0;
  for (double v : values) {
    const double d = v - mean;
    squares += d * d;
    deviations += d;
  }
  const double variance =
      std::max(0.0, (squares - deviations * deviations / static_cast<double>(n)) /
                        static_cast<double>(n));
  return std::sqrt(variance) / mean;
}

absl::StatusOr<ChiSquareResult> PaperChiSquare(
    const std::vector<std::map<uint32_t, double>>& group_a,
    const std::vector<std::map<uint32_t, double>>& group_b, int top_n) {
  if (top_n < 2) {
    return absl::InvalidArgumentError(absl::StrCat("top_n must be at least 2, got ", top_n));
  }
  absl::StatusOr<std::map<uint32_t, double>> avg_a = AverageDistribution(group_a, "A");
  if (!avg_a.ok()) return avg_a.status();
  absl::StatusOr<std::map<uint32_t, double>> avg_b = AverageDistribution(group_b, "B");
  if (!avg_b.ok()) return avg_b.status();

  // "Most common in the two together": rank by the sum of the two averages,
  // so each group has the same say whatever its number of flows.
  std::map<uint32_t, double> combined = *avg_a;
  for (const auto& [category, p] : *avg_b) combined[category] += p;
  std::vector<std::pair<uint32_t, double>> ranked(combined.begin(), combined.end());
  // Stable sort over a map ordered by category: ties keep the smaller category first.
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& x, const auto& y) { return x.second > y.second; });
  const size_t k = std::min(ranked.size(), static_cast<size_t>(top_n));
  if (k < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the two groups together have ", k, " category; a chi-square test needs at least 2"));
  }

  ChiSquareResult result;
  double total_a = 0, total_b = 0;
  for (size_t i = 0; i < k; ++i) {
    const uint32_t category = ranked[i].first;
    result.categories.push_back(category);
    result.observed.push_back(Lookup(*avg_a, category));
    result.expected.push_back(Lookup(*avg_b, category));
    total_a += result.observed.back();
    total_b += result.expected.back();
  }
  // A group with no mass in the compared categories stays all zero: its
  // distribution is as far from the other's as it can be, and the statistic
  // says so rather than failing.
  for (size_t i = 0; i < k; ++i) {
    result.observed[i] = total_a > 0 ? 100.0 * result.observed[i] / total_a : 0.0;
    result.expected[i] = total_b > 0 ? 100.0 * result.expected[i] / total_b : 0.0;
  }
  // Only exact zeros are floored: flooring small values too would make two
  // identical groups differ.
  const double floor = 0.5 / static_cast<double>(k);
  double statistic = 0;
  for (size_t i = 0; i < k; ++i) {
    const double b = result.expected[i] > 0 ? result.expected[i] : floor;
    const double diff = result.observed[i] - b;
    statistic += diff * diff / b;
  }
  result.statistic = statistic;
  result.degrees_of_freedom = static_cast<int>(k) - 1;
  result.p_value = ChiSquareSurvival(statistic, result.degrees_of_freedom);
  return result;
}

absl::StatusOr<KsResult> KolmogorovSmirnovTwoSample(std::span<const double> a,
                                                    std::span<const double> b) {
  auto sorted_without_nan = [](std::span<const double> values) {
    std::vector<double> out;
    out.reserve(values.size());
    for (double v : values) {
      if (!std::isnan(v)) out.push_back(v);
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  const std::vector<double> sa = sorted_without_nan(a);
  const std::vector<double> sb = sorted_without_nan(b);
  if (sa.empty() || sb.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Kolmogorov-Smirnov needs two non-empty samples (after dropping NaNs), got ",
                     sa.size(), " and ", sb.size()));
  }
  const uint64_t na = sa.size(), nb = sb.size();

  // Compare the ECDFs as integers, |i*nb - j*na| / (na*nb), so equal ECDFs
  // give exactly 0 and disjoint samples exactly 1. Both ECDFs step past a
  // value together before comparing: a value shared by both samples must not
  // open a gap that is not there.
  uint64_t i = 0, j = 0, max_gap = 0;
  while (i < na && j < nb) {
    const double v = std::min(sa[i], sb[j]);
    while (i < na && sa[i] == v) ++i;
    while (j < nb && sb[j] == v) ++j;
    const uint64_t x = i * nb, y = j * na;
    max_gap = std::max(max_gap, x > y ? x - y : y - x);
  }
  // Once one sample is exhausted its ECDF is 1 and the other's only climbs
  // towards it, so the gap can only shrink: no need to walk the rest.

  KsResult result;
  result.n_a = na;
  result.n_b = nb;
  result.statistic = static_cast<double>(max_gap) / (static_cast<double>(na) * static_cast<double>(nb));
  if (max_gap == 0) {
    result.p_value = 1.0;
    return result;
  }
  // Boost's kolmogorov_smirnov_distribution(n) is the *limiting* (Kolmogorov)
  // distribution of the one-sample D_n: cdf(x) = K(sqrt(n) * x). For two
  // samples the same limit holds with the effective size ne = na*nb/(na+nb),
  // and Boost takes n as a real (it only needs n > 0), so ne is passed
  // unrounded: p = P(K > sqrt(ne) * D), which is scipy's
  // kstwobign.sf(sqrt(ne) * D). The complement is evaluated directly so small
  // p-values keep their precision.
  const double ne = static_cast<double>(na) * static_cast<double>(nb) /
                    (static_cast<double>(na) + static_cast<double>(nb));
  const boost::math::kolmogorov_smirnov_distribution<double, NoThrowPolicy> kolmogorov(ne);
  const double p = boost::math::cdf(boost::math::complement(kolmogorov, result.statistic));
  result.p_value = std::isnan(p) ? p : std::clamp(p, 0.0, 1.0);
  return result;
}

double ChiSquareSurvival(double x, int degrees_of_freedom) {
  if (degrees_of_freedom < 1 || std::isnan(x)) return kNaN;
  if (x <= 0) return 1.0;
  if (std::isinf(x)) return 0.0;
  const boost::math::chi_squared_distribution<double, NoThrowPolicy> chi2(degrees_of_freedom);
  return boost::math::cdf(boost::math::complement(chi2, x));
}

}  // namespace shroud
