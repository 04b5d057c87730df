// Tests of the Algorithm 3 simulator behind `shroud ratewalk`: its summary
// against a plain recomputation from the walk's own steps, the edge of a walk
// with nowhere to go, determinism, and errors.
#include "dataplane/core/rate_walk.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shroud {
namespace {

using ::testing::HasSubstr;

RateVariationConfig PairConfig() {  // conf/gateway-pair-a.toml's walk
  RateVariationConfig c;
  c.min_rate = 100'000;
  c.max_rate = 11'875'000;
  return c;
}

// Population CoV of block means, two-pass; a partial last block left out.
double BlockCov(const std::vector<double>& xs, size_t block) {
  std::vector<double> means;
  for (size_t i = 0; i + block <= xs.size(); i += block) {
    double s = 0;
    for (size_t j = i; j < i + block; ++j) s += xs[j];
    means.push_back(s / static_cast<double>(block));
  }
  double m = 0;
  for (double x : means) m += x;
  m /= static_cast<double>(means.size());
  double ss = 0;
  for (double x : means) ss += (x - m) * (x - m);
  return std::sqrt(ss / static_cast<double>(means.size())) / m;
}

TEST(RateWalkTest, SummaryIsWhatTheStepsSay) {
  const RateVariationConfig c = PairConfig();
  const std::vector<double> offered = {2'097'152, 12'582'912};
  std::vector<RateWalkSample> samples;
  absl::StatusOr<RateWalkSummary> s = SimulateRateWalk(
      c, 42, 20'005, offered, [&](const RateWalkSample& x) { samples.push_back(x); });
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(samples.size(), 20'005u);

  // The same seed drives a gateway worker's walk: the same rates, step by step.
  RateVariation walk(c);
  std::mt19937_64 rng(42);
  std::vector<double> rates;
  for (const RateWalkSample& x : samples) {
    ASSERT_EQ(walk.Step(rng), x.rate);
    ASSERT_EQ(walk.last_step().var_coef, x.var_coef);
    ASSERT_EQ(walk.direction(), x.direction);
    rates.push_back(x.rate);
  }
  EXPECT_EQ(samples[3].t_ns, 3 * c.interval_ns);

  double sum = 0, in_band = 0, at_min = 0, at_max = 0;
  std::vector<double> below(offered.size());
  std::vector<std::vector<double>> delivered(offered.size());
  for (const RateWalkSample& x : samples) {
    sum += x.rate;
    at_min += x.rate == c.min_rate;
    at_max += x.rate == c.max_rate;
    in_band += x.var_coef >= c.lower_cov && x.var_coef <= c.upper_cov;
    for (size_t k = 0; k < offered.size(); ++k) {
      below[k] += x.rate < offered[k];
      delivered[k].push_back(std::min(x.rate, offered[k]));
    }
  }
  const double n = static_cast<double>(samples.size());
  EXPECT_EQ(s->steps, 20'005u);
  EXPECT_DOUBLE_EQ(s->seconds, 200.05);
  EXPECT_NEAR(s->mean_rate, sum / n, 1e-6 * sum / n);
  EXPECT_DOUBLE_EQ(s->share_at_min, at_min / n);
  EXPECT_DOUBLE_EQ(s->share_at_max, at_max / n);
  EXPECT_DOUBLE_EQ(s->window_cov_in_band, in_band / n);
  EXPECT_NEAR(s->cov_step, BlockCov(rates, 1), 1e-9);
  EXPECT_NEAR(s->cov_100ms, BlockCov(rates, 10), 1e-9);
  EXPECT_NEAR(s->cov_1s, BlockCov(rates, 100), 1e-9);
  ASSERT_EQ(s->demands.size(), 2u);
  for (size_t k = 0; k < offered.size(); ++k) {
    EXPECT_EQ(s->demands[k].offered, offered[k]);
    EXPECT_DOUBLE_EQ(s->demands[k].share_below, below[k] / n);
    double sent = 0;
    for (double x : delivered[k]) sent += x;
    EXPECT_NEAR(s->demands[k].mean_delivered, sent / n, 1e-6 * offered[k]);
    EXPECT_NEAR(s->demands[k].cov_delivered, BlockCov(delivered[k], 1), 1e-9);
    // Bhatia-Davis: what the walk lets through never beats its own floor.
    EXPECT_GE(offered[k] / s->demands[k].mean_delivered,
              1 + s->demands[k].cov_delivered * s->demands[k].cov_delivered - 1e-9);
  }
  // The walk moves: it touches both bounds and its mean lies between them.
  EXPECT_GT(s->share_at_min, 0.0);
  EXPECT_GT(s->share_at_max, 0.0);
  EXPECT_GT(s->mean_rate, c.min_rate);
  EXPECT_LT(s->mean_rate, c.max_rate);
  EXPECT_GT(s->demands[1].share_below, s->demands[0].share_below);
}

TEST(RateWalkTest, AWalkWithNowhereToGoIsConstant) {
  RateVariationConfig c;
  c.min_rate = c.max_rate = c.start_rate = 3'000'000;
  const std::vector<double> offered = {1'000'000, 5'000'000};
  absl::StatusOr<RateWalkSummary> s = SimulateRateWalk(c, 1, 1000, offered);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_DOUBLE_EQ(s->mean_rate, 3'000'000);
  EXPECT_EQ(s->share_at_min, 1.0);
  EXPECT_EQ(s->share_at_max, 1.0);
  EXPECT_EQ(s->cov_step, 0.0);
  EXPECT_EQ(s->cov_1s, 0.0);
  EXPECT_EQ(s->window_cov_in_band, 0.0);  // CoV 0 is below lC
  EXPECT_EQ(s->demands[0].share_below, 0.0);
  EXPECT_DOUBLE_EQ(s->demands[0].mean_delivered, 1'000'000);
  EXPECT_EQ(s->demands[0].cov_delivered, 0.0);
  EXPECT_EQ(s->demands[1].share_below, 1.0);
  EXPECT_DOUBLE_EQ(s->demands[1].mean_delivered, 3'000'000);
}

TEST(RateWalkTest, TooShortForBlocksHasNoBlockCov) {
  absl::StatusOr<RateWalkSummary> s = SimulateRateWalk(PairConfig(), 1, 150, {});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(std::isnan(s->cov_100ms));  // 15 blocks of 100 ms
  EXPECT_TRUE(std::isnan(s->cov_1s));      // one whole second only
  EXPECT_TRUE(s->demands.empty());
}

TEST(RateWalkTest, SeedsReplay) {
  const std::vector<double> none;
  auto a = SimulateRateWalk(PairConfig(), 9, 5000, none);
  auto b = SimulateRateWalk(PairConfig(), 9, 5000, none);
  auto c = SimulateRateWalk(PairConfig(), 10, 5000, none);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->mean_rate, b->mean_rate);
  EXPECT_NE(a->mean_rate, c->mean_rate);
}

TEST(RateWalkTest, SessionsRedrawAndTheirCovSpreadIsRecomputable) {
  RateVariationConfig c = PairConfig();
  c.session_spread = true;
  c.min_rate = 500'000;
  c.bursty_min_rate = 100'000;
  c.bursty_pause_share = 0.5;
  const double offered = 4.0 * 1024 * 1024;
  const std::vector<double> offers = {offered};
  // Per session, what the offered rate gets through each step: min(rate,
  // offered), 0 while paused.
  std::vector<std::vector<double>> through;
  uint64_t paused = 0, steps = 0;
  absl::StatusOr<RateWalkSummary> s = SimulateRateWalk(
      c, 3, 60'000, offers,
      [&](const RateWalkSample& x) {
        if (x.session == through.size()) through.emplace_back();
        ASSERT_EQ(x.session + 1, through.size()) << "sessions come in order";
        EXPECT_GE(x.rate, 100'000 - 1e-6) << "below the bursty end's floor";
        through.back().push_back(x.paused ? 0.0 : std::min(x.rate, offered));
        paused += x.paused;
        ++steps;
      },
      /*session_steps=*/3'000);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->sessions, 20u);
  ASSERT_EQ(through.size(), 20u);
  EXPECT_GE(s->session_min_rate_lo, 100'000 - 1e-6);
  EXPECT_LE(s->session_min_rate_hi, 500'000 + 1e-6);
  EXPECT_LT(s->session_min_rate_lo, s->session_min_rate_hi);
  EXPECT_DOUBLE_EQ(s->share_paused, static_cast<double>(paused) / static_cast<double>(steps));
  // u is uniform, so pauses take about E[u] * 0.5 = 25 % (less: they are cut
  // at 180 ms).
  EXPECT_GT(s->share_paused, 0.12);
  EXPECT_LT(s->share_paused, 0.3);
  // Each session's CoV per 100 ms (10 steps), then nearest-rank percentiles.
  std::vector<double> covs;
  for (const auto& session : through) covs.push_back(BlockCov(session, 10));
  std::sort(covs.begin(), covs.end());
  auto rank = [&covs](double p) {
    return covs[static_cast<size_t>(std::llround(p * static_cast<double>(covs.size() - 1)))];
  };
  const RateWalkDemand& d = s->demands[0];
  EXPECT_NEAR(d.session_cov_100ms_p10, rank(0.1), 1e-9);
  EXPECT_NEAR(d.session_cov_100ms_p50, rank(0.5), 1e-9);
  EXPECT_NEAR(d.session_cov_100ms_p90, rank(0.9), 1e-9);
  EXPECT_LT(d.session_cov_100ms_p10, d.session_cov_100ms_p90) << "sessions differ";
}

TEST(RateWalkTest, WithoutSessionSpreadSessionStepsChangeNothing) {
  const std::vector<double> none;
  auto a = SimulateRateWalk(PairConfig(), 5, 5000, none, nullptr, 0);
  auto b = SimulateRateWalk(PairConfig(), 5, 5000, none, nullptr, 100);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->sessions, 1u);
  EXPECT_EQ(b->sessions, 1u);
  EXPECT_DOUBLE_EQ(a->mean_rate, b->mean_rate);
  EXPECT_DOUBLE_EQ(a->share_paused, 0.0);
}

TEST(RateWalkTest, Errors) {
  RateVariationConfig bad = PairConfig();
  bad.min_rate = 2 * bad.max_rate;
  EXPECT_THAT(std::string(SimulateRateWalk(bad, 1, 10, {}).status().message()),
              HasSubstr("max_rate (maxR) must be in"));
  EXPECT_THAT(std::string(SimulateRateWalk(PairConfig(), 1, 0, {}).status().message()),
              HasSubstr("steps must be > 0"));
  const std::vector<double> zero = {0.0};
  EXPECT_THAT(std::string(SimulateRateWalk(PairConfig(), 1, 10, zero).status().message()),
              HasSubstr("positive number of bytes/s"));
  const std::vector<double> nan = {std::nan("")};
  EXPECT_FALSE(SimulateRateWalk(PairConfig(), 1, 10, nan).ok());
}

TEST(RateWalkTest, MaxRateForAMeanIsWhereTheWalkAveragesIt) {
  const RateVariationConfig c = PairConfig();
  constexpr uint64_t kSteps = 30'000;  // 300 s of 10 ms steps
  for (double target : {2.0e6, 4.0e6}) {
    SCOPED_TRACE(target);
    absl::StatusOr<WalkMaxRateForMean> m = MaxRateForMeanRate(c, 3, kSteps, target);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_FALSE(m->capped);
    EXPECT_LT(m->max_rate, c.max_rate);
    // Recomputed: the walk with that maxR (the start rate halved below it,
    // as the search does) averages the target, to the search's 0.1 % in maxR
    // plus the walk's own grain.
    RateVariationConfig at = c;
    at.max_rate = m->max_rate;
    if (at.start_rate > at.max_rate) at.start_rate = at.max_rate / 2;
    absl::StatusOr<RateWalkSummary> s = SimulateRateWalk(at, 3, kSteps, {});
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_NEAR(s->mean_rate, m->mean_rate, 1e-9 * m->mean_rate);  // no pauses: the same mean
    EXPECT_NEAR(s->mean_rate, target, 0.03 * target);
    // Mean / maxR is the walk's shape, ~0.36-0.39 here.
    EXPECT_GT(m->mean_rate / m->max_rate, 0.3);
    EXPECT_LT(m->mean_rate / m->max_rate, 0.45);
  }
  // Beyond what the config's maxR gives: capped, with the mean there.
  absl::StatusOr<WalkMaxRateForMean> high = MaxRateForMeanRate(c, 3, kSteps, 8.0e6);
  ASSERT_TRUE(high.ok()) << high.status();
  EXPECT_TRUE(high->capped);
  EXPECT_EQ(high->max_rate, c.max_rate);
  EXPECT_LT(high->mean_rate, 8.0e6);
  // With session spread the start rate stays at or above the bursty minR
  // (the config would not validate otherwise), and pauses count as 0.
  RateVariationConfig spread = c;
  spread.session_spread = true;
  spread.bursty_min_rate = 1.5e6;
  absl::StatusOr<WalkMaxRateForMean> s = MaxRateForMeanRate(spread, 3, kSteps, 2.5e6, 3000);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(s->capped);
  EXPECT_NEAR(s->mean_rate, 2.5e6, 0.05 * 2.5e6);
  // ... and no walk it allows averages less than its bursty minR-bound floor.
  EXPECT_THAT(std::string(MaxRateForMeanRate(spread, 3, kSteps, 1.0e6, 3000).status().message()),
              HasSubstr("the walk averages no less than"));
  // A target at or below minR, or not a rate, is an error.
  EXPECT_THAT(std::string(MaxRateForMeanRate(c, 3, kSteps, 50'000).status().message()),
              HasSubstr("not above minR"));
  EXPECT_FALSE(MaxRateForMeanRate(c, 3, kSteps, std::nan("")).ok());
}

}  // namespace
}  // namespace shroud
