// shroud ratewalk: Algorithm 3 of a gateway config, simulated on its own, for
// calibrating its bounds and ranges before a gateway runs them.
#include <gflags/gflags.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "control/cli/cli_common.h"
#include "control/cli/commands.h"
#include "dataplane/core/gateway_config.h"
#include "dataplane/core/rate_walk.h"

DECLARE_bool(json);
DEFINE_double(walk_seconds, 600, "ratewalk: simulated time, seconds (steps = this / int)");
DEFINE_uint64(walk_seed, 0,
              "ratewalk: seed of the walk; 0 = the config's rate_variation.seed, or 1 when that "
              "is 0 too (a gateway then draws one at start and logs it)");
DEFINE_string(offered_mib_s, "2,4,8,12",
              "ratewalk: steady migration rates (MiB/s, as QEMU's max-bandwidth) to report what "
              "the walk lets through");
DEFINE_string(trace_csv, "",
              "ratewalk: also write every step (t_ms,rate_mbyte_s,var_coef,direction,session,paused) here");
DEFINE_double(target_mean_mib_s, 0,
              "ratewalk: also find the maxR (at most the config's) at which the walk averages "
              "this rate, MiB/s: set it so migrations behind the gateway average that rate with "
              "QEMU's max-bandwidth lifted (0: don't)");
DEFINE_double(session_seconds, 30,
              "ratewalk: with rate_variation.session_spread, a new migration session (a fresh "
              "draw of minR and win) every this many simulated seconds");

namespace shroud::cli {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;
// A day of 10 ms steps (8.64 M) runs in seconds; more is a typo.
constexpr double kMaxWalkSeconds = 86'400;

absl::StatusOr<std::vector<double>> ParseOffered(const std::string& text) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double mib = 0;
    // A terabyte per second is beyond any link; it also keeps mib * kMiB finite.
    if (!absl::SimpleAtod(part, &mib) || !(mib > 0) || !(mib <= 1e6)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--offered_mib_s: '%s' is not a number of MiB/s in (0, 1000000]", std::string(part)));
    }
    out.push_back(mib * kMiB);
  }
  if (out.empty()) return absl::InvalidArgumentError("--offered_mib_s: give at least one rate");
  return out;
}

std::string Ranges(const RateVariationConfig& c) {
  std::string out;
  for (const RateFactorRange& r : c.ranges) {
    absl::StrAppendFormat(&out, "%s[%g, %g]", out.empty() ? "" : " ", r.lo, r.hi);
  }
  return out;
}

nlohmann::json SummaryJson(const std::string& path, const RateVariationConfig& c, uint64_t seed,
                           const RateWalkSummary& s) {
  nlohmann::json demands = nlohmann::json::array();
  for (const RateWalkDemand& d : s.demands) {
    demands.push_back({{"offered_mbyte_s", d.offered / 1e6},
                       {"share_of_steps_below", d.share_below},
                       {"mean_delivered_mbyte_s", d.mean_delivered / 1e6},
                       {"delivered_share", d.mean_delivered / d.offered},
                       {"cov_delivered", NumberOrNull(d.cov_delivered)},
                       {"session_cov_100ms",
                        {{"p10", NumberOrNull(d.session_cov_100ms_p10)},
                         {"p50", NumberOrNull(d.session_cov_100ms_p50)},
                         {"p90", NumberOrNull(d.session_cov_100ms_p90)}}}});
  }
  return {{"config", path},
          {"seed", seed},
          {"min_rate_mbyte_s", c.min_rate / 1e6},
          {"max_rate_mbyte_s", c.max_rate / 1e6},
          {"interval_ms", static_cast<double>(c.interval_ns) / 1e6},
          {"steps", s.steps},
          {"seconds", s.seconds},
          {"mean_rate_mbyte_s", s.mean_rate / 1e6},
          {"mean_over_max", s.mean_rate / c.max_rate},
          {"share_at_min", s.share_at_min},
          {"share_at_max", s.share_at_max},
          {"cov_step", NumberOrNull(s.cov_step)},
          {"cov_100ms", NumberOrNull(s.cov_100ms)},
          {"cov_1s", NumberOrNull(s.cov_1s)},
          {"window_cov_in_band", s.window_cov_in_band},
          {"session_spread", c.session_spread},
          {"sessions", s.sessions},
          {"share_paused", s.share_paused},
          {"session_min_rate_mbyte_s", {s.session_min_rate_lo / 1e6, s.session_min_rate_hi / 1e6}},
          {"session_window", {s.session_window_lo, s.session_window_hi}},
          {"offered", demands}};
}

}  // namespace

