// Reading a whole input file (a config, a model, a run list) into memory with
// the checks a user-given path needs: it must be a regular file (a directory
// or /dev/zero is an error, not an empty or endless input) and no larger than
// the caller's limit, so a wrong path fails with a message instead of reading
// defaults or exhausting memory.
#ifndef SHROUD_DATAPLANE_CORE_TEXT_FILE_H_
#define SHROUD_DATAPLANE_CORE_TEXT_FILE_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace shroud {

// Large enough for any config, model or run list shroud writes (the shipped
// maxent model is ~2 KB, a 48-run list ~10 KB); far below what would hurt.
inline constexpr size_t kMaxTextFileBytes = size_t{16} << 20;

// The contents of `path`. Errors name the path and say what is wrong:
// NotFound (missing), PermissionDenied, InvalidArgument (not a regular file,
// larger than max_bytes), DataLoss (read error). An empty file reads as "";
// whether that is valid is the caller's call.
absl::StatusOr<std::string> ReadTextFile(const std::string& path,
                                         size_t max_bytes = kMaxTextFileBytes);

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_CORE_TEXT_FILE_H_
