// shroud-control's API: the rendering functions (api.h) against `shroud
// analyze` and the evaluation code, and the HTTP server on a loopback port.
#include "control/daemon/api.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "absl/strings/str_split.h"
#include "control/analysis/evaluation.h"
#include "control/capture/capture_analysis.h"
#include "control/daemon/control_state.h"
#include "control/daemon/http_server.h"
#include "tests/control_fixtures.h"
#include "tests/synthetic_flows.h"
#include "tests/test_util.h"

namespace shroud::control {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kRun = 0xabc;

bool IsMigrationPort(const FlowKey& k) { return k.dst_port >= 49152 && k.dst_port <= 49215; }

MirrorRecord RecordOf(const FlowKey& key, const FlowFeatures& features, uint64_t stream_packets,
                      MirrorFlowClass cls, uint8_t worker = 0) {
  MirrorRecord r{};
  r.type = MirrorRecordType::kUpdate;
  r.flow_class = cls;
  r.worker = worker;
  r.stream_packets = stream_packets;
  r.key = key;
  r.features = features;
  return r;
}

// Every flow of a capture, as the dataplane would mirror it, in a store.
// Flows to the libvirt migration ports get the migration class unless
// `all_default`.
FlowStore StoreFromCapture(const std::string& path, bool all_default = false) {
  FlowStore store(testing::ShippedMaxEntModel(), {});
  EXPECT_TRUE(store.BeginRun(kRun, FeatureConfig{}, 0).ok());
  CaptureOptions options;  // FeatureConfig defaults = the CLI's flag defaults
  absl::StatusOr<CaptureAnalysis> analysis = AnalyzeCapture(path, options);
  EXPECT_TRUE(analysis.ok()) << analysis.status();
  if (!analysis.ok()) return store;
  const FlowTable& table = *analysis->table;
  uint64_t t = 1;
  for (const FlowRecord& f : table.flows()) {
    const MirrorFlowClass cls = !all_default && IsMigrationPort(f.key) ? MirrorFlowClass::kMigration
                                                                       : MirrorFlowClass::kDefault;
    store.Apply(RecordOf(f.key, f.features, table.stream_packets(), cls), t++);
  }
  return store;
}

std::vector<StoredFlow> AllFlows(const FlowStore& store, uint64_t min_packets = 0) {
  FlowFilter all;
  all.min_packets = min_packets;
  all.limit = SIZE_MAX;
  return SelectFlows(store, all, nullptr);
}

std::string RunCommand(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << command;
  return out;
}

// --- /api/flows against `shroud analyze --json` ---

TEST(FlowJsonTest, FieldsAndValuesAreThoseOfShroudAnalyze) {
  const char* cli = std::getenv("SHROUD_CLI");
  if (cli == nullptr) GTEST_SKIP() << "SHROUD_CLI (the shroud binary) not set; run under meson test";
  const std::string capture = shroud::testing::TestDataPath("migration-r8-light.pcap");
  const std::string out =
      RunCommand(std::string(cli) + " analyze --json --min_packets=0 '" + capture + "'");
  std::map<std::string, nlohmann::json> analyze;
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    nlohmann::json row = nlohmann::json::parse(line);
    analyze[row["flow"].get<std::string>()] = row;
  }
  ASSERT_GT(analyze.size(), 2u);

  FlowStore store = StoreFromCapture(capture);
  const std::vector<StoredFlow> flows = AllFlows(store);
  ASSERT_EQ(flows.size(), analyze.size());
  size_t flagged = 0;
  for (const StoredFlow& flow : flows) {
    // Through text and back, as a client of either sees it.
    const nlohmann::json ours = nlohmann::json::parse(FlowJson(flow).dump());
    const std::string key = ours["flow"];
    ASSERT_TRUE(analyze.contains(key)) << key;
    nlohmann::json theirs = analyze[key];
    theirs.erase("capture");
    for (const auto& [field, value] : theirs.items()) {
      EXPECT_EQ(ours[field], value) << key << " field " << field;
    }
    std::set<std::string> extra;
    for (const auto& [field, value] : ours.items()) {
      if (!theirs.contains(field)) extra.insert(field);
    }
    EXPECT_EQ(extra, (std::set<std::string>{"class", "state", "worker"})) << key;
    EXPECT_EQ(ours["state"], "live");
    EXPECT_EQ(ours["worker"], 0);
    EXPECT_EQ(ours["class"], IsMigrationPort(flow.record.key) ? "migration" : "default");
    flagged += ours["migration"].get<bool>() ? 1 : 0;
  }
  // The capture holds a detected migration, so verdicts were compared too.
  EXPECT_GE(flagged, 1u);
}

