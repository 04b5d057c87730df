// Counts heap allocations so a test can show a code path makes none. Linking
// tests/allocation_counter.cc replaces the global operator new.
#ifndef SHROUD_TESTS_ALLOCATION_COUNTER_H_
#define SHROUD_TESTS_ALLOCATION_COUNTER_H_

#include <cstdint>

namespace shroud::test {

// operator new calls made by the calling thread so far.
uint64_t ThreadAllocations();

}  // namespace shroud::test

#endif  // SHROUD_TESTS_ALLOCATION_COUNTER_H_
