// The RTT monitor's imperative shell, part 2: an IcmpProber and an
// RttDetector on a thread of their own, for `shroud rttmon` and for
// shroud-control's dashboard (live graph + traffic light).
//
// Scheduling: probe n goes out at the absolute deadline t0 + n * interval on
// CLOCK_MONOTONIC. Between deadlines the thread waits for replies and loss
// timeouts in ppoll (timer slack set to 1 ns for this thread), stops polling
// 200 us before the deadline and sleeps the rest with clock_nanosleep
// (TIMER_ABSTIME), so send times do not drift and do not accumulate wake-up
// latency. A thread that wakes more than one interval late (descheduled,
// stopped) skips the missed slots instead of sending a burst: the grid, and so
// "lost x interval", stays exact (skipped slots are counted).
//
// A probe unanswered for --timeout is lost; a reply after that is late
// (counted, shown in the graph, never used as the RTT of its slot).
//
// Threading: Snapshot() may be called from any thread at any time (it copies
// under a mutex); the event and transition callbacks run on the monitor's
// thread and must not block for long (they delay probes).
#ifndef SHROUD_CONTROL_RTTMON_RTT_MONITOR_H_
#define SHROUD_CONTROL_RTTMON_RTT_MONITOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "control/rttmon/icmp_prober.h"
#include "control/rttmon/rtt_detector.h"

namespace shroud::rttmon {

struct RttMonitorOptions {
  ProberConfig prober;
  // Its interval_ns and loss_timeout_ns are taken from `prober`.
  RttDetectorConfig detector;
  double history_s = 60.0;      // samples kept for Snapshot()
  // > 0: run the probe thread with SCHED_FIFO at this priority (needs root or
  // CAP_SYS_NICE; the thread sleeps between probes, so it cannot hog a CPU).
  // On a loaded host this keeps send slots from being skipped; when refused,
  // the monitor runs as usual and Snapshot().realtime says so.
  int realtime_priority = 0;
  size_t max_events = 256;      // closed events kept for Snapshot()
  std::function<void(const RttEvent&)> on_event;            // an episode closed
  std::function<void(const RttTransition&)> on_transition;  // the light changed
};

// One probe in the graph.
struct RttSample {
  enum class Kind : uint8_t { kReply, kLost, kLate };
  uint64_t seq = 0;
  double sent_s = 0;   // seconds since the monitor started
  double rtt_ms = 0;   // the RTT (for kLate: of the late reply); 0 for kLost
  Kind kind = Kind::kReply;
};
const char* SampleKindName(RttSample::Kind kind);

struct RttCounters {
  uint64_t sent = 0;
  uint64_t received = 0;     // replies within the timeout
  uint64_t lost = 0;         // probes unanswered within the timeout
  uint64_t late = 0;         // of the lost, answered later
  uint64_t duplicates = 0;
  uint64_t send_errors = 0;  // send() failed (no route, neighbour down): the probe is lost
  uint64_t async_errors = 0; // ICMP errors reported on the socket
  uint64_t skipped_slots = 0;
  uint64_t outstanding = 0;  // sent, not yet answered or lost
  uint64_t kernel_timestamps = 0;  // replies timed by the kernel
};

struct RttQuantiles {
  uint64_t count = 0;
  double min_ms = 0, median_ms = 0, p95_ms = 0, p99_ms = 0, max_ms = 0;
};

struct RttSnapshot {
  std::string target;
  std::string address;
  int family = 0;
  std::string socket_kind;
  double interval_ms = 0;
  double timeout_ms = 0;
  int64_t origin_mono_ns = 0;  // monotonic time of "0 s" (events carry absolute ns)
  double started_unix_s = 0;   // wall clock at "0 s"
  double elapsed_s = 0;
  bool running = false;
  bool realtime = false;       // the probe thread runs with SCHED_FIFO
  std::string warning;         // e.g. why realtime_priority was refused
  std::string error;           // why the thread stopped early, if it did
  RttDetectorStatus detector;  // state, baseline, thresholds, open episode
  RttCounters counters;
  RttQuantiles rtt;            // over the whole run (1 % buckets)
  RttQuantiles send_lateness;  // send time minus deadline
  std::vector<RttSample> samples;  // the last history_s seconds, by sequence number
  std::vector<RttEvent> events;    // closed events, oldest first
  uint64_t events_total = 0;
  uint64_t red_events = 0;
  uint64_t yellow_events = 0;
  double downtime_ms_total = 0;    // sum of the red events' downtime_ms
};

// JSON for --json lines and the dashboard API. Times are seconds since the
// monitor started.
nlohmann::json EventToJson(const RttEvent& event, int64_t origin_mono_ns);
// What is probed and how (target, address, family, socket, interval, timeout,
// start time): the fields the CLI's summary and the dashboard's /api/rtt share.
void AddProbeIdentityJson(const RttSnapshot& s, nlohmann::json& j);
// The summary line ("summary": true); samples and events are left out.
nlohmann::json SummaryToJson(const RttSnapshot& snapshot);
// Everything, samples included (the dashboard's poll).
nlohmann::json SnapshotToJson(const RttSnapshot& snapshot);

class RttMonitor {
 public:
  // Validates both configs, resolves the target and opens the socket, so
  // that every user error surfaces here, before any thread runs.
  static absl::StatusOr<std::unique_ptr<RttMonitor>> Create(RttMonitorOptions options);
  ~RttMonitor();  // Stop()