TEST(FlowJsonTest, NullWhereUndefinedAndEndedState) {
  FlowStore store(testing::ShippedMaxEntModel(), {});
  ASSERT_TRUE(store.BeginRun(kRun, FeatureConfig{}, 0).ok());
  FlowKey key;
  key.ip_version = 4;
  key.protocol = kProtoTcp;
  key.src_addr = {192, 0, 2, 1};
  key.dst_addr = {192, 0, 2, 2};
  key.src_port = 1234;
  key.dst_port = 80;
  FlowFeatures f;
  f.packets = 1;
  f.bytes = 60;
  MirrorRecord r = RecordOf(key, f, 1, MirrorFlowClass::kChaff, 3);
  r.type = MirrorRecordType::kEndIdle;
  store.Apply(r, 1);
  const nlohmann::json j = FlowJson(AllFlows(store).at(0));
  EXPECT_EQ(j["flow"], "192.0.2.1:1234>192.0.2.2:80/tcp");
  EXPECT_TRUE(j["maxent"].is_null());
  EXPECT_TRUE(j["cov"]["100"].is_null());
  EXPECT_EQ(j["cov"].size(), 7u);
  EXPECT_EQ(j["state"], "ended");
  EXPECT_EQ(j["class"], "chaff");
  EXPECT_EQ(j["worker"], 3);
  EXPECT_EQ(j["migration"], false);
}

TEST(SelectFlowsTest, FiltersNewestFirstAndLimits) {
  FlowStore store(testing::ShippedMaxEntModel(), {});
  ASSERT_TRUE(store.BeginRun(kRun, FeatureConfig{}, 0).ok());
  const std::vector<LabelledFlow> flows =
      shroud::testing::MakeSyntheticStream(11, 6, FeatureConfig{});
  uint64_t t = 100;
  size_t flagged = 0, long_flows = 0;
  for (const LabelledFlow& f : flows) {
    store.Apply(RecordOf(f.key, f.features, f.stream_packets, MirrorFlowClass::kDefault), t++);
    flagged += store.Find({kRun, 0, f.key})->verdict.migration ? 1 : 0;
    long_flows += f.features.packets >= 1000 ? 1 : 0;
  }
  ASSERT_GE(flagged, 1u);
  size_t matched = 0;
  FlowFilter filter;
  filter.limit = 2;
  std::vector<StoredFlow> got = SelectFlows(store, filter, &matched);
  EXPECT_EQ(matched, flows.size());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].record.key, flows.back().key);  // updated last
  EXPECT_GT(got[0].last_update_ns, got[1].last_update_ns);

  filter = FlowFilter{};
  filter.migration_only = true;
  got = SelectFlows(store, filter, &matched);
  EXPECT_EQ(got.size(), flagged);
  for (const StoredFlow& f : got) EXPECT_TRUE(f.verdict.migration);

  filter = FlowFilter{};
  filter.min_packets = 1000;
  got = SelectFlows(store, filter, &matched);
  EXPECT_EQ(got.size(), long_flows);
  const nlohmann::json doc = FlowsJson(got, matched, filter);
  EXPECT_EQ(doc["flows"].size(), long_flows);
  EXPECT_EQ(doc["matched"], long_flows);
  EXPECT_EQ(doc["min_packets"], 1000);
}

// --- query parsing ---

TEST(QueryTest, FlowQueryDefaultsAndValues) {
  absl::StatusOr<FlowFilter> f = ParseFlowQuery({}, 1000);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->limit, kDefaultFlowLimit);
  EXPECT_EQ(f->min_packets, 1000u);
  EXPECT_FALSE(f->migration_only);
  f = ParseFlowQuery({{"migration", "1"}, {"min_packets", "0"}, {"limit", "100000"}}, 1000);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->migration_only);
  EXPECT_EQ(f->min_packets, 0u);
  EXPECT_EQ(f->limit, 100000u);
}

