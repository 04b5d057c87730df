// The control channel end to end in one process: CtlServer polled on a
// thread (or by the test itself), CtlCall and raw sockets as clients.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "control/ctl/ctl_client.h"
#include "dataplane/ctl_server.h"
#include "shroud/ctl_protocol.h"
#include "tests/test_util.h"

namespace shroud {
namespace {

using json = nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// A connected client socket, or -1 with errno set.
int Connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  timeval tv{5, 0};  // a broken server must fail the test, not hang it
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// One response line (without "\n"); "" on EOF or timeout. `poll` (if set)
// runs while waiting, for tests that serve from their own thread.
std::string ReadLine(int fd, CtlServer* poll = nullptr) {
  std::string line;
  char c;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    const ssize_t n = ::recv(fd, &c, 1, poll != nullptr ? MSG_DONTWAIT : 0);
    if (n == 1) {
      if (c == '\n') return line;
      line += c;
      continue;
    }
    if (n == 0) return line;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return line;
    if (poll != nullptr) poll->Poll(5);
  }
  return line;
}

// True when the peer closed (EOF) within 5 s.
bool SeesEof(int fd, CtlServer* poll = nullptr) {
  char c;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    const ssize_t n = ::recv(fd, &c, 1, poll != nullptr ? MSG_DONTWAIT : 0);
    if (n == 0) return true;
    if (n < 0 && errno == ECONNRESET) return true;
    if (n > 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return false;
    if (poll != nullptr) poll->Poll(5);
  }
  return false;
}

json Handler(const json& request) {
  const std::string cmd = request["cmd"];
  if (cmd == "ping") return {{"pong", true}};
  if (cmd == "get") return {{"echo", request}};
  if (cmd == "set") {
    if (request["values"].contains("fail")) return {{"ok", false}, {"error", "x: refused"}};
    if (request["values"].contains("throw")) throw std::runtime_error("boom");
    return {{"applied", request["values"]}};
  }
  if (cmd == "reload") return json::array();  // a broken handler
  return {{"status", {{"instance", "test"}}}};
}

class CtlChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    path_ = dir_ + "/ctl.sock";
  }
  void TearDown() override {
    StopThread();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Listen() {
    absl::StatusOr<std::unique_ptr<CtlServer>> s = CtlServer::Listen(path_, Handler);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
  }
  // Serves from a thread, so blocking clients (CtlCall) get answers.
  void StartThread() {
    stop_ = false;
    thread_ = std::thread([this] {
      while (!stop_.load()) server_->Poll(10);
    });
  }
  void StopThread() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  json Call(const json& request) {
    absl::StatusOr<json> r = CtlCall(path_, request);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : json();
  }

  std::string dir_;
  std::string path_;
  std::unique_ptr<CtlServer> server_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

TEST_F(CtlChannelTest, PingAndHandlerEcho) {
  Listen();
  StartThread();
  json r = Call({{"cmd", "ping"}});
  EXPECT_EQ(r, json({{"ok", true}, {"version", 1}, {"pong", true}}));
  const json set = {{"cmd", "set"}, {"values", {{"rate_variation.window", 50}, {"a", "b"}}}};
  r = Call(set);
  EXPECT_EQ(r["ok"], true);
  EXPECT_EQ(r["applied"], set["values"]);
  r = Call({{"cmd", "get"}});
  EXPECT_EQ(r["echo"], json({{"cmd", "get"}}));
  // The handler's own ok false passes through, with the version added.
  r = Call({{"cmd", "set"}, {"values", {{"fail", 1}}}});
  EXPECT_EQ(r, json({{"ok", false}, {"version", 1}, {"error", "x: refused"}}));
  // A handler that throws or answers garbage does not take the server down.
  r = Call({{"cmd", "set"}, {"values", {{"throw", 1}}}});
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["error"], "internal error: boom");
  r = Call({{"cmd", "reload"}});
  EXPECT_THAT(r["error"].get<std::string>(), StartsWith("internal error"));
  EXPECT_EQ(Call({{"cmd", "status"}})["status"]["instance"], "test");
  StopThread();
  EXPECT_EQ(server_->requests(), 7u);
  EXPECT_EQ(server_->errors(), 3u);
}

