// shroud-control's HTTP API (the imperative shell around api.h): GET only,
// JSON everywhere except /metrics (Prometheus text). cpp-httplib serves each
// connection on a pool thread; the handlers only call the ApiSource, whose
// implementation does its own locking (control_state.h).
//
//   GET /                 the live dashboard (control/daemon/dashboard.html, HTML)
//   GET /api              index of the routes (JSON)
//   GET /api/flows        ?migration=0|1 &min_packets=N &limit=1..100000
//   GET /api/evaluation   ?min_packets=N &ks_window=W
//   GET /api/gateway      the dataplane's status over its control socket
//   GET /api/rtt          ?since=SEQ &events_after=ID: the RTT monitor (dashboard_api.h)
//   GET /api/rate         ?since=SEQ: the gateway's migration rate trace
//   GET /metrics          Prometheus text exposition format
//
// Errors are JSON {"error": "...", "status": N}: 400 for a bad query value
// (naming the parameter), 404 for an unknown path, 405 for any other method,
// 413 for a request body over kMaxRequestBytes, 503 when the dataplane's
// control socket does not answer, 502 when it answers with an error.
#ifndef SHROUD_CONTROL_DAEMON_HTTP_SERVER_H_
#define SHROUD_CONTROL_DAEMON_HTTP_SERVER_H_

#include <cstddef>
#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "control/daemon/api.h"

namespace httplib {
class Server;
}

namespace shroud::control {

// Nothing the API accepts has a body; anything larger than this is refused
// before it is read.
inline constexpr size_t kMaxRequestBytes = 64 * 1024;

// What the routes serve. Errors map to HTTP statuses: InvalidArgument 400,
// Unavailable 503, FailedPrecondition 502, anything else 500.
class ApiSource {
 public:
  virtual ~ApiSource() = default;
  virtual absl::StatusOr<nlohmann::json> Flows(const QueryParams& params) = 0;
  virtual absl::StatusOr<nlohmann::json> Evaluation(const QueryParams& params) = 0;
  virtual absl::StatusOr<nlohmann::json> Gateway() = 0;
  virtual std::string Metrics() = 0;
  // The dashboard's polls (dashboard_api.h).
  virtual absl::StatusOr<nlohmann::json> Rtt(const QueryParams& params) = 0;
  virtual absl::StatusOr<nlohmann::json> Rate(const QueryParams& params) = 0;
};

struct HttpListenAddress {
  std::string host;  // as given: "127.0.0.1", "::1", "0.0.0.0", "localhost"
  int port = 0;      // 0: any free port
};

// "ADDR:PORT" or "[V6ADDR]:PORT". InvalidArgument naming the problem.
absl::StatusOr<HttpListenAddress> ParseListenAddress(const std::string& text);
// 127.0.0.0/8, ::1 and "localhost": only this machine can connect.
bool IsLoopbackHost(const std::string& host);

class HttpServer {
 public:
  // Binds (errors say why, e.g. the port is taken) and starts serving on a
  // thread of its own. `source` must outlive the server.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpListenAddress& address,
                                                           ApiSource* source);
  // Stops accepting, finishes the requests in flight and joins.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }  // the bound port (useful with port 0)
  const std::string& host() const { return host_; }

 private:
  HttpServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string host_;
  int port_ = 0;
};

}  // namespace shroud::control

#endif  // SHROUD_CONTROL_DAEMON_HTTP_SERVER_H_
