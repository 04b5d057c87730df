// The dataplane's end of the control channel (include/shroud/ctl_protocol.h):
// a unix stream socket served from the dataplane's main thread loop. Plain
// POSIX, no DPDK, no threads: Poll() serves whatever is ready and returns, so
// the loop that also watches signals and the worker keeps its own cadence.
// What a request does is the Handler's business (the dataplane's main.cc);
// this class only frames, limits, checks peers and validates the envelope.
#ifndef SHROUD_DATAPLANE_CTL_SERVER_H_
#define SHROUD_DATAPLANE_CTL_SERVER_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shroud {

// OK when `request` is a well-formed request (an object with a known string
// "cmd" and only the keys that command takes), else InvalidArgument with the
// message the client gets.
absl::Status CheckCtlRequest(const nlohmann::json& request);

class CtlServer {
 public:
  // Gets only well-formed requests (CheckCtlRequest). Returns the response
  // body; the server sets "version", and "ok": true unless the handler set
  // "ok" itself (then with "error" when false). A handler that throws or
  // returns a non-object yields an "internal error" response.
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

  // Binds a SOCK_STREAM unix socket at `path`, chmod 0600, and listens. A
  // stale socket there (nobody accepting) is replaced; a live one (another
  // dataplane of the same instance) is an error, as is any other kind of
  // file at `path`.
  static absl::StatusOr<std::unique_ptr<CtlServer>> Listen(const std::string& path,
                                                           Handler handler);
  // Closes every connection and removes the socket file (if it is still
  // ours: a successor may have replaced it).
  ~CtlServer();
  CtlServer(const CtlServer&) = delete;
  CtlServer& operator=(const CtlServer&) = delete;

  // Serves whatever is ready, waiting at most `timeout_ms` (0: do not wait)
  // for something to become ready. Never throws; any input is answered or
  // dropped, never crashes the caller. EINTR (a signal) just returns early.
  void Poll(int timeout_ms);

  // Responses sent (one per request line, plus refused connections), and
  // how many of them were errors (ok false).
  uint64_t requests() const { return requests_; }
  uint64_t errors() const { return errors_; }
  // Connections being served now.
  size_t connections() const { return connections_.size(); }
  const std::string& path() const { return path_; }

 private:
  struct Connection {
    int fd = -1;
    std::string in;      // received, not yet a complete line
    size_t scanned = 0;  // in[0, scanned) holds no '\n'
    std::string out;     // responses not yet sent
    bool peer_closed = false;  // the client shut its side down
    bool closing = false;      // close once `out` is sent (no more requests)
    bool draining = false;     // our side shut down; discarding input until EOF
    size_t drained = 0;
    int64_t last_active_ms = 0;
    bool dead = false;
  };

  CtlServer(std::string path, int fd, dev_t dev, ino_t ino, Handler handler);

  void AcceptAll(int64_t now_ms);
  // Answers and closes a connection that will not be served.
  void Refuse(int fd, const std::string& error);
  void Serve(Connection& c, short revents, int64_t now_ms);
  void Read(Connection& c);
  void ProcessLines(Connection& c);
  void HandleLine(Connection& c, std::string_view line);
  void Flush(Connection& c);
  void Drain(Connection& c);
  // The response line for one request line.
  std::string Respond(std::string_view line, bool* error);
  std::string ErrorLine(const std::string& message);

  std::string path_;
  int listen_fd_ = -1;
  dev_t dev_ = 0;  // the socket file we created, to unlink only that
  ino_t ino_ = 0;
  Handler handler_;
  std::vector<std::unique_ptr<Connection>> connections_;
  uint64_t requests_ = 0;
  uint64_t errors_ = 0;
};

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_CTL_SERVER_H_
