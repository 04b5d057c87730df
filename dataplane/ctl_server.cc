#include "dataplane/ctl_server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <set>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "shroud/ctl_protocol.h"

namespace shroud {
namespace {

using json = nlohmann::json;

// Responses queued for a client that does not read them: past this the
// server stops reading its requests until it catches up.
constexpr size_t kMaxPendingOut = 1 << 20;
// After refusing a connection's input (a line too long) the server shuts its
// side down and discards what the client still sends, so the client reads
// the error instead of a reset; at most this much, then it closes.
constexpr size_t kMaxDrainBytes = 1 << 20;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Errno(int err) { return std::strerror(err); }

void CloseFd(int fd) {
  // close() on Linux frees the descriptor even when it reports EINTR, so it
  // must not be retried.
  if (fd >= 0) ::close(fd);
}

// Sends what the socket takes now; returns bytes sent, or -1 when the peer
// is gone.
ssize_t SendSome(int fd, std::string_view data) {
  while (true) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return -1;
  }
}

bool Blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

std::string CommandList() {
  return absl::StrJoin({kCtlCmdStatus, kCtlCmdGet, kCtlCmdSet, kCtlCmdReload, kCtlCmdPing}, ", ",
                       [](std::string* out, std::string_view s) { out->append(s); });
}

std::string Shorten(std::string text, size_t max = 80) {
  if (text.size() > max) {
    text.resize(max);
    text += "...";
  }
  return text;
}


}  // namespace

absl::Status CheckCtlRequest(const json& request) {
  if (!request.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("a request must be a JSON object such as {\"cmd\":\"ping\"}, got ",
                     request.type_name()));
  }
  auto cmd_it = request.find("cmd");
  if (cmd_it == request.end() || !cmd_it->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("a request needs \"cmd\" (a string): one of ", CommandList()));
  }
  const std::string& cmd = cmd_it->get_ref<const std::string&>();
  std::set<std::string_view> allowed = {"cmd"};
  if (cmd == kCtlCmdSet) {
    allowed.insert("values");
    auto values = request.find("values");
    if (values == request.end() || !values->is_object()) {
      return absl::InvalidArgumentError(
          "set needs \"values\": an object of key -> value, e.g. "
          "{\"cmd\":\"set\",\"values\":{\"rate_variation.max_rate_mbyte_s\":8}}");
    }
  } else if (cmd != kCtlCmdPing && cmd != kCtlCmdStatus && cmd != kCtlCmdGet &&
             cmd != kCtlCmdReload) {
    return absl::InvalidArgumentError(absl::StrCat("unknown cmd \"", Shorten(cmd),
                                                   "\"; one of ", CommandList()));
  }
  for (const auto& [key, value] : request.items()) {
    if (allowed.count(key) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected key \"", Shorten(key), "\" in a ", cmd, " request (it takes ",
                       cmd == kCtlCmdSet ? "\"cmd\" and \"values\"" : "only \"cmd\"", ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CtlServer>> CtlServer::Listen(const std::string& path,
                                                             Handler handler) {
  // Programmer error, not input: main.cc always passes one.
  if (!handler) return absl::InvalidArgumentError("CtlServer::Listen: no handler");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("control socket path \"", path, "\": must be 1 to ",
                     sizeof(addr.sun_path) - 1, " bytes (a unix socket limit), got ", path.size(),
                     "; use a shorter runtime directory"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());

  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": exists and is not a socket; not replacing it"));
    }
    // A socket file outlives a crashed dataplane. Someone accepting on it is
    // a live dataplane (the same instance started twice), which must not be
    // cut off; nobody accepting is a stale file.
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) return absl::InternalError(absl::StrCat("socket: ", Errno(errno)));
    const int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    const int err = errno;
    CloseFd(probe);
    if (rc == 0 || err == EAGAIN) {
      return absl::AlreadyExistsError(absl::StrCat(
          path, ": another process is serving this control socket (is a dataplane of the same "
                "instance already running? give each one its own --instance)"));
    }
    if (err != ECONNREFUSED && err != ENOENT) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": cannot tell whether it is in use: ", Errno(err)));
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": cannot remove the stale socket: ", Errno(errno)));
    }
  }

  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", Errno(errno)));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    CloseFd(fd);
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": bind: ", Errno(err),
                     err == ENOENT ? " (does its directory exist?)" : ""));
  }
  // bind() created the file under the umask; narrow it before listening. The
  // peer check in AcceptAll covers the moment in between.
  if (::chmod(path.c_str(), 0600) != 0 || ::lstat(path.c_str(), &st) != 0) {
    const int err = errno;
    CloseFd(fd);
    ::unlink(path.c_str());
    return absl::FailedPreconditionError(absl::StrCat(path, ": chmod 0600: ", Errno(err)));
  }
  if (::listen(fd, 64) != 0) {
    const int err = errno;
    CloseFd(fd);
    ::unlink(path.c_str());
    return absl::InternalError(absl::StrCat(path, ": listen: ", Errno(err)));
  }
  return std::unique_ptr<CtlServer>(
      new CtlServer(path, fd, st.st_dev, st.st_ino, std::move(handler)));
}