  // Starts probing on a new thread (once).
  void Start();
  // Stops probing. drain: first wait (at most the timeout) until every probe
  // sent is answered or lost, so the last seconds are complete. Then the
  // detector finishes (an unfinished episode is reported with open = true)
  // and the thread ends. Idempotent.
  void Stop(bool drain = false);

  // A consistent copy of everything (thread-safe). with_samples = false
  // leaves out the graph's samples (the expensive part: ~6000 at 10 ms).
  RttSnapshot Snapshot(bool with_samples = true) const;
  // Probing (between Start() and the thread's end).
  bool running() const { return running_; }
  const IcmpProber& prober() const { return *prober_; }
  // "0 s" on CLOCK_MONOTONIC (the first send deadline); set by Start(), so
  // valid in the callbacks (they run on the thread Start() creates).
  int64_t origin_mono_ns() const { return origin_ns_; }

 private:
  struct Outstanding {
    SentProbe probe;
    bool answered = false;
  };

  RttMonitor(RttMonitorOptions options, std::unique_ptr<IcmpProber> prober, RttDetector detector);
  void Run();
  absl::Status Loop();
  // Waits until deadline_ns, handling replies, timeouts and the detector's
  // clock; false when asked to stop.
  absl::StatusOr<bool> WaitUntil(int64_t deadline_ns, bool sending);
  absl::Status HandleReplies(int64_t now_ns);
  void ExpireTimeouts(int64_t now_ns);
  void OnReply(const EchoReply& reply);
  void Dispatch(int64_t now_ns);
  void PushSample(const RttSample& sample);

  RttMonitorOptions options_;
  std::unique_ptr<IcmpProber> prober_;
  int wake_fd_ = -1;  // eventfd: Stop() wakes the thread's ppoll
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> drain_{false};
  std::atomic<bool> running_{false};
  bool started_ = false;
  std::mutex lifecycle_mu_;
  int64_t origin_ns_ = 0;  // "0 s" on CLOCK_MONOTONIC: the first send deadline

  // Monitor-thread state.
  RttDetector detector_;
  std::deque<Outstanding> outstanding_;  // by sequence number
  uint64_t outstanding_base_ = 0;        // sequence number of outstanding_.front()
  std::deque<SentProbe> recent_lost_;    // for telling late replies from strays

  // Shared with Snapshot().
  mutable std::mutex mu_;
  RttSnapshot shared_;
  std::deque<RttSample> samples_;
  std::deque<RttEvent> events_;
  std::vector<uint32_t> rtt_hist_;
  std::vector<uint32_t> lateness_hist_;
  double rtt_min_ms_ = 0, rtt_max_ms_ = 0, lateness_max_ms_ = 0;
};

}  // namespace shroud::rttmon

#endif  // SHROUD_CONTROL_RTTMON_RTT_MONITOR_H_