TEST(QueryTest, BadValuesNameTheParameter) {
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"limit", "abc"}, {"limit", "0"}, {"limit", "100001"}, {"limit", "-1"},
           {"limit", "+5"}, {"limit", ""}, {"min_packets", "x"}, {"migration", "yes"}}) {
    absl::StatusOr<FlowFilter> f = ParseFlowQuery({{name, value}}, 0);
    ASSERT_FALSE(f.ok()) << name << "=" << value;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(f.status().message()), HasSubstr("'" + name + "'"));
  }
  EXPECT_THAT(std::string(ParseFlowQuery({{"limt", "5"}}, 0).status().message()),
              HasSubstr("unknown query parameter 'limt'"));
  EXPECT_FALSE(ParseFlowQuery({{"limit", "5"}, {"limit", "6"}}, 0).ok());
  absl::StatusOr<EvaluationQuery> e = ParseEvaluationQuery({{"ks_window", "500"}}, 7);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ks_window, 500u);
  EXPECT_EQ(e->min_packets, 7u);
  EXPECT_THAT(std::string(ParseEvaluationQuery({{"ks_window", "0"}}, 0).status().message()),
              HasSubstr("'ks_window'"));
}

// --- /api/evaluation ---

TEST(EvaluationJsonTest, ComparesMigrationAndDefaultLikeCompareGroups) {
  const std::string capture = shroud::testing::TestDataPath("migration-r8-light.pcap");
  FlowStore store = StoreFromCapture(capture);
  EvaluationQuery query;
  query.min_packets = 100;
  const nlohmann::json doc = EvaluationJson(AllFlows(store), query);

  // The same groups straight through the evaluation code.
  std::vector<LabelledFlow> labelled;
  for (const StoredFlow& f : AllFlows(store, query.min_packets)) {
    labelled.push_back(LabelledFlow{"", f.record.key, f.record.features, f.record.stream_packets,
                                    f.record.flow_class == MirrorFlowClass::kMigration});
  }
  std::vector<const LabelledFlow*> mig, bg;
  for (const LabelledFlow& f : labelled) (f.is_migration ? mig : bg).push_back(&f);
  ASSERT_FALSE(mig.empty());
  ASSERT_FALSE(bg.empty());
  absl::StatusOr<GroupComparison> want = CompareGroups(mig, bg, FeatureConfig{}, 1000);
  ASSERT_TRUE(want.ok()) << want.status();

  EXPECT_EQ(doc["flows"], labelled.size());
  EXPECT_EQ(doc["groups"]["class"]["migration"]["n"], mig.size());
  EXPECT_EQ(doc["groups"]["class"]["default"]["n"], bg.size());
  const nlohmann::json& c = doc["comparisons"]["migration_vs_default"];
  ASSERT_FALSE(c.contains("error")) << c.dump();
  EXPECT_EQ(c["n_a"], mig.size());
  EXPECT_EQ(c["n_b"], bg.size());
  EXPECT_DOUBLE_EQ(c["chi2"].get<double>(), want->chi_square.statistic);
  EXPECT_DOUBLE_EQ(c["chi2_p"].get<double>(), want->chi_square.p_value);
  EXPECT_EQ(c["df"], want->chi_square.degrees_of_freedom);
  EXPECT_EQ(c["categories_us"].get<std::vector<uint32_t>>(), want->chi_square.categories);
  EXPECT_DOUBLE_EQ(c["ks_d"].get<double>(), want->ks.statistic);
  EXPECT_EQ(c["ks_window"], 1000);

  // The CoV summary of one group at one window, computed by hand.
  std::vector<double> covs;
  const int slot = FeatureConfig{}.WindowSlot(1000);
  for (const LabelledFlow* f : bg) {
    double v = ByteWindowCov(f->features, FeatureConfig{}, slot, f->stream_packets);
    if (!std::isnan(v)) covs.push_back(v);
  }
  ASSERT_FALSE(covs.empty());
  double mean = 0;
  for (double v : covs) mean += v;
  mean /= static_cast<double>(covs.size());
  const nlohmann::json& g = doc["groups"]["class"]["default"]["cov"]["1000"];
  EXPECT_EQ(g["n"], covs.size());
  EXPECT_NEAR(g["mean"].get<double>(), mean, 1e-12);
  std::sort(covs.begin(), covs.end());
  EXPECT_GE(g["median"].get<double>(), covs.front());
  EXPECT_LE(g["median"].get<double>(), covs.back());
  EXPECT_GE(g["stddev"].get<double>(), 0.0);

  // Flagged against not flagged is there too (the capture has both).
  EXPECT_GE(doc["groups"]["verdict"]["flagged"]["n"].get<size_t>(), 1u);
  EXPECT_FALSE(doc["comparisons"]["flagged_vs_not_flagged"].contains("error"))
      << doc["comparisons"]["flagged_vs_not_flagged"].dump();
}

