#include "control/daemon/http_server.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <httplib.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "dashboard_html.h"

namespace shroud::control {
namespace {

constexpr char kJson[] = "application/json";
constexpr char kPrometheusText[] = "text/plain; version=0.0.4; charset=utf-8";

int HttpStatusFor(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument: return 400;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kFailedPrecondition: return 502;
    default: return 500;
  }
}

void SendError(httplib::Response& res, int status, absl::string_view message) {
  res.status = status;
  res.set_content(ErrorBody(status, message), kJson);
}

void SendJson(httplib::Response& res, const absl::StatusOr<nlohmann::json>& doc) {
  if (!doc.ok()) {
    SendError(res, HttpStatusFor(doc.status()), doc.status().message());
    return;
  }
  res.status = 200;
  // Live data, polled: a cached answer would be a stale graph.
  res.set_header("Cache-Control", "no-store");
  // Flow keys come from the network; replace rather than throw on bad UTF-8.
  res.set_content(doc->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), kJson);
}

// For statuses httplib decides on its own.
std::string ReasonFor(int status) {
  switch (status) {
    case 400: return "malformed request";
    case 413: return absl::StrCat("request too large (the API takes no body; limit ", kMaxRequestBytes, " bytes)");
    case 414: return "request URI too long";
    default: return absl::StrCat("HTTP error ", status);
  }
}

QueryParams ToQueryParams(const httplib::Params& params) {
  return QueryParams(params.begin(), params.end());
}

nlohmann::json IndexJson() {
  return {{"service", "shroud-control"},
          {"routes",
           {{{"path", "/"}, {"description", "the live dashboard (HTML)"}},
            {{"path", "/api"}, {"description", "this index"}},
            {{"path", "/api/flows"},
             {"query", "migration=0|1, min_packets=N, limit=1..100000 (default 1000)"},
             {"description", "flows with the fields of `shroud analyze --json` plus class, state, worker"}},
            {{"path", "/api/evaluation"},
             {"query", "min_packets=N, ks_window=W (default 1000)"},
             {"description", "CoV per window by class and verdict; chi-square and KS between groups"}},
            {{"path", "/api/gateway"},
             {"description", "the dataplane's status over its control socket"}},
            {{"path", "/api/rtt"},
             {"query", "since=SEQ (samples after it; pass back the answer's \"next\"), events_after=ID"},
             {"description", "the RTT monitor: traffic light, baseline, recent samples, events, counters"}},
            {{"path", "/api/rate"},
             {"query", "since=SEQ (points after it)"},
             {"description", "the gateway's migration rate, sampled by shroud-control"}},
            {{"path", "/metrics"}, {"description", "Prometheus metrics"}}}}};
}

}  // namespace

absl::StatusOr<HttpListenAddress> ParseListenAddress(const std::string& text) {
  HttpListenAddress out;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("'", text, "' is not [IPV6]:PORT, e.g. [::1]:9610"));
    }
    out.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", text, "' is not ADDR:PORT, e.g. 127.0.0.1:9610 (IPv6: [::1]:9610)"));
    }
    out.host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (out.host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", text, "' has no address; say 127.0.0.1 (this machine) or 0.0.0.0 (every interface)"));
  }
  int p = -1;
  if (!absl::SimpleAtoi(port, &p) || p < 0 || p > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "': the port must be a number from 0 to 65535"));
  }
  out.port = p;
  return out;
}

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpListenAddress& address,
                                                              ApiSource* source) {
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->server_ = std::make_unique<httplib::Server>();
  httplib::Server& svr = *server->server_;
  // Requests are a path and a query: a large body is a mistake or an attack,
  // refused (413) before it is read.
  svr.set_payload_max_length(kMaxRequestBytes);
  // httplib's default also sets SO_REUSEPORT, which lets a second daemon bind
  // the same port and silently share its connections. SO_REUSEADDR alone
  // still allows a restart while old connections linger in TIME_WAIT.
  svr.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  svr.set_read_timeout(std::chrono::seconds(5));
  svr.set_write_timeout(std::chrono::seconds(10));

  // Decided before httplib reads a body: an oversized request is refused
  // (413) and any method but GET/HEAD is refused (405) without waiting for a
  // body that, for a POST without Content-Length, would only end at the read
  // timeout. The unread body makes the connection unusable, so it is closed.
  svr.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    uint64_t length = 0;
    const std::string declared = req.get_header_value("Content-Length");
    if (!declared.empty() && (!absl::SimpleAtoi(declared, &length) || length > kMaxRequestBytes)) {
      res.set_header("Connection", "close");
      SendError(res, 413, ReasonFor(413));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method != "GET" && req.method != "HEAD") {
      res.set_header("Connection", "close");
      res.set_header("Allow", "GET, HEAD");
      SendError(res, 405, absl::StrCat(req.method, " is not allowed: the API is read-only (GET)"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.status = 200;
    // The page is self-contained: the policy makes sure it stays so (no
    // script, style or request to anywhere but this server), and data the
    // network controls (flow keys) can never run as script.
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                   "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Cache-Control", "no-cache");
    res.set_content(std::string(kDashboardHtml), "text/html; charset=utf-8");
  });
  svr.Get("/api", [](const httplib::Request&, httplib::Response& res) { SendJson(res, IndexJson()); });
  svr.Get("/api/rtt", [source](const httplib::Request& req, httplib::Response& res) {
    SendJson(res, source->Rtt(ToQueryParams(req.params)));
  });
  svr.Get("/api/rate", [source](const httplib::Request& req, httplib::Response& res) {
    SendJson(res, source->Rate(ToQueryParams(req.params)));
  });
  svr.Get("/api/flows", [source](const httplib::Request& req, httplib::Response& res) {
    SendJson(res, source->Flows(ToQueryParams(req.params)));
  });
  svr.Get("/api/evaluation", [source](const httplib::Request& req, httplib::Response& res) {
    SendJson(res, source->Evaluation(ToQueryParams(req.params)));
  });
  svr.Get("/api/gateway", [source](const httplib::Request&, httplib::Response& res) {
    SendJson(res, source->Gateway());
  });
  svr.Get("/metrics", [source](const httplib::Request&, httplib::Response& res) {
    res.status = 200;
    res.set_content(source->Metrics(), kPrometheusText);
  });
  svr.Get(".*", [](const httplib::Request& req, httplib::Response& res) {
    SendError(res, 404, absl::StrCat("no route ", req.path, " (GET /api lists the routes)"));
  });
  // Statuses httplib sets itself (413, 400 for a malformed request) get a
  // JSON body too; responses that already have one are left alone.
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      SendError(res, res.status, ReasonFor(res.status));
    }
  });
  svr.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "internal error";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = absl::StrCat("internal error: ", e.what());
        } catch (...) {
        }
        SendError(res, 500, what);
      });

  errno = 0;
  if (address.port == 0) {
    server->port_ = svr.bind_to_any_port(address.host);
    if (server->port_ < 0) server->port_ = 0;
  } else if (svr.bind_to_port(address.host, address.port)) {
    server->port_ = address.port;
  }
  if (server->port_ == 0) {
    const int err = errno;
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", address.host, ":", address.port, err != 0 ? ": " : "",
        err != 0 ? std::strerror(err) : "", " (another process on that port? pick another with --http)"));
  }
  server->host_ = address.host;
  httplib::Server* raw = server->server_.get();
  server->thread_ = std::thread([raw] { raw->listen_after_bind(); });
  // stop() only works once the accept loop runs; wait for it so that a
  // server destroyed right after Start() still shuts down.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!raw->is_running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return server;
}

HttpServer::~HttpServer() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace shroud::control
