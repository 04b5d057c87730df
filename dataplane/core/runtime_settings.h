// Run-time settings of a running dataplane: what `shroud ctl set/get` and a
// config reload may change without a restart. Pure (no DPDK, no sockets): the
// ctl handler in shroud-dataplane calls these, then posts the result to the
// worker the way the SIGHUP reload does (RuntimeUpdate).
//
// The keys are the config file's dotted names in the config's units, so what
// an operator sets matches what the file says:
//   rate_variation.{enabled, interval_ms, window, min_rate_mbyte_s,
//     max_rate_mbyte_s, start_rate_mbyte_s, d, c_percent, lower_cov,
//     upper_cov, up_range, up_fast_range, down_range, down_fast_range}
//   chaff.{policy, constant_rate_mbyte_s, envelope_rate_multiple,
//     envelope_mbyte_s, low_load_threshold_mbyte_s, low_load_hysteresis,
//     low_load_fills_envelope, background_time_constant_ms}
// chaff.* only when the running config has a chaff key: without one the
// worker has no chaff generator, and creating one needs a restart.
#ifndef SHROUD_DATAPLANE_CORE_RUNTIME_SETTINGS_H_
#define SHROUD_DATAPLANE_CORE_RUNTIME_SETTINGS_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "dataplane/core/gateway_config.h"
#include "shroud/ctl_protocol.h"

namespace shroud {

// The most keys one ApplySettings call takes (the protocol's limit): more
// than there are, so a request over it is garbage rather than a real change.
inline constexpr size_t kMaxSettingsPerCall = kCtlMaxSetValues;

// Every key `shroud ctl set` accepts (chaff.* included), in a fixed order.
const std::vector<std::string_view>& SettableKeys();

// Applies `values` (a JSON object key -> value) to a copy of `running` and
// validates the result with ValidateGatewayConfig. All or nothing: on any
// error nothing is applied. InvalidArgument, one line per problem, each
// naming the key ("rate_variation.window: expected an integer, got a
// string"), for: `values` not an object, more than kMaxSettingsPerCall keys,
// an unknown key (with the closest known key when one is close), chaff.* while
// chaff is not configured, a value of the wrong JSON type (a string for a
// number, a fraction or out-of-range number for an integer key, a negative
// number for an unsigned one), and a result ValidateGatewayConfig refuses
// (its message, prefixed by the key(s) set unless it already names one).
// Values are typed as in the config file: numbers (integers accepted for
// floats), booleans, [low, high] arrays, the chaff policy's name.
absl::StatusOr<GatewayConfig> ApplySettings(const GatewayConfig& running,
                                            const nlohmann::json& values);

// Every settable key with its current value (for `shroud ctl get`), as a flat
// JSON object; chaff.* only when chaff is configured. ApplySettings(config,
// SettableValues(config)) returns `config` unchanged.
nlohmann::json SettableValues(const GatewayConfig& config);

// The settable keys whose values differ between `from` and `to`, with their
// values in `to` (a flat JSON object, possibly empty): what a set or a reload
// changed, for answers and logs.
nlohmann::json SettingChanges(const GatewayConfig& from, const GatewayConfig& to);

// The changes between two configs that a running dataplane cannot apply,
// as dotted keys in the config's spelling, in config file order: everything
// except rate_variation.* (seed aside: it only seeds Algorithm 3 at start),
// the chaff policy keys above, and classify.* (rules and signatures reload
// live). E.g. {"flows.max_flows", "dataplane.rx_queues", "chaff.key"}.
// Empty when `next` can be applied as it is. Both configs must be valid.
std::vector<std::string> RestartOnlyChanges(const GatewayConfig& running,
                                            const GatewayConfig& next);

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_CORE_RUNTIME_SETTINGS_H_
