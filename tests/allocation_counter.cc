#include "tests/allocation_counter.h"

#include <cstdlib>
#include <new>

namespace {
// Per thread, so a worker thread's count is not disturbed by the test's own
// thread; trivially initialised, so reading it inside operator new is safe.
thread_local uint64_t t_allocations = 0;
}  // namespace

// noinline: inlined into callers, GCC mistakes free() here for a mismatched
// deallocation (-Wmismatched-new-delete).
__attribute__((noinline)) void* operator new(std::size_t n) {
  ++t_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace shroud::test {

uint64_t ThreadAllocations() { return t_allocations; }

}  // namespace shroud::test
