// shroud rttmon: the ICMP RTT migration monitor (issue 6) on the command line.
// The work is done by control/rttmon (RttMonitor = IcmpProber + RttDetector on
// a thread); this file turns flags into its options and prints what it says.
#include <gflags/gflags.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <iostream>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "control/cli/commands.h"
#include "control/rttmon/icmp_prober.h"
#include "control/rttmon/rtt_detector.h"
#include "control/rttmon/rtt_monitor.h"

namespace {
const shroud::rttmon::RttDetectorConfig kDefaults;
}  // namespace

DEFINE_string(interval, "10ms",
              "rttmon: time between echo requests, 10ms to 10s (the paper pinged every 10 ms)");
DEFINE_double(duration, 0, "rttmon: stop after this many seconds (0: until Ctrl-C/SIGTERM)");
DEFINE_string(timeout, "1s", "rttmon: a probe unanswered this long is lost (later replies are 'late')");
DEFINE_string(family, "any", "rttmon: address family of the target: any, 4 or 6");
DEFINE_bool(realtime, false,
            "rttmon: probe from a SCHED_FIFO thread (root/CAP_SYS_NICE) so a loaded host does not "
            "delay or skip probes");
DEFINE_double(status_every_s, 1.0, "rttmon: print a status line this often (0: never; not with --json)");
DEFINE_double(min_outage_ms, kDefaults.min_outage_ms,
              "rttmon: red when the target stops answering at least this long (lost probes x "
              "interval, reply gap, or silence)");
DEFINE_double(outage_spread_k, kDefaults.outage_spread_k,
              "rttmon: the outage threshold is at least this many baseline sigmas (jittery paths)");
DEFINE_double(peak_k, kDefaults.peak_k,
              "rttmon: yellow when RTTs exceed the baseline median by this many sigmas (1.4826 MAD)");
DEFINE_double(peak_floor_ms, kDefaults.peak_floor_ms,
              "rttmon: the peak threshold is at least this many ms above the baseline median");
DEFINE_uint32(peak_min_samples, kDefaults.peak_min_samples,
              "rttmon: yellow needs this many RTTs above the peak threshold in a row");
DEFINE_double(quiet_s, kDefaults.quiet_s,
              "rttmon: back to green after this long without a peak or outage (ends the event)");
DEFINE_double(baseline_window_s, kDefaults.baseline_window_s,
              "rttmon: the baseline is the median/MAD of the non-peak RTTs of this last window");
DEFINE_uint32(warmup_samples, kDefaults.warmup_samples,
              "rttmon: replies needed before peaks are judged");
DEFINE_bool(require_preceding_peak, kDefaults.require_preceding_peak,
            "rttmon: red only if an RTT peak came before the outage (else the outage is yellow)");
DEFINE_double(preceding_peak_window_s, kDefaults.preceding_peak_window_s,
              "rttmon: how long before the outage that peak may have ended");
DEFINE_double(red_peak_excess_ms, kDefaults.red_peak_excess_ms,
              "rttmon: an RTT this far above the baseline is red by itself (0: never)");
DEFINE_double(rebaseline_after_s, kDefaults.rebaseline_after_s,
              "rttmon: a peak lasting this long is the path's new normal (restarts the baseline)");
// Defined by `shroud analyze` (analyze_command.cc): one flag, several commands.
DECLARE_bool(json);

