// shroud-dataplane: the DPDK primary process (imperative shell). Parses EAL
// and application flags, loads the config, sets up ports and the mempool,
// runs the gateway worker, and reports counters at exit.
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "dataplane/core/gateway_config.h"
#include "dataplane/counters_json.h"
#include "dataplane/ctl_server.h"
#include "dataplane/flow_exporter.h"
#include "dataplane/gateway_worker.h"
#include "dataplane/mirror_writer.h"
#include "dataplane/ports.h"
#include "dataplane/service.h"
#include "dataplane/tap_worker.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "shroud/runtime_paths.h"

DEFINE_string(config, "",
              "Gateway config file (TOML; see conf/gateway.example.toml). Without it the built-in "
              "defaults apply: no port rules, so only QEMU's payload signatures select migrations.");
DEFINE_string(mode, "",
              "\"gateway\" or \"tap\"; overrides dataplane.mode of the config when given.");
DEFINE_double(duration_s, 0, "Stop after this many seconds (0: run until SIGINT/SIGTERM).");
DEFINE_uint64(exit_when_idle_ms, 0,
              "Stop once no packet arrived for this long and nothing is queued (0: never). For "
              "replays of a capture through net_pcap.");
DEFINE_double(replay_speed, 0,
              "Pace packets that carry an rx timestamp (net_pcap rx_pcap=FILE) by it: 1 = the "
              "capture's own timing, 2 = twice as fast; 0 = as fast as they come.");
DEFINE_uint32(idle_sleep_us, 0,
              "Sleep this many microseconds after a poll loop that found nothing to do, to share "
              "the cores with other programs (a test bed, a laptop). 0 busy-polls: the line-rate "
              "setting. A packet arriving meanwhile waits up to this long; at most 10000. "
              "While shaped packets wait for tokens the sleep is shorter (half the time a "
              "class's token bucket takes to fill), so sleeping costs no throughput.");
DEFINE_double(stats_interval_s, 10, "Log a counter line this often (0: only at exit).");
DEFINE_string(counters_json, "", "Write the final counters as JSON to this file at exit.");
DEFINE_uint64(seed, 0, "Seed of Algorithm 3's randomness; overrides rate_variation.seed when non-zero.");
DEFINE_string(instance, "default",
              "Instance name: the control socket and the mirror live in RUNTIME_DIR/INSTANCE/. "
              "shroud-control and `shroud ctl` find the \"default\" instance without flags.");
DEFINE_string(runtime_dir, "",
              "Where instances keep their files (default: $SHROUD_RUNTIME_DIR, else /run/shroud "
              "as root, else $XDG_RUNTIME_DIR/shroud, else /tmp/shroud-UID).");
DEFINE_bool(mirror, true, "Mirror per-flow feature records to the control process (shared memory).");
DEFINE_uint32(mirror_ring_records, 65536,
              "Records per worker's mirror ring (a power of two; 320 bytes each). A full ring "
              "drops records and counts them; the dataplane never waits for the reader.");
DEFINE_uint32(export_interval_ms, 1000,
              "A flow that changed is mirrored at most this often (its end is mirrored at once).");
DEFINE_bool(ctl, true,
            "Serve the control channel (a unix socket, mode 0600) for `shroud ctl` and "
            "shroud-control.");

