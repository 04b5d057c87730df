#include "dataplane/core/chaff_policy.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "dataplane/core/token_bucket.h"

namespace shroud {

std::string_view ChaffPolicyKindName(ChaffPolicyKind k) {
  switch (k) {
    case ChaffPolicyKind::kOff: return "off";
    case ChaffPolicyKind::kConstant: return "constant";
    case ChaffPolicyKind::kFillToEnvelope: return "fill_to_envelope";
    case ChaffPolicyKind::kLowLoad: return "low_load";
  }
  return "?";
}

absl::StatusOr<ChaffPolicyKind> ParseChaffPolicyKind(std::string_view name) {
  for (ChaffPolicyKind k : {ChaffPolicyKind::kOff, ChaffPolicyKind::kConstant,
                            ChaffPolicyKind::kFillToEnvelope, ChaffPolicyKind::kLowLoad}) {
    if (name == ChaffPolicyKindName(k)) return k;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown chaff policy '", std::string(name),
                   "' (expected off, constant, fill_to_envelope or low_load)"));
}

absl::Status ChaffPolicyConfig::Validate() const {
  if (constant_rate_bytes_per_sec > kMaxRateBytesPerSec) {
    return absl::InvalidArgumentError(absl::StrCat("policy.constant_rate_bytes_per_sec must be <= ",
                                                   kMaxRateBytesPerSec, ", got ",
                                                   constant_rate_bytes_per_sec));
  }
  if (envelope_bytes_per_sec > kMaxRateBytesPerSec) {
    return absl::InvalidArgumentError(absl::StrCat("policy.envelope_bytes_per_sec must be <= ",
                                                   kMaxRateBytesPerSec, ", got ",
                                                   envelope_bytes_per_sec));
  }
  const bool fills = kind == ChaffPolicyKind::kFillToEnvelope ||
                     (kind == ChaffPolicyKind::kLowLoad && low_load_fills_envelope);
  const std::string kind_name(ChaffPolicyKindName(kind));
  if (!(envelope_rate_multiple == 0.0 ||
        (envelope_rate_multiple >= 1.0 && envelope_rate_multiple <= 100.0))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy.envelope_rate_multiple must be 0 (constant envelope) or in [1, 100], got ",
        envelope_rate_multiple));
  }
  if (fills && envelope_rate_multiple == 0.0 && envelope_bytes_per_sec == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy.envelope_bytes_per_sec must be > 0 for ", kind_name, " with a constant envelope"));
  }
  const bool constant = kind == ChaffPolicyKind::kConstant ||
                        (kind == ChaffPolicyKind::kLowLoad && !low_load_fills_envelope);
  if (constant && constant_rate_bytes_per_sec == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy.constant_rate_bytes_per_sec must be > 0 for ", kind_name,
        " (use policy off for no chaff)"));
  }
  if (!(low_load_hysteresis >= 0.0 && low_load_hysteresis < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.low_load_hysteresis must be in [0, 1), got ", low_load_hysteresis));
  }
  if (kind == ChaffPolicyKind::kLowLoad && low_load_threshold_bytes_per_sec == 0) {
    return absl::InvalidArgumentError(
        "policy.low_load_threshold_bytes_per_sec must be > 0 for low_load");
  }
  return absl::OkStatus();
}

void ChaffPolicy::Smooth(uint64_t now_ns, uint64_t background) {
  const double x = static_cast<double>(background);
  if (!measured_ || config_.background_time_constant_ns == 0) {
    background_ = x;
  } else if (now_ns > last_update_ns_) {
    // An exact exponential average for irregular intervals: a sample counts
    // in proportion to the time it covers.
    const double dt = static_cast<double>(now_ns - last_update_ns_);
    const double alpha =
        1.0 - std::exp(-dt / static_cast<double>(config_.background_time_constant_ns));
    background_ += alpha * (x - background_);
  }
  measured_ = true;
  last_update_ns_ = now_ns;
}

uint64_t ChaffPolicy::Fill(const ChaffLoad& load) const {
  double envelope = static_cast<double>(config_.envelope_bytes_per_sec);
  if (config_.envelope_rate_multiple > 0.0) {
    envelope =
        config_.envelope_rate_multiple * static_cast<double>(load.migration_rate_bytes_per_sec);
  }
  const double migration =
      config_.chaff_borrows_from_migration
          ? (load.migration_paused ? 0.0 : static_cast<double>(load.migration_rate_bytes_per_sec))
          : static_cast<double>(load.migration_sent_bytes_per_sec);
  if (!(envelope > migration)) return 0;
  return std::min(kMaxRateBytesPerSec, static_cast<uint64_t>(std::llround(envelope - migration)));
}

ChaffDecision ChaffPolicy::Update(uint64_t now_ns, const ChaffLoad& load) {
  // Smoothed under every policy, so a switch to low_load starts informed.
  Smooth(now_ns, load.background_bytes_per_sec);
  const double threshold = static_cast<double>(config_.low_load_threshold_bytes_per_sec);
  if (low_load_on_) {
    if (background_ >= threshold) low_load_on_ = false;
  } else if (background_ < threshold * (1.0 - config_.low_load_hysteresis)) {
    low_load_on_ = true;
  }

  ChaffDecision d;
  switch (config_.kind) {
    case ChaffPolicyKind::kOff:
      break;
    case ChaffPolicyKind::kConstant:
      d = {true, config_.constant_rate_bytes_per_sec};
      break;
    case ChaffPolicyKind::kFillToEnvelope:
      // Even at 0 own rate chaff keeps generating: it still borrows what
      // migration leaves unused.
      d = {true, Fill(load)};
      break;
    case ChaffPolicyKind::kLowLoad:
      if (low_load_on_) {
        d = {true, config_.low_load_fills_envelope ? Fill(load)
                                                   : config_.constant_rate_bytes_per_sec};
      }
      break;
  }
  last_ = d;
  return d;
}

}  // namespace shroud
