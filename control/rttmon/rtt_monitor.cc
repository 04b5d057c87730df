#include "control/rttmon/rtt_monitor.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"

namespace shroud::rttmon {
namespace {

// Polling stops this long before a send deadline; clock_nanosleep sleeps the
// rest. ppoll with 1 ns timer slack wakes within tens of microseconds here;
// 200 us leaves room for a reply's processing in between.
constexpr int64_t kSpinNs = 200'000;
// Lost probes are remembered this long so that a late reply is recognised as
// late (and drawn in the graph) rather than counted as a stray.
constexpr int64_t kLateMemoryNs = 60'000'000'000;

// Histogram with 1 % wide buckets from 1 us up: quantiles of the whole run in
// constant memory (a day at 10 ms is 8.6 million RTTs).
constexpr double kBucketRatio = 1.01;
constexpr size_t kBuckets = 2000;  // 1.01^2000 us ~ 4e8 s: everything

size_t Bucket(double ms) {
  const double us = ms * 1000.0;
  if (!(us > 1.0)) return 0;
  const double b = std::log(us) / std::log(kBucketRatio);
  return std::min(kBuckets - 1, static_cast<size_t>(b) + 1);
}

double BucketValueMs(size_t b) {
  if (b == 0) return 0.0005;
  // Geometric middle of [ratio^(b-1), ratio^b) us.
  return std::pow(kBucketRatio, static_cast<double>(b) - 0.5) / 1000.0;
}

RttQuantiles Quantiles(const std::vector<uint32_t>& hist, double min_ms, double max_ms) {
  RttQuantiles q;
  for (uint32_t c : hist) q.count += c;
  if (q.count == 0) return q;
  q.min_ms = min_ms;
  q.max_ms = max_ms;
  auto at = [&](double p) {
    const uint64_t rank = static_cast<uint64_t>(std::ceil(p * static_cast<double>(q.count)));
    uint64_t cum = 0;
    for (size_t b = 0; b < hist.size(); ++b) {
      cum += hist[b];
      if (cum >= std::max<uint64_t>(rank, 1)) return std::clamp(BucketValueMs(b), min_ms, max_ms);
    }
    return max_ms;
  };
  q.median_ms = at(0.5);
  q.p95_ms = at(0.95);
  q.p99_ms = at(0.99);
  return q;
}

nlohmann::json Seconds(int64_t ns, int64_t origin) {
  if (ns < 0) return nullptr;
  return (ns - origin) / 1e9;
}

nlohmann::json QuantilesToJson(const RttQuantiles& q) {
  if (q.count == 0) return nullptr;
  return {{"min", q.min_ms}, {"median", q.median_ms}, {"p95", q.p95_ms},
          {"p99", q.p99_ms}, {"max", q.max_ms},       {"count", q.count}};
}

}  // namespace

const char* SampleKindName(RttSample::Kind kind) {
  switch (kind) {
    case RttSample::Kind::kReply:
      return "reply";
    case RttSample::Kind::kLost:
      return "lost";
    case RttSample::Kind::kLate:
      return "late";
  }
  return "?";
}

nlohmann::json EventToJson(const RttEvent& e, int64_t origin) {
  nlohmann::json j;
  j["event"] = e.id;
  j["state"] = RttStateName(e.state);
  j["reason"] = e.reason;
  j["start"] = Seconds(e.start_ns, origin);
  j["end"] = Seconds(e.end_ns, origin);
  j["duration_ms"] = e.duration_ms();
  // When the light reached the event's state: detection delay = this - the
  // true start of what happened.
  j["detected"] = Seconds(e.state == RttState::kRed ? e.red_ns : e.yellow_ns, origin);
  j["yellow"] = Seconds(e.yellow_ns, origin);
  j["red"] = Seconds(e.red_ns, origin);
  j["outage_start"] = Seconds(e.outage_start_ns, origin);
  j["downtime_ms"] = e.downtime_ms;
  j["downtime_gap_ms"] = e.downtime_gap_ms;
  j["max_silence_ms"] = e.max_silence_ms;
  j["stall_ms"] = e.stall_ms;
  j["lost"] = e.lost;
  j["late"] = e.late;
  j["replies"] = e.replies;
  j["peak_samples"] = e.peak_samples;
  j["peak_rtt_ms"] = e.peak_rtt_ms;
  j["baseline_ms"] = e.baseline_ms;
  j["spread_ms"] = e.spread_ms;
  j["open"] = e.open;
  return j;
}

void AddProbeIdentityJson(const RttSnapshot& s, nlohmann::json& j) {
  j["target"] = s.target;
  j["address"] = s.address;
  j["family"] = s.family == AF_INET6 ? "ipv6" : "ipv4";
  j["socket"] = s.socket_kind;
  j["interval_ms"] = s.interval_ms;
  j["timeout_ms"] = s.timeout_ms;
  j["started_unix"] = s.started_unix_s;
}

nlohmann::json SummaryToJson(const RttSnapshot& s) {
  const RttCounters& c = s.counters;
  nlohmann::json j;
  j["summary"] = true;
  AddProbeIdentityJson(s, j);
  j["duration_s"] = s.elapsed_s;
  j["sent"] = c.sent;
  j["received"] = c.received;
  j["lost"] = c.lost;
  j["late"] = c.late;
  j["duplicates"] = c.duplicates;
  j["send_errors"] = c.send_errors;
  j["icmp_errors"] = c.async_errors;
  j["skipped_slots"] = c.skipped_slots;
  j["unresolved"] = c.outstanding;
  const uint64_t resolved = c.received + c.lost;
  j["loss_pct"] = resolved ? 100.0 * static_cast<double>(c.lost) / static_cast<double>(resolved) : 0.0;
  j["rtt_ms"] = QuantilesToJson(s.rtt);
  j["send_lateness_ms"] = QuantilesToJson(s.send_lateness);
  j["kernel_timestamps"] = c.kernel_timestamps;
  j["realtime"] = s.realtime;
  j["state"] = RttStateName(s.detector.state);
  j["baseline_ms"] = s.detector.baseline_ms;
  j["spread_ms"] = s.detector.spread_ms;
  // Longest time between two reply arrivals (minus the prober's own stalls):
  // what the outage threshold must stay above on this path.
  j["max_silence_ms"] = s.detector.max_silence_ms;
  j["events"] = s.events_total;
  j["red"] = s.red_events;
  j["yellow"] = s.yellow_events;
  j["downtime_ms"] = s.downtime_ms_total;
  if (!s.warning.empty()) j["warning"] = s.warning;
  if (!s.error.empty()) j["error"] = s.error;
  return j;
}

nlohmann::json SnapshotToJson(const RttSnapshot& s) {
  nlohmann::json j = SummaryToJson(s);
  j.erase("summary");
  j["running"] = s.running;
  const RttDetectorStatus& d = s.detector;
  j["detector"] = {{"state", RttStateName(d.state)},
                   {"baseline_ready", d.baseline_ready},
                   {"baseline_ms", d.baseline_ms},
                   {"spread_ms", d.spread_ms},
                   {"peak_threshold_ms", d.peak_threshold_ms},
                   {"outage_threshold_ms", d.outage_threshold_ms},
                   {"baseline_samples", d.baseline_samples},
                   {"silence_ms", d.silence_ms}};
  j["open_event"] = d.open_event ? EventToJson(*d.open_event, s.origin_mono_ns) : nlohmann::json(nullptr);
  nlohmann::json samples = nlohmann::json::array();
  for (const RttSample& x : s.samples) {
    samples.push_back({{"seq", x.seq},
                       {"t", x.sent_s},
                       {"rtt_ms", x.kind == RttSample::Kind::kLost ? nlohmann::json(nullptr)
                                                                  : nlohmann::json(x.rtt_ms)},
                       {"kind", SampleKindName(x.kind)}});
  }
  j["samples"] = std::move(samples);
  nlohmann::json events = nlohmann::json::array();
  for (const RttEvent& e : s.events) events.push_back(EventToJson(e, s.origin_mono_ns));
  j["event_list"] = std::move(events);
  return j;
}

// --- RttMonitor ---

absl::StatusOr<std::unique_ptr<RttMonitor>> RttMonitor::Create(RttMonitorOptions options) {
  if (absl::Status s = options.prober.Validate(); !s.ok()) return s;
  options.detector.interval_ns = options.prober.interval_ns;
  options.detector.loss_timeout_ns = options.prober.timeout_ns;
  absl::StatusOr<RttDetector> detector = RttDetector::Create(options.detector);
  if (!detector.ok()) return detector.status();
  if (!(options.history_s > 0)) return absl::InvalidArgumentError("history must be positive");
  if (options.realtime_priority < 0 || options.realtime_priority > 99) {
    return absl::InvalidArgumentError("real-time priority must be 1..99 (0: off)");
  }
  absl::StatusOr<std::unique_ptr<IcmpProber>> prober = IcmpProber::Open(options.prober);
  if (!prober.ok()) return prober.status();
  return std::unique_ptr<RttMonitor>(
      new RttMonitor(std::move(options), std::move(*prober), std::move(*detector)));
}

RttMonitor::RttMonitor(RttMonitorOptions options, std::unique_ptr<IcmpProber> prober,
                       RttDetector detector)
    : options_(std::move(options)), prober_(std::move(prober)), detector_(std::move(detector)) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  shared_.target = options_.prober.target;
  shared_.address = prober_->address();
  shared_.family = prober_->family();
  shared_.socket_kind = prober_->socket_kind();
  shared_.interval_ms = options_.prober.interval_ns / 1e6;
  shared_.timeout_ms = options_.prober.timeout_ns / 1e6;
  shared_.detector = detector_.Status();
  rtt_hist_.assign(kBuckets, 0);
  lateness_hist_.assign(kBuckets, 0);
}

