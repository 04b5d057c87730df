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
#include "dataplane/core/gateway_config.h"
#include "dataplane/counters_json.h"
#include "dataplane/gateway_worker.h"
#include "gflags/gflags.h"
#include "glog/logging.h"

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
DEFINE_double(stats_interval_s, 10, "Log a counter line this often (0: only at exit).");
DEFINE_string(counters_json, "", "Write the final counters as JSON to this file at exit.");
DEFINE_uint64(seed, 0, "Seed of Algorithm 3's randomness; overrides rate_variation.seed when non-zero.");

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

// SIGHUP: re-reads --config and hands Algorithm 3's parameters and the chaff
// policy to the running worker. Anything else that changed needs a restart
// (said in the log); a config that does not load or validate changes nothing.
void Reload(const GatewayConfig& running, GatewayWorker& worker) {
  if (FLAGS_config.empty()) {
    LOG(WARNING) << "SIGHUP: no --config to reload; nothing changed";
    return;
  }
  absl::StatusOr<GatewayConfig> loaded = LoadGatewayConfig(FLAGS_config);
  if (!loaded.ok()) {
    LOG(ERROR) << "SIGHUP: bad config, nothing changed:\n" << loaded.status().message();
    return;
  }
  const GatewayConfig& next = *loaded;
  if (next.chaff.enabled() != running.chaff.enabled()) {
    LOG(ERROR) << "SIGHUP: turning chaff on or off (chaff.key) needs a restart; nothing changed";
    return;
  }
  auto update = std::make_unique<RuntimeUpdate>(ToRateVariationConfig(next.rate_variation));
  update->rate_variation = next.rate_variation.enabled;
  update->migration_ceil_bytes_per_sec = ToShaperConfig(next).migration.ceil_bytes_per_sec;
  if (next.chaff.enabled()) update->chaff_policy = ToChaffConfig(next).policy;
  worker.PostUpdate(std::move(update));
  LOG(INFO) << "SIGHUP: " << FLAGS_config << " re-read; [rate_variation] and the chaff policy go "
            << "to the worker now; other sections (ports, flows, rules, shaper queues, chaff "
               "pools and key) apply at the next start";
}

constexpr char kUsage[] =
    R"(shroud-dataplane: DPDK gateway that hides live VM migrations (paper Section V).

Usage: shroud-dataplane [EAL options] -- [options]

Port 0 is the inside port (towards the migration hosts), port 1 the outside
port (towards the WAN), in the order the devices are given. Migration flows
(config rules, Hyperscan payload signatures) leaving through the outside port
are shaped by a token bucket whose rate Algorithm 3 re-draws every 10 ms;
everything else is forwarded unchanged. With a [chaff] key the gateway also
absorbs (and answers) its peer gateway's chaff and, per chaff.policy, sends
chaff of its own (a commented pair: conf/gateway-pair-a.toml, -b.toml).

Examples:
  # between two kernel interfaces (veths), as root:
  shroud-dataplane --no-huge -m 512 --no-shconf --no-pci -l 0-1 \
    --vdev=net_af_packet0,iface=IN --vdev=net_af_packet1,iface=OUT \
    -- --mode=gateway --config=conf/gateway.example.toml
  # replay a capture (both directions split into two files) at its own pace:
  shroud-dataplane --no-huge -m 512 --no-shconf --no-pci -l 0-1 \
    --vdev=net_pcap0,rx_pcap=in.pcap,tx_pcap=back.pcap \
    --vdev=net_pcap1,rx_pcap=out.pcap,tx_pcap=shaped.pcap \
    -- --config=conf/gateway.example.toml --replay_speed=1 --exit_when_idle_ms=2000

With two or more lcores (-l 0-1) the worker runs on the second one and the
first stays free and re-reads --config on SIGHUP: Algorithm 3's parameters
and the chaff policy change at run time without a restart (other sections need
one). With one lcore it runs on the main lcore. SIGINT/SIGTERM stop it
cleanly and the final counters are logged. Exit status: 0 on a clean stop, 1
on a setup failure (EAL, ports, memory), 2 on a bad config or flag.
EAL options: see `shroud-dataplane --no-huge -- ` with EAL's -h, or DPDK's docs.)";

