#include "shroud/runtime_paths.h"

#include <errno.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace shroud {
namespace {

bool IsInstanceNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == '-';
}

std::string JoinPath(std::string_view dir, std::string_view name) {
  std::string joined(dir);
  if (joined.empty() || joined.back() != '/') joined += '/';
  joined += name;
  return joined;
}

const char* NonEmptyEnv(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? value : nullptr;
}

std::string ModeString(mode_t mode) { return absl::StrFormat("%04o", mode & 07777); }

// mkdir -p with 0755 for the parents of a root that is not there yet.
absl::Status MakeDirs(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("empty runtime directory");
  for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    const std::string prefix = path.substr(0, slash);
    if (!prefix.empty() && mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot create runtime directory ", prefix));
    }
    if (slash == std::string::npos) break;
  }
  return absl::OkStatus();
}

// Whoever can rename entries of root could swap the instance directory after
// PrepareRuntimeDir checked it, so root must belong to us or to root, and be
// writable by others only when the sticky bit stops them renaming our entries.
absl::Status CheckRoot(const std::string& root) {
  const uid_t me = geteuid();
  struct stat st;
  if (lstat(root.c_str(), &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot stat runtime directory ", root));
  }
  if (S_ISLNK(st.st_mode)) {
    if (st.st_uid != me && st.st_uid != 0) {
      return absl::PermissionDeniedError(absl::StrCat(
          "runtime directory ", root, " is a symlink owned by uid ", st.st_uid,
          ", who could point it elsewhere; remove it or choose another --runtime_dir"));
    }
    if (stat(root.c_str(), &st) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot stat runtime directory ", root));
    }
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("runtime directory ", root, " exists and is not a directory"));
  }
  if (st.st_uid != me && st.st_uid != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "runtime directory ", root, " is owned by uid ", st.st_uid, ", not by us (uid ", me,
        ") or root; remove it or choose another --runtime_dir"));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "runtime directory ", root, " has mode ", ModeString(st.st_mode),
        ": writable by others without the sticky bit; chmod go-w ", root));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateInstanceName(std::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("instance name is empty");
  if (name.size() > kMaxInstanceNameLength) {
    return absl::InvalidArgumentError(absl::StrCat("instance name is ", name.size(),
                                                   " characters long, at most ",
                                                   kMaxInstanceNameLength, " are allowed"));
  }
  if (name == "." || name == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("instance name \"", std::string(name), "\" is reserved (it names a directory)"));
  }
  for (char c : name) {
    if (!IsInstanceNameChar(c)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "instance name \"%s\" contains %s; allowed are letters, digits, '_', '.' and '-'",
          absl::CHexEscape(std::string(name)),
          c == '/' ? "'/'" : absl::StrFormat("the character 0x%02x", static_cast<unsigned char>(c))));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RuntimePaths> ResolveRuntimePaths(std::string_view runtime_dir,
                                                 std::string_view instance) {
  if (instance.empty()) instance = kDefaultInstanceName;
  if (absl::Status s = ValidateInstanceName(instance); !s.ok()) return s;

  RuntimePaths paths;
  if (!runtime_dir.empty()) {
    paths.root = std::string(runtime_dir);
  } else if (const char* env = NonEmptyEnv("SHROUD_RUNTIME_DIR")) {
    paths.root = env;
  } else if (geteuid() == 0) {
    paths.root = "/run/shroud";
  } else if (const char* xdg = NonEmptyEnv("XDG_RUNTIME_DIR")) {
    paths.root = JoinPath(xdg, "shroud");
  } else {
    paths.root = absl::StrCat("/tmp/shroud-", geteuid());
  }
  // Keep "/" as is; drop other trailing slashes so the paths print cleanly.
  while (paths.root.size() > 1 && paths.root.back() == '/') paths.root.pop_back();

  paths.instance = std::string(instance);
  paths.dir = JoinPath(paths.root, paths.instance);
  paths.mirror = JoinPath(paths.dir, "mirror");
  paths.ctl_socket = JoinPath(paths.dir, "ctl.sock");
  return paths;
}

absl::Status PrepareRuntimeDir(const RuntimePaths& paths) {
  if (absl::Status s = MakeDirs(paths.root); !s.ok()) return s;
  if (absl::Status s = CheckRoot(paths.root); !s.ok()) return s;

  if (mkdir(paths.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno,
                               absl::StrCat("cannot create instance directory ", paths.dir));
  }
  // lstat, not stat: a symlink planted here would redirect the mirror and the
  // control socket to wherever its owner likes.
  struct stat st;
  if (lstat(paths.dir.c_str(), &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot stat instance directory ", paths.dir));
  }
  if (S_ISLNK(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "instance directory ", paths.dir,
        " is a symlink; refusing to follow it (remove it, the dataplane creates the directory)"));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("instance directory ", paths.dir, " exists and is not a directory"));
  }
  const uid_t me = geteuid();
  if (st.st_uid != me) {
    return absl::PermissionDeniedError(absl::StrCat(
        "instance directory ", paths.dir, " is owned by uid ", st.st_uid, ", not by us (uid ", me,
        "); another user's dataplane runs there, or remove the directory"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "instance directory ", paths.dir, " has mode ", ModeString(st.st_mode),
        ", which lets other users reach the mirror and the control socket; chmod 0700 ",
        paths.dir));
  }
  return absl::OkStatus();
}

}  // namespace shroud
