// The gateway's configuration file (TOML, parsed with toml11), as one struct
// with a default for every field.
//
// Units are in the key names. Rates are in MB/s = 10^6 bytes per second, the
// paper's unit (it reports 4 and 8 MB/s migrations) and what `tc`'s "mbps"
// suffix means (iproute2 reads "mbps" as megaBYTES, 8 * 10^6 bit/s). Mind the
// trap for network engineers: "_mbyte_s" here is NOT megabits; a 1 Gbit/s link is
// link_rate_mbyte_s = 125.
//
// Loading never throws and never half-applies: the result is a complete,
// validated GatewayConfig or an error naming the file, line, key (dotted path,
// e.g. "rate_variation.min_rate_mbyte_s" or "classify.rule[1].dst") and the
// problem. Unknown keys are errors so a typo never silently falls back to a
// default.
#ifndef SHROUD_DATAPLANE_CORE_GATEWAY_CONFIG_H_
#define SHROUD_DATAPLANE_CORE_GATEWAY_CONFIG_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dataplane/core/chaff.h"
#include "dataplane/core/rate_variation.h"
#include "dataplane/core/classifier.h"
#include "dataplane/core/token_bucket.h"
#include "shroud/feature_config.h"

namespace shroud {

enum class DataplaneMode : uint8_t { kGateway, kTap };
// What happens to frames the parser reports as malformed (always counted).
enum class MalformedPolicy : uint8_t { kForward, kDrop };

std::string_view DataplaneModeName(DataplaneMode m);
std::string_view MalformedPolicyName(MalformedPolicy p);

// [dataplane]
struct DataplaneSection {
  DataplaneMode mode = DataplaneMode::kGateway;
  // RSS queues (= workers) per port.
  uint32_t rx_queues = 1;
  // Ring sizes per queue. 1024 is what most PMDs default to and absorbs a
  // ~70 us stall at 14.88 Mpps.
  uint32_t rx_descriptors = 1024;
  uint32_t tx_descriptors = 1024;
  // 2^n - 1 is the size rte_mempool uses best. 16383 mbufs of 2 KiB data room
  // are ~36 MB: covers both ports' rx rings (2 x 1024) several times over plus
  // the shaper's queues, and fits --no-huge test runs.
  uint32_t mempool_mbufs = 16383;
  // Packets per rx/tx burst; 32 is DPDK's customary burst.
  uint32_t burst_size = 32;
  // Forwarding malformed frames keeps a bump-in-the-wire transparent (the
  // endpoints decide what is garbage); dropping is the stricter choice.
  MalformedPolicy malformed = MalformedPolicy::kForward;
};

// [flows]
struct FlowsSection {
  // Flow table entries (rte_hash). A gateway sees the flows of the migration
  // hosts; 65536 leaves room for a busy host and its chaff.
  uint32_t max_flows = 65536;
  // A flow idle this long is evicted (counted). 30 s outlasts TCP's idle
  // migration phases (QEMU's 100 ms pacing slices, stop-and-copy) by far.
  uint32_t idle_timeout_ms = 30'000;
};

// [shaper]: the Dynamic Hierarchy Token Bucket (paper Section V-A).
struct ShaperSection {
  // Root bucket: the egress link's capacity. 125 MB/s = 1 Gbit/s.
  double link_rate_mbyte_s = 125.0;
  // Queue depths in milliseconds of traffic at the class's top rate
  // (migration: rate_variation.max_rate_mbyte_s; chaff: chaff_rate_mbyte_s), tail
  // drop beyond (counted). 100 ms holds one of QEMU's 100 ms pacing slices at
  // maxR, so a slice is smoothed rather than dropped.
  uint32_t migration_queue_ms = 100;
  // Chaff is made on demand, so a short queue suffices.
  uint32_t chaff_queue_ms = 20;
  // Hard cap on packets per class queue (it holds mbufs), whatever the ms say.
  uint32_t queue_packets = 4096;
  // Whether the migration class may borrow the chaff class's unused tokens.
  // Off by default: borrowing makes the migration rate depend on chaff load,
  // i.e. stray from the rate Algorithm 3 chose.
  bool migration_borrows_chaff = false;
  // Whether the migration class waits for the link's (root's) tokens. On: the
  // background (forwarded unshaped, charged to root) comes first and the
  // migration gets what it leaves, below its Algorithm 3 rate on a busy WAN.
  // Off: the migration goes at Algorithm 3's rate and competes with the
  // background for the WAN as it would without the gateway; chaff still
  // waits for root, so it still yields to both.
  bool migration_waits_for_root = true;
  // Token rate of the chaff class. The paper treats chaffing as optional (for
  // lightly loaded networks), so 0 = no chaff.
  double chaff_rate_mbyte_s = 0.0;
  // Migration and chaff leave in trains of 1..N back-to-back frames, each
  // train waiting for its tokens (ShaperClassConfig::train_max_frames);
  // 1 = one frame at a time, evenly paced.
  uint32_t train_max_frames = 1;
  // Lanes of the migration class's queue (ShaperClassConfig::flow_lanes): each
  // migration flow gets its own, and the lanes take turns of
  // flow_lane_quantum_bytes, so that several migration connections (QEMU
  // multifd) leave each in runs rather than interleaved. 1 = one FIFO.
  uint32_t flow_lanes = 1;
  uint32_t flow_lane_quantum_bytes = 64 * 1024;
};

// Algorithm 3's default factor range [x_i, y_i] (i = 0..3) as a config pair.
inline std::array<double, 2> DefaultFactorRange(size_t i) {
  const RateFactorRange r = RateVariationConfig{}.ranges[i];
  return {r.lo, r.hi};
}

// [rate_variation]: Algorithm 3, RateVariation(minR, maxR, int, win, r, d, c,
// lC, uC). The defaults, and why they are what they are, live in one place:
// RateVariationConfig (dataplane/core/rate_variation.h); here they are only
// shown in the config's units (MB/s = 10^6 bytes/s, ms).
struct RateVariationSection {
  // false: the migration class runs at a constant start_rate_mbyte_s.
  bool enabled = true;
  uint32_t interval_ms = static_cast<uint32_t>(RateVariationConfig{}.interval_ns / 1'000'000);
  uint32_t window = RateVariationConfig{}.window;
  double min_rate_mbyte_s = RateVariationConfig{}.min_rate / 1e6;
  double max_rate_mbyte_s = RateVariationConfig{}.max_rate / 1e6;
  double start_rate_mbyte_s = RateVariationConfig{}.start_rate / 1e6;
  double d = RateVariationConfig{}.d;
  double c_percent = RateVariationConfig{}.c_percent;
  double lower_cov = RateVariationConfig{}.lower_cov;  // lC
  double upper_cov = RateVariationConfig{}.upper_cov;  // uC
  // Rate change factor ranges [x, y]: [x1, y1] .. [x4, y4].
  std::array<double, 2> up_range = DefaultFactorRange(0);
  std::array<double, 2> up_fast_range = DefaultFactorRange(1);
  std::array<double, 2> down_range = DefaultFactorRange(2);
  std::array<double, 2> down_fast_range = DefaultFactorRange(3);
  // Per-session spread (RateVariationConfig::session_spread): each migration
  // session walks with its own minR and win, drawn between (min_rate_mbyte_s,
  // window) and (bursty_min_rate_mbyte_s, bursty_window).
  bool session_spread = RateVariationConfig{}.session_spread;
  uint32_t session_gap_ms = static_cast<uint32_t>(RateVariationConfig{}.session_gap_ns / 1'000'000);
  double bursty_min_rate_mbyte_s = RateVariationConfig{}.bursty_min_rate / 1e6;
  uint32_t bursty_window = RateVariationConfig{}.bursty_window;
  double bursty_pause_share = RateVariationConfig{}.bursty_pause_share;
  double min_pause_share = RateVariationConfig{}.min_pause_share;
  uint32_t pause_mean_ms = static_cast<uint32_t>(RateVariationConfig{}.pause_mean_ns / 1'000'000);
  uint32_t pause_max_ms = static_cast<uint32_t>(RateVariationConfig{}.pause_max_ns / 1'000'000);
  // 0: the dataplane draws a seed from the OS at start (and logs it), so two
  // gateways never walk the same rates. Set a value to replay a run.
  uint64_t seed = 0;
};

// The core's configuration for this section (rates in bytes/s, times in ns).
RateVariationConfig ToRateVariationConfig(const RateVariationSection& section);

// [classify]: rules ([[classify.rule]]), signatures ([[classify.signature]])
// and the scan limits; see classifier.h.
using ClassifySection = ClassifierConfig;

using MacAddress = std::array<uint8_t, 6>;

// Parallel chaff connections a gateway keeps at most.
inline constexpr uint32_t kMaxChaffConnections = 16;

// [chaff] (issue 4): dummy TCP connections this gateway sends to its peer
// across the WAN, and the peer's that it absorbs (dataplane/core/chaff.h).
// The defaults come from the core's ChaffConfig, shown here in the config's
// units (MB/s, ms).
//
// Two switches: the pair key turns recognition on (the peer's chaff is
// verified, dropped before it reaches an inside host, and answered), the
// policy turns sending on. Without a key nothing chaff happens at all: the
// peer's chaff would be forwarded inside like any traffic, so a gateway whose
// peer sends chaff needs the key even with policy "off".
struct ChaffSection {
  // The pair's pre-shared key, from `key` (64 hex digits) or `key_file` (a
  // file holding them, readable by its owner only). Never logged; the log
  // shows ChaffKeyId instead, so two gateways can be checked to match.
  std::optional<ChaffKey> key;
  std::string key_file;  // as configured, for messages ("" when `key` was given)

