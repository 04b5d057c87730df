// Reference values marked "scipy" were computed once with SciPy 1.10.1
// (Debian 12 python3-scipy) and are hard-coded here; the script is quoted
// next to each value.
#include "control/analysis/stats.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shroud {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pointwise;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
using Histogram = std::map<uint32_t, double>;

// ---- CoefficientOfVariation ----

TEST(CoefficientOfVariationTest, PopulationStddevOverMean) {
  // Population variance of {1,2,3,4} is 1.25, mean 2.5: sqrt(1.25)/2.5 = 1/sqrt(5).
  const std::vector<double> v = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(CoefficientOfVariation(v), 1.0 / std::sqrt(5.0));
}

TEST(CoefficientOfVariationTest, ConstantIsZero) {
  const std::vector<double> v = {1500, 1500, 1500};
  EXPECT_EQ(CoefficientOfVariation(v), 0.0);
}

TEST(CoefficientOfVariationTest, LargeOffsetSmallSpreadStaysAccurate) {
  // Byte counts of a steady migration: huge mean, tiny spread. sum(x^2) -
  // n*mean^2 would lose every digit here; the population stddev of
  // {o+1, o+2, o+3} is sqrt(2/3) whatever the offset o.
  const double offset = 1e9;
  const std::vector<double> v = {offset + 1, offset + 2, offset + 3};
  EXPECT_NEAR(CoefficientOfVariation(v) / (std::sqrt(2.0 / 3.0) / (offset + 2)), 1.0, 1e-9);
}

TEST(CoefficientOfVariationTest, UndefinedCasesAreNaN) {
  EXPECT_TRUE(std::isnan(CoefficientOfVariation(std::vector<double>{})));
  EXPECT_TRUE(std::isnan(CoefficientOfVariation(std::vector<double>{5})));
  EXPECT_TRUE(std::isnan(CoefficientOfVariation(std::vector<double>{-1, 1})));  // zero mean
  EXPECT_TRUE(std::isnan(CoefficientOfVariation(std::vector<double>{1, kNaN, 3})));
}

// ---- ChiSquareSurvival ----

TEST(ChiSquareSurvivalTest, MatchesScipy) {
  EXPECT_NEAR(ChiSquareSurvival(3.84, 1), 0.05004352124870519, 1e-12);  // scipy chi2.sf(3.84, 1)
  EXPECT_NEAR(ChiSquareSurvival(16.919, 9), 0.049999640848349826, 1e-12);  // chi2.sf(16.919, 9)
  EXPECT_NEAR(ChiSquareSurvival(1e-3, 3), 0.9999915920809419, 1e-12);      // chi2.sf(1e-3, 3)
  // chi2.sf(100, 9): the complement keeps relative precision deep in the tail.
  EXPECT_NEAR(ChiSquareSurvival(100, 9) / 1.5735176303753876e-17, 1.0, 1e-9);
}

TEST(ChiSquareSurvivalTest, EdgeCases) {
  EXPECT_EQ(ChiSquareSurvival(0, 4), 1.0);
  EXPECT_EQ(ChiSquareSurvival(-1, 4), 1.0);
  EXPECT_EQ(ChiSquareSurvival(std::numeric_limits<double>::infinity(), 4), 0.0);
  EXPECT_TRUE(std::isnan(ChiSquareSurvival(kNaN, 4)));
  EXPECT_TRUE(std::isnan(ChiSquareSurvival(1, 0)));
  EXPECT_TRUE(std::isnan(ChiSquareSurvival(1, -3)));
}

// ---- PaperChiSquare ----

TEST(PaperChiSquareTest, IdenticalGroupsGiveZeroAndPOne) {
  // Different packet counts, same shape: per-flow normalisation makes them equal.
  const std::vector<Histogram> a = {{{0, 10}, {1, 30}, {5, 60}}, {{0, 1}, {1, 3}, {5, 6}}};
  const std::vector<Histogram> b = {{{0, 2}, {1, 6}, {5, 12}}};
  absl::StatusOr<ChiSquareResult> r = PaperChiSquare(a, b);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->statistic, 0.0);
  EXPECT_EQ(r->p_value, 1.0);
  EXPECT_EQ(r->degrees_of_freedom, 2);  // only 3 categories exist
  EXPECT_THAT(r->categories, ElementsAre(5, 1, 0));
  EXPECT_THAT(r->observed, Pointwise(DoubleNear(1e-12), {60.0, 30.0, 10.0}));
}

