#include "dataplane/core/rate_walk.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"

namespace shroud {

namespace {

// Mean and population CoV of a stream of values (Welford).
class Moments {
 public:
  void Add(double x) {
    ++n_;
    const double delta = x - mean_;
    mean_ += delta / static_cast<double>(n_);
    m2_ += delta * (x - mean_);
  }
  uint64_t n() const { return n_; }
  double mean() const { return mean_; }
  double Cov() const {
    if (n_ < 2 || mean_ <= 0.0) return std::numeric_limits<double>::quiet_NaN();
    return std::sqrt(m2_ / static_cast<double>(n_)) / mean_;
  }

 private:
  uint64_t n_ = 0;
  double mean_ = 0.0;
  double m2_ = 0.0;
};

// Means of consecutive blocks of `block` steps; a partial last block is left out.
class BlockMoments {
 public:
  explicit BlockMoments(uint64_t block) : block_(std::max<uint64_t>(block, 1)) {}
  void Add(double x) {
    sum_ += x;
    if (++filled_ == block_) {
      means_.Add(sum_ / static_cast<double>(block_));
      sum_ = 0.0;
      filled_ = 0;
    }
  }
  double Cov() const { return means_.Cov(); }

 private:
  uint64_t block_;
  uint64_t filled_ = 0;
  double sum_ = 0.0;
  Moments means_;
};

}  // namespace

absl::StatusOr<RateWalkSummary> SimulateRateWalk(
    const RateVariationConfig& config, uint64_t seed, uint64_t steps,
    std::span<const double> offered,
    const std::function<void(const RateWalkSample&)>& on_step, uint64_t session_steps) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (steps == 0) return absl::InvalidArgumentError("steps must be > 0");
  for (double x : offered) {
    if (!(x > 0.0) || !std::isfinite(x)) {
      return absl::InvalidArgumentError(
          absl::StrCat("an offered rate must be a positive number of bytes/s, got ", x));
    }
  }
  RateVariation walk(config);
  std::mt19937_64 rng(seed);
  const uint64_t interval = config.interval_ns;
  Moments rates;
  const uint64_t block_100ms = (100'000'000 + interval / 2) / interval;
  BlockMoments per_100ms(block_100ms);
  BlockMoments per_1s((1'000'000'000 + interval / 2) / interval);
  uint64_t at_min = 0, at_max = 0, in_band = 0, paused_steps = 0;
  std::vector<uint64_t> below(offered.size(), 0);
  std::vector<Moments> delivered(offered.size());
  // Per offered rate: this session's 100 ms blocks, and every session's CoV.
  std::vector<BlockMoments> session_blocks(offered.size(), BlockMoments(block_100ms));
  std::vector<std::vector<double>> session_covs(offered.size());
  auto end_session = [&] {
    for (size_t k = 0; k < offered.size(); ++k) {
      const double c = session_blocks[k].Cov();
      if (std::isfinite(c)) session_covs[k].push_back(c);
      session_blocks[k] = BlockMoments(block_100ms);
    }
  };
  RateWalkSummary out;
  out.sessions = 0;
  out.session_min_rate_lo = std::numeric_limits<double>::infinity();
  out.session_window_lo = std::numeric_limits<uint32_t>::max();
  for (uint64_t i = 0; i < steps; ++i) {
    if (i == 0 || (config.session_spread && session_steps > 0 && i % session_steps == 0)) {
      if (i > 0) end_session();
      if (config.session_spread) walk.NewSession(rng);
      ++out.sessions;
      out.session_min_rate_lo = std::min(out.session_min_rate_lo, walk.min_rate());
      out.session_min_rate_hi = std::max(out.session_min_rate_hi, walk.min_rate());
      out.session_window_lo = std::min(out.session_window_lo, walk.window());
      out.session_window_hi = std::max(out.session_window_hi, walk.window());
    }
    const double r = walk.Step(rng);
    const double cov = walk.last_step().var_coef;
    // As a worker: the pause decision after the step; a paused step delivers nothing.
    const bool paused = walk.PausedAt(i * interval, rng);
    paused_steps += paused;
    rates.Add(r);
    per_100ms.Add(r);
    per_1s.Add(r);
    at_min += r <= walk.min_rate();
    at_max += r >= config.max_rate;
    in_band += cov >= config.lower_cov && cov <= config.upper_cov;
    for (size_t k = 0; k < offered.size(); ++k) {
      below[k] += r < offered[k];
      const double through = paused ? 0.0 : std::min(r, offered[k]);
      delivered[k].Add(through);
      session_blocks[k].Add(through);
    }
    if (on_step) {
      on_step(RateWalkSample{i * interval, r, cov, walk.direction(), out.sessions - 1, paused});
    }
  }
  end_session();
  const double n = static_cast<double>(steps);
  out.steps = steps;
  out.seconds = n * static_cast<double>(interval) * 1e-9;
  out.mean_rate = rates.mean();
  out.share_at_min = static_cast<double>(at_min) / n;
  out.share_at_max = static_cast<double>(at_max) / n;
  out.cov_step = rates.Cov();
  out.cov_100ms = per_100ms.Cov();
  out.cov_1s = per_1s.Cov();
  out.window_cov_in_band = static_cast<double>(in_band) / n;
  out.share_paused = static_cast<double>(paused_steps) / n;
  for (size_t k = 0; k < offered.size(); ++k) {
    RateWalkDemand d{offered[k], static_cast<double>(below[k]) / n, delivered[k].mean(),
                     delivered[k].Cov()};
    std::vector<double>& covs = session_covs[k];
    std::sort(covs.begin(), covs.end());
    auto rank = [&covs](double p) {
      if (covs.size() < 2) return std::numeric_limits<double>::quiet_NaN();
      return covs[static_cast<size_t>(std::llround(p * static_cast<double>(covs.size() - 1)))];
    };
    d.session_cov_100ms_p10 = rank(0.1);
    d.session_cov_100ms_p50 = rank(0.5);
    d.session_cov_100ms_p90 = rank(0.9);
    out.demands.push_back(d);
  }
  return out;
}

absl::StatusOr<WalkMaxRateForMean> MaxRateForMeanRate(const RateVariationConfig& config,
                                                      uint64_t seed, uint64_t steps,
                                                      double target_mean,
                                                      uint64_t session_steps) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (!(target_mean > 0.0) || !std::isfinite(target_mean)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the target mean must be a positive number of bytes/s, got ", target_mean));
  }
  if (target_mean <= config.min_rate) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the target mean ", target_mean, " B/s is not above minR (", config.min_rate,
        " B/s): no walk above minR averages it"));
  }
  // What a backlogged migration gets: min(rate, unbounded), 0 in a pause.
  const double unbounded[] = {1e15};
  // No walk has maxR below minR, or below the bursty minR with session
  // spread (it must not exceed the start rate, which must not exceed maxR).
  const double floor =
      config.session_spread ? std::max(config.min_rate, config.bursty_min_rate) : config.min_rate;
  auto mean_at = [&](double max_rate) -> absl::StatusOr<double> {
    RateVariationConfig c = config;
    c.max_rate = max_rate;
    if (c.start_rate > max_rate) c.start_rate = std::max(floor, max_rate / 2);
    absl::StatusOr<RateWalkSummary> s = SimulateRateWalk(c, seed, steps, unbounded, nullptr, session_steps);
    if (!s.ok()) return s.status();
    return s->demands[0].mean_delivered;
  };
  absl::StatusOr<double> top = mean_at(config.max_rate);
  if (!top.ok()) return top.status();
  if (*top <= target_mean) return WalkMaxRateForMean{config.max_rate, *top, true};
  absl::StatusOr<double> bottom = mean_at(floor);
  if (!bottom.ok()) return bottom.status();
  if (*bottom > target_mean) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the walk averages no less than ", *bottom, " B/s (at maxR = ", floor,
        " B/s, the least it allows), above the target mean ", target_mean, " B/s"));
  }
  double lo = floor, hi = config.max_rate, mean_hi = *top;
  while (hi - lo > 1e-3 * hi) {
    const double mid = (lo + hi) / 2;
    absl::StatusOr<double> m = mean_at(mid);
    if (!m.ok()) return m.status();
    if (*m < target_mean) {
      lo = mid;
    } else {
      hi = mid;
      mean_hi = *m;
    }
  }
  return WalkMaxRateForMean{hi, mean_hi, false};
}

}  // namespace shroud