namespace shroud {
namespace {

std::atomic<bool> g_stop{false};

std::atomic<bool> g_reload{false};

void OnSignal(int signo) {
  // Async-signal-safe: one store; the worker sees it within ~1000 loops.
  g_stop.store(true, std::memory_order_relaxed);
  (void)signo;
}

void OnHangup(int signo) {
  g_reload.store(true, std::memory_order_relaxed);
  (void)signo;
}

constexpr char kUsage[] =
    R"(shroud-dataplane: DPDK gateway that hides live VM migrations (paper Section V),
and the adversary's line-rate tap.

Usage: shroud-dataplane [EAL options] -- [options]

Gateway (--mode=gateway, the default): port 0 is the inside port (towards the
migration hosts), port 1 the outside port (towards the WAN), in the order the
devices are given. Migration flows (config rules, Hyperscan payload
signatures) leaving through the outside port are shaped by a token bucket
whose rate Algorithm 3 re-draws every 10 ms; everything else is forwarded
unchanged. With a [chaff] key the gateway also absorbs (and answers) its peer
gateway's chaff and, per chaff.policy, sends chaff of its own (a commented
pair: conf/gateway-pair-a.toml, -b.toml).

Tap (--mode=tap): every port is receive-only (a mirror port, a capture);
dataplane.rx_queues workers (one per rx queue, symmetric RSS) extract per-flow
features and mirror them to shroud-control. A capture replayed through
net_pcap keeps its own packet times, so the verdicts equal `shroud analyze`'s.

Examples:
  # gateway between two kernel interfaces (veths), as root:
  shroud-dataplane --no-huge -m 512 --no-shconf --no-pci -l 0-1 \
    --vdev=net_af_packet0,iface=IN --vdev=net_af_packet1,iface=OUT \
    -- --mode=gateway --config=conf/gateway.example.toml
  # replay a capture (both directions split into two files) at its own pace:
  shroud-dataplane --no-huge -m 512 --no-shconf --no-pci -l 0-1 \
    --vdev=net_pcap0,rx_pcap=in.pcap,tx_pcap=back.pcap \
    --vdev=net_pcap1,rx_pcap=out.pcap,tx_pcap=shaped.pcap \
    -- --config=conf/gateway.example.toml --replay_speed=1 --exit_when_idle_ms=2000
  # tap a capture, with shroud-control running (it finds this instance by itself):
  shroud-dataplane --no-huge -m 512 --no-shconf --no-pci -l 0-1 \
    --vdev=net_pcap0,rx_pcap=capture.pcap -- --mode=tap --config=conf/tap.example.toml \
    --exit_when_idle_ms=500

Run-time control: with two or more lcores (-l 0-1) the worker(s) run on the
other lcores and the first serves the control channel (`shroud ctl status|get|
set KEY=VALUE|reload`, a unix socket only this user and root may use) and
re-reads --config on SIGHUP: Algorithm 3's parameters, the chaff policy and
the [classify] rules change without a restart (other sections need one). The
counters are also in DPDK telemetry (dpdk-telemetry.py: /shroud/gateway,
/shroud/tap, /shroud/mirror, /shroud/status). SIGINT/SIGTERM stop cleanly and
the final counters are logged. Exit status: 0 on a clean stop, 1 on a setup
failure (EAL, ports, memory, runtime files), 2 on a bad config or flag.
EAL options: see `shroud-dataplane --no-huge -- ` with EAL's -h, or DPDK's docs.)";

bool WantsHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-help" || a == "--helpfull" || a == "-h") return true;
  }
  return false;
}

void PrintHelp(const char* argv0) {
  std::printf("%s\n\nOptions (after --):\n", kUsage);
  std::vector<gflags::CommandLineFlagInfo> flags;
  gflags::GetAllFlags(&flags);
  for (const auto& f : flags) {
    if (f.filename.find("dataplane/main.cc") == std::string::npos) continue;
    std::printf("  --%s (%s, default %s)\n      %s\n", f.name.c_str(), f.type.c_str(),
                f.default_value.empty() ? "\"\"" : f.default_value.c_str(), f.description.c_str());
  }
  std::printf("  --log_dir=DIR  write glog files there instead of stderr\n  -v=N  verbose logging\n");
  (void)argv0;
}

// Another dataplane of this instance answers on its control socket.
bool InstanceIsRunning(const std::string& socket_path) {
  sockaddr_un addr = {};
  if (socket_path.size() >= sizeof(addr.sun_path)) return false;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool up = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return up;
}

