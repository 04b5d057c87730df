// Small helpers shared by the unit tests.
#ifndef SHROUD_TESTS_TEST_UTIL_H_
#define SHROUD_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

namespace shroud::testing {

// Root of the source tree (SHROUD_SOURCE_ROOT, set by meson test).
std::string SourceRoot();
// A file under tests/data/.
std::string TestDataPath(const std::string& name);
// ../shared/traces/public next to the checkout, or "" when it is not there.
std::string SharedTracesDir();
// A fresh temporary directory, removed by the OS's tmp cleaning only.
std::string MakeTempDir();

}  // namespace shroud::testing

#endif  // SHROUD_TESTS_TEST_UTIL_H_
