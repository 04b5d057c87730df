// shroud-control: the control process (imperative shell). Follows a
// dataplane instance's mirror channel, keeps the live flow view with the
// adversary's verdicts (control/daemon/flow_store.h), and serves it over HTTP
// (control/daemon/http_server.h) with the live dashboard. With --rttmon it
// also hosts the ICMP RTT migration monitor (control/rttmon), which needs no
// dataplane at all.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "control/ctl/ctl_client.h"
#include "control/daemon/control_state.h"
#include "control/daemon/flow_store.h"
#include "control/daemon/http_server.h"
#include "control/daemon/mirror_follower.h"
#include "control/rttmon/icmp_prober.h"
#include "control/rttmon/rtt_detector.h"
#include "control/rttmon/rtt_monitor.h"
#include "default_model.h"
#include "shroud/runtime_paths.h"

DEFINE_string(instance, "default",
              "Dataplane instance to follow (shroud-dataplane --instance); names the runtime "
              "directory <runtime_dir>/<instance>/ with the mirror and the control socket");
DEFINE_string(runtime_dir, "",
              "Root of the instance directories; default: $SHROUD_RUNTIME_DIR, else /run/shroud "
              "as root, else $XDG_RUNTIME_DIR/shroud, else /tmp/shroud-<uid> (as the dataplane "
              "decides)");
DEFINE_string(mirror, "", "Mirror file to follow instead of <runtime_dir>/<instance>/mirror");
DEFINE_string(http, "127.0.0.1:9610",
              "HTTP API and metrics address ADDR:PORT ([V6]:PORT for IPv6, port 0: any free "
              "port); \"\" or \"off\" disables it. The API has no authentication: keep it on "
              "loopback unless a firewall or proxy guards it");
DEFINE_string(model, "",
              "Maximum-entropy model file (JSON, see conf/maxent-default.json); default: the "
              "model compiled into this binary, as `shroud analyze` uses");
DEFINE_uint64(min_packets, 1000,
              "Flows with fewer packets are left out, as `shroud analyze` does (same default): "
              "they raise no DETECTION and are not counted in the detection metrics, and are "
              "the default filter of /api/flows, /api/evaluation and --flows_json "
              "(?min_packets=0 shows every flow)");
DEFINE_uint64(max_flows, 4'000'000,
              "Live flows kept at most (about 450 bytes each); records of further new flows are "
              "counted as dropped (shroud_control_flows_dropped_total)");
DEFINE_uint64(max_ended_flows, 100'000,
              "Ended flows kept for inspection; beyond this the earliest ended are forgotten");
DEFINE_uint32(poll_interval_ms, 10,
              "Sleep between polls of the mirror rings when they are empty (1..1000)");
DEFINE_bool(exit_when_dataplane_stops, false,
            "Exit (status 0) once the dataplane's mirror says it stopped and every ring is "
            "drained: for tests and capture replays (status 1 if the dataplane died instead)");
DEFINE_string(flows_json, "",
              "At exit, write every flow with >= --min_packets packets to this file, as "
              "/api/flows renders them ({\"flows\":[...]})");
DEFINE_double(duration_s, 0, "Exit after this many seconds (0: run until SIGINT/SIGTERM)");
DEFINE_uint32(rate_interval_ms, 200,
              "Sample the gateway's migration rate (its status over the control socket) this "
              "often for /api/rate and the dashboard (50..10000; 0: never)");

// The RTT migration monitor, as `shroud rttmon` runs it (same defaults).
namespace {
const shroud::rttmon::RttDetectorConfig kRttDefaults;
}  // namespace
DEFINE_string(rttmon, "",
              "Run the ICMP RTT migration monitor against this target (host name, IPv4 or IPv6 "
              "address) for /api/rtt and the dashboard's graph and traffic light; \"\": off. "
              "Needs root or CAP_NET_RAW, or a group in net.ipv4.ping_group_range");
