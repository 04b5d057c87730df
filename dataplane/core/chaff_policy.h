// Chaff policy (issue 4): how much chaff, decided once per rate interval from
// measured rates. Pure: the caller passes time and the measurements and sets
// the result as the shaper's chaff class rate (Shaper::SetRate(kChaff, ...)).
//
// Policies (runtime-selectable; Reconfigure keeps the measurement state):
//   off               no chaff at all (the generator is not asked for frames).
//   constant          the chaff class's own rate is `constant_rate`.
//   fill_to_envelope  chaff fills what migration leaves of the envelope:
//                     rate = max(0, envelope - migration), so migration +
//                     chaff together stay at the envelope and show no step
//                     when a migration starts or ends. The envelope is a
//                     multiple of Algorithm 3's current rate (default), or a
//                     constant.
//   low_load          the paper's use (Section V-C: chaff "primarily applied
//                     in a network with a low traffic load"): chaff only while
//                     the smoothed background (default-class) rate is low,
//                     with hysteresis; while on, it fills to the envelope (or
//                     runs at constant_rate, see low_load_fills_envelope).
//
// Why the envelope follows Algorithm 3 by default: a constant envelope makes
// migration + chaff a constant-rate aggregate, and every chaff connection
// that runs while no migration does a constant-rate flow -- the fingerprint
// of a native, rate-limited migration that Algorithm 3 exists to remove.
// With the envelope at Algorithm 3's rate r the aggregate has r's TCP-like
// variability, a chaff connection alone *is* such a flow, and a migration
// starting or ending still changes nothing in the aggregate: its rate was
// the envelope already. A multiple above 1 keeps chaff flowing beside a
// migration too. Indicative numbers (tests/chaff_test.cc, ChaffDemoTest: 120
// s over looped tests/data/background-medium.pcap, one seed, the default
// maxent model, threshold 0.5): chaff alone under a constant 8 MB/s envelope
// scored 0.86-0.88; with the envelope at r 0.48-0.55, and 0.35-0.55 spread
// over three parallel connections; the Algorithm 3 migration 0.23-0.42;
// Algorithm 1 flagged nothing.
//
// Borrowing and what the migration rate means. The shipped shaper lets
// chaff borrow migration's unused tokens (token_bucket.h), and
// `chaff_borrows_from_migration` says so here. Then chaff's own rate is
// envelope - r, r being Algorithm 3's rate (ChaffLoad::migration_rate), and
// it borrows whatever of r migration leaves unused, so migration + chaff =
// envelope exactly, at once, without waiting for a measurement. Without
// borrowing the own rate is envelope - the migration's measured send rate
// over the last interval (ChaffLoad::migration_sent; the total then follows
// one interval late). With borrowing on, chaff also takes migration's
// leftovers under `constant` (the rate is then a floor), and the chaff
// class's ceil must be >= the envelope for fill to reach it.
//
// When `generate` is false the worker asks the generator for no frames (and
// so borrows nothing either); when true it keeps a frame or two queued in the
// chaff class and the shaper paces them.
#ifndef SHROUD_DATAPLANE_CORE_CHAFF_POLICY_H_
#define SHROUD_DATAPLANE_CORE_CHAFF_POLICY_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shroud {

enum class ChaffPolicyKind : uint8_t { kOff = 0, kConstant, kFillToEnvelope, kLowLoad };

// "off", "constant", "fill_to_envelope", "low_load" (the config's spelling).
std::string_view ChaffPolicyKindName(ChaffPolicyKind k);
absl::StatusOr<ChaffPolicyKind> ParseChaffPolicyKind(std::string_view name);

struct ChaffPolicyConfig {
  ChaffPolicyKind kind = ChaffPolicyKind::kOff;
  // constant (and low_load without fill): the chaff class's own rate.
  uint64_t constant_rate_bytes_per_sec = 1'000'000;
  // fill_to_envelope / low_load: the envelope (migration + chaff) is this
  // multiple of Algorithm 3's current rate r; 1 = chaff lives on exactly what
  // migration leaves of r. 0: the constant envelope_bytes_per_sec instead.
  double envelope_rate_multiple = 1.0;
  // The constant envelope when envelope_rate_multiple is 0. 8 MB/s is
  // Algorithm 3's maxR (rate_variation.h).
  uint64_t envelope_bytes_per_sec = 8'000'000;
  // Mirrors ShaperConfig::chaff_borrows_from_migration (see above).
  bool chaff_borrows_from_migration = true;
  // low_load: chaff turns off when the smoothed background rate reaches the
  // threshold and back on only when it has fallen below threshold * (1 -
  // hysteresis), so a background hovering at the threshold cannot make chaff
  // flap (each flap would be the very step chaff is there to hide). 10 Mbit/s.
  uint64_t low_load_threshold_bytes_per_sec = 1'250'000;
  double low_load_hysteresis = 0.2;
  // low_load: while on, fill to the envelope (true) or run at constant_rate.
  bool low_load_fills_envelope = true;
  // low_load: time constant of the exponential smoothing of the background
  // rate. Measured over 10 ms intervals the background is bursty; 1 s
  // follows a load change within seconds but not a single burst. 0: none.
  uint64_t background_time_constant_ns = 1'000'000'000;

  // OK, or InvalidArgument naming the field ("policy.low_load_hysteresis: ...").
  absl::Status Validate() const;
};

// The interval's rates, bytes per second.
struct ChaffLoad {
  // Algorithm 3's rate r for the coming interval (the migration class's rate).
  uint64_t migration_rate_bytes_per_sec = 0;
  // What the migration class sent over the interval that just ended.
  uint64_t migration_sent_bytes_per_sec = 0;
  // Default-class traffic through the gateway: everything but migration and
  // chaff (the peer's absorbed chaff included or not, consistently).
  uint64_t background_bytes_per_sec = 0;
  // A session pause (RateVariation::PausedAt) holds the migration class at 0
  // for the interval: r stays the envelope, and chaff borrows none of r's
  // tokens, so its own rate must be all of the envelope.
  bool migration_paused = false;
};

struct ChaffDecision {
  bool generate = false;               // keep the chaff class supplied with frames
  uint64_t class_rate_bytes_per_sec = 0;  // Shaper::SetRate(kChaff, this)
  friend bool operator==(const ChaffDecision&, const ChaffDecision&) = default;
};

class ChaffPolicy {
 public:
  // `config` must pass Validate().
  explicit ChaffPolicy(const ChaffPolicyConfig& config) : config_(config) {}

  // Call once per interval, right after Algorithm 3's step, with that
  // interval's load; returns the chaff class rate for the next one.
  ChaffDecision Update(uint64_t now_ns, const ChaffLoad& load);

  // Switches policy at run time; the smoothed background and the low-load
  // state carry over, so switching to low_load does not start from nothing.
  // `config` must pass Validate().
  void Reconfigure(const ChaffPolicyConfig& config) { config_ = config; }

  const ChaffPolicyConfig& config() const { return config_; }
  // low_load's state (false before the first Update).
  bool low_load_on() const { return low_load_on_; }
  double smoothed_background_bytes_per_sec() const { return background_; }
  const ChaffDecision& last() const { return last_; }

 private:
  void Smooth(uint64_t now_ns, uint64_t background);
  // The own rate that fills the envelope.
  uint64_t Fill(const ChaffLoad& load) const;

  ChaffPolicyConfig config_;
  bool measured_ = false;
  uint64_t last_update_ns_ = 0;
  double background_ = 0.0;
  bool low_load_on_ = false;
  ChaffDecision last_;
};

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_CORE_CHAFF_POLICY_H_
