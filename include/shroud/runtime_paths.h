// Where a dataplane instance keeps its rendezvous files (the mirror channel,
// the control socket), so shroud-dataplane and shroud-control find each other
// from nothing but an instance name. No DPDK.
//
//   <root>/<instance>/mirror     the mirror channel (mirror.h)
//   <root>/<instance>/ctl.sock   the control socket
//
// The instance directory is the access boundary: it is 0700 and owned by the
// dataplane's user, so only that user (or root) can map the mirror or talk to
// the control socket.
#ifndef SHROUD_RUNTIME_PATHS_H_
#define SHROUD_RUNTIME_PATHS_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shroud {

inline constexpr std::string_view kDefaultInstanceName = "default";
inline constexpr size_t kMaxInstanceNameLength = 63;  // fits MirrorHeader::instance with its NUL

struct RuntimePaths {
  std::string root;        // shared by all instances
  std::string dir;         // root/instance
  std::string mirror;      // dir/mirror
  std::string ctl_socket;  // dir/ctl.sock
  std::string instance;
};

// Instance names are [A-Za-z0-9_.-]{1,63} and not "." or "..": they become a
// path component and are copied into the mirror header. InvalidArgument
// naming the problem otherwise.
absl::Status ValidateInstanceName(std::string_view name);

// root = runtime_dir if non-empty; else $SHROUD_RUNTIME_DIR if set and
// non-empty; else /run/shroud when running as root; else
// $XDG_RUNTIME_DIR/shroud when set; else /tmp/shroud-<uid>.
// An empty instance means kDefaultInstanceName. Touches no file.
absl::StatusOr<RuntimePaths> ResolveRuntimePaths(std::string_view runtime_dir,
                                                 std::string_view instance);

// Dataplane side: creates root (and its missing parents, 0755) and dir (0700).
// Refuses, with an error saying how to fix it:
//   - a dir that is a symlink (never followed) or not a directory,
//   - a dir owned by another uid or with any group/other permission bit,
//   - a root owned by another uid than ours or root's, or writable by others
//     without the sticky bit (whoever can rename entries of root could swap
//     dir after the check).
absl::Status PrepareRuntimeDir(const RuntimePaths& paths);

}  // namespace shroud

#endif  // SHROUD_RUNTIME_PATHS_H_