CtlServer::CtlServer(std::string path, int fd, dev_t dev, ino_t ino, Handler handler)
    : path_(std::move(path)), listen_fd_(fd), dev_(dev), ino_(ino), handler_(std::move(handler)) {}

CtlServer::~CtlServer() {
  for (auto& c : connections_) CloseFd(c->fd);
  CloseFd(listen_fd_);
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
    ::unlink(path_.c_str());
  }
}

void CtlServer::Poll(int timeout_ms) {
  std::vector<pollfd> fds;
  fds.reserve(connections_.size() + 1);
  fds.push_back({listen_fd_, POLLIN, 0});
  for (const auto& c : connections_) {
    short events = 0;
    // No reading while responses pile up unread (the client must catch up)
    // or after the client's EOF.
    if (!c->peer_closed && (c->draining || (!c->closing && c->out.size() < kMaxPendingOut))) {
      events |= POLLIN;
    }
    if (!c->out.empty()) events |= POLLOUT;
    fds.push_back({c->fd, events, 0});
  }
  // The nearest idle deadline bounds the wait, so idle connections close on
  // time even when nothing else happens.
  int64_t now = NowMs();
  int wait = timeout_ms < 0 ? kCtlIdleTimeoutMs : timeout_ms;
  for (const auto& c : connections_) {
    const int64_t left = c->last_active_ms + kCtlIdleTimeoutMs - now;
    wait = static_cast<int>(std::clamp<int64_t>(left, 0, wait));
  }
  const int ready = ::poll(fds.data(), fds.size(), wait);
  if (ready < 0) return;  // EINTR: the caller has a signal to look at
  now = NowMs();
  // Only the connections polled above; ones accepted below wait for the
  // next Poll (their first data is usually there by then anyway).
  const size_t polled = connections_.size();
  if ((fds[0].revents & POLLIN) != 0) AcceptAll(now);
  for (size_t i = 0; i < polled; ++i) {
    Connection& c = *connections_[i];
    if (fds[i + 1].revents != 0) {
      Serve(c, fds[i + 1].revents, now);
    } else if (now - c.last_active_ms >= kCtlIdleTimeoutMs) {
      c.dead = true;
    }
  }
  std::erase_if(connections_, [](const std::unique_ptr<Connection>& c) {
    if (c->dead) CloseFd(c->fd);
    return c->dead;
  });
}

void CtlServer::AcceptAll(int64_t now_ms) {
  while (true) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      // EAGAIN: none left. EMFILE and the like: the backlog keeps them for
      // the next Poll.
      return;
    }
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != ::geteuid() && cred.uid != 0)) {
      Refuse(fd, "permission denied");
      continue;
    }
    if (connections_.size() >= kCtlMaxConnections) {
      Refuse(fd, absl::StrCat("too many control connections (max ", kCtlMaxConnections,
                              "); try again"));
      continue;
    }
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->last_active_ms = now_ms;
    connections_.push_back(std::move(c));
  }
}

void CtlServer::Refuse(int fd, const std::string& error) {
  ++requests_;
  ++errors_;
  // A fresh socket's send buffer takes a short line whole; if it does not,
  // the client loses only an explanation.
  SendSome(fd, ErrorLine(error));
  ::shutdown(fd, SHUT_WR);
  CloseFd(fd);
}