  ChaffPolicyKind policy = ChaffPolicyConfig{}.kind;
  double constant_rate_mbyte_s = ChaffPolicyConfig{}.constant_rate_bytes_per_sec / 1e6;
  double envelope_rate_multiple = ChaffPolicyConfig{}.envelope_rate_multiple;
  double envelope_mbyte_s = ChaffPolicyConfig{}.envelope_bytes_per_sec / 1e6;
  double low_load_threshold_mbyte_s = ChaffPolicyConfig{}.low_load_threshold_bytes_per_sec / 1e6;
  double low_load_hysteresis = ChaffPolicyConfig{}.low_load_hysteresis;
  bool low_load_fills_envelope = ChaffPolicyConfig{}.low_load_fills_envelope;
  uint32_t background_time_constant_ms =
      static_cast<uint32_t>(ChaffPolicyConfig{}.background_time_constant_ns / 1'000'000);

  // Pools: our side of the WAN (chaff we send comes from here) and the
  // peer's (it goes there); the peer configures them the other way round.
  std::vector<IpPrefix> local_prefixes = ChaffPoolConfig{}.local_prefixes;
  std::vector<IpPrefix> remote_prefixes = ChaffPoolConfig{}.remote_prefixes;
  PortRange client_ports = ChaffPoolConfig{}.client_ports;
  PortRange server_ports = ChaffPoolConfig{}.server_ports;