RttMonitor::~RttMonitor() {
  Stop();
  if (wake_fd_ >= 0) close(wake_fd_);
}

void RttMonitor::Start() {
  std::lock_guard<std::mutex> lock(lifecycle_mu_);
  if (started_) return;
  started_ = true;
  const int64_t origin = MonotonicNowNs() + 1'000'000;  // first probe 1 ms from now
  origin_ns_ = origin;  // before the thread exists: it only reads it
  {
    std::lock_guard<std::mutex> l(mu_);
    shared_.origin_mono_ns = origin;
    shared_.started_unix_s = (RealtimeNowNs() + (origin - MonotonicNowNs())) / 1e9;
    shared_.running = true;
  }
  running_ = true;
  thread_ = std::thread([this] { Run(); });
}

void RttMonitor::Stop(bool drain) {
  std::lock_guard<std::mutex> lock(lifecycle_mu_);
  if (!thread_.joinable()) return;
  drain_ = drain;
  stop_ = true;
  const uint64_t one = 1;
  // The eventfd wakes the thread's ppoll at once; the flag alone would wait
  // for the next deadline (up to 10 s).
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
  thread_.join();
}

void RttMonitor::Run() {
  // SIGINT/SIGTERM belong to the program's main thread (`shroud rttmon`
  // prints its summary there); this thread's sleeps must not absorb them.
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &block, nullptr);
  // Exact wake-ups from ppoll: the default 50 us slack is 0.5 % of 10 ms on
  // every sleep.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  if (options_.realtime_priority > 0) {
    sched_param param{};
    param.sched_priority = options_.realtime_priority;
    const int err = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param);
    std::lock_guard<std::mutex> l(mu_);
    shared_.realtime = err == 0;
    if (err != 0) {
      shared_.warning = absl::StrFormat("real-time priority refused (%s): probing without it",
                                        std::strerror(err));
    }
  }
  absl::Status status = Loop();
  std::lock_guard<std::mutex> l(mu_);
  shared_.running = false;
  if (!status.ok()) shared_.error = std::string(status.message());
  running_ = false;
}