// The main lcore while the workers run: serves the control channel, beats
// the mirror's heartbeat, reloads on SIGHUP; returns when `done` says so.
template <typename Done>
void ServeWhileRunning(DataplaneRuntime& rt, CtlServer* ctl, Done&& done) {
  uint64_t next_heartbeat = 0;
  while (!done()) {
    if (ctl != nullptr) {
      ctl->Poll(20);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const uint64_t now = UnixNowNs();
    if (rt.mirror != nullptr && now >= next_heartbeat) {
      rt.mirror->Heartbeat(now);
      next_heartbeat = now + 100'000'000;
    }
    if (rt.gateway != nullptr) rt.gateway->CollectRetired();
    if (g_reload.exchange(false, std::memory_order_relaxed)) {
      absl::StatusOr<nlohmann::json> r = ReloadConfig(rt);
      if (r.ok()) {
        LOG(INFO) << "SIGHUP: " << rt.config_path << " re-read; applied " << (*r)["applied"].dump();
      } else {
        LOG(ERROR) << "SIGHUP: " << r.status().message();
      }
    }
  }
}

std::unique_ptr<CtlServer> StartCtl(DataplaneRuntime& rt) {
  if (!FLAGS_ctl) return nullptr;
  absl::StatusOr<std::unique_ptr<CtlServer>> ctl = CtlServer::Listen(
      rt.paths.ctl_socket, [&rt](const nlohmann::json& req) { return HandleCtlRequest(rt, req); });
  if (!ctl.ok()) {
    LOG(ERROR) << "control channel: " << ctl.status().message()
               << "; running without it (shroud ctl will not reach this dataplane)";
    return nullptr;
  }
  LOG(INFO) << "control channel: " << rt.paths.ctl_socket << " (shroud ctl --instance="
            << rt.paths.instance << " status)";
  return *std::move(ctl);
}

absl::StatusOr<std::unique_ptr<MirrorWriter>> StartMirror(const GatewayConfig& config,
                                                          const RuntimePaths& paths, uint32_t rings,
                                                          MirrorMode mode) {
  if (!FLAGS_mirror) return std::unique_ptr<MirrorWriter>();
  MirrorWriterOptions mo;
  mo.path = paths.mirror;
  mo.rings = rings;
  mo.ring_capacity = FLAGS_mirror_ring_records;
  mo.mode = mode;
  mo.features = config.features;
  mo.instance = paths.instance;
  absl::StatusOr<std::unique_ptr<MirrorWriter>> w = MirrorWriter::Create(mo);
  if (w.ok()) {
    LOG(INFO) << "mirror: " << paths.mirror << ", " << rings << " ring(s) of "
              << FLAGS_mirror_ring_records << " records; shroud-control --instance="
              << paths.instance << " reads it";
  }
  return w;
}

int RunGateway(const GatewayConfig& config, const Classifier& classifier, const RuntimePaths& paths) {
  const uint16_t ports = rte_eth_dev_count_avail();
  if (ports != 2) {
    LOG(ERROR) << "gateway mode needs exactly 2 ports (0: inside, 1: outside), found " << ports
               << "; e.g. --vdev=net_af_packet0,iface=IN --vdev=net_af_packet1,iface=OUT";
    return 1;
  }
  int exit_code = 0;
  rte_mempool* pool = rte_pktmbuf_pool_create("shroud_mbufs", config.dataplane.mempool_mbufs,
                                              256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                              static_cast<int>(rte_socket_id()));
  if (pool == nullptr) {
    LOG(ERROR) << "cannot create a mempool of " << config.dataplane.mempool_mbufs
               << " mbufs (dataplane.mempool_mbufs): " << rte_strerror(rte_errno)
               << "; give EAL more memory (-m MB with --no-huge) or lower it";
    return 1;
  }
  for (uint16_t port = 0; port < 2; ++port) {
    if (absl::Status s = SetUpPort(port, config.dataplane, PortSetup{}, pool); !s.ok()) {
      LOG(ERROR) << s.message();
      return 1;
    }
  }

  absl::StatusOr<std::unique_ptr<WorkerFlowTable>> flows =
      WorkerFlowTable::Create("shroud_flows0", config.flows.max_flows, static_cast<int>(rte_socket_id()));
  if (!flows.ok()) {
    LOG(ERROR) << flows.status().message();
    return 1;
  }
  absl::StatusOr<std::unique_ptr<MirrorWriter>> mirror =
      StartMirror(config, paths, 1, MirrorMode::kGateway);
  if (!mirror.ok()) {
    LOG(ERROR) << "mirror: " << mirror.status().message() << " (--mirror=false runs without it)";
    return 1;
  }

  GatewayWorkerOptions options = WorkerOptionsFromConfig(config);
  uint64_t seed = FLAGS_seed != 0 ? FLAGS_seed : config.rate_variation.seed;
  if (seed == 0) {
    std::random_device rd;
    seed = (uint64_t{rd()} << 32) | rd();
    if (seed == 0) seed = 1;
  }
  options.seed = seed;
  options.replay_speed = FLAGS_replay_speed;
  uint64_t ts_flag = 0;
  int ts_offset = -1;
  if (FLAGS_replay_speed > 0 && rte_mbuf_dyn_rx_timestamp_register(&ts_offset, &ts_flag) != 0) {
    LOG(WARNING) << "no rx timestamp field: --replay_speed has no effect";
    ts_offset = -1;
  }
  options.timestamp_offset = ts_offset;
  options.timestamp_flag = ts_flag;
  options.exit_when_idle_ns = FLAGS_exit_when_idle_ms * 1'000'000;
  options.idle_sleep_ns = uint64_t{FLAGS_idle_sleep_us} * 1000;
  options.duration_ns = static_cast<uint64_t>(FLAGS_duration_s * 1e9);
  options.stats_interval_ns = static_cast<uint64_t>(FLAGS_stats_interval_s * 1e9);
  options.export_interval_ns = uint64_t{FLAGS_export_interval_ms} * 1'000'000;
  if (*mirror != nullptr) options.mirror = (*mirror)->producer(0);
  if (config.chaff.enabled()) {
    options.mbuf_pool = pool;
    const ChaffConfig& cc = options.chaff;
    // The key itself is never logged; its id tells whether both gateways
    // of a pair hold the same one.
    LOG(INFO) << absl::StrFormat(
        "chaff: key id %s%s; policy %s; pools local %s, remote %s, client ports %s, server "
        "ports %s; %u connection(s), rotation %s, mean %.1f s; %s the peer's chaff; peer %s",
        ChaffKeyId(*config.chaff.key),
        config.chaff.key_file.empty() ? "" : absl::StrCat(" (from ", config.chaff.key_file, ")"),
        ChaffPolicyKindName(cc.policy.kind), cc.pools.local_prefixes[0].ToString(),
        cc.pools.remote_prefixes[0].ToString(), cc.pools.client_ports.ToString(),
        cc.pools.server_ports.ToString(), config.chaff.connections,
        RotationDistributionName(cc.rotation.distribution),
        static_cast<double>(cc.rotation.mean_ns) * 1e-9,
        cc.respond ? "absorbing and answering" : "absorbing (not answering)",
        cc.tcp.wait_for_syn_ack ? "answers ours" : "does not answer ours");
    if (ChaffKeyId(*config.chaff.key) == kShippedPairKeyId) {
      LOG(WARNING) << "chaff: this is the TEST key shipped in conf/gateway-pair-*.toml; anyone "
                      "with the repository can recognise and forge this pair's chaff. Generate "
                      "a key per pair: openssl rand -hex 32";
    }
  } else {
    LOG(INFO) << "chaff: off (no chaff.key): none sent, none recognised";
  }

  LOG(INFO) << absl::StrFormat(
      "gateway: %zu rule(s), %zu signature(s); migration %s: start %.3f MB/s, "
      "[%.3f, %.3f] MB/s every %u ms, seed %u (set rate_variation.seed to replay); "
      "malformed frames: %s",
      classifier.rules().size(), classifier.signatures().size(),
      config.rate_variation.enabled ? "Algorithm 3" : "constant rate",
      config.rate_variation.start_rate_mbyte_s, config.rate_variation.min_rate_mbyte_s,
      config.rate_variation.max_rate_mbyte_s, config.rate_variation.interval_ms, seed,
      MalformedPolicyName(config.dataplane.malformed));

  absl::StatusOr<std::unique_ptr<GatewayWorker>> worker =
      GatewayWorker::Create(options, classifier, *std::move(flows));
  if (!worker.ok()) {
    LOG(ERROR) << "worker: " << worker.status().message();
    return 1;
  }

  DataplaneRuntime rt;
  rt.mode = DataplaneMode::kGateway;
  rt.config = config;
  rt.config_path = FLAGS_config;
  rt.paths = paths;
  rt.seed = seed;
  rt.start_unix_ns = UnixNowNs();
  rt.ports = 2;
  rt.gateway = worker->get();
  rt.signature_ids = classifier.signature_ids();
  rt.mirror = mirror->get();
  rt.mirror_rings = 1;
  RegisterTelemetry(&rt);
  std::unique_ptr<CtlServer> ctl = StartCtl(rt);

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGHUP, OnHangup);
  GatewayWorker* w = worker->get();
  if (rt.mirror != nullptr) rt.mirror->SetState(MirrorState::kRunning);
  const unsigned lcore = rte_get_next_lcore(rte_lcore_id(), /*skip_main=*/1, /*wrap=*/0);
  if (lcore < RTE_MAX_LCORE) {
    LOG(INFO) << "worker on lcore " << lcore;
    static std::atomic<bool> worker_done{false};
    rte_eal_remote_launch(
        [](void* arg) -> int {
          static_cast<GatewayWorker*>(arg)->Run(g_stop);
          worker_done.store(true, std::memory_order_release);
          return 0;
        },
        w, lcore);
    // rte_eal_wait_lcore spins; the main lcore serves and sleeps instead, so
    // it does not compete with the worker for a core.
    ServeWhileRunning(rt, ctl.get(), [] { return worker_done.load(std::memory_order_acquire); });
    rte_eal_wait_lcore(lcore);
  } else {
    LOG(WARNING) << "worker on the main lcore " << rte_lcore_id()
                 << ": no control channel, SIGHUP reloads or mirror heartbeat while it runs "
                    "(give a second lcore, e.g. -l 0-1)";
    w->Run(g_stop);
  }
  ctl.reset();
  UnregisterTelemetry();

  const GatewayCounters counters = w->counters();
  std::vector<PortCounters> port_counters;
  for (uint16_t port = 0; port < 2; ++port) port_counters.push_back(ReadPortCounters(port));
  StopPorts(2);  // flushes and closes net_pcap's output files
  for (const std::string& line : FormatCounters(counters, port_counters)) LOG(INFO) << line;
  LOG(INFO) << absl::StrFormat("mirror: %u updates, %u ends, %u final records, %u dropped",
                               counters.records.updates, counters.records.ends,
                               counters.records.finals, counters.records.dropped);
  if (!FLAGS_counters_json.empty()) {
    if (absl::Status s = WriteCountersJson(FLAGS_counters_json, counters, port_counters, seed);
        !s.ok()) {
      LOG(ERROR) << s.message();
      exit_code = 1;
    }
  }
  mirror->reset();  // state "stopped": readers drain the last records and let go
  worker->reset();  // frees its mbufs before the pool goes
  rte_mempool_free(pool);
  return exit_code;
}