void PrintRatewalkHelp() {
  PrintCommandHelp(
      "usage: shroud ratewalk GATEWAY_CONFIG [options]\n\n"
      "Runs the config's [rate_variation] (Algorithm 3: minR, maxR, int, win, r, d, c,\n"
      "lC, uC and the four factor ranges) in simulated time, as a gateway worker with\n"
      "the same seed would, and prints what the walk does: its mean rate (how much it\n"
      "slows a migration that would go faster), its share of steps at minR and maxR,\n"
      "the CoV of its rates per step, per 100 ms and per second, the share of steps\n"
      "whose rate window's CoV is in [lC, uC], and, for each --offered_mib_s rate, the\n"
      "share of steps below it, the mean of min(rate, offered) (a migration's\n"
      "throughput when nothing carries over between steps; a queued backlog can do\n"
      "better, up to the smaller of offered and mean) and its CoV, whose 1 + CoV^2 is\n"
      "the least total-time ratio any shaping with that CoV costs a backlogged\n"
      "migration (Bhatia-Davis: the paper's CoV band [0.5, 1] costs 1.25 to 2). The\n"
      "paper leaves the ranges to be calibrated to the network; this is the\n"
      "instrument. With rate_variation.session_spread, a new session (a fresh draw of\n"
      "minR and win, as a gateway makes when a migration starts) begins every\n"
      "--session_seconds, and each offered rate also shows the spread over sessions of\n"
      "the delivered rate's CoV per 100 ms (10th/50th/90th percentile): how far apart\n"
      "two migrations look. --json prints the summary as one JSON object.",
      {"ratewalk_command.cc"});
}