// Ports, queues and the mempool, from [dataplane].
absl::Status SetUpPort(uint16_t port, const DataplaneSection& dp, rte_mempool* pool) {
  rte_eth_dev_info info;
  if (int rc = rte_eth_dev_info_get(port, &info); rc != 0) {
    return absl::InternalError(absl::StrCat("port ", port, ": rte_eth_dev_info_get: ", rte_strerror(-rc)));
  }
  rte_eth_conf conf = {};
  if (int rc = rte_eth_dev_configure(port, 1, 1, &conf); rc != 0) {
    return absl::InternalError(absl::StrCat("port ", port, " (", info.driver_name,
                                            "): rte_eth_dev_configure: ", rte_strerror(-rc)));
  }
  uint16_t rx_desc = static_cast<uint16_t>(dp.rx_descriptors);
  uint16_t tx_desc = static_cast<uint16_t>(dp.tx_descriptors);
  if (int rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &rx_desc, &tx_desc); rc != 0) {
    return absl::InternalError(absl::StrCat("port ", port, ": descriptor counts: ", rte_strerror(-rc)));
  }
  const int socket = rte_eth_dev_socket_id(port);
  const unsigned sock = socket < 0 ? SOCKET_ID_ANY : static_cast<unsigned>(socket);
  if (int rc = rte_eth_rx_queue_setup(port, 0, rx_desc, sock, nullptr, pool); rc != 0) {
    return absl::InternalError(absl::StrCat("port ", port, ": rx queue setup (", rx_desc,
                                            " descriptors): ", rte_strerror(-rc)));
  }
  if (int rc = rte_eth_tx_queue_setup(port, 0, tx_desc, sock, nullptr); rc != 0) {
    return absl::InternalError(absl::StrCat("port ", port, ": tx queue setup (", tx_desc,
                                            " descriptors): ", rte_strerror(-rc)));
  }
  if (int rc = rte_eth_dev_start(port); rc != 0) {
    return absl::InternalError(absl::StrCat("port ", port, " (", info.driver_name,
                                            "): start failed: ", rte_strerror(-rc)));
  }
  // A bump in the wire forwards every frame, whoever it is addressed to.
  if (int rc = rte_eth_promiscuous_enable(port); rc != 0 && rc != -ENOTSUP) {
    LOG(WARNING) << "port " << port << ": promiscuous mode: " << rte_strerror(-rc);
  }
  char name[RTE_ETH_NAME_MAX_LEN] = "?";
  rte_eth_dev_get_name_by_port(port, name);
  LOG(INFO) << absl::StrFormat("port %u: %s (%s), %u rx / %u tx descriptors", port, name,
                               info.driver_name, rx_desc, tx_desc);
  return absl::OkStatus();
}

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
  if (config.dataplane.mode == DataplaneMode::kTap) {
    LOG(ERROR) << "--mode=tap is not available in this build yet: only the gateway runs";
    return 2;
  }
  if (FLAGS_replay_speed < 0 || FLAGS_duration_s < 0 || FLAGS_stats_interval_s < 0) {
    LOG(ERROR) << "--replay_speed, --duration_s and --stats_interval_s must be >= 0";
    return 2;
  }
  // A classifier that cannot compile would otherwise also only show up after
  // the devices were probed.
  absl::StatusOr<Classifier> classifier = Classifier::Create(config.classify);
  if (!classifier.ok()) {
    LOG(ERROR) << "classifier: " << classifier.status().message();
    return 2;
  }

  if (rte_eal_init(split, argv) < 0) {
    LOG(ERROR) << "EAL initialisation failed: " << rte_strerror(rte_errno)
               << " (on a machine without hugepages add --no-huge -m 512; run parallel instances "
                  "with --no-shconf or distinct --file-prefix)";
    return 1;
  }

  const uint16_t ports = rte_eth_dev_count_avail();
  if (ports != 2) {
    LOG(ERROR) << "gateway mode needs exactly 2 ports (0: inside, 1: outside), found " << ports
               << "; e.g. --vdev=net_af_packet0,iface=IN --vdev=net_af_packet1,iface=OUT";
    rte_eal_cleanup();
    return 1;
  }

  int exit_code = 0;
  {
    rte_mempool* pool = rte_pktmbuf_pool_create("shroud_mbufs", config.dataplane.mempool_mbufs,
                                                256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                                static_cast<int>(rte_socket_id()));
    if (pool == nullptr) {
      LOG(ERROR) << "cannot create a mempool of " << config.dataplane.mempool_mbufs
                 << " mbufs (dataplane.mempool_mbufs): " << rte_strerror(rte_errno)
                 << "; give EAL more memory (-m MB with --no-huge) or lower it";
      rte_eal_cleanup();
      return 1;
    }
    for (uint16_t port = 0; port < 2; ++port) {
      if (absl::Status s = SetUpPort(port, config.dataplane, pool); !s.ok()) {
        LOG(ERROR) << s.message();
        rte_eal_cleanup();
        return 1;
      }
    }

    absl::StatusOr<std::unique_ptr<FlowTable>> flows =
        FlowTable::Create("shroud_flows0", config.flows.max_flows, static_cast<int>(rte_socket_id()));
    if (!flows.ok()) {
      LOG(ERROR) << flows.status().message();
      rte_eal_cleanup();
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
    options.duration_ns = static_cast<uint64_t>(FLAGS_duration_s * 1e9);
    options.stats_interval_ns = static_cast<uint64_t>(FLAGS_stats_interval_s * 1e9);
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
        classifier->rules().size(), classifier->signatures().size(),
        config.rate_variation.enabled ? "Algorithm 3" : "constant rate",
        config.rate_variation.start_rate_mbyte_s, config.rate_variation.min_rate_mbyte_s,
        config.rate_variation.max_rate_mbyte_s, config.rate_variation.interval_ms, seed,
        MalformedPolicyName(config.dataplane.malformed));

    absl::StatusOr<std::unique_ptr<GatewayWorker>> worker =
        GatewayWorker::Create(options, *classifier, *std::move(flows));
    if (!worker.ok()) {
      LOG(ERROR) << "worker: " << worker.status().message();
      rte_eal_cleanup();
      return 1;
    }

    std::signal(SIGINT, OnSignal);
    std::signal(SIGTERM, OnSignal);
    std::signal(SIGHUP, OnHangup);
    GatewayWorker* w = worker->get();
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
      // rte_eal_wait_lcore spins; the main lcore sleeps instead, so it does
      // not compete with the worker for a core.
      while (!worker_done.load(std::memory_order_acquire)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (g_reload.exchange(false, std::memory_order_relaxed)) Reload(config, *w);
      }
      rte_eal_wait_lcore(lcore);
    } else {
      LOG(INFO) << "worker on the main lcore " << rte_lcore_id()
                << " (SIGHUP reloads need a second lcore, e.g. -l 0-1)";
      w->Run(g_stop);
    }

    const GatewayCounters counters = w->counters();
    std::vector<PortCounters> port_counters;
    for (uint16_t port = 0; port < 2; ++port) {
      PortCounters pc;
      pc.port = port;
      char name[RTE_ETH_NAME_MAX_LEN] = "?";
      rte_eth_dev_get_name_by_port(port, name);
      pc.name = name;
      rte_eth_stats st;
      if (rte_eth_stats_get(port, &st) == 0) {
        pc.rx_packets = st.ipackets;
        pc.rx_bytes = st.ibytes;
        pc.tx_packets = st.opackets;
        pc.tx_bytes = st.obytes;
        pc.rx_missed = st.imissed;
        pc.rx_errors = st.ierrors;
        pc.tx_errors = st.oerrors;
        pc.rx_nombuf = st.rx_nombuf;
      }
      port_counters.push_back(pc);
      // Stopping flushes and closes net_pcap's output files.
      rte_eth_dev_stop(port);
      rte_eth_dev_close(port);
    }
    for (const std::string& line : FormatCounters(counters, port_counters)) LOG(INFO) << line;
    if (!FLAGS_counters_json.empty()) {
      if (absl::Status s = WriteCountersJson(FLAGS_counters_json, counters, port_counters, seed);
          !s.ok()) {
        LOG(ERROR) << s.message();
        exit_code = 1;
      }
    }
    worker->reset();  // frees its mbufs before the pool goes
    rte_mempool_free(pool);
  }
  rte_eal_cleanup();
  return exit_code;
}

}  // namespace
}  // namespace shroud

int main(int argc, char** argv) { return shroud::Run(argc, argv); }
