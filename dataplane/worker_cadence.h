// The pace of the non-packet work in a poll loop, shared by the gateway and
// the tap workers.
#ifndef SHROUD_DATAPLANE_WORKER_CADENCE_H_
#define SHROUD_DATAPLANE_WORKER_CADENCE_H_

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

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_WORKER_CADENCE_H_
