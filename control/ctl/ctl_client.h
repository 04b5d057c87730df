// The client end of the dataplane's control channel
// (include/shroud/ctl_protocol.h), for `shroud ctl` and shroud-control.
#ifndef SHROUD_CONTROL_CTL_CTL_CLIENT_H_
#define SHROUD_CONTROL_CTL_CTL_CLIENT_H_

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace shroud {

// Connects to `socket_path`, sends `request` as one line, and returns the
// one-line response: ok true and ok false alike (the caller checks "ok";
// "error" explains a false). A status error means no answer was had:
//   Unavailable        nobody listens at socket_path ("no dataplane listening
//                      at PATH: is shroud-dataplane running?"; callers add the
//                      instance), or it hung up without answering;
//   PermissionDenied   the socket or its directory is not ours ("permission
//                      denied: run as the dataplane's user");
//   DeadlineExceeded   no complete answer within `timeout`;
//   DataLoss           an answer that is not a protocol response (not JSON,
//                      not an object, no boolean "ok");
//   FailedPrecondition a response of another protocol version;
//   InvalidArgument    a request that is not an object or is too large.
absl::StatusOr<nlohmann::json> CtlCall(const std::string& socket_path,
                                       const nlohmann::json& request,
                                       absl::Duration timeout = absl::Seconds(5));

}  // namespace shroud

#endif  // SHROUD_CONTROL_CTL_CTL_CLIENT_H_
