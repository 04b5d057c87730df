// The pace of the non-packet work in a poll loop, shared by the gateway and
// the tap workers.
#ifndef SHROUD_DATAPLANE_WORKER_CADENCE_H_
#define SHROUD_DATAPLANE_WORKER_CADENCE_H_

#include <time.h>

#include <cstdint>

namespace shroud {

// Slots of the flow table looked at every kSweepPeriodNs (idle eviction and
// mirror export): 3.2 M slots/s of loop time, so a 64k table is swept every
// 20 ms and a 1 M table about three times a second, far inside any sensible
// idle timeout or export interval. Paced by time, not per loop: a busy loop
// would otherwise spend more on sweeping than the table needs.
inline constexpr uint32_t kSweepSlotsPerLoop = 64;
inline constexpr uint64_t kSweepPeriodNs = 20'000;
// Chores (deadlines, idle exit, run-time updates, stats) are checked once per
// this many loops.
inline constexpr uint64_t kChoreLoopMask = 1023;
// Live counters (status, telemetry) are published this often.
inline constexpr uint64_t kPublishPeriodNs = 100'000'000;

// --idle_sleep_us: a loop that found nothing to do sleeps this long, giving
// the core to whatever shares it (the testbed runs three dataplanes, two
// QEMUs and the WAN emulator on two CPUs). 0 busy-polls: the line-rate
// setting, like l2fwd. The cost is latency: a packet that arrives during the
// sleep waits up to ns (plus the kernel's timer slack).
inline void IdleSleep(uint64_t ns) {
  if (ns == 0) return;
  const timespec t{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  nanosleep(&t, nullptr);
}

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_WORKER_CADENCE_H_
