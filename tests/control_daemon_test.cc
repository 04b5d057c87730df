// shroud-control as a process: a MirrorWriter in this process plays the
// dataplane in a temporary runtime directory; the daemon (SHROUD_CONTROL)
// must find the mirror by itself, serve the flows over HTTP on loopback,
// notice the dataplane's stop and restart, and exit cleanly on SIGTERM.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "control/daemon/api.h"
#include "control/daemon/flow_store.h"
#include "dataplane/mirror_writer.h"
#include "shroud/runtime_paths.h"
#include "tests/control_fixtures.h"
#include "tests/synthetic_flows.h"
#include "tests/test_util.h"

namespace shroud::control {
namespace {

using ::testing::HasSubstr;

uint64_t UnixNowNs() { return static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())); }

bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "no free loopback port";
  }
  close(fd);
  return ntohs(addr.sin_port);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

size_t CountOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

// shroud-control as a child process; its stderr goes to `log`.
class Daemon {
 public:
  Daemon(const std::vector<std::string>& args, const std::string& log) : log_(log) {
    const char* binary = std::getenv("SHROUD_CONTROL");
    std::vector<std::string> argv_storage = {binary != nullptr ? binary : "shroud-control"};
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    pid_ = fork();
    if (pid_ == 0) {
      FILE* f = std::freopen(log.c_str(), "w", stderr);
      (void)f;
      std::vector<char*> argv;
      for (std::string& a : argv_storage) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~Daemon() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // Waits up to `timeout` for the exit; its status, or -1 (then killed).
  int Wait(std::chrono::milliseconds timeout) {
    int status = 0;
    const bool exited = WaitFor([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
    if (!exited) return -1;
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  int Terminate() {
    kill(pid_, SIGTERM);
    return Wait(std::chrono::seconds(10));
  }
  std::string Log() const { return ReadFile(log_); }

 private:
  std::string log_;
  pid_t pid_ = -1;
};

// The dataplane's side: a mirror file with a heartbeat while it lives.
class FakeDataplane {
 public:
  explicit FakeDataplane(const std::string& path, uint32_t rings = 2) {
    MirrorWriterOptions options;
    options.path = path;
    options.rings = rings;
    options.ring_capacity = 64;
    options.mode = MirrorMode::kGateway;
    options.instance = "default";
    absl::StatusOr<std::unique_ptr<MirrorWriter>> w = MirrorWriter::Create(options);
    EXPECT_TRUE(w.ok()) << w.status();
    if (!w.ok()) return;
    writer_ = *std::move(w);
    writer_->Heartbeat(UnixNowNs());
    writer_->SetState(MirrorState::kRunning);
    heartbeat_ = std::thread([this] {
      while (!stop_.load()) {
        writer_->Heartbeat(UnixNowNs());
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }
  // Stops cleanly: the writer marks the mirror stopped.
  ~FakeDataplane() {
    stop_.store(true);
    if (heartbeat_.joinable()) heartbeat_.join();
  }
  bool Write(const MirrorRecord& r) { return writer_->producer(r.worker).TryWrite(r); }
  uint64_t run_id() const { return writer_->header().run_id; }
  bool ok() const { return writer_ != nullptr; }

 private:
  std::unique_ptr<MirrorWriter> writer_;
  std::atomic<bool> stop_{false};
  std::thread heartbeat_;
};

// What /api/flows must say about `r` (run and times do not show).
nlohmann::json ExpectedJson(const MirrorRecord& r, bool ended, bool* flagged = nullptr) {
  FlowStore store(testing::ShippedMaxEntModel(), {});
  EXPECT_TRUE(store.BeginRun(1, FeatureConfig{}, 0).ok());
  store.Apply(r, 1);
  if (ended) store.EndRun(1, 2);
  const StoredFlow* f = store.Find({1, r.worker, r.key});
  if (flagged != nullptr) *flagged = f->verdict.migration;
  return nlohmann::json::parse(FlowJson(*f).dump());
}

std::string FlowId(const nlohmann::json& row) {
  return absl::StrCat(row["flow"].get<std::string>(), "@", row["worker"].get<int>());
}

class ControlDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv("SHROUD_CONTROL") == nullptr) {
      GTEST_SKIP() << "SHROUD_CONTROL (the shroud-control binary) not set; run under meson test";
    }
    dir_ = shroud::testing::MakeTempDir();
    absl::StatusOr<RuntimePaths> paths = ResolveRuntimePaths(dir_ + "/run", "default");
    ASSERT_TRUE(paths.ok()) << paths.status();
    paths_ = *paths;
    flows_ = shroud::testing::MakeSyntheticStream(11, 3, FeatureConfig{});
    ASSERT_GE(flows_.size(), 3u);
  }

  // /api/flows?min_packets=0 by "flow@worker", or nullopt when not answering.
  std::optional<std::map<std::string, nlohmann::json>> Flows(httplib::Client& client) {
    httplib::Result r = client.Get("/api/flows?min_packets=0");
    if (!r || r->status != 200) return std::nullopt;
    std::map<std::string, nlohmann::json> out;
    const nlohmann::json doc = nlohmann::json::parse(r->body);
    for (const auto& row : doc["flows"]) out[FlowId(row)] = row;
    return out;
  }

  std::string Metrics(httplib::Client& client) {
    httplib::Result r = client.Get("/metrics");
    return r && r->status == 200 ? r->body : "";
  }

  std::string dir_;
  RuntimePaths paths_;
  std::vector<LabelledFlow> flows_;
};

TEST_F(ControlDaemonTest, FindsTheMirrorServesFlowsAndFollowsARestart) {
  const int port = FreeLoopbackPort();
  Daemon daemon({"--runtime_dir=" + dir_ + "/run", absl::StrCat("--http=127.0.0.1:", port),
                 "--min_packets=0", "--poll_interval_ms=5", "--duration_s=100"},
                dir_ + "/control.log");
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2);
  client.set_read_timeout(5);
  ASSERT_TRUE(WaitFor([&] { return client.Get("/").operator bool(); }, std::chrono::seconds(10)))
      << daemon.Log();
  // No dataplane yet: it says where it waits.
  ASSERT_TRUE(WaitFor([&] { return daemon.Log().find("waiting for shroud-dataplane at " +
                                                      paths_.mirror) != std::string::npos; },
                      std::chrono::seconds(5)))
      << daemon.Log();
  EXPECT_EQ(Flows(client)->size(), 0u);

  // The dataplane appears: the migration flow on ring 0, the others on ring 1.
  ASSERT_TRUE(PrepareRuntimeDir(paths_).ok());
  std::map<std::string, nlohmann::json> expected;
  size_t flagged_run1 = 0;
  auto dataplane = std::make_unique<FakeDataplane>(paths_.mirror);
  ASSERT_TRUE(dataplane->ok());
  size_t ring0 = 0;
  for (const LabelledFlow& f : flows_) {
    const uint8_t worker = f.is_migration ? 0 : 1;
    ring0 += worker == 0 ? 1 : 0;
    MirrorRecord r = testing::MirrorRecordOf(f, MirrorRecordType::kUpdate, worker);
    ASSERT_TRUE(dataplane->Write(r));
    bool flagged = false;
    nlohmann::json want = ExpectedJson(r, /*ended=*/false, &flagged);
    flagged_run1 += flagged ? 1 : 0;
    expected[FlowId(want)] = want;
  }
  ASSERT_GE(flagged_run1, 1u);
  ASSERT_TRUE(WaitFor([&] { auto f = Flows(client); return f && f->size() == flows_.size(); },
                      std::chrono::seconds(10)))
      << daemon.Log();
  std::map<std::string, nlohmann::json> got = *Flows(client);
  EXPECT_EQ(got, expected);

  std::string metrics = Metrics(client);
  EXPECT_THAT(metrics, HasSubstr(absl::StrCat("\nshroud_control_records_total ", flows_.size(), "\n")));
  EXPECT_THAT(metrics, HasSubstr(absl::StrCat("\nshroud_mirror_published_total{ring=\"0\"} ", ring0, "\n")));
  EXPECT_THAT(metrics, HasSubstr("\nshroud_mirror_dropped_total{ring=\"1\"} 0\n"));
  EXPECT_THAT(metrics, HasSubstr("\nshroud_control_dataplane_up 1\n"));
  EXPECT_THAT(metrics, HasSubstr(absl::StrCat("\nshroud_control_detections_total{detector=\"any\"} ",
                                              flagged_run1, "\n")));
  EXPECT_THAT(metrics, HasSubstr("\nshroud_control_mirror_attaches_total 1\n"));
  httplib::Result migration_only = client.Get("/api/flows?migration=1&min_packets=0");
  ASSERT_TRUE(migration_only);
  EXPECT_EQ(nlohmann::json::parse(migration_only->body)["flows"].size(), flagged_run1);

  // The dataplane stops cleanly: its flows end.
  dataplane.reset();
  ASSERT_TRUE(WaitFor([&] {
    auto f = Flows(client);
    if (!f || f->size() != flows_.size()) return false;
    for (const auto& [id, row] : *f) {
      if (row["state"] != "ended") return false;
    }
    return true;
  }, std::chrono::seconds(10))) << daemon.Log();
  EXPECT_THAT(Metrics(client), HasSubstr("\nshroud_control_dataplane_up 0\n"));

  // It restarts (a new file renamed over the path, a new run): the daemon
  // attaches by itself; the migration flow of the new run is a new flow.
  dataplane = std::make_unique<FakeDataplane>(paths_.mirror);
  ASSERT_TRUE(dataplane->ok());
  const LabelledFlow* migration = nullptr;
  for (const LabelledFlow& f : flows_) {
    if (f.is_migration) migration = &f;
  }
  ASSERT_NE(migration, nullptr);
  MirrorRecord again = testing::MirrorRecordOf(*migration, MirrorRecordType::kUpdate, 1);  // now on worker 1
  LabelledFlow other = flows_.back();
  other.key.src_port = 4242;
  other.is_migration = false;
  MirrorRecord fresh = testing::MirrorRecordOf(other, MirrorRecordType::kUpdate, 0);
  ASSERT_TRUE(dataplane->Write(again));
  ASSERT_TRUE(dataplane->Write(fresh));
  ASSERT_TRUE(WaitFor([&] { auto f = Flows(client); return f && f->size() == flows_.size() + 2; },
                      std::chrono::seconds(10)))
      << daemon.Log();
  got = *Flows(client);
  bool again_flagged = false, fresh_flagged = false;
  EXPECT_EQ(got[FlowId(ExpectedJson(again, false))], ExpectedJson(again, false, &again_flagged));
  EXPECT_EQ(got[FlowId(ExpectedJson(fresh, false))], ExpectedJson(fresh, false, &fresh_flagged));
  size_t live = 0;
  for (const auto& [id, row] : got) live += row["state"] == "live" ? 1 : 0;
  EXPECT_EQ(live, 2u);
  metrics = Metrics(client);
  EXPECT_THAT(metrics, HasSubstr("\nshroud_control_mirror_attaches_total 2\n"));
  EXPECT_THAT(metrics, HasSubstr("\nshroud_control_dataplane_up 1\n"));

  EXPECT_EQ(daemon.Terminate(), 0) << daemon.Log();
  const std::string log = daemon.Log();
  EXPECT_EQ(CountOf(log, "DETECTION flow="),
            flagged_run1 + (again_flagged ? 1 : 0) + (fresh_flagged ? 1 : 0))
      << log;
  EXPECT_EQ(CountOf(log, "attached to " + paths_.mirror), 2u) << log;
  EXPECT_THAT(log, HasSubstr("stopped cleanly"));
  EXPECT_THAT(log, HasSubstr("detached from run"));
}

TEST_F(ControlDaemonTest, ExitsWhenTheDataplaneStopsAndWritesFlowsJson) {
  ASSERT_TRUE(PrepareRuntimeDir(paths_).ok());
  nlohmann::json expected = nlohmann::json::array();
  {
    FakeDataplane dataplane(paths_.mirror, 1);
    ASSERT_TRUE(dataplane.ok());
    for (const LabelledFlow& f : flows_) {
      MirrorRecord r = testing::MirrorRecordOf(f, MirrorRecordType::kUpdate, 0);
      ASSERT_TRUE(dataplane.Write(r));
      // --flows_json applies --min_packets as `shroud analyze` does.
      if (f.features.packets >= 1000) expected.push_back(ExpectedJson(r, /*ended=*/true));
    }
    // A short flow that --min_packets must leave out.
    LabelledFlow short_flow = flows_.back();
    short_flow.key.src_port = 4343;
    short_flow.features.packets = 999;
    ASSERT_TRUE(dataplane.Write(testing::MirrorRecordOf(short_flow, MirrorRecordType::kUpdate, 0)));
  }  // stopped, the records still in the ring
  ASSERT_GE(expected.size(), 1u);
  const std::string out = dir_ + "/flows.json";
  Daemon daemon({"--runtime_dir=" + dir_ + "/run", "--http=off", "--exit_when_dataplane_stops",
                 "--flows_json=" + out, "--min_packets=1000", "--duration_s=60"},
                dir_ + "/control.log");
  ASSERT_EQ(daemon.Wait(std::chrono::seconds(20)), 0) << daemon.Log();
  const nlohmann::json doc = nlohmann::json::parse(ReadFile(out));
  std::map<std::string, nlohmann::json> got, want;
  for (const auto& row : doc["flows"]) got[FlowId(row)] = row;
  for (const auto& row : expected) want[FlowId(row)] = row;
  EXPECT_EQ(got, want);
  EXPECT_THAT(daemon.Log(), HasSubstr("HTTP API disabled"));
}

TEST_F(ControlDaemonTest, ARestartedDaemonResumesFromTheRingTails) {
  ASSERT_TRUE(PrepareRuntimeDir(paths_).ok());
  FakeDataplane dataplane(paths_.mirror, 1);
  ASSERT_TRUE(dataplane.ok());
  ASSERT_TRUE(dataplane.Write(testing::MirrorRecordOf(flows_[0], MirrorRecordType::kUpdate, 0)));
  ASSERT_TRUE(dataplane.Write(testing::MirrorRecordOf(flows_[1], MirrorRecordType::kUpdate, 0)));
  const int port = FreeLoopbackPort();
  const std::vector<std::string> args = {"--runtime_dir=" + dir_ + "/run",
                                         absl::StrCat("--http=127.0.0.1:", port),
                                         "--min_packets=0", "--poll_interval_ms=5",
                                         "--duration_s=60"};
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2);
  client.set_read_timeout(5);
  {
    Daemon first(args, dir_ + "/first.log");
    ASSERT_TRUE(WaitFor([&] { auto f = Flows(client); return f && f->size() == 2; },
                        std::chrono::seconds(10)))
        << first.Log();
    ASSERT_EQ(first.Terminate(), 0) << first.Log();
  }
  ASSERT_TRUE(dataplane.Write(testing::MirrorRecordOf(flows_[2], MirrorRecordType::kUpdate, 0)));
  Daemon second(args, dir_ + "/second.log");
  ASSERT_TRUE(WaitFor([&] { auto f = Flows(client); return f && !f->empty(); },
                      std::chrono::seconds(10)))
      << second.Log();
  // Only what the first daemon had not read.
  std::map<std::string, nlohmann::json> got = *Flows(client);
  ASSERT_EQ(got.size(), 1u) << second.Log();
  EXPECT_EQ(got.begin()->second["flow"], FormatFlowKey(flows_[2].key));
  EXPECT_EQ(second.Terminate(), 0) << second.Log();
}

}  // namespace
}  // namespace shroud::control