void CtlServer::Serve(Connection& c, short revents, int64_t now_ms) {
  c.last_active_ms = now_ms;
  if ((revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
    if (c.draining) {
      Drain(c);
      return;
    }
    Read(c);
  }
  // Answer what was read, send, and go on while sending made room for the
  // answers held back (a client that pipelines many requests).
  for (int round = 0; round < 8 && !c.dead; ++round) {
    const size_t before = c.in.size();
    ProcessLines(c);
    Flush(c);
    if (c.in.size() == before) break;
  }
  if (c.dead) return;
  if (c.out.empty() && (c.closing || c.peer_closed)) {
    if (c.peer_closed) {
      c.dead = true;
    } else {
      // Tell the client we are done, then let it finish sending so it reads
      // our error rather than a reset.
      ::shutdown(c.fd, SHUT_WR);
      c.draining = true;
    }
  } else if ((revents & (POLLERR | POLLHUP)) != 0 && (revents & POLLIN) == 0) {
    c.dead = true;  // nobody left to answer
  }
}

void CtlServer::Read(Connection& c) {
  char buffer[16384];
  // Enough for one request over the limit to be recognised as such; the
  // rest stays in the socket until the lines before are answered.
  while (!c.closing && !c.peer_closed && c.in.size() <= kCtlMaxRequestBytes &&
         c.out.size() < kMaxPendingOut) {
    const ssize_t n = ::recv(c.fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n > 0) {
      c.in.append(buffer, static_cast<size_t>(n));
      ProcessLines(c);
      continue;
    }
    if (n == 0) {
      c.peer_closed = true;
      return;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) c.dead = true;
    return;
  }
}

void CtlServer::ProcessLines(Connection& c) {
  while (!c.closing && c.out.size() < kMaxPendingOut) {
    const size_t newline = c.in.find('\n', c.scanned);
    if (newline == std::string::npos) {
      c.scanned = c.in.size();
      if (c.in.size() > kCtlMaxRequestBytes) {
        HandleLine(c, std::string_view(c.in).substr(0, kCtlMaxRequestBytes + 1));
        c.in.clear();
        c.scanned = 0;
      } else if (c.peer_closed) {
        // A last request without "\n" from a client that half-closed.
        if (!Blank(c.in)) HandleLine(c, c.in);
        c.in.clear();
        c.scanned = 0;
        c.closing = true;
      }
      return;
    }
    HandleLine(c, std::string_view(c.in).substr(0, newline));
    c.in.erase(0, newline + 1);
    c.scanned = 0;
  }
}

void CtlServer::HandleLine(Connection& c, std::string_view line) {
  if (line.size() > kCtlMaxRequestBytes) {
    ++requests_;
    ++errors_;
    c.out += ErrorLine(absl::StrCat("request too large (max ", kCtlMaxRequestBytes, " bytes)"));
    // The rest of that line is still coming and cannot be told from the
    // next request: stop reading requests from this client.
    c.closing = true;
    return;
  }
  if (Blank(line)) return;
  bool error = false;
  c.out += Respond(line, &error);
  ++requests_;
  if (error) ++errors_;
}

std::string CtlServer::Respond(std::string_view line, bool* error) {
  *error = true;
  json request;
  try {
    request = json::parse(line.begin(), line.end());
  } catch (const json::exception& e) {
    return ErrorLine(absl::StrCat("malformed JSON: ", CleanJsonError(e.what())));
  } catch (const std::exception& e) {  // bad_alloc, say
    return ErrorLine(absl::StrCat("malformed JSON: ", e.what()));
  }
  if (absl::Status s = CheckCtlRequest(request); !s.ok()) {
    return ErrorLine(std::string(s.message()));
  }
  json response;
  try {
    response = handler_(request);
  } catch (const std::exception& e) {
    return ErrorLine(absl::StrCat("internal error: ", e.what()));
  } catch (...) {
    return ErrorLine("internal error");
  }
  if (!response.is_object()) {
    return ErrorLine(absl::StrCat("internal error: the handler answered ", response.type_name()));
  }
  auto ok = response.find("ok");
  if (ok == response.end()) {
    response["ok"] = true;
  } else if (!ok->is_boolean()) {
    return ErrorLine("internal error: the handler answered a non-boolean \"ok\"");
  }
  if (!response["ok"].get<bool>()) {
    auto message = response.find("error");
    if (message == response.end() || !message->is_string()) response["error"] = "unknown error";
  } else {
    *error = false;
  }
  response["version"] = kCtlProtocolVersion;
  try {
    // Replace, not throw, on invalid UTF-8 (a client's key echoed back).
    return response.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  } catch (const std::exception& e) {
    *error = true;
    return ErrorLine(absl::StrCat("internal error: ", e.what()));
  }
}

std::string CtlServer::ErrorLine(const std::string& message) {
  json response = {{"ok", false}, {"version", kCtlProtocolVersion}, {"error", message}};
  return response.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

void CtlServer::Flush(Connection& c) {
  while (!c.out.empty()) {
    const ssize_t n = SendSome(c.fd, c.out);
    if (n < 0) {
      c.dead = true;
      return;
    }
    if (n == 0) return;  // full; POLLOUT next time
    c.out.erase(0, static_cast<size_t>(n));
  }
}

void CtlServer::Drain(Connection& c) {
  char buffer[16384];
  while (true) {
    const ssize_t n = ::recv(c.fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n > 0) {
      c.drained += static_cast<size_t>(n);
      if (c.drained > kMaxDrainBytes) c.dead = true;
      if (c.dead) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    c.dead = true;  // EOF or error: done
    return;
  }
}

}  // namespace shroud