TEST(EvaluationJsonTest, SaysWhenAGroupIsEmpty) {
  const std::string capture = shroud::testing::TestDataPath("migration-r8-light.pcap");
  FlowStore store = StoreFromCapture(capture, /*all_default=*/true);
  EvaluationQuery query;
  query.min_packets = 100;
  const nlohmann::json doc = EvaluationJson(AllFlows(store), query);
  const nlohmann::json& c = doc["comparisons"]["migration_vs_default"];
  ASSERT_TRUE(c.contains("error"));
  EXPECT_THAT(c["error"].get<std::string>(), HasSubstr("needs flows in both groups"));
  EXPECT_EQ(c["n_a"], 0);
  EXPECT_FALSE(c.contains("chi2"));
  EXPECT_EQ(doc["groups"]["class"]["migration"]["n"], 0);
  EXPECT_TRUE(doc["groups"]["class"]["migration"]["cov"]["1000"]["mean"].is_null());

  const nlohmann::json empty = EvaluationJson({}, query);
  EXPECT_EQ(empty["flows"], 0);
  EXPECT_THAT(empty["comparisons"]["flagged_vs_not_flagged"]["error"].get<std::string>(),
              HasSubstr("needs flows in both groups"));

  // A KS window the configuration lacks is reported, not a crash.
  query.ks_window = 999;
  FlowStore mixed = StoreFromCapture(capture);
  const nlohmann::json bad = EvaluationJson(AllFlows(mixed), query);
  EXPECT_THAT(bad["comparisons"]["migration_vs_default"]["error"].get<std::string>(),
              HasSubstr("999"));
}

// --- /metrics ---

// Checks the text exposition format line by line; returns samples by
// "name{labels}".
std::map<std::string, double> ParsePrometheus(const std::string& text) {
  static const std::regex kHelp(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+)");
  static const std::regex kType(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))");
  static const std::regex kSample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? (-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|NaN|[+-]Inf))");
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;
  std::set<std::string> helped;
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  for (absl::string_view line_view : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    const std::string line(line_view);
    std::smatch m;
    if (std::regex_match(line, m, kHelp)) {
      EXPECT_TRUE(helped.insert(m[1]).second) << "second HELP: " << line;
    } else if (std::regex_match(line, m, kType)) {
      EXPECT_TRUE(helped.contains(m[1])) << "TYPE before HELP: " << line;
      EXPECT_TRUE(types.emplace(m[1], m[2]).second) << "second TYPE: " << line;
      if (m[2] == "counter") {
        EXPECT_THAT(std::string(m[1]), ::testing::EndsWith("_total"));
      }
    } else if (std::regex_match(line, m, kSample)) {
      EXPECT_TRUE(types.contains(m[1])) << "sample without TYPE: " << line;
      const std::string id = std::string(m[1]) + std::string(m[2]);
      EXPECT_FALSE(samples.contains(id)) << "duplicate sample: " << line;
      samples[id] = std::strtod(std::string(m[3]).c_str(), nullptr);
    } else {
      ADD_FAILURE() << "not a Prometheus text line: '" << line << "'";
    }
  }
  return samples;
}

