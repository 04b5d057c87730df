#include "dataplane/core/rate_variation.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace shroud {

namespace {

// Keeps the window's exact sums inside their integer types: (win + 1) * maxR
// in 64 bits, and n * sum of squares in 128 bits.
constexpr uint32_t kMaxWindow = 65'536;
constexpr double kMaxRate = 1e12;  // bytes/s (8 Tbit/s)

bool Finite(double x) { return std::isfinite(x); }

}  // namespace

absl::Status RateVariationConfig::Validate() const {
  // Rates are applied to buckets as whole bytes per second.
  if (!(min_rate >= 1.0) || !Finite(min_rate)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_rate (minR) must be >= 1 byte/s, got ", min_rate));
  }
  if (!(max_rate >= min_rate) || !(max_rate <= kMaxRate)) {
    return absl::InvalidArgumentError(absl::StrCat("max_rate (maxR) must be in [min_rate (",
                                                   min_rate, "), ", kMaxRate, "], got ",
                                                   max_rate));
  }
  if (!(start_rate >= min_rate && start_rate <= max_rate)) {
    return absl::InvalidArgumentError(absl::StrCat("start_rate (r) must be in [min_rate, max_rate] = [",
                                                   min_rate, ", ", max_rate, "], got ",
                                                   start_rate));
  }
  if (interval_ns == 0) return absl::InvalidArgumentError("interval (int) must be > 0");
  if (window < 2 || window > kMaxWindow) {
    return absl::InvalidArgumentError(
        absl::StrCat("window (win) must be in [2, ", kMaxWindow, "] rates, got ", window));
  }
  if (!(d >= 0.0) || !Finite(d)) {
    return absl::InvalidArgumentError(absl::StrCat("d must be a number >= 0, got ", d));
  }
  if (!(c_percent >= 0.0 && c_percent <= 100.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("c (c_percent) must be in [0, 100], got ", c_percent));
  }
  if (!(lower_cov >= 0.0) || !Finite(lower_cov)) {
    return absl::InvalidArgumentError(
        absl::StrCat("lower_cov (lC) must be a number >= 0, got ", lower_cov));
  }
  if (!(upper_cov > lower_cov) || !Finite(upper_cov)) {
    return absl::InvalidArgumentError(absl::StrCat("upper_cov (uC) must be > lower_cov (lC = ",
                                                   lower_cov, "), got ", upper_cov));
  }
  if (session_spread) {
    if (session_gap_ns == 0) {
      return absl::InvalidArgumentError("session_gap (the silence that ends a session) must be > 0");
    }
    if (!(bursty_min_rate >= 1.0) || !(bursty_min_rate <= start_rate)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bursty_min_rate must be in [1 byte/s, start_rate (", start_rate, ")], got ",
          bursty_min_rate));
    }
    if (bursty_window < 2 || bursty_window > kMaxWindow) {
      return absl::InvalidArgumentError(absl::StrCat("bursty_window must be in [2, ", kMaxWindow,
                                                     "] rates, got ", bursty_window));
    }
    // A migration paused most of the time never finishes.
    if (!(bursty_pause_share >= 0.0 && bursty_pause_share <= 0.9)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bursty_pause_share must be in [0, 0.9], got ", bursty_pause_share));
    }
    if (!(min_pause_share >= 0.0 && min_pause_share <= bursty_pause_share)) {
      return absl::InvalidArgumentError(absl::StrCat("min_pause_share must be in [0, bursty_pause_share (",
                                                     bursty_pause_share, ")], got ", min_pause_share));
    }
    if (pause_mean_ns == 0 || pause_max_ns < pause_mean_ns) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pause_mean must be > 0 and pause_max >= pause_mean, got pause_mean ",
          pause_mean_ns / 1'000'000, " ms, pause_max ", pause_max_ns / 1'000'000, " ms"));
    }
  }
  for (size_t i = 0; i < ranges.size(); ++i) {
    const RateFactorRange& range = ranges[i];
    if (!(range.lo > 0.0) || !(range.hi >= range.lo) || !Finite(range.hi)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "range ", i + 1, " [x", i + 1, ", y", i + 1, "] must satisfy 0 < x", i + 1, " <= y",
          i + 1, ", got [", range.lo, ", ", range.hi, "]"));
    }
  }
  return absl::OkStatus();
}