  // Chaff connections open at a time, each with its own 5-tuple and
  // lifetime; the rate is shared between them. Several look more like a busy
  // host than one long stream does (see chaff_policy.h's measurements).
  uint32_t connections = 1;

  RotationDistribution rotation = ChaffRotationConfig{}.distribution;
  uint32_t rotation_mean_ms = static_cast<uint32_t>(ChaffRotationConfig{}.mean_ns / 1'000'000);
  double rotation_uniform_spread = ChaffRotationConfig{}.uniform_spread;
  double rotation_lognormal_sigma = ChaffRotationConfig{}.lognormal_sigma;
  double rotation_pareto_shape = ChaffRotationConfig{}.pareto_shape;

  // Answer the peer's chaff (SYN-ACKs, delayed ACKs, FINs).
  bool respond = ChaffConfig{}.respond;
  // Whether the peer answers ours (its `respond`): our connections then wait
  // for the SYN-ACK as TCP does; if not, they assume one after 20 ms.
  bool peer_responds = ChaffTcpConfig{}.wait_for_syn_ack;
  // Link layer of the chaff we send: the WAN port's MAC and the next hop's.
  MacAddress src_mac = ChaffTcpConfig{}.src_mac;
  MacAddress dst_mac = ChaffTcpConfig{}.dst_mac;
  uint32_t mtu = ChaffTcpConfig{}.mtu;
  uint32_t ttl = ChaffTcpConfig{}.ttl;