namespace shroud::cli {
namespace {

using rttmon::RttEvent;
using rttmon::RttMonitor;
using rttmon::RttSnapshot;
using rttmon::RttState;
using rttmon::RttTransition;

constexpr int kExitOk = 0;
constexpr int kExitCannotProbe = 1;  // unresolvable, no permission, socket failure
constexpr int kExitUsage = 2;

constexpr char kUsage[] =
    "usage: shroud rttmon [--interval=10ms] [--duration=S] [--timeout=1s] [--json] TARGET\n\n"
    "Pings TARGET (host name, IPv4 or IPv6 address) with ICMP echo requests at a fixed\n"
    "interval and watches the round-trip times for the signature of a live VM migration\n"
    "(the monitor of seeds/rtt-migration-monitor-demo.txt): a traffic light that is\n"
    "  green   normal,\n"
    "  yellow  an RTT peak beyond the baseline (median + max(peak_k sigma, peak_floor_ms)\n"
    "          for peak_min_samples probes; e.g. a queue build-up),\n"
    "  red     the target stopped answering for at least min_outage_ms (a migration's\n"
    "          stop-and-copy downtime): lost probes in a row, a reply gap, or silence.\n"
    "Each episode is one event with its start, duration and estimated downtime: lost\n"
    "probes x interval (the stealth-migration paper's definition) and from the reply gap\n"
    "(which also counts probes the target held and answered late).\n\n"
    "Output: a line per state change and per event, a status line every --status_every_s\n"
    "seconds, a summary at the end (--duration reached, Ctrl-C or SIGTERM).\n"
    "--json: one JSON object per line per event (when it ends: state, start, end,\n"
    "duration_ms, detected, downtime_ms, downtime_gap_ms, lost, peak_rtt_ms, baseline_ms,\n"
    "...; times in seconds since the monitor started), then one line with \"summary\": true.\n\n"
    "Needs root or CAP_NET_RAW, or a group in net.ipv4.ping_group_range (then an\n"
    "unprivileged ICMP socket is used).\n"
    "Exit status: 0 done, 1 the target cannot be probed (name does not resolve, no\n"
    "permission, socket error), 2 bad usage.";

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

std::mutex g_out_mu;  // events come from the monitor's thread, status lines from this one

std::string Stamp(double seconds) { return absl::StrFormat("[%9.3f s]", seconds); }

std::string EventLine(const RttEvent& e, int64_t origin, double interval_ms) {
  auto rel = [&](int64_t ns) { return (ns - origin) / 1e9; };
  std::string line = absl::StrFormat(
      "event %d: %s %s, start %.3f s, duration %.1f ms, downtime %.0f ms (%d lost x %g ms), "
      "from reply gap %.1f ms, peak RTT %.3f ms, baseline %.3f ms",
      e.id, e.state == RttState::kRed ? "RED" : "YELLOW", e.reason, rel(e.start_ns),
      e.duration_ms(), e.downtime_ms, e.lost, interval_ms, e.downtime_gap_ms, e.peak_rtt_ms,
      e.baseline_ms);
  const int64_t detected = e.state == RttState::kRed ? e.red_ns : e.yellow_ns;
  if (detected >= 0) line += absl::StrFormat(", detected at %.3f s", rel(detected));
  if (e.late > 0) line += absl::StrFormat(", %d answered late", e.late);
  if (e.open) line += " (still going)";
  return line;
}

std::string StatusLine(const RttSnapshot& s) {
  std::string last = "-";
  for (auto it = s.samples.rbegin(); it != s.samples.rend(); ++it) {
    if (it->kind == rttmon::RttSample::Kind::kReply) {
      last = absl::StrFormat("%.3f ms", it->rtt_ms);
      break;
    }
  }
  const auto& d = s.detector;
  std::string baseline =
      d.baseline_ready ? absl::StrFormat("%.3f ms +-%.3f", d.baseline_ms, d.spread_ms) : "warming up";
  return absl::StrFormat("%s %-6s rtt %s  baseline %s  sent %d recv %d lost %d late %d",
                         Stamp(s.elapsed_s), RttStateName(d.state), last, baseline, s.counters.sent,
                         s.counters.received, s.counters.lost, s.counters.late);
}

void PrintSummary(const RttSnapshot& s) {
  const auto& c = s.counters;
  const uint64_t resolved = c.received + c.lost;
  std::cout << absl::StrFormat("--- %s (%s) rttmon summary ---\n", s.target, s.address);
  std::cout << absl::StrFormat(
      "%.1f s, %d sent, %d received, %d lost (%.2f %%), %d late, %d duplicates, %d send errors, "
      "%d skipped slots\n",
      s.elapsed_s, c.sent, c.received, c.lost,
      resolved ? 100.0 * static_cast<double>(c.lost) / static_cast<double>(resolved) : 0.0, c.late,
      c.duplicates, c.send_errors, c.skipped_slots);
  if (s.rtt.count > 0) {
    std::cout << absl::StrFormat("rtt min/median/p95/max = %.3f/%.3f/%.3f/%.3f ms\n", s.rtt.min_ms,
                                 s.rtt.median_ms, s.rtt.p95_ms, s.rtt.max_ms);
  }
  std::cout << absl::StrFormat("events: %d red, %d yellow; downtime of red events %.0f ms; state %s\n",
                               s.red_events, s.yellow_events, s.downtime_ms_total,
                               RttStateName(s.detector.state));
  if (!s.error.empty()) std::cout << "stopped early: " << s.error << "\n";
}

}  // namespace

void PrintRttmonHelp() {
  std::cout << kUsage << "\n\nOptions:\n";
  std::vector<gflags::CommandLineFlagInfo> flags;
  gflags::GetAllFlags(&flags);
  for (const auto& f : flags) {
    if (f.filename.find("rttmon_command.cc") == std::string::npos) continue;
    std::cout << absl::StrFormat("  --%-24s %s (default: %s)\n", f.name, f.description,
                                 f.default_value);
  }
  std::cout << absl::StrFormat("  --%-24s %s\n", "json",
                               "rttmon: one JSON object per event and a summary line");
}

int RunRttmon(const CommandArgs& args) {
  if (args.positional.size() != 1) {
    std::cerr << "shroud rttmon: " << (args.positional.empty() ? "no target given" : "one target only")
              << " (see shroud rttmon --help)\n";
    return kExitUsage;
  }
  rttmon::RttMonitorOptions options;
  options.prober.target = args.positional[0];
  auto usage_error = [](const absl::Status& s) {
    std::cerr << "shroud rttmon: " << s.message() << "\n";
    return kExitUsage;
  };
  absl::StatusOr<int64_t> interval = rttmon::ParseDurationNs("interval", FLAGS_interval);
  if (!interval.ok()) return usage_error(interval.status());
  absl::StatusOr<int64_t> timeout = rttmon::ParseDurationNs("timeout", FLAGS_timeout);
  if (!timeout.ok()) return usage_error(timeout.status());
  options.prober.interval_ns = *interval;
  options.prober.timeout_ns = *timeout;
  if (FLAGS_family == "any") {
    options.prober.family = AF_UNSPEC;
  } else if (FLAGS_family == "4" || FLAGS_family == "ipv4") {
    options.prober.family = AF_INET;
  } else if (FLAGS_family == "6" || FLAGS_family == "ipv6") {
    options.prober.family = AF_INET6;
  } else {
    return usage_error(absl::InvalidArgumentError(
        absl::StrFormat("--family=%s: use any, 4 or 6", FLAGS_family)));
  }
  // 1e9 s (31 years) keeps the nanosecond arithmetic below int64's limit.
  if (!(FLAGS_duration >= 0 && FLAGS_duration <= 1e9)) {
    return usage_error(absl::InvalidArgumentError(
        "--duration must be 0..1e9 seconds (0: until Ctrl-C)"));
  }
  if (!(FLAGS_status_every_s >= 0 && FLAGS_status_every_s <= 1e9)) {
    return usage_error(absl::InvalidArgumentError("--status_every_s must be 0..1e9 seconds (0: never)"));
  }
  if (absl::Status s = options.prober.Validate(); !s.ok()) return usage_error(s);
  // Priority 10: above ordinary threads, below the kernel's own RT threads.
  options.realtime_priority = FLAGS_realtime ? 10 : 0;

  rttmon::RttDetectorConfig& d = options.detector;
  d.min_outage_ms = FLAGS_min_outage_ms;
  d.outage_spread_k = FLAGS_outage_spread_k;
  d.peak_k = FLAGS_peak_k;
  d.peak_floor_ms = FLAGS_peak_floor_ms;
  d.peak_min_samples = FLAGS_peak_min_samples;
  d.quiet_s = FLAGS_quiet_s;
  d.baseline_window_s = FLAGS_baseline_window_s;
  d.warmup_samples = FLAGS_warmup_samples;
  d.require_preceding_peak = FLAGS_require_preceding_peak;
  d.preceding_peak_window_s = FLAGS_preceding_peak_window_s;
  d.red_peak_excess_ms = FLAGS_red_peak_excess_ms;
  d.rebaseline_after_s = FLAGS_rebaseline_after_s;
  d.interval_ns = options.prober.interval_ns;
  d.loss_timeout_ns = options.prober.timeout_ns;
  if (absl::Status s = d.Validate(); !s.ok()) return usage_error(s);

  const bool json = FLAGS_json;
  const double interval_ms = options.prober.interval_ns / 1e6;
  // Set once the monitor exists; the callbacks only run on its thread, which
  // Start() creates after that.
  RttMonitor* mon_ptr = nullptr;
  options.on_event = [&](const RttEvent& e) {
    const int64_t origin = mon_ptr->origin_mono_ns();
    std::lock_guard<std::mutex> lock(g_out_mu);
    if (json) {
      nlohmann::json j = rttmon::EventToJson(e, origin);
      j["target"] = args.positional[0];
      std::cout << j.dump() << std::endl;
    } else {
      std::cout << Stamp((rttmon::MonotonicNowNs() - origin) / 1e9) << " "
                << EventLine(e, origin, interval_ms)
                << std::endl;
    }
  };
  if (!json) {
    options.on_transition = [&](const RttTransition& t) {
      const int64_t origin = mon_ptr->origin_mono_ns();
      std::lock_guard<std::mutex> lock(g_out_mu);
      std::cout << absl::StrFormat("%s %-6s (%s%s)", Stamp((t.time_ns - origin) / 1e9),
                                   RttStateName(t.to), t.reason,
                                   t.event_id ? absl::StrFormat(", event %d", t.event_id) : "")
                << std::endl;
    };
  }

  absl::StatusOr<std::unique_ptr<RttMonitor>> monitor = RttMonitor::Create(std::move(options));
  if (!monitor.ok()) {
    std::cerr << "shroud rttmon: " << monitor.status().message() << "\n";
    return monitor.status().code() == absl::StatusCode::kInvalidArgument ? kExitUsage
                                                                         : kExitCannotProbe;
  }
  RttMonitor& mon = **monitor;
  mon_ptr = &mon;

  struct sigaction sa {};
  sa.sa_handler = OnSignal;  // no SA_RESTART: the sleeps below end at once
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  if (!json) {
    std::cout << absl::StrFormat(
                     "shroud rttmon: %s (%s), ICMP echo every %s, timeout %s, %s socket%s; %s\n",
                     args.positional[0],
                     mon.prober().address(), rttmon::FormatDurationNs(*interval),
                     rttmon::FormatDurationNs(*timeout), mon.prober().socket_kind(),
                     mon.prober().kernel_timestamps() ? ", kernel timestamps" : "",
                     FLAGS_duration > 0 ? absl::StrFormat("%g s", FLAGS_duration)
                                        : std::string("Ctrl-C for the summary"))
              << std::flush;
  }
  mon.Start();
  if (FLAGS_realtime) {
    // Start() returns before the thread asked for its priority: wait briefly
    // so a refusal is reported before the first line of output.
    for (int i = 0; i < 100; ++i) {
      RttSnapshot s = mon.Snapshot(/*with_samples=*/false);
      if (s.realtime || !s.warning.empty() || !s.running) break;
      timespec ts{0, 1'000'000};
      nanosleep(&ts, nullptr);
    }
    if (const std::string w = mon.Snapshot(false).warning; !w.empty()) {
      std::cerr << "shroud rttmon: " << w << "\n";
    }
  }

  const int64_t start = rttmon::MonotonicNowNs();
  const int64_t end =
      FLAGS_duration > 0 ? start + static_cast<int64_t>(FLAGS_duration * 1e9) : INT64_MAX;
  const int64_t status_every =
      !json && FLAGS_status_every_s > 0 ? static_cast<int64_t>(FLAGS_status_every_s * 1e9) : 0;
  int64_t next_status = status_every ? start + status_every : INT64_MAX;
  bool reached_end = false;
  while (!g_stop) {
    const int64_t now = rttmon::MonotonicNowNs();
    if (now >= end) {
      reached_end = true;
      break;
    }
    if (now >= next_status) {
      RttSnapshot s = mon.Snapshot();  // with samples: the latest RTT
      if (!s.running) break;
      std::lock_guard<std::mutex> lock(g_out_mu);
      std::cout << StatusLine(s) << std::endl;
      next_status += status_every;
      continue;
    }
    if (!mon.running()) break;  // the thread failed
    const int64_t wait = std::min({end - now, next_status - now, int64_t{50'000'000}});
    timespec ts{static_cast<time_t>(wait / 1'000'000'000), static_cast<long>(wait % 1'000'000'000)};
    nanosleep(&ts, nullptr);
  }
  // At the end of --duration, let the last probes be answered or time out so
  // the summary counts all of them; Ctrl-C means now.
  mon.Stop(/*drain=*/reached_end);
  RttSnapshot s = mon.Snapshot(/*with_samples=*/false);
  std::lock_guard<std::mutex> lock(g_out_mu);
  if (json) {
    std::cout << rttmon::SummaryToJson(s).dump() << std::endl;
  } else {
    PrintSummary(s);
  }
  if (!s.error.empty()) {
    std::cerr << "shroud rttmon: " << s.error << "\n";
    return kExitCannotProbe;
  }
  return kExitOk;
}

}  // namespace shroud::cli