RateSessionProfile SessionProfileAt(const RateVariationConfig& config, double u) {
  u = std::clamp(u, 0.0, 1.0);
  auto geometric = [u](double a, double b) { return std::pow(a, 1.0 - u) * std::pow(b, u); };
  RateSessionProfile p;
  p.u = u;
  p.min_rate = std::clamp(geometric(config.min_rate, config.bursty_min_rate),
                          std::min(config.min_rate, config.bursty_min_rate),
                          std::max(config.min_rate, config.bursty_min_rate));
  const double w = std::round(geometric(config.window, config.bursty_window));
  const auto [w_lo, w_hi] = std::minmax(config.window, config.bursty_window);
  p.window = static_cast<uint32_t>(
      std::clamp(w, static_cast<double>(w_lo), static_cast<double>(w_hi)));
  p.pause_share = config.min_pause_share + u * (config.bursty_pause_share - config.min_pause_share);
  return p;
}

RateVariation::RateVariation(const RateVariationConfig& config)
    : config_(config),
      interval_ns_(config.interval_ns),
      min_rate_(config.min_rate),
      window_(config.window),
      r_(config.start_rate),
      // Sessions walk with windows up to the larger end; the ring is sized
      // once, here, so a new session never allocates.
      ring_(std::max(config.window, config.session_spread ? config.bursty_window : 0u) + 1, 0) {}

void RateVariation::StartSession(const RateSessionProfile& p) {
  // The ring cannot grow here (no allocation on the fast path): a window
  // beyond its capacity is cut to it.
  min_rate_ = std::clamp(p.min_rate, 1.0, config_.max_rate);
  window_ = std::clamp<uint32_t>(p.window, 2, static_cast<uint32_t>(ring_.size()) - 1);
  head_ = count_ = 0;
  sum_ = 0;
  sum_sq_ = 0;
  prev_var_coef_ = var_coef_ = 0.0;
  direction_ = true;
  change_rate_ = 1.0;
  r_ = std::clamp(config_.start_rate, min_rate_, config_.max_rate);
  pause_share_ = std::clamp(p.pause_share, 0.0, 0.9);
  paused_ = true;
  next_toggle_ns_ = 0;
  ++sessions_;
}

void RateVariation::AddRate(double r) {
  const uint32_t capacity = static_cast<uint32_t>(ring_.size());
  // 42-44: if rates.size() > win then remove oldest entry from rates
  if (count_ > window_) {
    const uint64_t oldest = ring_[head_];
    sum_ -= oldest;
    sum_sq_ -= static_cast<RateSumSq>(oldest) * oldest;
    if (++head_ == capacity) head_ = 0;
    --count_;
  }
  // 45: rates.add(r)
  const uint64_t q = RateToBytesPerSec(r);
  uint32_t tail = head_ + count_;
  if (tail >= capacity) tail -= capacity;
  ring_[tail] = q;
  ++count_;
  sum_ += q;
  sum_sq_ += static_cast<RateSumSq>(q) * q;
}

double RateVariation::WindowCov() const {
  if (count_ < 2) return 0.0;
  // stdDev / avg = sqrt(n * sum(x^2) - sum(x)^2) / sum(x), the population form
  // of Eq. 1, computed from the exact sums (the difference is >= 0 exactly).
  const RateSumSq s = sum_;
  const RateSumSq spread = static_cast<RateSumSq>(count_) * sum_sq_ - s * s;
  return std::sqrt(static_cast<double>(spread)) / static_cast<double>(sum_);
}

std::vector<uint64_t> RateVariation::WindowRates() const {
  std::vector<uint64_t> out;
  out.reserve(count_);
  for (uint32_t i = 0; i < count_; ++i) out.push_back(ring_[(head_ + i) % ring_.size()]);
  return out;
}

}  // namespace shroud
