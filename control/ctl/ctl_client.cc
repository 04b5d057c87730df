#include "control/ctl/ctl_client.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <string_view>
#include <thread>

#include "absl/strings/str_cat.h"
#include "shroud/ctl_protocol.h"

namespace shroud {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Closes the socket however CtlCall returns.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Milliseconds left until `deadline` (0 when past), for poll().
int MsLeft(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left, 1 << 30));
}

// Waits for `events` on `fd` until the deadline; false on timeout.
bool WaitFor(int fd, short events, Clock::time_point deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, MsLeft(deadline));
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return true;  // let the following call report it
  }
}

absl::Status ConnectError(int err, const std::string& path) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::UnavailableError(
          absl::StrCat("no dataplane listening at ", path, ": is shroud-dataplane running?"));
    case ECONNREFUSED:
      return absl::UnavailableError(absl::StrCat(
          "no dataplane listening at ", path,
          " (a stale socket of one that stopped): is shroud-dataplane running?"));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(
          absl::StrCat("permission denied: run as the dataplane's user (", path, ")"));
    default:
      return absl::UnavailableError(
          absl::StrCat("cannot connect to the dataplane at ", path, ": ", std::strerror(err)));
  }
}

std::string TimeoutText(absl::Duration timeout) { return absl::FormatDuration(timeout); }


}  // namespace

absl::StatusOr<json> CtlCall(const std::string& socket_path, const json& request,
                             absl::Duration timeout) {
  if (!request.is_object()) {
    return absl::InvalidArgumentError("a control request must be a JSON object");
  }
  std::string line;
  try {
    line = request.dump(-1, ' ', false, json::error_handler_t::replace);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot encode the request: ", e.what()));
  }
  if (line.size() > kCtlMaxRequestBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request too large: ", line.size(),
                                                   " bytes (max ", kCtlMaxRequestBytes, ")"));
  }
  line += '\n';

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("control socket path \"", socket_path,
                                                   "\": must be 1 to ", sizeof(addr.sun_path) - 1,
                                                   " bytes"));
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  const Clock::time_point deadline =
      Clock::now() + std::chrono::nanoseconds(absl::ToInt64Nanoseconds(timeout));

  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  // A unix-socket connect completes at once or fails; EAGAIN means the
  // server's backlog is full, which clears as it accepts.
  while (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (MsLeft(deadline) == 0) {
        return absl::DeadlineExceededError(absl::StrCat(
            "the dataplane at ", socket_path, " accepted no connection within ",
            TimeoutText(timeout)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    if (errno == EINPROGRESS) {
      if (!WaitFor(fd.get(), POLLOUT, deadline)) {
        return absl::DeadlineExceededError(absl::StrCat(
            "connecting to the dataplane at ", socket_path, " timed out after ",
            TimeoutText(timeout)));
      }
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return ConnectError(err, socket_path);
      break;
    }
    return ConnectError(errno, socket_path);
  }

  // Send the request. A server that refuses us (too many connections, not
  // our uid) answers and closes at once, so a failed send is no reason to
  // give up before reading what it said.
  size_t sent = 0;
  bool send_failed = false;
  while (sent < line.size()) {
    const ssize_t n = ::send(fd.get(), line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!WaitFor(fd.get(), POLLOUT, deadline)) {
        return absl::DeadlineExceededError(absl::StrCat(
            "the dataplane at ", socket_path, " took no request within ", TimeoutText(timeout)));
      }
      continue;
    }
    send_failed = true;
    break;
  }

  std::string response;
  char buffer[16384];
  size_t newline = std::string::npos;
  while (newline == std::string::npos) {
    const ssize_t n = ::recv(fd.get(), buffer, sizeof(buffer), 0);
    if (n > 0) {
      const size_t old = response.size();
      response.append(buffer, static_cast<size_t>(n));
      newline = response.find('\n', old);
      if (newline == std::string::npos && response.size() > kCtlMaxResponseBytes) {
        return absl::DataLossError(absl::StrCat("the dataplane at ", socket_path,
                                                " sent a response over ", kCtlMaxResponseBytes,
                                                " bytes without a line end"));
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!WaitFor(fd.get(), POLLIN, deadline)) {
        return absl::DeadlineExceededError(absl::StrCat(
            "no answer from the dataplane at ", socket_path, " within ", TimeoutText(timeout),
            " (is its main loop stuck?)"));
      }
      continue;
    }
    // EOF or a reset before a whole line.
    return absl::UnavailableError(absl::StrCat(
        "the dataplane at ", socket_path, " closed the connection without answering",
        send_failed ? " (it did not take the request)" : "",
        n < 0 ? absl::StrCat(": ", std::strerror(errno)) : std::string()));
  }
  response.resize(newline);

  json parsed;
  try {
    parsed = json::parse(response);
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("malformed response from the dataplane at ",
                                            socket_path, ": ", CleanJsonError(e.what())));
  }
  if (!parsed.is_object() || !parsed.contains("ok") || !parsed["ok"].is_boolean()) {
    return absl::DataLossError(absl::StrCat("malformed response from the dataplane at ",
                                            socket_path, ": not an object with a boolean \"ok\""));
  }
  auto version = parsed.find("version");
  if (version == parsed.end() || !version->is_number_integer() ||
      version->get<int64_t>() != kCtlProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the dataplane at ", socket_path, " speaks control protocol version ",
        version == parsed.end() ? std::string("(none)") : version->dump(), ", this client ",
        kCtlProtocolVersion, ": use the shroud binary of the same release"));
  }
  return parsed;
}

}  // namespace shroud