TEST_F(CtlChannelTest, BadRequestsAreAnswered) {
  Listen();
  StartThread();
  auto error = [&](const json& request) { return Call(request).value("error", std::string()); };
  EXPECT_THAT(error({{"cmd", "dance"}}),
              AllOf(HasSubstr("unknown cmd \"dance\""), HasSubstr("status, get, set, reload, ping")));
  EXPECT_THAT(error({{"cmd", "ping"}, {"x", 1}}),
              HasSubstr("unexpected key \"x\" in a ping request"));
  EXPECT_THAT(error({{"cmd", 1}}), HasSubstr("needs \"cmd\""));
  EXPECT_THAT(error({{"command", "ping"}}), HasSubstr("needs \"cmd\""));
  EXPECT_THAT(error({{"cmd", "set"}}), HasSubstr("set needs \"values\""));
  EXPECT_THAT(error({{"cmd", "set"}, {"values", {1, 2}}}), HasSubstr("set needs \"values\""));

  // What CtlCall cannot send, over a raw socket: several lines in one go,
  // answered in order.
  const int fd = Connect(path_);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_TRUE(SendAll(fd, "{nope\n[1,2]\n\n  \r\n{\"cmd\":\"ping\"}\r\n\"x\"\n"));
  json r = json::parse(ReadLine(fd));
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["version"], 1);
  EXPECT_THAT(r["error"].get<std::string>(), StartsWith("malformed JSON: parse error at line 1"));
  EXPECT_THAT(json::parse(ReadLine(fd))["error"].get<std::string>(),
              HasSubstr("must be a JSON object"));
  EXPECT_EQ(json::parse(ReadLine(fd))["pong"], true);
  EXPECT_THAT(json::parse(ReadLine(fd))["error"].get<std::string>(), HasSubstr("got string"));
  // Invalid UTF-8 is answered, not a crash.
  ASSERT_TRUE(SendAll(fd, "{\"cmd\":\"\xff\xfe\"}\n"));
  r = json::parse(ReadLine(fd));
  EXPECT_EQ(r["ok"], false);
  // A last request without "\n", then a half-close: answered, then EOF.
  ASSERT_TRUE(SendAll(fd, "{\"cmd\":\"ping\"}"));
  ::shutdown(fd, SHUT_WR);
  EXPECT_EQ(json::parse(ReadLine(fd))["pong"], true);
  EXPECT_TRUE(SeesEof(fd));
  ::close(fd);
}

TEST_F(CtlChannelTest, OversizedLineIsRefusedAndTheServerGoesOn) {
  Listen();
  StartThread();
  const int fd = Connect(path_);
  ASSERT_GE(fd, 0);
  // Sent whole: the server drains what it refused, so this does not block.
  ASSERT_TRUE(SendAll(fd, std::string(70000, 'a') + "\n{\"cmd\":\"ping\"}\n"));
  const json r = json::parse(ReadLine(fd));
  EXPECT_EQ(r, json({{"ok", false}, {"version", 1},
                     {"error", "request too large (max 65536 bytes)"}}));
  EXPECT_TRUE(SeesEof(fd));  // and nothing after it: the ping was never read as one
  ::close(fd);
  // The next client is served. A line of exactly the limit is fine.
  std::string line = "{\"cmd\":\"ping\"}";
  line.resize(kCtlMaxRequestBytes, ' ');
  const int fd2 = Connect(path_);
  ASSERT_TRUE(SendAll(fd2, line + "\n"));
  EXPECT_EQ(json::parse(ReadLine(fd2))["pong"], true);
  ::close(fd2);
  EXPECT_EQ(Call({{"cmd", "ping"}})["pong"], true);
  // Over the limit without any newline at all.
  const int fd3 = Connect(path_);
  SendAll(fd3, std::string(kCtlMaxRequestBytes + 1, '{'));
  EXPECT_THAT(ReadLine(fd3), HasSubstr("request too large"));
  ::close(fd3);
  EXPECT_EQ(Call({{"cmd", "ping"}})["pong"], true);
}