int RunTap(const GatewayConfig& config, const RuntimePaths& paths) {
  const uint16_t ports = rte_eth_dev_count_avail();
  if (ports == 0) {
    LOG(ERROR) << "tap mode needs at least one port, e.g. --vdev=net_pcap0,rx_pcap=FILE or "
                  "--vdev=net_af_packet0,iface=MIRROR";
    return 1;
  }
  const uint32_t workers = config.dataplane.rx_queues;
  if (workers > rte_lcore_count() - 1 && !(workers == 1 && rte_lcore_count() == 1)) {
    LOG(ERROR) << "tap mode with " << workers << " rx queue(s) (dataplane.rx_queues) needs "
               << workers + 1 << " lcores (one per worker plus the main one), EAL gave "
               << rte_lcore_count() << "; e.g. -l 0-" << workers;
    return 2;
  }
  // Every rx queue of every port holds its descriptors' mbufs, plus a burst
  // in flight per worker.
  const uint64_t needed = uint64_t{ports} * workers * (config.dataplane.rx_descriptors + 2 * kTapMaxBurst);
  const uint32_t mbufs = static_cast<uint32_t>(std::max<uint64_t>(config.dataplane.mempool_mbufs, needed));
  rte_mempool* pool = rte_pktmbuf_pool_create("shroud_mbufs", mbufs, 256, 0,
                                              RTE_MBUF_DEFAULT_BUF_SIZE,
                                              static_cast<int>(rte_socket_id()));
  if (pool == nullptr) {
    LOG(ERROR) << "cannot create a mempool of " << mbufs << " mbufs: " << rte_strerror(rte_errno)
               << "; give EAL more memory (-m MB with --no-huge) or lower dataplane.mempool_mbufs";
    return 1;
  }
  bool capture_times = true;
  for (uint16_t port = 0; port < ports; ++port) {
    PortSetup setup{.rx_queues = static_cast<uint16_t>(workers), .tx_queues = 0, .rss = workers > 1};
    if (absl::Status s = SetUpPort(port, config.dataplane, setup, pool); !s.ok()) {
      LOG(ERROR) << s.message();
      return 1;
    }
    capture_times = capture_times && PortTimestampsAreCaptureTimes(port);
  }
  int ts_offset = -1;
  uint64_t ts_flag = 0;
  if (capture_times && rte_mbuf_dyn_rx_timestamp_register(&ts_offset, &ts_flag) != 0) ts_offset = -1;
  LOG(INFO) << "tap: " << workers << " worker(s), " << ports << " port(s); packet times from "
            << (ts_offset >= 0 ? "the capture where net_pcap stamps them (rx_pcap; not with "
                                 "infinite_rx), else the TSC at receipt"
                               : "the TSC at receipt")
            << "; up to " << config.flows.max_flows << " flows per worker, idle after "
            << config.flows.idle_timeout_ms << " ms";

  absl::StatusOr<std::unique_ptr<MirrorWriter>> mirror =
      StartMirror(config, paths, workers, MirrorMode::kTap);
  if (!mirror.ok()) {
    LOG(ERROR) << "mirror: " << mirror.status().message() << " (--mirror=false runs without it)";
    return 1;
  }
  static std::atomic<uint64_t> shared_stream{0};
  std::vector<std::unique_ptr<TapWorker>> taps;
  for (uint32_t k = 0; k < workers; ++k) {
    absl::StatusOr<std::unique_ptr<WorkerFlowTable>> flows = WorkerFlowTable::Create(
        absl::StrCat("shroud_flows", k), config.flows.max_flows, static_cast<int>(rte_socket_id()));
    if (!flows.ok()) {
      LOG(ERROR) << "worker " << k << ": " << flows.status().message();
      return 1;
    }
    TapWorkerOptions o;
    for (uint16_t p = 0; p < ports; ++p) o.ports.push_back(p);
    o.ports.resize(ports);
    o.queue = static_cast<uint16_t>(k);
    o.burst = static_cast<uint16_t>(std::min<uint32_t>(config.dataplane.burst_size, kTapMaxBurst));
    o.features = config.features;
    o.idle_timeout_ns = uint64_t{config.flows.idle_timeout_ms} * 1'000'000;
    o.export_interval_ns = uint64_t{FLAGS_export_interval_ms} * 1'000'000;
    o.timestamp_offset = ts_offset;
    o.timestamp_flag = ts_flag;
    o.shared_stream = workers > 1 ? &shared_stream : nullptr;
    if (*mirror != nullptr) o.mirror = (*mirror)->producer(k);
    o.worker_index = static_cast<uint8_t>(k);
    o.exit_when_idle_ns = FLAGS_exit_when_idle_ms * 1'000'000;
    o.idle_sleep_ns = uint64_t{FLAGS_idle_sleep_us} * 1000;
    o.duration_ns = static_cast<uint64_t>(FLAGS_duration_s * 1e9);
    o.stats_interval_ns = static_cast<uint64_t>(FLAGS_stats_interval_s * 1e9);
    absl::StatusOr<std::unique_ptr<TapWorker>> t = TapWorker::Create(o, *std::move(flows));
    if (!t.ok()) {
      LOG(ERROR) << "worker " << k << ": " << t.status().message();
      return 1;
    }
    taps.push_back(*std::move(t));
  }

  DataplaneRuntime rt;
  rt.mode = DataplaneMode::kTap;
  rt.config = config;
  rt.config_path = FLAGS_config;
  rt.paths = paths;
  rt.start_unix_ns = UnixNowNs();
  rt.ports = ports;
  for (auto& t : taps) rt.taps.push_back(t.get());
  rt.mirror = mirror->get();
  rt.mirror_rings = workers;
  RegisterTelemetry(&rt);
  std::unique_ptr<CtlServer> ctl = StartCtl(rt);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGHUP, OnHangup);
  if (rt.mirror != nullptr) rt.mirror->SetState(MirrorState::kRunning);

  static std::atomic<uint32_t> running{0};
  if (rte_lcore_count() == 1) {
    LOG(WARNING) << "tap worker on the main lcore: no control channel or mirror heartbeat while "
                    "it runs (give a second lcore, e.g. -l 0-1)";
    taps[0]->Run(g_stop);
  } else {
    uint32_t k = 0;
    unsigned lcore;
    RTE_LCORE_FOREACH_WORKER(lcore) {
      if (k == workers) break;
      running.fetch_add(1);
      rte_eal_remote_launch(
          [](void* arg) -> int {
            static_cast<TapWorker*>(arg)->Run(g_stop);
            running.fetch_sub(1, std::memory_order_release);
            return 0;
          },
          taps[k].get(), lcore);
      LOG(INFO) << "tap worker " << k << " on lcore " << lcore;
      ++k;
    }
    // One worker going idle (its share of a replay ended) does not stop the
    // others; the tap stops when all have.
    ServeWhileRunning(rt, ctl.get(), [] { return running.load(std::memory_order_acquire) == 0; });
    rte_eal_mp_wait_lcore();
  }
  ctl.reset();
  UnregisterTelemetry();

  std::vector<TapCounters> counters;
  for (const auto& t : taps) counters.push_back(t->counters());
  std::vector<PortCounters> port_counters;
  for (uint16_t port = 0; port < ports; ++port) port_counters.push_back(ReadPortCounters(port));
  StopPorts(ports);
  const nlohmann::json j = TapCountersToJson(counters, port_counters);
  LOG(INFO) << absl::StrFormat(
      "tap: %u packets (%u IP), %u flows created, %u evicted idle, %u table full; mirror %u "
      "updates, %u ends, %u final records, %u dropped (ring full)",
      j["rx_packets"].get<uint64_t>(), j["stream_packets"].get<uint64_t>(),
      j["flows"]["created"].get<uint64_t>(), j["flows"]["evicted_idle"].get<uint64_t>(),
      j["flows"]["table_full"].get<uint64_t>(), j["mirror"]["updates"].get<uint64_t>(),
      j["mirror"]["ends"].get<uint64_t>(), j["mirror"]["finals"].get<uint64_t>(),
      j["mirror"]["ring_dropped"].get<uint64_t>());
  int exit_code = 0;
  if (!FLAGS_counters_json.empty()) {
    if (absl::Status s = WriteJsonFile(FLAGS_counters_json, j); !s.ok()) {
      LOG(ERROR) << s.message();
      exit_code = 1;
    }
  }
  mirror->reset();
  taps.clear();
  rte_mempool_free(pool);
  return exit_code;
}

