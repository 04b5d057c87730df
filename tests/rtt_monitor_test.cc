// Tests of RttMonitor (prober + detector on a thread) through the API the
// dashboard uses: Snapshot() while running, callbacks, Stop(drain), JSON.
// The test process moves into a network namespace of its own (unshare) with
// 192.0.2.1 on its loopback and pings that, so no packet leaves it; taking
// the loopback down is the outage. Needs root (CAP_SYS_ADMIN, CAP_NET_RAW);
// skips otherwise.
#include "control/rttmon/rtt_monitor.h"

#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shroud::rttmon {
namespace {

using ::testing::HasSubstr;

// Once per process: a private network namespace with 192.0.2.1/32 on lo.
bool EnterOwnNetns(std::string* why) {
  static int state = 0;  // 0 untried, 1 ok, -1 failed
  static std::string reason;
  if (state == 0) {
    if (geteuid() != 0) {
      reason = "needs root for a network namespace";
    } else if (unshare(CLONE_NEWNET) != 0) {
      reason = "unshare(CLONE_NEWNET) failed";
    } else if (std::system("ip link set lo up && ip addr add 192.0.2.1/32 dev lo") != 0) {
      reason = "cannot configure lo in the new namespace (ip missing?)";
    }
    state = reason.empty() ? 1 : -1;
  }
  *why = reason;
  return state == 1;
}

class RttMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!EnterOwnNetns(&why)) GTEST_SKIP() << "skipped: " << why;
  }
};

RttMonitorOptions Options() {
  RttMonitorOptions o;
  o.prober.target = "192.0.2.1";
  o.prober.interval_ns = 10'000'000;
  o.prober.timeout_ns = 500'000'000;
  return o;
}

TEST_F(RttMonitorTest, SnapshotWhileRunningAndSummaryAfterStop) {
  auto mon = RttMonitor::Create(Options());
  ASSERT_TRUE(mon.ok()) << mon.status();
  RttSnapshot before = (*mon)->Snapshot();
  EXPECT_FALSE(before.running);
  EXPECT_EQ(before.address, "192.0.2.1");
  EXPECT_EQ(before.socket_kind, "raw");  // root, ping_group_range "1 0"
  (*mon)->Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  RttSnapshot s = (*mon)->Snapshot();
  EXPECT_TRUE(s.running);
  EXPECT_TRUE((*mon)->running());
  EXPECT_GE(s.counters.sent, 120u);
  EXPECT_GE(s.counters.received, 110u);
  EXPECT_EQ(s.detector.state, RttState::kGreen);
  EXPECT_TRUE(s.detector.baseline_ready);
  ASSERT_FALSE(s.samples.empty());
  for (size_t i = 1; i < s.samples.size(); ++i) EXPECT_LT(s.samples[i - 1].seq, s.samples[i].seq);
  EXPECT_EQ(s.samples.back().kind, RttSample::Kind::kReply);
  EXPECT_GT(s.samples.back().rtt_ms, 0.0);
  EXPECT_LT(s.samples.back().rtt_ms, 50.0);
  EXPECT_TRUE((*mon)->Snapshot(/*with_samples=*/false).samples.empty());

  (*mon)->Stop(/*drain=*/true);
  RttSnapshot end = (*mon)->Snapshot();
  EXPECT_FALSE(end.running);
  EXPECT_FALSE((*mon)->running());
  EXPECT_EQ(end.counters.outstanding, 0u);  // drained: every probe answered or lost
  EXPECT_EQ(end.counters.received + end.counters.lost, end.counters.sent);
  EXPECT_EQ(end.counters.lost, 0u);
  EXPECT_EQ(end.counters.kernel_timestamps, end.counters.received);
  EXPECT_GT(end.rtt.count, 0u);
  EXPECT_LE(end.rtt.min_ms, end.rtt.median_ms);
  EXPECT_LE(end.rtt.median_ms, end.rtt.max_ms);
  EXPECT_TRUE(end.error.empty()) << end.error;

  nlohmann::json sum = SummaryToJson(end);
  EXPECT_EQ(sum["summary"], true);
  EXPECT_EQ(sum["address"], "192.0.2.1");
  EXPECT_EQ(sum["state"], "green");
  EXPECT_EQ(sum["sent"], end.counters.sent);
  nlohmann::json full = SnapshotToJson(end);
  EXPECT_EQ(full["samples"].size(), end.samples.size());
  EXPECT_TRUE(full["open_event"].is_null());
  EXPECT_EQ(full["detector"]["state"], "green");
  (*mon)->Stop();  // idempotent
}

