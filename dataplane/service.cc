#include "dataplane/service.h"

#include <rte_telemetry.h>
#include <unistd.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "dataplane/core/runtime_settings.h"
#include "dataplane/counters_json.h"
#include "dataplane/flow_exporter.h"
#include "dataplane/ports.h"
#include "glog/logging.h"

namespace shroud {
namespace {

nlohmann::json Error(absl::string_view message) {
  return {{"ok", false}, {"error", std::string(message)}};
}

std::vector<PortCounters> LivePortCounters(uint16_t ports) {
  std::vector<PortCounters> out;
  for (uint16_t p = 0; p < ports; ++p) out.push_back(ReadPortCounters(p));
  return out;
}

nlohmann::json MirrorStatus(const DataplaneRuntime& rt) {
  if (rt.mirror == nullptr) return {{"enabled", false}};
  nlohmann::json rings = nlohmann::json::array();
  const uint64_t now = UnixNowNs();
  for (uint32_t k = 0; k < rt.mirror_rings; ++k) {
    MirrorProducer p = rt.mirror->producer(k);
    rings.push_back({{"published", p.published()},
                     {"dropped", p.dropped()},
                     {"reader_attached", p.ReaderAttached(now)}});
  }
  return {{"enabled", true}, {"path", rt.mirror->path()}, {"rings", rings}};
}

std::vector<TapCounters> LiveTapCounters(const DataplaneRuntime& rt) {
  std::vector<TapCounters> out;
  for (const TapWorker* t : rt.taps) out.push_back(t->LiveCounters());
  return out;
}

}  // namespace

std::unique_ptr<RuntimeUpdate> UpdateFromConfig(const GatewayConfig& next) {
  auto update = std::make_unique<RuntimeUpdate>(ToRateVariationConfig(next.rate_variation));
  update->rate_variation = next.rate_variation.enabled;
  const ShaperConfig shaper = ToShaperConfig(next);
  update->migration_ceil_bytes_per_sec = shaper.migration.ceil_bytes_per_sec;
  update->chaff_ceil_bytes_per_sec = shaper.chaff.ceil_bytes_per_sec;
  if (next.chaff.enabled()) update->chaff_policy = ToChaffConfig(next).policy;
  return update;
}

nlohmann::json StatusJson(const DataplaneRuntime& rt) {
  nlohmann::json s;
  s["mode"] = std::string(DataplaneModeName(rt.mode));
  s["instance"] = rt.paths.instance;
  s["pid"] = static_cast<int64_t>(getpid());
  s["config"] = rt.config_path;
  s["uptime_s"] = static_cast<double>(UnixNowNs() - rt.start_unix_ns) * 1e-9;
  s["mirror"] = MirrorStatus(rt);
  if (rt.mode == DataplaneMode::kGateway && rt.gateway != nullptr) {
    s["settings"] = SettableValues(rt.config);
    s["counters"] = CountersToJson(rt.gateway->LiveCounters(), LivePortCounters(rt.ports), rt.seed);
  } else {
    s["counters"] = TapCountersToJson(LiveTapCounters(rt), LivePortCounters(rt.ports));
  }
  return s;
}

absl::StatusOr<nlohmann::json> ReloadConfig(DataplaneRuntime& rt) {
  if (rt.mode != DataplaneMode::kGateway || rt.gateway == nullptr) {
    return absl::FailedPreconditionError("a tap has nothing to reload at run time; restart it");
  }
  if (rt.config_path.empty()) {
    return absl::FailedPreconditionError(
        "the dataplane runs on built-in defaults (no --config): nothing to reload");
  }
  absl::StatusOr<GatewayConfig> loaded = LoadGatewayConfig(rt.config_path);
  if (!loaded.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad config, nothing changed:\n", loaded.status().message()));
  }
  GatewayConfig next = *std::move(loaded);
  // --mode on the command line wins over the file, as at start.
  next.dataplane.mode = rt.config.dataplane.mode;
  const std::vector<std::string> restart = RestartOnlyChanges(rt.config, next);
  if (!restart.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "nothing changed: these need a restart: ", absl::StrJoin(restart, ", "),
        " (the running values stay; rate_variation.*, the chaff policy and [classify] reload live)"));
  }
  // Rules and signatures compile here, on the main thread; the worker only
  // swaps pointers.
  absl::StatusOr<Classifier> classifier = Classifier::Create(next.classify, rt.signature_ids);
  if (!classifier.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("classify: ", classifier.status().message(), "; nothing changed"));
  }
  auto owned = std::make_unique<Classifier>(*std::move(classifier));
  absl::StatusOr<SignatureScanner> scanner = owned->NewScanner();
  if (!scanner.ok()) {
    return absl::InternalError(absl::StrCat("signature scratch: ", scanner.status().message()));
  }
  std::unique_ptr<RuntimeUpdate> update = UpdateFromConfig(next);
  const size_t rules = owned->rules().size(), signatures = owned->signatures().size();
  SignatureIds ids = owned->signature_ids();
  update->classifier = std::move(owned);
  update->scanner.emplace(*std::move(scanner));
  nlohmann::json applied = SettingChanges(rt.config, next);
  rt.gateway->PostUpdate(std::move(update));
  rt.config = std::move(next);
  rt.signature_ids = std::move(ids);
  LOG(INFO) << "reload: " << rt.config_path << " applied: " << applied.dump() << "; " << rules
            << " rule(s), " << signatures << " signature(s)";
  return nlohmann::json{{"config", rt.config_path},
                        {"applied", applied},
                        {"rules", rules},
                        {"signatures", signatures}};
}