TEST_F(CtlChannelTest, SeventeenConnections) {
  Listen();
  // Served from this thread, so the order of events is exact.
  std::vector<int> fds;
  for (size_t i = 0; i < kCtlMaxConnections; ++i) {
    fds.push_back(Connect(path_));
    ASSERT_GE(fds.back(), 0);
  }
  for (int i = 0; i < 10 && server_->connections() < kCtlMaxConnections; ++i) server_->Poll(10);
  ASSERT_EQ(server_->connections(), kCtlMaxConnections);
  const int extra = Connect(path_);
  ASSERT_GE(extra, 0);
  const json refused = json::parse(ReadLine(extra, server_.get()));
  EXPECT_EQ(refused["ok"], false);
  EXPECT_THAT(refused["error"].get<std::string>(), HasSubstr("too many control connections (max 16)"));
  EXPECT_TRUE(SeesEof(extra, server_.get()));
  ::close(extra);
  // All sixteen are served, concurrently.
  for (int fd : fds) ASSERT_TRUE(SendAll(fd, "{\"cmd\":\"ping\"}\n"));
  for (int fd : fds) EXPECT_EQ(json::parse(ReadLine(fd, server_.get()))["pong"], true);
  // A slot freed is a slot for the next client.
  ::close(fds.back());
  fds.pop_back();
  for (int i = 0; i < 10 && server_->connections() == kCtlMaxConnections; ++i) server_->Poll(10);
  EXPECT_EQ(server_->connections(), kCtlMaxConnections - 1);
  const int next = Connect(path_);
  ASSERT_TRUE(SendAll(next, "{\"cmd\":\"ping\"}\n"));
  EXPECT_EQ(json::parse(ReadLine(next, server_.get()))["pong"], true);
  ::close(next);
  for (int fd : fds) ::close(fd);
  for (int i = 0; i < 10 && server_->connections() > 0; ++i) server_->Poll(10);
  EXPECT_EQ(server_->connections(), 0u);
}

TEST_F(CtlChannelTest, SocketFile) {
  Listen();
  struct stat st {};
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // A second server on the same path would cut the first off: refused.
  absl::StatusOr<std::unique_ptr<CtlServer>> second = CtlServer::Listen(path_, Handler);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(second.status().message(), HasSubstr("--instance"));
  // Gone with the server.
  server_.reset();
  EXPECT_NE(::lstat(path_.c_str(), &st), 0);

  // A stale socket (nobody accepting) is replaced.
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(fd);
  }
  absl::StatusOr<json> stale = CtlCall(path_, {{"cmd", "ping"}});
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(stale.status().message(), HasSubstr("stale socket"));
  Listen();
  StartThread();
  EXPECT_EQ(Call({{"cmd", "ping"}})["pong"], true);
  StopThread();
  server_.reset();

  // Anything else at the path is left alone.
  std::ofstream(path_) << "keep me";
  absl::StatusOr<std::unique_ptr<CtlServer>> file = CtlServer::Listen(path_, Handler);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(file.status().message(), HasSubstr("is not a socket"));
  std::ifstream in(path_);
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "keep me");

  const std::string too_long = dir_ + "/" + std::string(120, 's');
  EXPECT_THAT(CtlServer::Listen(too_long, Handler).status().message(), HasSubstr("unix socket limit"));
}