DEFINE_string(rttmon_interval, "10ms", "RTT monitor: time between echo requests, 10ms to 10s");
DEFINE_string(rttmon_timeout, "1s", "RTT monitor: a probe unanswered this long is lost");
DEFINE_string(rttmon_family, "any", "RTT monitor: address family of the target: any, 4 or 6");
DEFINE_double(rttmon_min_outage_ms, kRttDefaults.min_outage_ms,
              "RTT monitor: red when the target stops answering at least this long");
DEFINE_double(rttmon_outage_spread_k, kRttDefaults.outage_spread_k,
              "RTT monitor: ... or at least this many baseline sigmas, if more (jittery paths)");
DEFINE_double(rttmon_peak_k, kRttDefaults.peak_k,
              "RTT monitor: yellow when RTTs exceed the baseline median by this many sigmas");
DEFINE_double(rttmon_peak_floor_ms, kRttDefaults.peak_floor_ms,
              "RTT monitor: ... and by at least this many ms");
DEFINE_uint32(rttmon_peak_min_samples, kRttDefaults.peak_min_samples,
              "RTT monitor: ... for at least this many probes in a row");
DEFINE_double(rttmon_quiet_s, kRttDefaults.quiet_s,
              "RTT monitor: back to green after this long without a peak or outage");
DEFINE_double(rttmon_baseline_window_s, kRttDefaults.baseline_window_s,
              "RTT monitor: the baseline is the median/MAD of the non-peak RTTs of this window");
DEFINE_uint32(rttmon_warmup_samples, kRttDefaults.warmup_samples,
              "RTT monitor: replies needed before peaks are judged");
DEFINE_bool(rttmon_require_preceding_peak, kRttDefaults.require_preceding_peak,
            "RTT monitor: red only if an RTT peak came before the outage");
DEFINE_double(rttmon_preceding_peak_window_s, kRttDefaults.preceding_peak_window_s,
              "RTT monitor: how long before the outage that peak may have ended");
DEFINE_double(rttmon_red_peak_excess_ms, kRttDefaults.red_peak_excess_ms,
              "RTT monitor: an RTT this far above the baseline is red by itself (0: never)");
DEFINE_double(rttmon_rebaseline_after_s, kRttDefaults.rebaseline_after_s,
              "RTT monitor: a peak lasting this long is the path's new normal");