nlohmann::json HandleCtlRequest(DataplaneRuntime& rt, const nlohmann::json& request) {
  const std::string cmd = request.value("cmd", "");
  if (cmd == "ping") return {{"pong", true}, {"pid", static_cast<int64_t>(getpid())}};
  if (cmd == "status") return {{"status", StatusJson(rt)}};
  const bool gateway = rt.mode == DataplaneMode::kGateway && rt.gateway != nullptr;
  if (cmd == "get") {
    if (!gateway) return Error("a tap has no run-time settings");
    return {{"values", SettableValues(rt.config)}};
  }
  if (cmd == "set") {
    if (!gateway) return Error("a tap has no run-time settings");
    if (!request.contains("values")) return Error("set: missing \"values\" (an object of key: value)");
    absl::StatusOr<GatewayConfig> next = ApplySettings(rt.config, request["values"]);
    if (!next.ok()) return Error(next.status().message());
    nlohmann::json applied = SettingChanges(rt.config, *next);
    rt.gateway->PostUpdate(UpdateFromConfig(*next));
    rt.config = *std::move(next);
    LOG(INFO) << "ctl set: " << applied.dump();
    return {{"applied", applied}};
  }
  if (cmd == "reload") {
    absl::StatusOr<nlohmann::json> r = ReloadConfig(rt);
    if (!r.ok()) {
      LOG(WARNING) << "ctl reload refused: " << r.status().message();
      return Error(r.status().message());
    }
    return *r;
  }
  return Error(absl::StrCat("unknown cmd \"", cmd, "\""));
}