TEST(MetricsTextTest, IsPrometheusTextWithTheControlAndMirrorMetrics) {
  ControlMetrics m;
  m.live_flows = 5;
  m.ended_flows = 2;
  m.store.records = 123;
  m.store.detections_pattern = 1;
  m.store.detections_maxent = 2;
  m.store.detections_any = 3;
  m.attached = true;
  m.dataplane_up = true;
  m.rings = {{10, 9, 1}, {20, 20, 0}};
  std::map<std::string, double> s = ParsePrometheus(MetricsText(m));
  EXPECT_EQ(s["shroud_control_flows{state=\"live\"}"], 5);
  EXPECT_EQ(s["shroud_control_flows{state=\"ended\"}"], 2);
  EXPECT_EQ(s["shroud_control_detections_total{detector=\"pattern\"}"], 1);
  EXPECT_EQ(s["shroud_control_detections_total{detector=\"maxent\"}"], 2);
  EXPECT_EQ(s["shroud_control_detections_total{detector=\"any\"}"], 3);
  EXPECT_EQ(s["shroud_control_records_total"], 123);
  EXPECT_EQ(s["shroud_mirror_dropped_total{ring=\"0\"}"], 1);
  EXPECT_EQ(s["shroud_mirror_published_total{ring=\"1\"}"], 20);
  EXPECT_EQ(s["shroud_control_dataplane_up"], 1);
  EXPECT_EQ(s["shroud_dataplane_status_up"], 0);
  EXPECT_FALSE(s.contains("shroud_gateway_rate_bytes_per_second"));

  // With the dataplane's status: its counters become gateway metrics.
  m.gateway_status = nlohmann::json::parse(R"({"ok": true, "version": 1, "status": {
      "mode": "gateway", "uptime_s": 12.5,
      "counters": {"rate_variation": {"rate_bytes_per_sec": 4000000.5, "steps": 7},
                   "inside_to_outside": {"rx_packets": 11, "rx_bytes": 1100},
                   "outside_to_inside": {"rx_packets": 22, "rx_bytes": 2200},
                   "flows": {"active": 3, "created": 4},
                   "shaper": {"migration": {"sent_packets": 9}, "default": {"packets": 8}},
                   "chaff": {"enabled": true, "generated_packets": "not a number"}}}})");
  m.dataplane_up = false;
  s = ParsePrometheus(MetricsText(m));
  EXPECT_EQ(s["shroud_dataplane_status_up"], 1);
  EXPECT_EQ(s["shroud_control_dataplane_up"], 0);
  EXPECT_EQ(s["shroud_gateway_rate_bytes_per_second"], 4000000.5);
  EXPECT_EQ(s["shroud_gateway_rx_packets_total{direction=\"inside\"}"], 11);
  EXPECT_EQ(s["shroud_gateway_rx_packets_total{direction=\"outside\"}"], 22);
  EXPECT_EQ(s["shroud_gateway_shaper_sent_packets_total{class=\"migration\"}"], 9);
  EXPECT_EQ(s["shroud_gateway_shaper_sent_packets_total{class=\"default\"}"], 8);
  EXPECT_EQ(s["shroud_dataplane_flows_active"], 3);
  EXPECT_EQ(s["shroud_dataplane_uptime_seconds"], 12.5);
  EXPECT_FALSE(s.contains("shroud_gateway_chaff_generated_packets_total"));
  EXPECT_FALSE(s.contains("shroud_gateway_tx_packets_total{direction=\"inside\"}"));

  // A status of an unexpected shape yields no gateway metrics, not a crash.
  m.gateway_status = nlohmann::json::parse(R"({"ok": true, "status": 5})");
  s = ParsePrometheus(MetricsText(m));
  EXPECT_EQ(s["shroud_dataplane_status_up"], 1);
}

// --- the HTTP server ---

TEST(ListenAddressTest, ParsesAndClassifies) {
  absl::StatusOr<HttpListenAddress> a = ParseListenAddress("127.0.0.1:9610");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 9610);
  a = ParseListenAddress("[::1]:0");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 0);
  EXPECT_FALSE(ParseListenAddress("9610").ok());
  EXPECT_FALSE(ParseListenAddress(":9610").ok());
  EXPECT_FALSE(ParseListenAddress("127.0.0.1:70000").ok());
  EXPECT_FALSE(ParseListenAddress("127.0.0.1:x").ok());
  EXPECT_FALSE(ParseListenAddress("::1:9610").ok());
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.3.2.1"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("::"));
  EXPECT_FALSE(IsLoopbackHost("192.0.2.1"));
}

// Sends raw bytes and returns the status code of the answer (0 on failure).
int RawRequestStatus(int port, const std::string& request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int status = 0;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    char buf[64] = {};
    if (recv(fd, buf, sizeof buf - 1, 0) > 12) status = std::atoi(buf + 9);  // "HTTP/1.1 413"
  }
  close(fd);
  return status;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_ = std::make_unique<ControlState>(
        FlowStore(testing::ShippedMaxEntModel(), {}), /*default_min_packets=*/0,
        [this]() -> absl::StatusOr<nlohmann::json> {
          if (!gateway_up_) return absl::UnavailableError("no dataplane listening");
          return nlohmann::json{{"ok", true}, {"version", 1},
                                {"status", {{"mode", "gateway"}, {"counters", {{"flows", {{"active", 1}}}}}}}};
        },
        absl::Now());
    ASSERT_TRUE(state_->BeginRun(kRun, FeatureConfig{}, 0, nullptr).ok());
    const std::vector<LabelledFlow> flows =
        shroud::testing::MakeSyntheticStream(11, 3, FeatureConfig{});
    std::vector<MirrorRecord> records;
    for (const LabelledFlow& f : flows) {
      records.push_back(RecordOf(f.key, f.features, f.stream_packets,
                                 f.is_migration ? MirrorFlowClass::kMigration
                                                : MirrorFlowClass::kDefault));
    }
    std::vector<VerdictTransition> transitions;
    state_->Apply(records, 1, &transitions);
    flows_ = flows.size();
    absl::StatusOr<std::unique_ptr<HttpServer>> server =
        HttpServer::Start(HttpListenAddress{"127.0.0.1", 0}, state_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_connection_timeout(5);
    client_->set_read_timeout(10);
  }

  std::unique_ptr<ControlState> state_;
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
  std::atomic<bool> gateway_up_{false};
  size_t flows_ = 0;
};