namespace shroud::control {
namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

constexpr char kUsage[] =
    "usage: shroud-control [options]\n"
    "\n"
    "The control process of shroud. It reads the per-flow feature records that\n"
    "shroud-dataplane (gateway or tap) mirrors through shared memory, keeps the live\n"
    "flow view, runs the adversary's detectors on every flow as records arrive (the\n"
    "pattern attack, Algorithm 1, and the maximum-entropy attack, Algorithm 2: the same\n"
    "code and verdicts as `shroud analyze`), logs a DETECTION line when a flow becomes\n"
    "flagged, and serves an HTTP API with Prometheus metrics and a live dashboard.\n"
    "\n"
    "With --rttmon=TARGET it also runs the ICMP RTT migration monitor (as `shroud rttmon`\n"
    "does): the dashboard then shows the live RTT graph, the traffic light (green normal,\n"
    "yellow RTT peak, red the target stopped answering: a migration's downtime) and the\n"
    "events. This works without any dataplane.\n"
    "\n"
    "Pairing needs no configuration: started without naming flags it follows the\n"
    "dataplane instance \"default\" at the runtime directory both resolve the same way.\n"
    "If the dataplane is not running yet it waits (\"waiting for shroud-dataplane at\n"
    "PATH\", repeated every 30 s) and attaches when the mirror appears. When the\n"
    "dataplane stops, dies or restarts, the old run's flows are kept as ended and the\n"
    "new run is attached by itself. A restarted shroud-control resumes where the\n"
    "previous one stopped reading: records still in the rings are not lost.\n"
    "\n"
    "HTTP routes (GET only; JSON unless said):\n"
    "  /                  the live dashboard (HTML; open it in a browser)\n"
    "  /api               the routes\n"
    "  /api/flows         flows with the fields of `shroud analyze --json` (flow, packets,\n"
    "                     bytes, duration_s, cov, pattern, pattern_counter, pattern_windows,\n"
    "                     maxent, migration) plus class, state (live/ended) and worker;\n"
    "                     ?migration=1 flagged only, ?min_packets=N, ?limit=N (1000, max 100000)\n"
    "  /api/evaluation    CoV per window by dataplane class and by verdict, chi-square and\n"
    "                     KS between migration and default flows; ?min_packets=N, ?ks_window=W\n"
    "  /api/gateway       the dataplane's status over its control socket (503 if unreachable)\n"
    "  /api/rtt           the RTT monitor: state, baseline, samples after ?since=SEQ, events\n"
    "                     ({\"enabled\": false} without --rttmon)\n"
    "  /api/rate          the gateway's migration rate, sampled every --rate_interval_ms\n"
    "  /metrics           Prometheus text format\n"
    "\n"
    "Examples:\n"
    "  shroud-control                                   # follow instance \"default\"\n"
    "  shroud-control --instance=edge1 --http=127.0.0.1:9611\n"
    "  shroud-control --rttmon=vm1.example.net          # then open http://127.0.0.1:9610/\n"
    "  curl -s 'http://127.0.0.1:9610/api/flows?migration=1' | jq .\n"
    "  curl -s http://127.0.0.1:9610/metrics\n"
    "  # replay: analyse until the dataplane's capture ends, keep the verdicts\n"
    "  shroud-control --http=off --exit_when_dataplane_stops --flows_json=flows.json\n"
    "\n"
    "SIGINT or SIGTERM: clean exit (status 0). Exit status 1: the model or the HTTP address\n"
    "could not be used, the --rttmon target cannot be probed (name does not resolve, no\n"
    "permission, socket error), --flows_json could not be written, or the dataplane died\n"
    "under --exit_when_dataplane_stops; 2: bad usage.\n";

void PrintHelp() {
  std::cout << kUsage << "\nOptions:\n";
  std::vector<gflags::CommandLineFlagInfo> flags;
  gflags::GetAllFlags(&flags);
  for (const auto& f : flags) {
    if (f.filename.find("control_main.cc") == std::string::npos) continue;
    std::cout << absl::StrFormat("  --%-26s %s (default: %s)\n", f.name, f.description,
                                 f.default_value.empty() ? "\"\"" : f.default_value);
  }
  std::cout << "\nLogging: glog to stderr (--minloglevel, -v).\n";
}

absl::StatusOr<MaxEntModel> LoadModel(std::string* origin) {
  if (!FLAGS_model.empty()) {
    *origin = FLAGS_model;
    return MaxEntModel::Load(FLAGS_model);
  }
  *origin = "built-in default (conf/maxent-default.json)";
  return MaxEntModel::FromJson(std::string(kDefaultMaxEntModel), "built-in default model");
}

uint64_t UnixNowNs() { return static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())); }