absl::Status RttMonitor::Loop() {
  const int64_t interval = options_.prober.interval_ns;
  const int64_t origin = origin_ns_;
  uint64_t slot = 0;
  uint64_t seq = 0;
  int64_t last_send = origin;
  while (!stop_) {
    int64_t deadline = origin + static_cast<int64_t>(slot) * interval;
    absl::StatusOr<bool> go = WaitUntil(deadline, /*sending=*/true);
    if (!go.ok()) return go.status();
    if (!*go) break;
    const int64_t now = MonotonicNowNs();
    uint64_t skipped = 0;
    if (now - deadline >= interval) {
      // Woke a whole interval late: skip the missed slots, keep the grid.
      skipped = static_cast<uint64_t>((now - deadline) / interval);
      slot += skipped;
      deadline += static_cast<int64_t>(skipped) * interval;
      std::lock_guard<std::mutex> l(mu_);
      shared_.counters.skipped_slots += skipped;
    }
    SentProbe probe = prober_->Send(seq);
    last_send = probe.sent_mono_ns;
    if (outstanding_.empty()) outstanding_base_ = seq;
    outstanding_.push_back({probe, false});
    detector_.OnSent(seq, probe.sent_mono_ns, skipped);
    {
      std::lock_guard<std::mutex> l(mu_);
      ++shared_.counters.sent;
      // A failed send (no route, neighbour unreachable, full buffer) is a
      // probe that cannot be answered: it times out as lost, as ping counts it.
      if (probe.error != 0) ++shared_.counters.send_errors;
      const double late_ms = std::max<int64_t>(probe.sent_mono_ns - deadline, 0) / 1e6;
      ++lateness_hist_[Bucket(late_ms)];
      lateness_max_ms_ = std::max(lateness_max_ms_, late_ms);
    }
    ++seq;
    ++slot;
  }
  if (drain_) {
    // Resolve what is in flight: answered or lost, at most one timeout.
    absl::StatusOr<bool> done = WaitUntil(last_send + options_.prober.timeout_ns + 1'000'000,
                                          /*sending=*/false);
    if (!done.ok()) return done.status();
  }
  const int64_t end = MonotonicNowNs();
  detector_.Finish(end);
  Dispatch(end);
  return absl::OkStatus();
}

