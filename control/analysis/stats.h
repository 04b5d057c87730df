// Statistics for the indistinguishability evaluation. P-values come from
// Boost.Math distributions; nothing here hand-rolls a special function.
#ifndef SHROUD_CONTROL_ANALYSIS_STATS_H_
#define SHROUD_CONTROL_ANALYSIS_STATS_H_

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace shroud {

// Population coefficient of variation, stddev/mean (the paper's Eq. 1).
// NaN for fewer than two values or a zero mean.
double CoefficientOfVariation(std::span<const double> values);

struct ChiSquareResult {
  double statistic = 0;
  int degrees_of_freedom = 0;
  double p_value = 0;  // P(X >= statistic) under H0
  std::vector<uint32_t> categories;  // the categories compared, most common first
  std::vector<double> observed;      // group A, percent over the compared categories
  std::vector<double> expected;      // group B, percent over the compared categories
};

// The paper's Table III test. Each group is a list of per-flow histograms
// (category -> count). Each flow's histogram is normalised to a probability
// distribution and the group's distributions are averaged, so every flow
// weighs the same. The `top_n` categories most common in the two averages
// together are kept, each average is renormalised to percent over them, and
// Pearson's statistic sum (A-B)^2/B is taken with top_n-1 degrees of freedom.
// If fewer than top_n categories occur at all, all of them are compared (df =
// count-1). Ties in commonness go to the smaller category. Categories where B
// is zero get a small floor (0.5 percent / categories compared) so the
// statistic stays finite. Flows without counts are skipped. Errors if either
// group is empty or has no counts, a count is negative or not finite,
// top_n < 2, or fewer than 2 categories occur.
absl::StatusOr<ChiSquareResult> PaperChiSquare(
    const std::vector<std::map<uint32_t, double>>& group_a,
    const std::vector<std::map<uint32_t, double>>& group_b, int top_n = 10);

struct KsResult {
  double statistic = 0;  // D = sup |F_a - F_b|
  double p_value = 0;    // asymptotic Kolmogorov distribution, effective n = na*nb/(na+nb)
  size_t n_a = 0, n_b = 0;
};

// Two-sample Kolmogorov-Smirnov test. NaNs are ignored. Errors if either
// sample is empty after that.
absl::StatusOr<KsResult> KolmogorovSmirnovTwoSample(std::span<const double> a,
                                                    std::span<const double> b);

// Survival function of the chi-square distribution, P(X >= x).
double ChiSquareSurvival(double x, int degrees_of_freedom);

}  // namespace shroud

#endif  // SHROUD_CONTROL_ANALYSIS_STATS_H_