TEST_F(HttpServerTest, GetRoutesAnswer) {
  // The JSON index of the routes is at /api; / is the dashboard (HTML,
  // tests/dashboard_api_test.cc).
  httplib::Result r = client_->Get("/api");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, HasSubstr("/api/flows"));
  r = client_->Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("text/html"));

  r = client_->Get("/api/flows");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  nlohmann::json doc = nlohmann::json::parse(r->body);
  EXPECT_EQ(doc["flows"].size(), flows_);
  EXPECT_TRUE(doc["flows"][0].contains("maxent"));

  r = client_->Get("/api/flows?migration=1&limit=10");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  doc = nlohmann::json::parse(r->body);
  ASSERT_GE(doc["flows"].size(), 1u);
  for (const auto& f : doc["flows"]) EXPECT_EQ(f["migration"], true);

  r = client_->Get("/api/evaluation?min_packets=100");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  doc = nlohmann::json::parse(r->body);
  EXPECT_TRUE(doc["comparisons"].contains("migration_vs_default"));

  r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("text/plain; version=0.0.4"));
  std::map<std::string, double> samples = ParsePrometheus(r->body);
  EXPECT_EQ(samples["shroud_control_records_total"], static_cast<double>(flows_));
  EXPECT_EQ(samples["shroud_control_flows{state=\"live\"}"], static_cast<double>(flows_));
  EXPECT_GE(samples["shroud_control_detections_total{detector=\"any\"}"], 1);

  r = client_->Head("/api/flows");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpServerTest, GatewayIsProxiedOr503) {
  httplib::Result r = client_->Get("/api/gateway");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_THAT(nlohmann::json::parse(r->body)["error"].get<std::string>(),
              HasSubstr("no dataplane listening"));
  gateway_up_ = true;
  r = client_->Get("/api/gateway");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(nlohmann::json::parse(r->body)["status"]["mode"], "gateway");
  r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(ParsePrometheus(r->body)["shroud_dataplane_flows_active"], 1);
}

TEST_F(HttpServerTest, ErrorsAreJsonWithTheRightStatus) {
  httplib::Result r = client_->Get("/nope");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(nlohmann::json::parse(r->body)["status"], 404);

  r = client_->Get("/api/flows?limit=abc");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_THAT(nlohmann::json::parse(r->body)["error"].get<std::string>(), HasSubstr("'limit'"));
  r = client_->Get("/api/flows?limit=100001");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = client_->Get("/api/evaluation?ks_window=x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);

  r = client_->Post("/api/flows", "{}", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->get_header_value("Allow"), "GET, HEAD");
  EXPECT_EQ(nlohmann::json::parse(r->body)["status"], 405);
  r = client_->Delete("/api/flows");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);

  // Oversized: refused on the declared length, before any body is read.
  EXPECT_EQ(RawRequestStatus(server_->port(),
                             "POST /api/flows HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"),
            413);
  EXPECT_EQ(RawRequestStatus(server_->port(),
                             "GET /api/flows HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n"),
            413);
  // A body within the limit on a GET is tolerated (and ignored).
  EXPECT_EQ(RawRequestStatus(server_->port(),
                             "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"),
            200);
  // The server still serves after all that.
  r = client_->Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(HttpServerStartTest, APortInUseIsAnError) {
  ControlState state(FlowStore(testing::ShippedMaxEntModel(), {}), 0, nullptr, absl::Now());
  absl::StatusOr<std::unique_ptr<HttpServer>> first =
      HttpServer::Start(HttpListenAddress{"127.0.0.1", 0}, &state);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<HttpServer>> second =
      HttpServer::Start(HttpListenAddress{"127.0.0.1", (*first)->port()}, &state);
  EXPECT_FALSE(second.ok());
  // No gateway function: /api/gateway is 503, not a crash.
  httplib::Client client("127.0.0.1", (*first)->port());
  httplib::Result r = client.Get("/api/gateway");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
}

}  // namespace
}  // namespace shroud::control