  // True when this gateway recognises (and so absorbs) the peer's chaff.
  bool enabled() const { return key.has_value(); }
};

// ChaffKeyId of the TEST key in conf/gateway-pair-{a,b}.toml. Anyone with
// this repository can recognise and forge chaff under it, so the dataplane
// warns when it runs with it.
inline constexpr std::string_view kShippedPairKeyId = "1e6d8c27";

// "02:00:5e:10:00:01" (also with '-'); InvalidArgument otherwise.
absl::StatusOr<MacAddress> ParseMacAddress(std::string_view text);

struct GatewayConfig {
  DataplaneSection dataplane;
  FlowsSection flows;
  FeatureConfig features;
  ClassifySection classify;
  ShaperSection shaper;
  RateVariationSection rate_variation;
  ChaffSection chaff;
};

// The core's chaff configuration for this config (rates in bytes/s, times in
// ns). The policy's borrowing mirrors the shaper's (chaff always borrows from
// migration, see ToShaperConfig). `config` must be valid.
ChaffConfig ToChaffConfig(const GatewayConfig& config);

// The highest rate the chaff policy can ask for (its own rate plus what it
// borrows), bytes/s: what the chaff class's ceil must allow.
uint64_t ChaffTopRateBytesPerSec(const GatewayConfig& config);

// The shaper hierarchy this config describes (rates in bytes/s):
//  - root: shaper.link_rate_mbyte_s;
//  - migration: assured rate = rate_variation.start_rate_mbyte_s (Algorithm 3
//    re-draws it from the first step on), ceil = rate_variation.max_rate_mbyte_s
//    (or the start rate when rate variation is off), queue
//    shaper.migration_queue_ms at that ceil;
//  - chaff: rate = shaper.chaff_rate_mbyte_s (with a [chaff] policy: 0 until
//    the policy's first step sets it), ceil = the largest of that, the
//    migration ceil (chaff may fill migration's unused tokens up to the same
//    envelope) and the policy's top rate (ChaffTopRateBytesPerSec), queue
//    shaper.chaff_queue_ms at that ceil;
//  - borrowing: chaff from migration always, migration from chaff per
//    shaper.migration_borrows_chaff.
// `config` must be valid (ValidateGatewayConfig); the result then passes
// ShaperConfig::Validate (the validator checks exactly that).
ShaperConfig ToShaperConfig(const GatewayConfig& config);

// Checks a config built in code (the parser runs the same checks with key
// locations). Messages name the dotted key.
absl::Status ValidateGatewayConfig(const GatewayConfig& config);

// Parses TOML `text`; `origin` (usually the file name) prefixes error
// messages. Missing keys and sections take their defaults.
absl::StatusOr<GatewayConfig> ParseGatewayConfig(std::string_view text,
                                                 std::string_view origin = "config");

// Reads and parses the file at `path`.
absl::StatusOr<GatewayConfig> LoadGatewayConfig(const std::string& path);

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_CORE_GATEWAY_CONFIG_H_