absl::StatusOr<bool> RttMonitor::WaitUntil(int64_t deadline_ns, bool sending) {
  for (;;) {
    const int64_t now = MonotonicNowNs();
    ExpireTimeouts(now);
    detector_.Advance(now);
    Dispatch(now);
    if (sending && stop_) return false;
    if (!sending && outstanding_.empty()) return true;
    const int64_t poll_until = sending ? deadline_ns - kSpinNs : deadline_ns;
    if (now >= poll_until) break;
    // Wake for the next send, the next loss timeout, or the moment silence
    // would turn the light red (detection delay not rounded up to a send).
    // (A deadline already past means the silence did not count, e.g. during
    // a stall; then waking for it again would spin.)
    int64_t wake = poll_until;
    if (const int64_t red_at = detector_.SilenceDeadlineNs(); red_at > now) wake = std::min(wake, red_at);
    for (const Outstanding& o : outstanding_) {
      if (!o.answered) {
        wake = std::min(wake, o.probe.sent_mono_ns + options_.prober.timeout_ns);
        break;
      }
    }
    const int64_t rel = std::max<int64_t>(wake - now, 0);
    timespec ts{static_cast<time_t>(rel / 1'000'000'000), static_cast<long>(rel % 1'000'000'000)};
    pollfd fds[2] = {{prober_->fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    const int n = ppoll(fds, 2, &ts, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrFormat("ppoll: %s", std::strerror(errno)));
    }
    if (fds[0].revents != 0) {
      if (absl::Status s = HandleReplies(MonotonicNowNs()); !s.ok()) return s;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t v;
      [[maybe_unused]] ssize_t r = read(wake_fd_, &v, sizeof v);
    }
  }
  if (sending) {
    const timespec abs{static_cast<time_t>(deadline_ns / 1'000'000'000),
                       static_cast<long>(deadline_ns % 1'000'000'000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, nullptr) == EINTR) {
    }
  }
  return true;
}

absl::Status RttMonitor::HandleReplies(int64_t /*now_ns*/) {
  absl::StatusOr<int> n = prober_->ReadReplies([this](const EchoReply& r) { OnReply(r); });
  {
    std::lock_guard<std::mutex> l(mu_);
    shared_.counters.async_errors = prober_->async_errors();
  }
  return n.ok() ? absl::OkStatus() : n.status();
}

void RttMonitor::OnReply(const EchoReply& reply) {
  const int64_t origin = origin_ns_;
  if (!outstanding_.empty() && reply.seq >= outstanding_base_ &&
      reply.seq < outstanding_base_ + outstanding_.size()) {
    Outstanding& o = outstanding_[reply.seq - outstanding_base_];
    if (o.answered) {
      std::lock_guard<std::mutex> l(mu_);
      ++shared_.counters.duplicates;
      return;
    }
    o.answered = true;
    bool kernel = false;
    const int64_t rtt = RttNs(o.probe, reply, &kernel);
    // Cannot fail: each sequence number is resolved here or in
    // ExpireTimeouts, once (answered/outstanding bookkeeping).
    [[maybe_unused]] absl::Status s = detector_.OnReply(reply.seq, o.probe.sent_mono_ns, rtt);
    const double rtt_ms = rtt / 1e6;
    std::lock_guard<std::mutex> l(mu_);
    ++shared_.counters.received;
    if (kernel) ++shared_.counters.kernel_timestamps;
    ++rtt_hist_[Bucket(rtt_ms)];
    if (shared_.counters.received == 1) rtt_min_ms_ = rtt_max_ms_ = rtt_ms;
    rtt_min_ms_ = std::min(rtt_min_ms_, rtt_ms);
    rtt_max_ms_ = std::max(rtt_max_ms_, rtt_ms);
    PushSample({reply.seq, (o.probe.sent_mono_ns - origin) / 1e9, rtt_ms, RttSample::Kind::kReply});
    return;
  }
  // Not in flight: a late reply to a lost probe, or a duplicate of an old one.
  auto it = std::lower_bound(recent_lost_.begin(), recent_lost_.end(), reply.seq,
                             [](const SentProbe& p, uint64_t seq) { return p.seq < seq; });
  if (it != recent_lost_.end() && it->seq == reply.seq) {
    const int64_t rtt = RttNs(*it, reply);
    detector_.OnLateReply(reply.seq, it->sent_mono_ns, rtt);
    recent_lost_.erase(it);  // a second late copy is a duplicate
    std::lock_guard<std::mutex> l(mu_);
    ++shared_.counters.late;
    for (auto s = samples_.rbegin(); s != samples_.rend(); ++s) {
      if (s->seq == reply.seq) {
        s->kind = RttSample::Kind::kLate;
        s->rtt_ms = rtt / 1e6;
        break;
      }
    }
    return;
  }
  std::lock_guard<std::mutex> l(mu_);
  ++shared_.counters.duplicates;
}

void RttMonitor::ExpireTimeouts(int64_t now_ns) {
  const int64_t origin = origin_ns_;
  while (!outstanding_.empty()) {
    Outstanding& f = outstanding_.front();
    if (!f.answered) {
      if (now_ns - f.probe.sent_mono_ns < options_.prober.timeout_ns) break;
      [[maybe_unused]] absl::Status s = detector_.OnLoss(outstanding_base_, f.probe.sent_mono_ns);
      recent_lost_.push_back(f.probe);
      std::lock_guard<std::mutex> l(mu_);
      ++shared_.counters.lost;
      PushSample({outstanding_base_, (f.probe.sent_mono_ns - origin) / 1e9, 0,
                  RttSample::Kind::kLost});
    }
    outstanding_.pop_front();
    ++outstanding_base_;
  }
  while (!recent_lost_.empty() && now_ns - recent_lost_.front().sent_mono_ns > kLateMemoryNs) {
    recent_lost_.pop_front();
  }
}

void RttMonitor::PushSample(const RttSample& sample) {
  // mu_ held.
  samples_.push_back(sample);
  const double oldest = sample.sent_s - options_.history_s - options_.prober.timeout_ns / 1e9;
  while (!samples_.empty() && samples_.front().sent_s < oldest) samples_.pop_front();
}

void RttMonitor::Dispatch(int64_t now_ns) {
  std::vector<RttTransition> transitions = detector_.TakeTransitions();
  std::vector<RttEvent> events = detector_.TakeEvents();
  {
    std::lock_guard<std::mutex> l(mu_);
    shared_.detector = detector_.Status();
    shared_.counters.outstanding = 0;
    for (const Outstanding& o : outstanding_) shared_.counters.outstanding += o.answered ? 0 : 1;
    shared_.elapsed_s = (now_ns - shared_.origin_mono_ns) / 1e9;
    for (const RttEvent& e : events) {
      ++shared_.events_total;
      if (e.state == RttState::kRed) {
        ++shared_.red_events;
        shared_.downtime_ms_total += e.downtime_ms;
      } else {
        ++shared_.yellow_events;
      }
      events_.push_back(e);
      while (events_.size() > options_.max_events) events_.pop_front();
    }
  }
  if (options_.on_transition) {
    for (const RttTransition& t : transitions) options_.on_transition(t);
  }
  if (options_.on_event) {
    for (const RttEvent& e : events) options_.on_event(e);
  }
}

RttSnapshot RttMonitor::Snapshot(bool with_samples) const {
  std::lock_guard<std::mutex> l(mu_);
  RttSnapshot s = shared_;
  if (s.running) s.elapsed_s = (MonotonicNowNs() - s.origin_mono_ns) / 1e9;
  if (with_samples) s.samples.assign(samples_.begin(), samples_.end());
  std::sort(s.samples.begin(), s.samples.end(),
            [](const RttSample& a, const RttSample& b) { return a.seq < b.seq; });
  const double oldest = s.elapsed_s - options_.history_s;
  s.samples.erase(s.samples.begin(),
                  std::find_if(s.samples.begin(), s.samples.end(),
                               [&](const RttSample& x) { return x.sent_s >= oldest; }));
  s.events.assign(events_.begin(), events_.end());
  s.rtt = Quantiles(rtt_hist_, rtt_min_ms_, rtt_max_ms_);
  s.send_lateness = Quantiles(lateness_hist_, 0.0, lateness_max_ms_);
  return s;
}

}  // namespace shroud::rttmon
