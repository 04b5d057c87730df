// The control channel of shroud-dataplane: how `shroud ctl` (and
// shroud-control) read and change a running dataplane's parameters. This
// comment is the specification; the constants below are its numbers.
//
// Transport
//   A unix-domain SOCK_STREAM socket at RuntimePaths::ctl_socket
//   (include/shroud/runtime_paths.h; one per dataplane instance), mode 0600,
//   owned by the dataplane's user. The server also checks each peer's
//   SO_PEERCRED: only the dataplane's effective uid and root are served;
//   anyone else gets {"ok":false,"error":"permission denied"} and is
//   disconnected. No authentication beyond that: the socket is local and
//   file-permissioned, as VPP's cli/api sockets and YANET's are.
//
// Framing
//   One JSON object per line, UTF-8, terminated by "\n" (a "\r" before it and
//   blank lines are ignored). A request line holds at most kCtlMaxRequestBytes
//   bytes before its "\n"; a longer one is answered
//   "request too large (max 65536 bytes)" and the connection closed. Every
//   request line gets exactly one response line, in order; a connection may
//   carry any number of requests (`shroud ctl` sends one and closes). At most
//   kCtlMaxConnections connections are served at once: one more is answered
//   with an error and closed. A connection idle for kCtlIdleTimeoutMs is
//   closed. A final line without "\n" is answered when the client shuts its
//   side down (half-close).
//
// Requests (the only top-level keys allowed; anything else is an error)
//   {"cmd":"ping"}                     liveness; nothing changes
//   {"cmd":"status"}                   what the dataplane is and does
//   {"cmd":"get"}                      every run-time setting's current value
//   {"cmd":"set","values":{K:V,...}}   change run-time settings (1 to 64 keys)
//   {"cmd":"reload"}                   re-read the config file the dataplane
//                                      was started with, [classify] rules and
//                                      signatures included
//
// Responses
//   Every response carries "version": kCtlProtocolVersion and "ok".
//   Success:  {"ok":true,"version":1, ...command-specific fields...}
//   Failure:  {"ok":false,"version":1,"error":"<message for a human>"}
//   A request that is not JSON, not an object, has no string "cmd", an
//   unknown "cmd", or a top-level key the command does not take is answered
//   with ok false and nothing is done.
//
//   ping    {"ok":true,"version":1,"pong":true, "pid":N}
//   status  {"ok":true,"version":1,"status":{...}}: instance, pid, config
//           path, uptime, mode, counters; informational, its fields may grow.
//   get     {"ok":true,"version":1,"values":{"rate_variation.window":100,...}}
//           (SettableValues in dataplane/core/runtime_settings.h).
//   set     Keys are the config file's dotted names in its units
//           (rate_variation.*, chaff.<policy keys>; see runtime_settings.h);
//           values are JSON typed as in the file (numbers, booleans,
//           [low, high] arrays, the policy's name as a string). All or
//           nothing: the result is validated like the config file and either
//           every value applies or none does.
//           {"ok":true,"version":1,"applied":{K:V,...}} (the values now in
//           effect for the keys that changed; {} when none did), or
//           ok false with one "key: problem" line per problem.
//   reload  {"ok":true,"version":1,"config":"<path>","applied":{K:V,...}}, or
//           ok false when the file does not load or validate, or when it
//           changes something only a restart can apply; the error then
//           names those keys. Values set with `set` and not written to the
//           file are replaced by the file's.
//
// Compatibility: a client refuses a response whose version is not its own.
// New commands and new response fields may be added within a version; a
// change to an existing field's meaning bumps it.
#ifndef SHROUD_CTL_PROTOCOL_H_
#define SHROUD_CTL_PROTOCOL_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace shroud {

inline constexpr int kCtlProtocolVersion = 1;

// A request line's bytes before its "\n".
inline constexpr size_t kCtlMaxRequestBytes = 65536;
// Responses are small (a status is a few KB); the client stops reading at
// this, so a broken server cannot make it allocate without bound.
inline constexpr size_t kCtlMaxResponseBytes = 4 << 20;
inline constexpr size_t kCtlMaxConnections = 16;
inline constexpr int kCtlIdleTimeoutMs = 60'000;
// Keys one "set" takes at most.
inline constexpr size_t kCtlMaxSetValues = 64;

inline constexpr std::string_view kCtlCmdPing = "ping";
inline constexpr std::string_view kCtlCmdStatus = "status";
inline constexpr std::string_view kCtlCmdGet = "get";
inline constexpr std::string_view kCtlCmdSet = "set";
inline constexpr std::string_view kCtlCmdReload = "reload";

// nlohmann's parse errors start with "[json.exception.parse_error.101] ",
// which means nothing to an operator; both ends show the rest.
inline std::string CleanJsonError(std::string message) {
  if (!message.empty() && message[0] == '[') {
    const size_t end = message.find("] ");
    if (end != std::string::npos) message.erase(0, end + 2);
  }
  return message;
}

}  // namespace shroud

#endif  // SHROUD_CTL_PROTOCOL_H_