TEST_F(CtlChannelTest, ClientErrors) {
  absl::StatusOr<json> r = CtlCall(path_, {{"cmd", "ping"}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(r.status().message(),
            "no dataplane listening at " + path_ + ": is shroud-dataplane running?");
  EXPECT_EQ(CtlCall(path_, json::array()).status().code(), absl::StatusCode::kInvalidArgument);
  r = CtlCall(path_, {{"cmd", "set"}, {"values", {{"x", std::string(70000, 'x')}}}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("request too large"));

  // Fake servers: one that never answers, ones that answer nonsense.
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  const auto start = std::chrono::steady_clock::now();
  r = CtlCall(path_, {{"cmd", "ping"}}, absl::Milliseconds(200));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("no answer from the dataplane"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  const int pending = ::accept(listener, nullptr, nullptr);  // the timed-out one
  ::close(pending);

  auto answer_with = [&](const std::string& reply) {
    std::thread fake([&] {
      const int fd = ::accept(listener, nullptr, nullptr);
      char buffer[256];
      (void)::recv(fd, buffer, sizeof(buffer), 0);
      SendAll(fd, reply);
      ::close(fd);
    });
    absl::StatusOr<json> result = CtlCall(path_, {{"cmd", "ping"}});
    fake.join();
    return result;
  };
  r = answer_with("hello\n");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("malformed response from the dataplane"));
  r = answer_with("[1]\n");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  r = answer_with("{\"ok\":true,\"version\":2}\n");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("protocol version 2"));
  r = answer_with("{\"ok\":true");  // then EOF
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("closed the connection without answering"));
  r = answer_with("{\"ok\":false,\"version\":1,\"error\":\"no\"}\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)["error"], "no");
  ::close(listener);
}

// Another user is refused twice over: by the socket's mode, and (should the
// mode be loosened) by the server's SO_PEERCRED check.
TEST_F(CtlChannelTest, OtherUsersAreRefused) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root: the test forks a child that switches to uid 65534 (nobody); "
                    "run as root (e.g. sudo meson test ctl_channel) to cover the peer check";
  }
  Listen();
  // The temporary directory is 0700 (mkdtemp); let the child reach the
  // socket so that the socket's own mode is what stops it.
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);

  // Child: 0 on the expected outcome, another code per failure. Only system
  // calls and CtlCall; no gtest in the child.
  auto run_child = [&](bool expect_connect_refused) -> int {
    const pid_t pid = ::fork();
    if (pid == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(10);
      const int fd = Connect(path_);
      if (expect_connect_refused) {
        if (fd >= 0) _exit(11);
        if (errno != EACCES) _exit(12);
        absl::StatusOr<json> r = CtlCall(path_, {{"cmd", "ping"}}, absl::Seconds(2));
        if (r.status().code() != absl::StatusCode::kPermissionDenied) _exit(13);
        if (std::string(r.status().message()).find("permission denied: run as the dataplane's user") ==
            std::string::npos) {
          _exit(14);
        }
        _exit(0);
      }
      if (fd < 0) _exit(20);
      char buffer[512] = {};
      const ssize_t n = ::recv(fd, buffer, sizeof(buffer) - 1, MSG_WAITALL);
      if (n <= 0) _exit(21);
      if (std::strstr(buffer, "\"error\":\"permission denied\"") == nullptr) _exit(22);
      if (std::strstr(buffer, "\"ok\":false") == nullptr) _exit(23);
      _exit(0);
    }
    // Parent: serve until the child is done.
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        return -1;
      }
      server_->Poll(5);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -2;
  };

  EXPECT_EQ(run_child(/*expect_connect_refused=*/true), 0);
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  const uint64_t errors_before = server_->errors();
  EXPECT_EQ(run_child(/*expect_connect_refused=*/false), 0);
  EXPECT_EQ(server_->errors(), errors_before + 1);
  EXPECT_EQ(server_->connections(), 0u);
  // Root (us) is still served.
  const int fd = Connect(path_);
  ASSERT_TRUE(SendAll(fd, "{\"cmd\":\"ping\"}\n"));
  EXPECT_EQ(json::parse(ReadLine(fd, server_.get()))["pong"], true);
  ::close(fd);
}

}  // namespace
}  // namespace shroud