TEST_F(RttMonitorTest, AnOutageTurnsTheLightRedLiveAndEndsAsOneEvent) {
  std::mutex mu;
  std::vector<RttEvent> events;
  std::vector<RttTransition> transitions;
  RttMonitorOptions o = Options();
  o.on_event = [&](const RttEvent& e) {
    std::lock_guard<std::mutex> l(mu);
    events.push_back(e);
  };
  o.on_transition = [&](const RttTransition& t) {
    std::lock_guard<std::mutex> l(mu);
    transitions.push_back(t);
  };
  auto mon = RttMonitor::Create(std::move(o));
  ASSERT_TRUE(mon.ok()) << mon.status();
  (*mon)->Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  ASSERT_EQ(std::system("ip link set lo down"), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  // Still down: red already, the episode open with its start.
  RttSnapshot during = (*mon)->Snapshot(false);
  ASSERT_EQ(std::system("ip link set lo up"), 0);
  EXPECT_EQ(during.detector.state, RttState::kRed);
  ASSERT_TRUE(during.detector.open_event.has_value());
  EXPECT_GT(during.detector.silence_ms, 300.0);
  nlohmann::json open = SnapshotToJson(during)["open_event"];
  EXPECT_EQ(open["state"], "red");
  EXPECT_EQ(open["open"], true);
  // quiet_s (2 s) after the outage, plus the loss timeout.
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  (*mon)->Stop(/*drain=*/true);
  RttSnapshot end = (*mon)->Snapshot(false);
  std::lock_guard<std::mutex> l(mu);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].state, RttState::kRed);
  EXPECT_FALSE(events[0].open);
  // About 600 ms plus the two `ip` commands' run time.
  EXPECT_GT(events[0].downtime_ms, 550.0);
  EXPECT_LT(events[0].downtime_ms, 900.0);
  EXPECT_NEAR(events[0].downtime_gap_ms, events[0].downtime_ms, 20.0 + events[0].stall_ms);
  ASSERT_EQ(transitions.size(), 2u);
  EXPECT_EQ(transitions[0].to, RttState::kRed);
  EXPECT_EQ(transitions[1].to, RttState::kGreen);
  EXPECT_EQ(end.red_events, 1u);
  EXPECT_EQ(end.events.size(), 1u);
  EXPECT_DOUBLE_EQ(end.downtime_ms_total, events[0].downtime_ms);
  EXPECT_EQ(end.detector.state, RttState::kGreen);
  nlohmann::json ev = EventToJson(events[0], end.origin_mono_ns);
  EXPECT_EQ(ev["state"], "red");
  EXPECT_EQ(ev["reason"], "outage");
  EXPECT_GT(ev["detected"].get<double>(), ev["start"].get<double>());
  EXPECT_GT(ev["start"].get<double>(), 0.9);
}

TEST(RttMonitorCreate, BadInputIsRefusedBeforeAnyThread) {
  RttMonitorOptions o = Options();
  o.prober.interval_ns = 5'000'000;
  auto mon = RttMonitor::Create(o);
  ASSERT_FALSE(mon.ok());
  EXPECT_EQ(mon.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(mon.status().message()), HasSubstr("too small: the minimum is 10 ms"));
  o = Options();
  o.detector.min_outage_ms = 0;
  EXPECT_EQ(RttMonitor::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options();
  o.realtime_priority = 200;
  EXPECT_EQ(RttMonitor::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseDurationNs, UnitsAndErrors) {
  EXPECT_EQ(*ParseDurationNs("interval", "10ms"), 10'000'000);
  EXPECT_EQ(*ParseDurationNs("interval", "1.5s"), 1'500'000'000);
  EXPECT_EQ(*ParseDurationNs("interval", "250us"), 250'000);
  EXPECT_THAT(std::string(ParseDurationNs("interval", "10").status().message()),
              HasSubstr("--interval=10 has no unit"));
  EXPECT_FALSE(ParseDurationNs("timeout", "-1s").ok());
  EXPECT_FALSE(ParseDurationNs("timeout", "soon").ok());
  EXPECT_EQ(FormatDurationNs(10'000'000), "10 ms");
  EXPECT_EQ(FormatDurationNs(2'000'000'000), "2 s");
  EXPECT_EQ(FormatDurationNs(1'500'000'000), "1.5 s");
}

TEST(RttNs, KernelTimestampUnlessTheWallClockJumped) {
  SentProbe p;
  p.sent_mono_ns = 1'000'000;
  p.sent_real_ns = 5'000'000'000;
  EchoReply r;
  r.rx_mono_ns = 1'000'000 + 300'000;      // read 300 us later
  r.rx_real_ns = 5'000'000'000 + 120'000;  // arrived 120 us later
  bool kernel = false;
  EXPECT_EQ(RttNs(p, r, &kernel), 120'000);
  EXPECT_TRUE(kernel);
  r.rx_real_ns = 5'000'000'000 + 9'000'000;  // wall clock stepped forward
  EXPECT_EQ(RttNs(p, r, &kernel), 300'000);
  EXPECT_FALSE(kernel);
  r.rx_real_ns = 4'000'000'000;  // stepped back
  EXPECT_EQ(RttNs(p, r, &kernel), 300'000);
  r.rx_real_ns = -1;  // no kernel timestamp
  EXPECT_EQ(RttNs(p, r, &kernel), 300'000);
  EXPECT_FALSE(kernel);
}

TEST(ProberConfig, Validation) {
  ProberConfig c;
  EXPECT_THAT(std::string(c.Validate().message()), HasSubstr("no target given"));
  c.target = "192.0.2.1";
  EXPECT_TRUE(c.Validate().ok());
  c.interval_ns = 20'000'000'000;
  EXPECT_THAT(std::string(c.Validate().message()), HasSubstr("too large: the maximum is 10 s"));
  c.interval_ns = 10'000'000;
  c.timeout_ns = 0;
  EXPECT_FALSE(c.Validate().ok());
  c.timeout_ns = 1'000'000'000;
  c.payload_bytes = 8;
  EXPECT_FALSE(c.Validate().ok());
}

}  // namespace
}  // namespace shroud::rttmon
