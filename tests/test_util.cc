#include "tests/test_util.h"

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace shroud::testing {

std::string SourceRoot() {
  const char* root = std::getenv("SHROUD_SOURCE_ROOT");
  return root != nullptr ? root : ".";
}

std::string TestDataPath(const std::string& name) { return SourceRoot() + "/tests/data/" + name; }

std::string SharedTracesDir() {
  const char* dir = std::getenv("SHROUD_SHARED_TRACES");
  if (dir != nullptr && std::filesystem::is_directory(dir)) return dir;
  return "";
}

std::string MakeTempDir() {
  std::string pattern = std::filesystem::temp_directory_path() / "shroud-test-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

}  // namespace shroud::testing