// --- DPDK telemetry ---
namespace {

// Telemetry requests run on DPDK's telemetry thread; the mutex keeps the
// workers from going away under one (UnregisterTelemetry).
std::mutex g_telemetry_mu;
const DataplaneRuntime* g_telemetry_rt = nullptr;

struct TelemetryRuntime {
  std::lock_guard<std::mutex> lock{g_telemetry_mu};
  const DataplaneRuntime* load() const { return g_telemetry_rt; }
};

void AddU64(rte_tel_data* d, const char* name, uint64_t v) { rte_tel_data_add_dict_u64(d, name, v); }

int TelemetryGateway(const char*, const char*, rte_tel_data* d) {
  TelemetryRuntime locked;
  const DataplaneRuntime* rt = locked.load();
  rte_tel_data_start_dict(d);
  if (rt == nullptr || rt->gateway == nullptr) return 0;
  const GatewayCounters c = rt->gateway->LiveCounters();
  AddU64(d, "inside_rx_packets", c.direction[kInsideToOutside].rx_packets);
  AddU64(d, "inside_rx_bytes", c.direction[kInsideToOutside].rx_bytes);
  AddU64(d, "outside_rx_packets", c.direction[kOutsideToInside].rx_packets);
  AddU64(d, "outside_rx_bytes", c.direction[kOutsideToInside].rx_bytes);
  AddU64(d, "outside_tx_packets", c.direction[kInsideToOutside].tx_packets);
  AddU64(d, "inside_tx_packets", c.direction[kOutsideToInside].tx_packets);
  AddU64(d, "tx_dropped", c.direction[0].tx_dropped + c.direction[1].tx_dropped);
  AddU64(d, "shaped_packets", c.direction[kInsideToOutside].shaped_packets);
  AddU64(d, "migration_sent_packets", c.migration.sent_packets);
  AddU64(d, "migration_sent_bytes", c.migration.sent_bytes);
  AddU64(d, "migration_dropped_packets", c.migration.dropped_packets);
  AddU64(d, "migration_backlog_packets", c.migration.backlog_packets);
  AddU64(d, "chaff_sent_packets", c.chaff.sent_packets);
  AddU64(d, "chaff_absorbed_packets",
         c.chaff_traffic.absorbed_peer_packets + c.chaff_traffic.absorbed_answer_packets);
  AddU64(d, "rate_bytes_per_sec", c.rate_bytes_per_sec);
  AddU64(d, "rate_steps", c.rate_steps);
  AddU64(d, "rate_sessions", c.rate_sessions);
  AddU64(d, "flows_active", c.flows_active);
  AddU64(d, "flows_created", c.flows.created);
  AddU64(d, "flows_evicted_idle", c.flows.evicted_idle);
  AddU64(d, "flows_table_full", c.flows.table_full);
  AddU64(d, "classified_rule", c.classified_rule);
  AddU64(d, "classified_signature", c.classified_signature);
  AddU64(d, "runtime_updates", c.runtime_updates);
  AddU64(d, "mirror_records", c.records.updates + c.records.ends + c.records.finals);
  AddU64(d, "mirror_dropped", c.mirror_ring_dropped);
  return 0;
}

int TelemetryTap(const char*, const char*, rte_tel_data* d) {
  TelemetryRuntime locked;
  const DataplaneRuntime* rt = locked.load();
  rte_tel_data_start_dict(d);
  if (rt == nullptr || rt->taps.empty()) return 0;
  const TapCounters t = SumTapCounters(LiveTapCounters(*rt));
  AddU64(d, "workers", rt->taps.size());
  AddU64(d, "rx_packets", t.rx_packets);
  AddU64(d, "rx_bytes", t.rx_bytes);
  AddU64(d, "flows_active", t.flows_active);
  AddU64(d, "flows_created", t.flows.created);
  AddU64(d, "flows_evicted_idle", t.flows.evicted_idle);
  AddU64(d, "flows_table_full", t.flows.table_full);
  AddU64(d, "mirror_records", t.records.updates + t.records.ends);
  AddU64(d, "mirror_dropped", t.mirror_ring_dropped);
  return 0;
}

int TelemetryStatus(const char*, const char*, rte_tel_data* d) {
  TelemetryRuntime locked;
  const DataplaneRuntime* rt = locked.load();
  rte_tel_data_start_dict(d);
  if (rt == nullptr) return 0;
  rte_tel_data_add_dict_string(d, "mode", std::string(DataplaneModeName(rt->mode)).c_str());
  rte_tel_data_add_dict_string(d, "instance", rt->paths.instance.c_str());
  AddU64(d, "pid", static_cast<uint64_t>(getpid()));
  AddU64(d, "uptime_s", (UnixNowNs() - rt->start_unix_ns) / 1'000'000'000ull);
  AddU64(d, "mirror_rings", rt->mirror_rings);
  return 0;
}

int TelemetryMirror(const char*, const char*, rte_tel_data* d) {
  TelemetryRuntime locked;
  const DataplaneRuntime* rt = locked.load();
  rte_tel_data_start_dict(d);
  if (rt == nullptr || rt->mirror == nullptr) return 0;
  uint64_t published = 0, dropped = 0, attached = 0;
  const uint64_t now = UnixNowNs();
  for (uint32_t k = 0; k < rt->mirror_rings; ++k) {
    MirrorProducer p = rt->mirror->producer(k);
    published += p.published();
    dropped += p.dropped();
    attached += p.ReaderAttached(now) ? 1 : 0;
  }
  AddU64(d, "rings", rt->mirror_rings);
  AddU64(d, "published", published);
  AddU64(d, "dropped", dropped);
  AddU64(d, "rings_with_reader", attached);
  return 0;
}

}  // namespace

void UnregisterTelemetry() {
  std::lock_guard<std::mutex> lock(g_telemetry_mu);
  g_telemetry_rt = nullptr;
}

void RegisterTelemetry(const DataplaneRuntime* rt) {
  {
    std::lock_guard<std::mutex> lock(g_telemetry_mu);
    g_telemetry_rt = rt;
  }
  // Registration fails only for a duplicate or malformed name: a bug here.
  rte_telemetry_register_cmd("/shroud/status", TelemetryStatus,
                             "shroud dataplane identity: mode, instance, pid, uptime");
  rte_telemetry_register_cmd("/shroud/gateway", TelemetryGateway,
                             "shroud gateway counters (packets, shaping, Algorithm 3 rate, flows)");
  rte_telemetry_register_cmd("/shroud/tap", TelemetryTap, "shroud tap counters (all workers)");
  rte_telemetry_register_cmd("/shroud/mirror", TelemetryMirror,
                             "shroud mirror channel: records published and dropped");
}

}  // namespace shroud
