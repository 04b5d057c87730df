// The dataplane's main thread while the workers run: the control channel
// (`shroud ctl`, shroud-control's /api/gateway), SIGHUP reloads, the mirror
// heartbeat and DPDK telemetry. Nothing here touches a packet; run-time
// changes reach the gateway worker as a RuntimeUpdate it picks up at its next
// chore check, so a change never stops forwarding.
#ifndef SHROUD_DATAPLANE_SERVICE_H_
#define SHROUD_DATAPLANE_SERVICE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dataplane/core/gateway_config.h"
#include "dataplane/gateway_worker.h"
#include "dataplane/mirror_writer.h"
#include "dataplane/tap_worker.h"
#include "nlohmann/json.hpp"
#include "shroud/runtime_paths.h"

namespace shroud {

// What the main thread knows of the running dataplane.
struct DataplaneRuntime {
  DataplaneMode mode = DataplaneMode::kGateway;
  GatewayConfig config;      // in force (set and reload replace it)
  std::string config_path;   // "" = built-in defaults
  RuntimePaths paths;
  uint64_t seed = 0;
  uint64_t start_unix_ns = 0;
  uint16_t ports = 0;
  GatewayWorker* gateway = nullptr;  // gateway mode
  // The signature ids of the classifier last handed to the gateway; a reload
  // builds the next one from them, so running flows keep their signatures.
  SignatureIds signature_ids;
  std::vector<TapWorker*> taps;      // tap mode
  MirrorWriter* mirror = nullptr;    // null: --mirror=false
  uint32_t mirror_rings = 0;
};

// The Algorithm 3 / chaff policy update that makes a running worker follow
// `next` (which must be valid).
std::unique_ptr<RuntimeUpdate> UpdateFromConfig(const GatewayConfig& next);

// Answers one well-formed control request (include/shroud/ctl_protocol.h):
// status, get, set, reload, ping. A refused request changes nothing and says
// why in "error".
nlohmann::json HandleCtlRequest(DataplaneRuntime& rt, const nlohmann::json& request);

// Re-reads rt.config_path and applies it: Algorithm 3, the chaff policy, and
// the [classify] rules and signatures (recompiled here, swapped in by the
// worker). A config that does not load, or that changes anything that needs a
// restart, changes nothing. Returns what changed.
absl::StatusOr<nlohmann::json> ReloadConfig(DataplaneRuntime& rt);

// `status`: mode, identity, settings in force, live counters, mirror rings.
nlohmann::json StatusJson(const DataplaneRuntime& rt);

// Registers /shroud/status, /shroud/gateway, /shroud/tap and /shroud/mirror
// with DPDK telemetry (dpdk-telemetry.py). They answer empty after
// UnregisterTelemetry(), which must come before the workers go away.
void RegisterTelemetry(const DataplaneRuntime* rt);
void UnregisterTelemetry();

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_SERVICE_H_
