// The live dashboard's data (control/daemon/dashboard_api.h): the JSON of
// /api/rtt and /api/rate as pure functions of snapshots, the rate trace's
// ring, and the routes (page, index, polls) on a loopback HTTP server.
#include "control/daemon/dashboard_api.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/socket.h>

#include <memory>
#include <string>
#include <vector>

#include "control/daemon/control_state.h"
#include "control/daemon/http_server.h"
#include "tests/control_fixtures.h"
#include "tests/test_util.h"

namespace shroud::control {
namespace {

using ::testing::HasSubstr;
using rttmon::RttEvent;
using rttmon::RttSample;
using rttmon::RttSnapshot;
using rttmon::RttState;

constexpr int64_t kOrigin = 5'000'000'000;  // the monitor's "0 s" on its clock

RttSample Reply(uint64_t seq, double rtt_ms) {
  return {seq, static_cast<double>(seq) * 0.01, rtt_ms, RttSample::Kind::kReply};
}
RttSample Lost(uint64_t seq) { return {seq, static_cast<double>(seq) * 0.01, 0, RttSample::Kind::kLost}; }

RttSnapshot Snapshot(std::vector<RttSample> samples) {
  RttSnapshot s;
  s.target = "vm1";
  s.address = "192.0.2.2";
  s.family = AF_INET;
  s.socket_kind = "raw";
  s.interval_ms = 10;
  s.timeout_ms = 1000;
  s.origin_mono_ns = kOrigin;
  s.started_unix_s = 1.7e9;
  s.elapsed_s = 12.5;
  s.running = true;
  s.samples = std::move(samples);
  return s;
}

RttEvent Event(uint64_t id, RttState state, double start_s, double end_s, double downtime_ms) {
  RttEvent e;
  e.id = id;
  e.state = state;
  e.reason = state == RttState::kRed ? "outage" : "peak";
  e.start_ns = kOrigin + static_cast<int64_t>(start_s * 1e9);
  e.end_ns = kOrigin + static_cast<int64_t>(end_s * 1e9);
  e.red_ns = state == RttState::kRed ? e.start_ns + 100'000'000 : -1;
  e.yellow_ns = e.start_ns;
  e.downtime_ms = downtime_ms;
  e.lost = static_cast<uint64_t>(downtime_ms / 10);
  return e;
}

std::vector<uint64_t> Seqs(const nlohmann::json& doc) {
  std::vector<uint64_t> out;
  for (const auto& s : doc["samples"]) out.push_back(s["seq"].get<uint64_t>());
  return out;
}

// --- /api/rtt: query ---

TEST(ParseRttQueryTest, AcceptsSinceAndEventsAfter) {
  absl::StatusOr<RttQuery> q = ParseRttQuery({});
  ASSERT_TRUE(q.ok());
  EXPECT_FALSE(q->since.has_value());
  EXPECT_FALSE(q->events_after.has_value());
  q = ParseRttQuery({{"since", "0"}, {"events_after", "17"}});
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->since, 0u);
  EXPECT_EQ(q->events_after, 17u);
}

TEST(ParseRttQueryTest, RefusesBadUnknownAndRepeatedParameters) {
  for (const QueryParams& p : std::vector<QueryParams>{{{"since", "-1"}},
                                                        {{"since", "abc"}},
                                                        {{"since", ""}},
                                                        {{"since", "+5"}},
                                                        {{"events_after", "1.5"}},
                                                        {{"since", "99999999999999999999999"}}}) {
    absl::StatusOr<RttQuery> q = ParseRttQuery(p);
    ASSERT_FALSE(q.ok()) << p.begin()->first << "=" << p.begin()->second;
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(q.status().message(), HasSubstr("'" + p.begin()->first + "'"));
  }
  absl::StatusOr<RttQuery> q = ParseRttQuery({{"sinse", "3"}});
  ASSERT_FALSE(q.ok());
  EXPECT_THAT(q.status().message(), HasSubstr("unknown query parameter 'sinse'"));
  q = ParseRttQuery({{"since", "3"}, {"since", "4"}});
  ASSERT_FALSE(q.ok());
  EXPECT_THAT(q.status().message(), HasSubstr("more than once"));
}

// --- /api/rtt: the answer ---

TEST(RttJsonTest, CarriesStateBaselineCountersAndEverySample) {
  RttSnapshot s = Snapshot({Reply(0, 0.0521), Reply(1, 0.0498), Lost(2), Reply(3, 0.06)});
  s.detector.state = RttState::kYellow;
  s.detector.baseline_ready = true;
  s.detector.baseline_ms = 0.05;
  s.detector.spread_ms = 0.004;
  s.detector.peak_threshold_ms = 10.05;
  s.detector.outage_threshold_ms = 100;
  s.detector.silence_ms = 3.5;
  s.counters.sent = 5;
  s.counters.received = 3;
  s.counters.lost = 1;
  s.counters.outstanding = 1;
  s.counters.async_errors = 2;
  const nlohmann::json j = RttJson(s, {});
  EXPECT_EQ(j["enabled"], true);
  EXPECT_EQ(j["target"], "vm1");
  EXPECT_EQ(j["address"], "192.0.2.2");
  EXPECT_EQ(j["family"], "ipv4");
  EXPECT_EQ(j["socket"], "raw");
  EXPECT_EQ(j["state"], "yellow");
  EXPECT_EQ(j["baseline_ready"], true);
  EXPECT_DOUBLE_EQ(j["baseline_ms"].get<double>(), 0.05);
  EXPECT_DOUBLE_EQ(j["peak_threshold_ms"].get<double>(), 10.05);
  EXPECT_DOUBLE_EQ(j["outage_threshold_ms"].get<double>(), 100);
  EXPECT_DOUBLE_EQ(j["now_s"].get<double>(), 12.5);
  EXPECT_DOUBLE_EQ(j["started_unix"].get<double>(), 1.7e9);
  EXPECT_EQ(j["running"], true);
  EXPECT_FALSE(j.contains("error"));
  EXPECT_EQ(j["counters"]["sent"], 5);
  EXPECT_EQ(j["counters"]["lost"], 1);
  EXPECT_EQ(j["counters"]["outstanding"], 1);
  EXPECT_EQ(j["counters"]["icmp_errors"], 2);
  EXPECT_TRUE(j["rtt_ms"].is_null());  // no quantiles yet
  // The newest reply's RTT; the sample values are rounded to 1 us.
  EXPECT_DOUBLE_EQ(j["last_rtt_ms"].get<double>(), 0.06);
  ASSERT_EQ(j["samples"].size(), 4u);
  EXPECT_EQ(j["samples"][0], (nlohmann::json{{"seq", 0}, {"t_s", 0.0}, {"rtt_ms", 0.052}}));
  EXPECT_EQ(j["samples"][2], (nlohmann::json{{"seq", 2}, {"t_s", 0.02}, {"lost", true}}));
  EXPECT_EQ(j["next"], 3);
  EXPECT_TRUE(j["open_event"].is_null());
  EXPECT_EQ(j["events"], nlohmann::json::array());
}

TEST(RttJsonTest, BaselineIsNullWhileWarmingUpAndErrorsAreShown) {
  RttSnapshot s = Snapshot({});
  s.running = false;
  s.error = "ppoll: Bad file descriptor";
  const nlohmann::json j = RttJson(s, {});
  EXPECT_EQ(j["state"], "green");
  EXPECT_EQ(j["baseline_ready"], false);
  EXPECT_TRUE(j["baseline_ms"].is_null());
  EXPECT_TRUE(j["peak_threshold_ms"].is_null());
  EXPECT_TRUE(j["last_rtt_ms"].is_null());
  EXPECT_EQ(j["running"], false);
  EXPECT_EQ(j["error"], "ppoll: Bad file descriptor");
  // Nothing resolved yet: no cursor.
  EXPECT_TRUE(j["next"].is_null());
  EXPECT_EQ(j["samples"].size(), 0u);
}

TEST(RttJsonTest, SinceSendsOnlyNewerSamples) {
  std::vector<RttSample> samples;
  for (uint64_t i = 0; i < 10; ++i) samples.push_back(Reply(i, 0.05));
  const RttSnapshot s = Snapshot(samples);
  nlohmann::json j = RttJson(s, {.since = 6});
  EXPECT_EQ(Seqs(j), (std::vector<uint64_t>{7, 8, 9}));
  EXPECT_EQ(j["next"], 9);
  // Up to date: nothing, and the cursor stays.
  j = RttJson(s, {.since = 9});
  EXPECT_EQ(j["samples"].size(), 0u);
  EXPECT_EQ(j["next"], 9);
}

// A probe in flight (its loss is decided only after the timeout) holds the
// cursor back, so polling with "next" never misses it; the replies after it
// are sent again until it is resolved.
TEST(RttJsonTest, TheCursorWaitsForProbesInFlight) {
  // Probe 5 is unresolved: replies 6..9 came back already.
  std::vector<RttSample> samples;
  for (uint64_t i = 0; i < 10; ++i) {
    if (i != 5) samples.push_back(Reply(i, 0.05));
  }
  nlohmann::json j = RttJson(Snapshot(samples), {.since = 2});
  EXPECT_EQ(Seqs(j), (std::vector<uint64_t>{3, 4, 6, 7, 8, 9}));
  EXPECT_EQ(j["next"], 4);
  // Later: 5 was lost (listed once resolved) and 10 answered.
  samples.insert(samples.begin() + 5, Lost(5));
  samples.push_back(Reply(10, 0.05));
  j = RttJson(Snapshot(samples), {.since = 4});
  EXPECT_EQ(Seqs(j), (std::vector<uint64_t>{5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(j["samples"][0]["lost"], true);
  EXPECT_EQ(j["next"], 10);
}

TEST(RttJsonTest, TheCursorSkipsHistoryTheMonitorNoLongerKeeps) {
  // The monitor keeps 100..104; a page that last saw 40 (it was away) gets
  // all of them, and a cursor past the gap.
  std::vector<RttSample> samples;
  for (uint64_t i = 100; i < 105; ++i) samples.push_back(Reply(i, 0.05));
  nlohmann::json j = RttJson(Snapshot(samples), {.since = 40});
  EXPECT_EQ(Seqs(j), (std::vector<uint64_t>{100, 101, 102, 103, 104}));
  EXPECT_EQ(j["next"], 104);
  // The first poll (no since) too.
  j = RttJson(Snapshot(samples), {});
  EXPECT_EQ(j["samples"].size(), 5u);
  EXPECT_EQ(j["next"], 104);
  // With the oldest kept probe still in flight, the cursor stops before it.
  samples.erase(samples.begin());
  samples.insert(samples.begin(), Reply(99, 0.05));
  samples.erase(samples.begin() + 1);  // 100 in flight
  j = RttJson(Snapshot(samples), {});
  EXPECT_EQ(j["next"], 99);
}

TEST(RttJsonTest, LateRepliesAreMarked) {
  RttSample late{3, 0.03, 1450.5, RttSample::Kind::kLate};
  const nlohmann::json j = RttJson(Snapshot({Reply(2, 0.05), late}), {});
  EXPECT_EQ(j["samples"][1], (nlohmann::json{{"seq", 3}, {"t_s", 0.03}, {"rtt_ms", 1450.5}, {"late", true}}));
  // A late reply is not the current RTT.
  EXPECT_DOUBLE_EQ(j["last_rtt_ms"].get<double>(), 0.05);
}

TEST(RttJsonTest, EventsOpenClosedAndAfter) {
  RttSnapshot s = Snapshot({Reply(0, 0.05)});
  s.events = {Event(1, RttState::kYellow, 1, 3, 0), Event(2, RttState::kRed, 5, 6.5, 1490)};
  s.events_total = 2;
  s.red_events = 1;
  s.yellow_events = 1;
  s.downtime_ms_total = 1490;
  RttEvent open = Event(3, RttState::kRed, 10, 10.4, 300);
  open.open = true;
  s.detector.open_event = open;
  s.detector.state = RttState::kRed;
  nlohmann::json j = RttJson(s, {});
  EXPECT_EQ(j["state"], "red");
  ASSERT_EQ(j["events"].size(), 2u);
  EXPECT_EQ(j["events"][1], rttmon::EventToJson(s.events[1], kOrigin));
  EXPECT_EQ(j["events"][1]["state"], "red");
  EXPECT_DOUBLE_EQ(j["events"][1]["start"].get<double>(), 5);
  EXPECT_DOUBLE_EQ(j["events"][1]["duration_ms"].get<double>(), 1500);
  EXPECT_DOUBLE_EQ(j["events"][1]["downtime_ms"].get<double>(), 1490);
  EXPECT_EQ(j["open_event"]["event"], 3);
  EXPECT_EQ(j["open_event"]["open"], true);
  EXPECT_EQ(j["events_total"], 2);
  EXPECT_EQ(j["red_events"], 1);
  EXPECT_DOUBLE_EQ(j["downtime_ms_total"].get<double>(), 1490);
  // Incremental: only events after the one the page has.
  j = RttJson(s, {.events_after = 1});
  ASSERT_EQ(j["events"].size(), 1u);
  EXPECT_EQ(j["events"][0]["event"], 2);
  j = RttJson(s, {.events_after = 2});
  EXPECT_EQ(j["events"].size(), 0u);
  EXPECT_EQ(j["open_event"]["event"], 3);  // always there while open
}

TEST(RttJsonTest, AtMostTheNewestEventsAreSent) {
  RttSnapshot s = Snapshot({});
  for (uint64_t i = 1; i <= kMaxRttEvents + 20; ++i) {
    s.events.push_back(Event(i, RttState::kYellow, static_cast<double>(i), i + 0.5, 0));
  }
  const nlohmann::json j = RttJson(s, {});
  ASSERT_EQ(j["events"].size(), kMaxRttEvents);
  EXPECT_EQ(j["events"][0]["event"], 21);
  EXPECT_EQ(j["events"].back()["event"], kMaxRttEvents + 20);
}

TEST(RttJsonTest, DisabledSaysHowToTurnItOn) {
  const nlohmann::json j = RttDisabledJson();
  EXPECT_EQ(j["enabled"], false);
  EXPECT_THAT(j["hint"].get<std::string>(), HasSubstr("--rttmon=TARGET"));
}

// --- /api/rate ---

nlohmann::json GatewayStatus(double rate, const std::string& mode = "gateway") {
  nlohmann::json status{{"mode", mode}, {"counters", {{"flows", {{"active", 1}}}}}};
  if (mode == "gateway") {
    status["counters"]["rate_variation"] = {{"rate_bytes_per_sec", rate},
                                            {"min_applied_bytes_per_sec", 1e6},
                                            {"max_applied_bytes_per_sec", 8e6}};
  }
  return {{"ok", true}, {"status", status}};
}

TEST(MigrationRateFromStatusTest, ReadsTheGatewaysRate) {
  absl::StatusOr<double> r = MigrationRateFromStatus(GatewayStatus(4.5e6));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ(*r, 4.5e6);
  r = MigrationRateFromStatus(GatewayStatus(0, "tap"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("tap"));
  r = MigrationRateFromStatus(nlohmann::json{{"ok", true}, {"status", {{"mode", "gateway"}}}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  r = MigrationRateFromStatus(nlohmann::json{{"ok", true}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
}

TEST(RateTraceTest, NothingSampledIsAnEmptyTrace) {
  RateTrace trace(10, 200);
  const nlohmann::json j = trace.ToJson({}, 3.0);
  EXPECT_EQ(j["attached"], false);
  EXPECT_EQ(j["available"], false);
  EXPECT_EQ(j["points"], nlohmann::json::array());
  EXPECT_TRUE(j["next"].is_null());
  EXPECT_DOUBLE_EQ(j["interval_ms"].get<double>(), 200);
  EXPECT_TRUE(j["mode"].is_null());
}

TEST(RateTraceTest, KeepsABoundedRingAndAnswersIncrementally) {
  RateTrace trace(3, 200);
  for (int i = 0; i < 5; ++i) trace.Observe(0.2 * i, GatewayStatus(1e6 * (i + 1)));
  EXPECT_EQ(trace.size(), 3u);  // the oldest two went
  nlohmann::json j = trace.ToJson({}, 1.0);
  EXPECT_EQ(j["attached"], true);
  EXPECT_EQ(j["available"], true);
  EXPECT_EQ(j["mode"], "gateway");
  EXPECT_FALSE(j.contains("error"));
  ASSERT_EQ(j["points"].size(), 3u);
  EXPECT_EQ(j["points"][0], (nlohmann::json{{"seq", 3}, {"t_s", 0.4}, {"rate_bytes_per_sec", 3e6}}));
  EXPECT_EQ(j["next"], 5);
  EXPECT_DOUBLE_EQ(j["min_applied_bytes_per_sec"].get<double>(), 1e6);
  EXPECT_DOUBLE_EQ(j["max_applied_bytes_per_sec"].get<double>(), 8e6);
  j = trace.ToJson({.since = 4}, 1.0);
  ASSERT_EQ(j["points"].size(), 1u);
  EXPECT_EQ(j["points"][0]["seq"], 5);
  j = trace.ToJson({.since = 5}, 1.0);
  EXPECT_EQ(j["points"].size(), 0u);
  EXPECT_EQ(j["next"], 5);
}

TEST(RateTraceTest, ADetachOrATapIsReportedAndTheHistoryKept) {
  RateTrace trace(10, 200);
  trace.Observe(0.0, GatewayStatus(2e6));
  trace.Observe(0.2, absl::UnavailableError("no dataplane listening at /run/shroud/x/ctl.sock"));
  nlohmann::json j = trace.ToJson({}, 0.3);
  EXPECT_EQ(j["attached"], false);
  EXPECT_EQ(j["available"], false);
  EXPECT_THAT(j["error"].get<std::string>(), HasSubstr("no dataplane listening"));
  EXPECT_EQ(j["points"].size(), 1u);  // the trace scrolls off in the page
  trace.Observe(0.4, GatewayStatus(0, "tap"));
  j = trace.ToJson({}, 0.5);
  EXPECT_EQ(j["attached"], true);
  EXPECT_EQ(j["available"], false);
  EXPECT_EQ(j["mode"], "tap");
  EXPECT_THAT(j["error"].get<std::string>(), HasSubstr("not a gateway"));
  EXPECT_EQ(j["points"].size(), 1u);
}

TEST(ParseRateQueryTest, SinceOnly) {
  absl::StatusOr<RateTrace::Query> q = ParseRateQuery({{"since", "12"}});
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->since, 12u);
  EXPECT_FALSE(ParseRateQuery({{"since", "x"}}).ok());
  EXPECT_FALSE(ParseRateQuery({{"limit", "1"}}).ok());
}

// --- the routes ---

class DashboardRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_ = std::make_unique<ControlState>(FlowStore(testing::ShippedMaxEntModel(), {}), 0, nullptr, absl::Now());
    absl::StatusOr<std::unique_ptr<HttpServer>> server =
        HttpServer::Start(HttpListenAddress{"127.0.0.1", 0}, state_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_connection_timeout(5);
    client_->set_read_timeout(10);
  }

  nlohmann::json GetJson(const std::string& path, int want_status = 200) {
    httplib::Result r = client_->Get(path);
    EXPECT_TRUE(r) << path;
    if (!r) return nullptr;
    EXPECT_EQ(r->status, want_status) << path << ": " << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
    return nlohmann::json::parse(r->body);
  }

  std::unique_ptr<ControlState> state_;
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(DashboardRoutesTest, RootIsTheSelfContainedPage) {
  httplib::Result r = client_->Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/html; charset=utf-8");
  // Offline by construction: nothing but this server may be contacted.
  EXPECT_THAT(r->get_header_value("Content-Security-Policy"), HasSubstr("default-src 'none'"));
  EXPECT_THAT(r->get_header_value("Content-Security-Policy"), HasSubstr("connect-src 'self'"));
  EXPECT_THAT(r->body, HasSubstr("<canvas id=\"rtt-graph\""));
  EXPECT_THAT(r->body, HasSubstr("id=\"light\""));
  EXPECT_THAT(r->body, HasSubstr("/api/rtt"));
  EXPECT_THAT(r->body, HasSubstr("/api/rate"));
  EXPECT_THAT(r->body, HasSubstr("/api/flows"));
  EXPECT_THAT(r->body, ::testing::Not(HasSubstr("http://")));
  EXPECT_THAT(r->body, ::testing::Not(HasSubstr("https://")));
  // The JSON index moved to /api.
  const nlohmann::json index = GetJson("/api");
  EXPECT_EQ(index["service"], "shroud-control");
  EXPECT_THAT(index.dump(), HasSubstr("/api/rtt"));
  EXPECT_THAT(index.dump(), HasSubstr("/api/rate"));
}

TEST_F(DashboardRoutesTest, RttIsDisabledWithoutAMonitorAndServedWithOne) {
  nlohmann::json j = GetJson("/api/rtt");
  EXPECT_EQ(j["enabled"], false);
  state_->SetRttSource([] {
    std::vector<RttSample> samples;
    for (uint64_t i = 0; i < 20; ++i) samples.push_back(Reply(i, 0.05));
    return Snapshot(samples);
  });
  j = GetJson("/api/rtt");
  EXPECT_EQ(j["enabled"], true);
  EXPECT_EQ(j["samples"].size(), 20u);
  EXPECT_EQ(j["next"], 19);
  j = GetJson("/api/rtt?since=15&events_after=0");
  EXPECT_EQ(Seqs(j), (std::vector<uint64_t>{16, 17, 18, 19}));
  j = GetJson("/api/rtt?since=soon", 400);
  EXPECT_THAT(j["error"].get<std::string>(), HasSubstr("'since'"));
  httplib::Result r = client_->Get("/api/rtt");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->get_header_value("Cache-Control"), "no-store");
}

TEST_F(DashboardRoutesTest, RateServesWhatWasObserved) {
  nlohmann::json j = GetJson("/api/rate");
  EXPECT_EQ(j["attached"], false);
  EXPECT_EQ(j["points"], nlohmann::json::array());
  state_->ObserveGatewayStatus(absl::Now(), GatewayStatus(3e6));
  state_->ObserveGatewayStatus(absl::Now(), GatewayStatus(5e6));
  j = GetJson("/api/rate");
  EXPECT_EQ(j["attached"], true);
  ASSERT_EQ(j["points"].size(), 2u);
  EXPECT_DOUBLE_EQ(j["points"][1]["rate_bytes_per_sec"].get<double>(), 5e6);
  j = GetJson("/api/rate?since=1");
  EXPECT_EQ(j["points"].size(), 1u);
  GetJson("/api/rate?since=-3", 400);
  // The ring is sized to the dashboard's window at the chosen interval.
  state_->SetRateInterval(absl::Seconds(30));
  for (int i = 0; i < 10; ++i) state_->ObserveGatewayStatus(absl::Now(), GatewayStatus(i));
  j = GetJson("/api/rate");
  EXPECT_EQ(j["points"].size(), 3u);  // 60 s / 30 s + 1
  EXPECT_DOUBLE_EQ(j["interval_ms"].get<double>(), 30000);
}

TEST_F(DashboardRoutesTest, UnknownPathsPointAtTheIndex) {
  const nlohmann::json j = GetJson("/api/nope", 404);
  EXPECT_THAT(j["error"].get<std::string>(), HasSubstr("GET /api lists the routes"));
}

}  // namespace
}  // namespace shroud::control