TEST(PaperChiSquareTest, DifferentDistributionsMatchScipy) {
  // scipy: average the per-flow distributions by hand, keep categories by
  // descending (avg_a + avg_b), renormalise to percent, then
  // scipy.stats.chisquare(A, B) -> (136.65223665223667, 1.991756318510706e-29).
  const std::vector<Histogram> a = {
      {{0, 10}, {1, 5}, {2, 5}}, {{0, 2}, {1, 2}}, {{3, 4}, {0, 4}}};
  const std::vector<Histogram> b = {{{0, 3}, {1, 3}, {2, 3}, {3, 1}}, {{1, 6}, {2, 2}}};
  absl::StatusOr<ChiSquareResult> r = PaperChiSquare(a, b);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->categories, ElementsAre(1, 0, 2, 3));
  EXPECT_THAT(r->observed, Pointwise(DoubleNear(1e-9), {25.0, 50.0, 8.333333333333332,
                                                          16.666666666666664}));
  EXPECT_THAT(r->expected, Pointwise(DoubleNear(1e-9), {52.5, 15.0, 27.5, 5.0}));
  EXPECT_EQ(r->degrees_of_freedom, 3);
  EXPECT_NEAR(r->statistic, 136.65223665223667, 1e-9);
  EXPECT_NEAR(r->p_value / 1.991756318510706e-29, 1.0, 1e-6);
  EXPECT_LT(r->p_value, 0.05);
}

TEST(PaperChiSquareTest, KeepsTopTenAndFloorsZeroExpected) {
  // 12 categories, counts 12..1; B lacks category 4. Same reference
  // computation as above, with B's zero replaced by 0.5/10 percent:
  // statistic 2255.4099999999994 (df 9).
  Histogram ha, hb;
  for (uint32_t c = 0; c < 12; ++c) {
    ha[c] = 12 - c;
    if (c != 4) hb[c] = 12 - c;
  }
  absl::StatusOr<ChiSquareResult> r = PaperChiSquare({ha}, {hb});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->categories, ElementsAre(0, 1, 2, 3, 5, 6, 7, 8, 4, 9));
  EXPECT_EQ(r->degrees_of_freedom, 9);
  EXPECT_EQ(r->expected[8], 0.0);
  EXPECT_NEAR(r->statistic, 2255.4099999999994, 1e-7);
  EXPECT_TRUE(std::isfinite(r->statistic));
  EXPECT_LT(r->p_value, 1e-100);
}

TEST(PaperChiSquareTest, TiesPreferTheSmallerCategory) {
  const std::vector<Histogram> g = {{{7, 1}, {3, 1}, {5, 1}}};
  absl::StatusOr<ChiSquareResult> r = PaperChiSquare(g, g, /*top_n=*/2);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->categories, ElementsAre(3, 5));
  EXPECT_EQ(r->degrees_of_freedom, 1);
  EXPECT_EQ(r->statistic, 0.0);
}

TEST(PaperChiSquareTest, FlowsWithoutCountsAreSkipped) {
  const std::vector<Histogram> a = {{{0, 1}, {1, 1}}, {}, {{0, 0}}};
  const std::vector<Histogram> b = {{{0, 5}, {1, 5}}};
  absl::StatusOr<ChiSquareResult> r = PaperChiSquare(a, b);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->statistic, 0.0);
}

