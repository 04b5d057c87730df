#include "shroud/feature_config.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace shroud {

absl::Status FeatureConfig::Validate() const {
  if (burst_gap_ns == 0) return absl::InvalidArgumentError("burst_gap must be > 0");
  if (pattern_window < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("pattern_window (Pwin) must be >= 2 packets, got ", pattern_window));
  }
  if (!(pattern_delta > 0.0 && pattern_delta < 10.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("pattern_delta must be in (0, 10), got ", pattern_delta));
  }
  if (pattern_min_distances < 1) {
    return absl::InvalidArgumentError("pattern_min_distances must be >= 1");
  }
  if (byte_window_count == 0 || byte_window_count > kMaxByteWindows) {
    return absl::InvalidArgumentError(absl::StrCat("between 1 and ", kMaxByteWindows,
                                                   " byte windows are supported, got ",
                                                   byte_window_count));
  }
  for (size_t i = 0; i < byte_window_count; ++i) {
    if (byte_windows[i] == 0) return absl::InvalidArgumentError("byte window sizes must be > 0");
    if (i > 0 && byte_windows[i] <= byte_windows[i - 1]) {
      return absl::InvalidArgumentError(
          absl::StrCat("byte window sizes must be strictly ascending, got ", WindowsToString()));
    }
  }
  return absl::OkStatus();
}

int FeatureConfig::WindowSlot(uint32_t w) const {
  for (size_t i = 0; i < byte_window_count; ++i) {
    if (byte_windows[i] == w) return static_cast<int>(i);
  }
  return -1;
}

std::string FeatureConfig::WindowsToString() const {
  return absl::StrJoin(byte_windows.begin(), byte_windows.begin() + byte_window_count, ",");
}

}  // namespace shroud