int Run(int argc, char** argv) {
  if (WantsHelp(argc, argv)) {
    PrintHelp(argv[0]);
    return 0;
  }
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  // EAL options come before "--", ours after. Ours (and the config) are
  // checked before EAL starts: EAL probes the devices, and net_pcap creates
  // its tx_pcap files then, so a bad config found later would already have
  // truncated the user's output captures.
  int split = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) {
      split = i;
      break;
    }
  }
  // Without "--" every argument goes to EAL, which would reject our flags
  // with its own usage text and no word about where they belong.
  if (split == argc) {
    for (int i = 1; i < argc; ++i) {
      if (std::strncmp(argv[i], "--", 2) != 0) continue;
      std::string name = argv[i] + 2;
      name = name.substr(0, name.find('='));
      gflags::CommandLineFlagInfo info;
      if (gflags::GetCommandLineFlagInfo(name.c_str(), &info) && info.filename.find("dataplane") != std::string::npos) {
        std::fprintf(stderr,
                     "%s: '%s' is a shroud option: put it after \"--\", e.g.\n"
                     "  %s --no-huge -m 512 --vdev=... -- --config=FILE\n(see --help)\n",
                     argv[0], argv[i], argv[0]);
        return 2;
      }
    }
  }
  std::vector<char*> app_args = {argv[0]};
  for (int i = split + 1; i < argc; ++i) app_args.push_back(argv[i]);
  int app_argc = static_cast<int>(app_args.size());
  char** app_argv = app_args.data();
  gflags::SetUsageMessage("see --help");
  gflags::ParseCommandLineFlags(&app_argc, &app_argv, true);
  if (app_argc > 1) {
    LOG(ERROR) << "unexpected argument '" << app_argv[1] << "' (application flags go after --; "
               << "see --help)";
    return 2;
  }

  GatewayConfig config;
  if (!FLAGS_config.empty()) {
    absl::StatusOr<GatewayConfig> loaded = LoadGatewayConfig(FLAGS_config);
    if (!loaded.ok()) {
      LOG(ERROR) << "bad config, not starting:\n" << loaded.status().message();
      return 2;
    }
    config = *std::move(loaded);
  } else {
    LOG(WARNING) << "no --config: built-in defaults, no port rules (only QEMU payload "
                    "signatures select migration flows)";
  }
  if (!FLAGS_mode.empty()) {
    if (FLAGS_mode == "gateway") {
      config.dataplane.mode = DataplaneMode::kGateway;
    } else if (FLAGS_mode == "tap") {
      config.dataplane.mode = DataplaneMode::kTap;
    } else {
      LOG(ERROR) << "--mode: expected \"gateway\" or \"tap\", got \"" << FLAGS_mode << "\"";
      return 2;
    }
    if (absl::Status s = ValidateGatewayConfig(config); !s.ok()) {
      LOG(ERROR) << "bad config for --mode=" << FLAGS_mode << ", not starting:\n" << s.message();
      return 2;
    }
  }
  if (FLAGS_idle_sleep_us > 10'000) {
    LOG(ERROR) << "--idle_sleep_us must be at most 10000 (10 ms), got " << FLAGS_idle_sleep_us;
    return 2;
  }
  // The upper bounds keep nanosecond arithmetic inside uint64 (and reject NaN,
  // which compares false with everything).
  if (!(FLAGS_replay_speed == 0 || (FLAGS_replay_speed >= 1e-3 && FLAGS_replay_speed <= 1e6)) ||
      !(FLAGS_duration_s >= 0 && FLAGS_duration_s <= 1e9) ||
      !(FLAGS_stats_interval_s >= 0 && FLAGS_stats_interval_s <= 1e9)) {
    LOG(ERROR) << "--replay_speed must be 0 (off) or 0.001..1e6, --duration_s and "
                  "--stats_interval_s 0..1e9 s";
    return 2;
  }
  if (FLAGS_mirror_ring_records < 2 || (FLAGS_mirror_ring_records & (FLAGS_mirror_ring_records - 1)) != 0 ||
      FLAGS_mirror_ring_records > (1u << 24)) {
    LOG(ERROR) << "--mirror_ring_records must be a power of two in [2, 16777216], got "
               << FLAGS_mirror_ring_records;
    return 2;
  }
  if (config.dataplane.mode == DataplaneMode::kTap && FLAGS_replay_speed > 0) {
    LOG(ERROR) << "--replay_speed is for the gateway: a tap takes packet times from the capture "
                  "and reads it as fast as it can";
    return 2;
  }
  // A classifier that cannot compile would otherwise also only show up after
  // the devices were probed.
  absl::StatusOr<Classifier> classifier = Classifier::Create(config.classify);
  if (!classifier.ok()) {
    LOG(ERROR) << "classifier: " << classifier.status().message();
    return 2;
  }

  // The rendezvous with shroud-control and `shroud ctl`, also before EAL.
  absl::StatusOr<RuntimePaths> paths = ResolveRuntimePaths(FLAGS_runtime_dir, FLAGS_instance);
  if (!paths.ok()) {
    LOG(ERROR) << "--instance/--runtime_dir: " << paths.status().message();
    return 2;
  }
  if (FLAGS_ctl || FLAGS_mirror) {
    if (absl::Status s = PrepareRuntimeDir(*paths); !s.ok()) {
      LOG(ERROR) << "runtime directory: " << s.message();
      return 1;
    }
    if (InstanceIsRunning(paths->ctl_socket)) {
      LOG(ERROR) << "instance \"" << paths->instance << "\" is already running (its control socket "
                 << paths->ctl_socket << " answers); stop it or pick another --instance";
      return 2;
    }
  }

  if (rte_eal_init(split, argv) < 0) {
    LOG(ERROR) << "EAL initialisation failed: " << rte_strerror(rte_errno)
               << " (on a machine without hugepages add --no-huge -m 512; run parallel instances "
                  "with --no-shconf or distinct --file-prefix)";
    return 1;
  }
  const int rc = config.dataplane.mode == DataplaneMode::kTap ? RunTap(config, *paths)
                                                                : RunGateway(config, *classifier, *paths);
  rte_eal_cleanup();
  return rc;
}

}  // namespace
}  // namespace shroud

int main(int argc, char** argv) { return shroud::Run(argc, argv); }