absl::Status WriteFileAtomically(const std::string& path, const std::string& content) {
  const std::string tmp = absl::StrFormat("%s.tmp.%d", path, getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content;
    out.close();
    if (!out) return absl::DataLossError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::DataLossError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", ec.message()));
  return absl::OkStatus();
}

// Samples the dataplane's status every interval into the state's rate trace,
// on a thread of its own: the control socket may be slow to answer, and the
// mirror loop must never wait for it.
class RateSampler {
 public:
  RateSampler(ControlState* state, GatewayStatusFn status, absl::Duration interval)
      : state_(state), status_(std::move(status)), interval_(interval) {
    thread_ = std::thread([this] { Run(); });
  }
  ~RateSampler() {
    stop_.Notify();
    thread_.join();
  }
  RateSampler(const RateSampler&) = delete;
  RateSampler& operator=(const RateSampler&) = delete;

 private:
  void Run() {
    absl::Time next = absl::Now();
    while (!stop_.WaitForNotificationWithDeadline(next)) {
      state_->ObserveGatewayStatus(absl::Now(), status_());
      // Absolute deadlines keep the spacing; after a slow answer, no burst.
      next += interval_;
      const absl::Time now = absl::Now();
      if (next < now) next = now + interval_;
    }
  }

  ControlState* state_;
  GatewayStatusFn status_;
  absl::Duration interval_;
  absl::Notification stop_;
  std::thread thread_;
};

// --rttmon*: the monitor's options, as `shroud rttmon` builds them from its
// flags. InvalidArgument (exit 2) names the flag.
absl::StatusOr<rttmon::RttMonitorOptions> RttMonitorOptionsFromFlags() {
  rttmon::RttMonitorOptions options;
  options.prober.target = FLAGS_rttmon;
  absl::StatusOr<int64_t> interval = rttmon::ParseDurationNs("rttmon_interval", FLAGS_rttmon_interval);
  if (!interval.ok()) return interval.status();
  absl::StatusOr<int64_t> timeout = rttmon::ParseDurationNs("rttmon_timeout", FLAGS_rttmon_timeout);
  if (!timeout.ok()) return timeout.status();
  options.prober.interval_ns = *interval;
  options.prober.timeout_ns = *timeout;
  if (FLAGS_rttmon_family == "any") {
    options.prober.family = AF_UNSPEC;
  } else if (FLAGS_rttmon_family == "4" || FLAGS_rttmon_family == "ipv4") {
    options.prober.family = AF_INET;
  } else if (FLAGS_rttmon_family == "6" || FLAGS_rttmon_family == "ipv6") {
    options.prober.family = AF_INET6;
  } else {
    return absl::InvalidArgumentError(
        absl::StrFormat("--rttmon_family=%s: use any, 4 or 6", FLAGS_rttmon_family));
  }
  // Name the flag at fault: the interval alone first (the target, family and
  // payload are valid by now), then the timeout.
  rttmon::ProberConfig interval_only;
  interval_only.target = FLAGS_rttmon;
  interval_only.interval_ns = *interval;
  if (absl::Status s = interval_only.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rttmon_interval=", FLAGS_rttmon_interval, ": ", s.message()));
  }
  if (absl::Status s = options.prober.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rttmon_timeout=", FLAGS_rttmon_timeout, ": ", s.message()));
  }
  rttmon::RttDetectorConfig& d = options.detector;
  d.min_outage_ms = FLAGS_rttmon_min_outage_ms;
  d.outage_spread_k = FLAGS_rttmon_outage_spread_k;
  d.peak_k = FLAGS_rttmon_peak_k;
  d.peak_floor_ms = FLAGS_rttmon_peak_floor_ms;
  d.peak_min_samples = FLAGS_rttmon_peak_min_samples;
  d.quiet_s = FLAGS_rttmon_quiet_s;
  d.baseline_window_s = FLAGS_rttmon_baseline_window_s;
  d.warmup_samples = FLAGS_rttmon_warmup_samples;
  d.require_preceding_peak = FLAGS_rttmon_require_preceding_peak;
  d.preceding_peak_window_s = FLAGS_rttmon_preceding_peak_window_s;
  d.red_peak_excess_ms = FLAGS_rttmon_red_peak_excess_ms;
  d.rebaseline_after_s = FLAGS_rttmon_rebaseline_after_s;
  d.interval_ns = options.prober.interval_ns;
  d.loss_timeout_ns = options.prober.timeout_ns;
  if (absl::Status s = d.Validate(); !s.ok()) {
    // The detector's messages start with the field's name; ours is the flag.
    return absl::InvalidArgumentError(absl::StrCat("--rttmon_", s.message()));
  }
  // The dashboard's graph spans the last 60 s.
  options.history_s = 60.0;
  return options;
}

std::string RttEventLine(const rttmon::RttEvent& e, int64_t origin) {
  auto rel = [&](int64_t ns) { return (ns - origin) / 1e9; };
  return absl::StrFormat(
      "RTT event %d: %s %s, start %.3f s, duration %.1f ms, downtime %.0f ms (%d lost), from "
      "reply gap %.1f ms, peak RTT %.3f ms, baseline %.3f ms%s",
      e.id, e.state == rttmon::RttState::kRed ? "RED" : "YELLOW", e.reason, rel(e.start_ns),
      e.duration_ms(), e.downtime_ms, e.lost, e.downtime_gap_ms, e.peak_rtt_ms, e.baseline_ms,
      e.open ? " (still going)" : "");
}

int Run() {
  if (FLAGS_poll_interval_ms < 1 || FLAGS_poll_interval_ms > 1000) {
    std::cerr << "shroud-control: --poll_interval_ms must be 1..1000\n";
    return 2;
  }
  if (!(FLAGS_duration_s >= 0)) {
    std::cerr << "shroud-control: --duration_s must be >= 0\n";
    return 2;
  }
  if (FLAGS_rate_interval_ms != 0 &&
      (FLAGS_rate_interval_ms < 50 || FLAGS_rate_interval_ms > 10000)) {
    std::cerr << "shroud-control: --rate_interval_ms must be 50..10000 (0: off)\n";
    return 2;
  }
  absl::StatusOr<RuntimePaths> paths = ResolveRuntimePaths(FLAGS_runtime_dir, FLAGS_instance);
  if (!paths.ok()) {
    std::cerr << "shroud-control: " << paths.status().message() << "\n";
    return 2;
  }
  const std::string mirror_path = FLAGS_mirror.empty() ? paths->mirror : FLAGS_mirror;
  std::optional<HttpListenAddress> listen;
  if (!FLAGS_http.empty() && FLAGS_http != "off") {
    absl::StatusOr<HttpListenAddress> a = ParseListenAddress(FLAGS_http);
    if (!a.ok()) {
      std::cerr << "shroud-control: --http: " << a.status().message() << "\n";
      return 2;
    }
    listen = *a;
  }
  std::string model_origin;
  absl::StatusOr<MaxEntModel> model = LoadModel(&model_origin);
  if (!model.ok()) {
    LOG(ERROR) << model.status().message();
    return 1;
  }

  // The RTT monitor is opened before anything is served, so that a target
  // that cannot be probed is an exit with `shroud rttmon`'s message, not a
  // dashboard without a graph. Declared before the state, it outlives it.
  std::unique_ptr<rttmon::RttMonitor> rtt_monitor;
  if (!FLAGS_rttmon.empty()) {
    absl::StatusOr<rttmon::RttMonitorOptions> options = RttMonitorOptionsFromFlags();
    if (!options.ok()) {
      std::cerr << "shroud-control: " << options.status().message() << "\n";
      return 2;
    }
    // Set once the monitor exists, before Start(); the callbacks run on the
    // thread Start() creates.
    auto monitor_for_log = std::make_shared<std::atomic<rttmon::RttMonitor*>>(nullptr);
    options->on_event = [monitor_for_log](const rttmon::RttEvent& e) {
      rttmon::RttMonitor* m = monitor_for_log->load();
      LOG(INFO) << RttEventLine(e, m != nullptr ? m->origin_mono_ns() : 0);
    };
    options->on_transition = [](const rttmon::RttTransition& t) {
      LOG(INFO) << "RTT monitor: " << rttmon::RttStateName(t.to) << " (" << t.reason
                << (t.event_id ? absl::StrFormat(", event %d", t.event_id) : "") << ")";
    };
    absl::StatusOr<std::unique_ptr<rttmon::RttMonitor>> created =
        rttmon::RttMonitor::Create(*std::move(options));
    if (!created.ok()) {
      std::cerr << "shroud-control: --rttmon=" << FLAGS_rttmon << ": "
                << created.status().message() << "\n";
      return created.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    }
    rtt_monitor = *std::move(created);
    monitor_for_log->store(rtt_monitor.get());
  }

  FlowStoreOptions store_options;
  store_options.max_live_flows = FLAGS_max_flows;
  store_options.max_ended_flows = FLAGS_max_ended_flows;
  store_options.detection_min_packets = FLAGS_min_packets;
  const std::string ctl_socket = paths->ctl_socket;
  GatewayStatusFn gateway = [ctl_socket]() -> absl::StatusOr<nlohmann::json> {
    absl::StatusOr<nlohmann::json> answer =
        CtlCall(ctl_socket, nlohmann::json{{"cmd", "status"}}, absl::Seconds(1));
    if (!answer.ok()) {
      return absl::UnavailableError(absl::StrCat("dataplane control socket ", ctl_socket, ": ",
                                                 answer.status().message()));
    }
    if (!answer->value("ok", false)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the dataplane refused status: ", answer->value("error", std::string("no reason given"))));
    }
    return answer;
  };
  ControlState state(FlowStore(*std::move(model), store_options), FLAGS_min_packets, gateway,
                     absl::Now());
  LOG(INFO) << "shroud-control: instance '" << paths->instance << "', mirror " << mirror_path
            << ", control socket " << ctl_socket << ", maxent model: " << model_origin;
  if (rtt_monitor != nullptr) {
    rttmon::RttMonitor* m = rtt_monitor.get();
    state.SetRttSource([m] { return m->Snapshot(); });
    rtt_monitor->Start();
    LOG(INFO) << "RTT monitor: " << FLAGS_rttmon << " (" << m->prober().address()
              << "), ICMP echo every " << FLAGS_rttmon_interval << ", timeout "
              << FLAGS_rttmon_timeout << ", " << m->prober().socket_kind() << " socket";
  }
  std::unique_ptr<RateSampler> rate_sampler;
  if (FLAGS_rate_interval_ms > 0) {
    state.SetRateInterval(absl::Milliseconds(FLAGS_rate_interval_ms));
    rate_sampler = std::make_unique<RateSampler>(&state, gateway,
                                                 absl::Milliseconds(FLAGS_rate_interval_ms));
  }

  std::unique_ptr<HttpServer> http;
  if (listen.has_value()) {
    absl::StatusOr<std::unique_ptr<HttpServer>> started = HttpServer::Start(*listen, &state);
    if (!started.ok()) {
      LOG(ERROR) << "--http: " << started.status().message();
      return 1;
    }
    http = *std::move(started);
    LOG(INFO) << "HTTP API on http://" << (listen->host.find(':') != std::string::npos
                                               ? absl::StrCat("[", listen->host, "]")
                                               : listen->host)
              << ":" << http->port()
              << "/ (dashboard; /api/flows, /api/evaluation, /api/gateway, /api/rtt, /api/rate, "
                 "/metrics; /api lists them)";
    if (!IsLoopbackHost(listen->host)) {
      LOG(WARNING) << "the HTTP API listens on " << listen->host
                   << ", reachable from the network, without authentication: anyone who can "
                      "connect sees every flow; prefer 127.0.0.1 behind a proxy or firewall";
    }
  } else {
    LOG(INFO) << "HTTP API disabled (--http=" << FLAGS_http << ")";
  }

  MirrorFollower follower(mirror_path, &state);
  const absl::Time start = absl::Now();
  const absl::Duration poll_interval = absl::Milliseconds(FLAGS_poll_interval_ms);
  constexpr absl::Duration kSummaryInterval = absl::Seconds(10);
  absl::Time next_summary = start + kSummaryInterval;
  ControlState::Summary last = state.GetSummary();
  int exit_code = 0;
  while (!g_stop.load()) {
    const absl::Time now = absl::Now();
    if (FLAGS_duration_s > 0 && now - start >= absl::Seconds(FLAGS_duration_s)) {
      LOG(INFO) << "--duration_s reached";
      break;
    }
    MirrorFollower::StepResult step = follower.Step(UnixNowNs());
    if (FLAGS_exit_when_dataplane_stops && follower.StoppedAndDrained()) {
      LOG(INFO) << "the dataplane stopped and the mirror is drained: exiting "
                   "(--exit_when_dataplane_stops)";
      break;
    }
    if (FLAGS_exit_when_dataplane_stops && follower.DiedAndDrained()) {
      // It will never say "stopped": waiting on would hang a replay forever.
      LOG(ERROR) << "the dataplane died without stopping cleanly: exiting with status 1 "
                    "(--exit_when_dataplane_stops); its last records may be missing";
      exit_code = 1;
      break;
    }
    if (now >= next_summary) {
      ControlState::Summary s = state.GetSummary();
      const double seconds = absl::ToDoubleSeconds(now - (next_summary - kSummaryInterval));
      LOG(INFO) << absl::StrFormat(
          "%.0f records/s, %d flows live, %d ended, %d flagged, ring drops %d (+%d)%s%s",
          static_cast<double>(s.records - last.records) / std::max(seconds, 1e-3), s.live,
          s.ended, s.flagged, s.ring_dropped,
          s.ring_dropped >= last.ring_dropped ? s.ring_dropped - last.ring_dropped : s.ring_dropped,
          s.dropped_flows > 0 ? absl::StrFormat(", %d records of new flows over --max_flows",
                                                s.dropped_flows)
                              : "",
          follower.attached() ? "" : ", not attached");
      last = s;
      next_summary = now + kSummaryInterval;
    }
    if (!step.full_batch) absl::SleepFor(poll_interval);
  }
  if (g_stop.load()) LOG(INFO) << "signal received: exiting";
  http.reset();  // no request sees the state being torn down
  rate_sampler.reset();
  if (rtt_monitor != nullptr) {
    rtt_monitor->Stop();
    const rttmon::RttSnapshot s = rtt_monitor->Snapshot();
    LOG(INFO) << absl::StrFormat(
        "RTT monitor: %d sent, %d received, %d lost; %d red and %d yellow events, downtime of "
        "red events %.0f ms%s",
        s.counters.sent, s.counters.received, s.counters.lost, s.red_events, s.yellow_events,
        s.downtime_ms_total, s.error.empty() ? "" : absl::StrCat("; stopped early: ", s.error));
  }
  if (!FLAGS_flows_json.empty()) {
    nlohmann::json flows = state.AllFlowsJson(FLAGS_min_packets);
    const size_t n = flows["flows"].size();
    absl::Status s = WriteFileAtomically(
        FLAGS_flows_json,
        flows.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    if (!s.ok()) {
      LOG(ERROR) << "--flows_json: " << s.message();
      exit_code = 1;
    } else {
      LOG(INFO) << "wrote " << n << " flows to " << FLAGS_flows_json;
    }
  }
  return exit_code;
}

}  // namespace
}  // namespace shroud::control

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0 ||
        std::strcmp(argv[i], "-help") == 0 || std::strcmp(argv[i], "--helpfull") == 0) {
      shroud::control::PrintHelp();
      return 0;
    }
  }
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  gflags::SetUsageMessage("see shroud-control --help");
  gflags::ParseCommandLineFlags(&argc, &argv, /*remove_flags=*/true);
  if (argc > 1) {
    std::cerr << "shroud-control: unexpected argument '" << argv[1] << "' (see --help)\n";
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = shroud::control::OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // A client that hangs up mid-response must not kill the daemon.
  signal(SIGPIPE, SIG_IGN);
  return shroud::control::Run();
}