int RunRatewalk(const CommandArgs& args) {
  if (args.positional.size() != 1) {
    std::cerr << "shroud ratewalk: need exactly one GATEWAY_CONFIG (see shroud ratewalk --help)\n";
    return 2;
  }
  const std::string& path = args.positional[0];
  if (!(FLAGS_walk_seconds > 0) || FLAGS_walk_seconds > kMaxWalkSeconds) {
    std::cerr << absl::StrFormat("shroud ratewalk: --walk_seconds must be in (0, %g], got %g\n",
                                 kMaxWalkSeconds, FLAGS_walk_seconds);
    return 2;
  }
  if (FLAGS_target_mean_mib_s != 0 &&
      (!(FLAGS_target_mean_mib_s > 0) || FLAGS_target_mean_mib_s > 1e6)) {
    std::cerr << absl::StrFormat("shroud ratewalk: --target_mean_mib_s must be in (0, 1e6], got %g\n",
                                 FLAGS_target_mean_mib_s);
    return 2;
  }
  absl::StatusOr<std::vector<double>> offered = ParseOffered(FLAGS_offered_mib_s);
  if (!offered.ok()) {
    std::cerr << "shroud ratewalk: " << offered.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<GatewayConfig> config = LoadGatewayConfig(path);
  if (!config.ok()) {
    std::cerr << "shroud ratewalk: " << config.status().message() << "\n";
    return 1;
  }
  if (!config->rate_variation.enabled) {
    std::cerr << "shroud ratewalk: " << path
              << ": rate_variation.enabled is false (the migration class runs at a constant "
                 "start_rate_mbyte_s): there is no walk to simulate\n";
    return 1;
  }
  const RateVariationConfig walk = ToRateVariationConfig(config->rate_variation);
  uint64_t seed = FLAGS_walk_seed != 0 ? FLAGS_walk_seed : config->rate_variation.seed;
  if (seed == 0) seed = 1;
  const uint64_t steps = static_cast<uint64_t>(
      std::llround(FLAGS_walk_seconds * 1e9 / static_cast<double>(walk.interval_ns)));
  if (!(FLAGS_session_seconds > 0) || FLAGS_session_seconds > kMaxWalkSeconds) {
    std::cerr << absl::StrFormat("shroud ratewalk: --session_seconds must be in (0, %g], got %g\n",
                                 kMaxWalkSeconds, FLAGS_session_seconds);
    return 2;
  }
  const uint64_t session_steps = std::max<uint64_t>(
      1, static_cast<uint64_t>(std::llround(FLAGS_session_seconds * 1e9 /
                                            static_cast<double>(walk.interval_ns))));

  std::ofstream trace;
  if (!FLAGS_trace_csv.empty()) {
    trace.open(FLAGS_trace_csv);
    if (!trace) {
      std::cerr << "shroud ratewalk: cannot write --trace_csv " << FLAGS_trace_csv << "\n";
      return 1;
    }
    trace << "t_ms,rate_mbyte_s,var_coef,direction,session,paused\n";
  }
  auto on_step = [&](const RateWalkSample& s) {
    trace << absl::StrFormat("%.3f,%.6f,%.6f,%s,%u,%d\n", static_cast<double>(s.t_ns) / 1e6,
                             s.rate / 1e6, s.var_coef, s.direction ? "up" : "down", s.session,
                             s.paused ? 1 : 0);
  };
  absl::StatusOr<RateWalkSummary> summary =
      SimulateRateWalk(walk, seed, std::max<uint64_t>(steps, 1), *offered,
                       trace.is_open() ? std::function<void(const RateWalkSample&)>(on_step)
                                       : nullptr,
                       session_steps);
  if (!summary.ok()) {
    std::cerr << "shroud ratewalk: " << path << ": " << summary.status().message() << "\n";
    return 1;
  }
  if (trace.is_open()) {
    trace.close();
    if (!trace) {
      std::cerr << "shroud ratewalk: writing --trace_csv " << FLAGS_trace_csv << " failed\n";
      return 1;
    }
  }
  const RateWalkSummary& s = *summary;
  std::optional<WalkMaxRateForMean> for_mean;
  if (FLAGS_target_mean_mib_s != 0) {
    absl::StatusOr<WalkMaxRateForMean> m =
        MaxRateForMeanRate(walk, seed, std::max<uint64_t>(steps, 1), FLAGS_target_mean_mib_s * kMiB,
                           session_steps);
    if (!m.ok()) {
      std::cerr << "shroud ratewalk: --target_mean_mib_s: " << m.status().message() << "\n";
      return 1;
    }
    for_mean = *m;
  }
  if (FLAGS_json) {
    nlohmann::json j = SummaryJson(path, walk, seed, s);
    if (for_mean.has_value()) {
      j["target_mean"] = {{"mib_s", FLAGS_target_mean_mib_s},
                          {"mbyte_s", FLAGS_target_mean_mib_s * kMiB / 1e6},
                          {"max_rate_mbyte_s", for_mean->max_rate / 1e6},
                          {"mean_rate_mbyte_s", for_mean->mean_rate / 1e6},
                          {"capped", for_mean->capped}};
    }
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::cout << absl::StrFormat(
      "Algorithm 3 of %s: minR %.3f MB/s, maxR %.3f MB/s, int %g ms, win %u, r %.3f MB/s, "
      "d %g, c %g %%, lC %g, uC %g, ranges %s\n"
      "seed %u, %.0f s simulated (%u steps)\n\n",
      path, walk.min_rate / 1e6, walk.max_rate / 1e6, static_cast<double>(walk.interval_ns) / 1e6,
      walk.window, walk.start_rate / 1e6, walk.d, walk.c_percent, walk.lower_cov, walk.upper_cov,
      Ranges(walk), seed, s.seconds, s.steps);
  std::cout << absl::StrFormat("  mean rate                  %.3f MB/s (%.3f x maxR)\n",
                               s.mean_rate / 1e6, s.mean_rate / walk.max_rate);
  std::cout << absl::StrFormat("  steps at minR / at maxR    %.1f %% / %.1f %%\n",
                               100 * s.share_at_min, 100 * s.share_at_max);
  std::cout << absl::StrFormat("  CoV per step/100 ms/1 s    %s / %s / %s\n", FormatCov(s.cov_step),
                               FormatCov(s.cov_100ms), FormatCov(s.cov_1s));
  std::cout << absl::StrFormat("  rate window CoV in [lC,uC] %.1f %% of steps\n",
                               100 * s.window_cov_in_band);
  if (walk.session_spread) {
    std::cout << absl::StrFormat(
        "  session spread             %u sessions of %g s; minR drawn in [%.3f, %.3f] MB/s, "
        "win in [%u, %u]; %.1f %% of steps paused\n",
        s.sessions, FLAGS_session_seconds, s.session_min_rate_lo / 1e6,
        s.session_min_rate_hi / 1e6, s.session_window_lo, s.session_window_hi,
        100 * s.share_paused);
  }
  std::cout << "\n";
  std::cout << "  offered (MiB/s)  (MB/s)  steps below  delivered (MB/s)  offered/delivered"
               "  CoV delivered  1+CoV^2\n";
  for (const RateWalkDemand& d : s.demands) {
    std::cout << absl::StrFormat("  %15g  %6.2f  %10.1f %%  %16.3f  %17.2f  %13s  %7.2f\n",
                                 d.offered / kMiB, d.offered / 1e6, 100 * d.share_below,
                                 d.mean_delivered / 1e6, d.offered / d.mean_delivered,
                                 FormatCov(d.cov_delivered), 1 + d.cov_delivered * d.cov_delivered);
  }
  if (walk.session_spread) {
    std::cout << "\n  offered (MiB/s)  session CoV per 100 ms of delivered: p10 / p50 / p90\n";
    for (const RateWalkDemand& d : s.demands) {
      std::cout << absl::StrFormat("  %15g  %s / %s / %s\n", d.offered / kMiB,
                                   FormatCov(d.session_cov_100ms_p10),
                                   FormatCov(d.session_cov_100ms_p50),
                                   FormatCov(d.session_cov_100ms_p90));
    }
  }
  std::cout << "\n  offered/delivered: the total-time ratio of a migration at that pace if nothing\n"
               "  carries over between steps; 1+CoV^2 of what it then sends: the least ratio ANY\n"
               "  shaping with that sent-rate CoV costs a backlogged migration (Bhatia-Davis).\n";
  if (for_mean.has_value()) {
    std::cout << absl::StrFormat(
        "\n  a mean of %g MiB/s (%.3f MB/s): %s %.3f MB/s (the walk averages %.3f MB/s there)\n",
        FLAGS_target_mean_mib_s, FLAGS_target_mean_mib_s * kMiB / 1e6,
        for_mean->capped ? "needs more than this maxR," : "maxR", for_mean->max_rate / 1e6,
        for_mean->mean_rate / 1e6);
  }
  return 0;
}

}  // namespace shroud::cli
