// Algorithm 3 run on its own in simulated time, for calibrating its bounds and
// ranges to a network before a gateway runs them: the walk's long-run mean
// (what it costs a migration), how often it sits at minR or maxR, how much it
// varies at 10 ms, 100 ms and 1 s, and what a migration offering a steady rate
// would get through it. The paper leaves the ranges "to be calibrated to the
// application scenario"; this is the instrument (`shroud ratewalk`).
#ifndef SHROUD_DATAPLANE_CORE_RATE_WALK_H_
#define SHROUD_DATAPLANE_CORE_RATE_WALK_H_

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "dataplane/core/rate_variation.h"

namespace shroud {

// What one steady offered rate gets through the walk, step by step: the share
// of steps whose rate is below it, and the mean of min(rate, offered) (0 in a
// session pause), the
// throughput of a flow whose unsent bytes do not carry over to the next step
// (a backlog that does carry over can do better, up to min(offered, mean)).
//
// cov_delivered is the population CoV of min(rate, offered) per step, and
// 1 + cov_delivered^2 a floor on the total-time ratio shaped/unshaped for ANY
// shaping of a backlogged migration with that sent-rate CoV: the sent rate
// lies in [0, offered] with mean offered / ratio, and by the Bhatia-Davis
// inequality its variance is at most (offered - mean) * mean, so CoV^2 <=
// ratio - 1. A sent-rate CoV in the paper's band [0.5, 1] costs 1.25 to 2.
struct RateWalkDemand {
  double offered = 0.0;         // bytes/s
  double share_below = 0.0;     // of steps
  double mean_delivered = 0.0;  // bytes/s
  double cov_delivered = 0.0;
  // With session spread: the CoV of min(rate, offered) per 100 ms within
  // each session (a migration's own CoV), its 10th, 50th and 90th
  // percentile over the sessions (nearest rank; NaN without two sessions
  // of two or more 100 ms blocks).
  double session_cov_100ms_p10 = 0.0;
  double session_cov_100ms_p50 = 0.0;
  double session_cov_100ms_p90 = 0.0;
};

struct RateWalkSummary {
  uint64_t steps = 0;
  double seconds = 0.0;
  double mean_rate = 0.0;  // bytes/s, over all steps (each lasts `int`)
  double share_at_min = 0.0;
  double share_at_max = 0.0;
  // Population CoV (Eq. 1) of the step rates and of their means over blocks
  // of 100 ms and 1 s (whole steps; NaN with fewer than two blocks).
  double cov_step = 0.0;
  double cov_100ms = 0.0;
  double cov_1s = 0.0;
  // Share of steps whose rate window's CoV (line 6) was in [lC, uC]: what the
  // algorithm aims for.
  double window_cov_in_band = 0.0;
  // Sessions walked (1 without session spread), and the range of their minR
  // (bytes/s) and win.
  uint64_t sessions = 1;
  double session_min_rate_lo = 0.0;
  double session_min_rate_hi = 0.0;
  uint32_t session_window_lo = 0;
  uint32_t session_window_hi = 0;
  // Share of steps in a session pause (the migration held at 0; delivered
  // counts them as 0).
  double share_paused = 0.0;
  std::vector<RateWalkDemand> demands;
};

// One step of the walk, for a trace.
struct RateWalkSample {
  uint64_t t_ns = 0;  // start of the step
  double rate = 0.0;  // bytes/s, held for `int`
  double var_coef = 0.0;
  bool direction = true;
  uint64_t session = 0;  // 0-based
  bool paused = false;   // a session pause: the migration held at 0
};

// Runs `steps` steps of a fresh RateVariation(config) with std::mt19937_64
// seeded with `seed` (the same rates as a gateway with that seed). `offered`:
// steady rates (bytes/s) to report RateWalkDemand for, in the order given.
// `on_step`, when set, sees every step. With config.session_spread a new
// session (a fresh draw of minR and win, as a gateway does when a migration
// starts) begins every `session_steps` steps, the first at step 0; 0 = one
// session for the whole walk. Errors: an invalid config, no steps, an offered
// rate that is not a positive finite number.
absl::StatusOr<RateWalkSummary> SimulateRateWalk(
    const RateVariationConfig& config, uint64_t seed, uint64_t steps,
    std::span<const double> offered,
    const std::function<void(const RateWalkSample&)>& on_step = nullptr,
    uint64_t session_steps = 0);

// The maxR at which the walk of `config` (its other parameters as they are;
// its start rate lowered to half maxR when above it, but not below minR or,
// with session spread, the bursty minR) lets a backlogged migration average
// `target_mean` bytes/s over `steps` steps with `seed` (session pauses count
// as 0; `session_steps` as for SimulateRateWalk), at most config.max_rate: to
// let migrations behind the gateway average a chosen rate (scripts/testbed
// migrate --walk-mean). The walk's shape does not depend on maxR, only its
// scale (minR stays), so the mean grows with maxR; found by bisection to 0.1 %.
struct WalkMaxRateForMean {
  double max_rate = 0.0;   // bytes/s
  double mean_rate = 0.0;  // the walk's mean there, bytes/s
  bool capped = false;     // config.max_rate does not reach the target
};
absl::StatusOr<WalkMaxRateForMean> MaxRateForMeanRate(const RateVariationConfig& config,
                                                      uint64_t seed, uint64_t steps,
                                                      double target_mean,
                                                      uint64_t session_steps = 0);

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_CORE_RATE_WALK_H_