TEST(PaperChiSquareTest, Errors) {
  const std::vector<Histogram> good = {{{0, 1}, {1, 2}}};
  EXPECT_THAT(PaperChiSquare({}, good).status().message(), HasSubstr("empty"));
  EXPECT_THAT(PaperChiSquare(good, {}).status().message(), HasSubstr("empty"));
  EXPECT_THAT(PaperChiSquare({{}, {{3, 0}}}, good).status().message(), HasSubstr("no counts"));
  EXPECT_THAT(PaperChiSquare(good, {{{0, -1}}}).status().message(), HasSubstr("count -1"));
  EXPECT_FALSE(PaperChiSquare(good, {{{0, kNaN}}}).ok());
  // One category in total leaves no degree of freedom.
  EXPECT_THAT(PaperChiSquare({{{4, 2}}}, {{{4, 9}}}).status().message(),
              HasSubstr("at least 2"));
  EXPECT_FALSE(PaperChiSquare(good, good, /*top_n=*/1).ok());
}

// ---- KolmogorovSmirnovTwoSample ----
// D from scipy.stats.ks_2samp(a, b).statistic; p from
// scipy.stats.kstwobign.sf(sqrt(na*nb/(na+nb)) * D), the asymptotic form this
// implementation documents. (ks_2samp's own method='asymp' p-value differs: it
// uses the finite-n kstwo distribution with n = round(ne).)

TEST(KolmogorovSmirnovTest, MatchesScipy) {
  const std::vector<double> a = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<double> b = {4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5, 11.5, 12.5, 13.5};
  absl::StatusOr<KsResult> r = KolmogorovSmirnovTwoSample(a, b);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->statistic, 0.6, 1e-15);
  EXPECT_NEAR(r->p_value, 0.08151888641220972, 1e-12);
  EXPECT_EQ(r->n_a, 8u);
  EXPECT_EQ(r->n_b, 10u);
}

TEST(KolmogorovSmirnovTest, TiesStepBothSamples) {
  // Values shared by both samples; a walk that compared after stepping only
  // one sample would report a larger, spurious D.
  const std::vector<double> a = {1, 2, 2, 3, 3, 3, 4, 5};
  const std::vector<double> b = {2, 3, 3, 4, 4, 4, 5, 6, 7};
  absl::StatusOr<KsResult> r = KolmogorovSmirnovTwoSample(a, b);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->statistic, 0.4166666666666667, 1e-15);  // scipy ks_2samp
  EXPECT_NEAR(r->p_value, 0.4540076879951463, 1e-12);
}

TEST(KolmogorovSmirnovTest, IdenticalSamples) {
  const std::vector<double> a = {3, 1, 2, 2, 5};
  absl::StatusOr<KsResult> r = KolmogorovSmirnovTwoSample(a, a);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->statistic, 0.0);
  EXPECT_EQ(r->p_value, 1.0);
}

TEST(KolmogorovSmirnovTest, DisjointSamples) {
  std::vector<double> a, b;
  for (int i = 1; i <= 20; ++i) a.push_back(i);
  for (int i = 101; i <= 130; ++i) b.push_back(i);
  absl::StatusOr<KsResult> r = KolmogorovSmirnovTwoSample(b, a);  // order must not matter
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->statistic, 1.0);
  EXPECT_NEAR(r->p_value / 7.550269088558223e-11, 1.0, 1e-6);  // kstwobign.sf(sqrt(12))
}

TEST(KolmogorovSmirnovTest, NaNsAreIgnored) {
  const std::vector<double> a = {1, kNaN, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<double> b = {kNaN, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5, 11.5, 12.5, 13.5};
  absl::StatusOr<KsResult> r = KolmogorovSmirnovTwoSample(a, b);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->n_a, 8u);
  EXPECT_EQ(r->n_b, 10u);
  EXPECT_NEAR(r->statistic, 0.6, 1e-15);
  EXPECT_NEAR(r->p_value, 0.08151888641220972, 1e-12);
}

TEST(KolmogorovSmirnovTest, EmptyInputsError) {
  const std::vector<double> some = {1, 2};
  const std::vector<double> only_nan = {kNaN, kNaN};
  EXPECT_FALSE(KolmogorovSmirnovTwoSample({}, some).ok());
  EXPECT_FALSE(KolmogorovSmirnovTwoSample(some, {}).ok());
  EXPECT_THAT(KolmogorovSmirnovTwoSample(some, only_nan).status().message(), HasSubstr("NaN"));
}

}  // namespace
}  // namespace shroud
