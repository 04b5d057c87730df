// Per-worker flow table: an rte_hash from FlowKey to a slot in a flat array of
// FlowEntry (features, class, timestamps). One writer, one reader: the worker
// that owns it, so no locks and no RCU. Memory is bounded by max_flows, all
// allocated at creation; idle flows are evicted by an incremental sweep that
// costs a few slots per poll-loop iteration.
#ifndef SHROUD_DATAPLANE_FLOW_TABLE_H_
#define SHROUD_DATAPLANE_FLOW_TABLE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "dataplane/core/classifier.h"
#include "dataplane/core/flow_features.h"
#include "shroud/flow_key.h"

struct rte_hash;

namespace shroud {

struct FlowEntry {
  FlowFeatures features;  // the same code as `shroud analyze`
  FlowKey key;
  FlowClass cls;
  uint64_t last_seen_ns = 0;
  // Mirror export (issue 5): when the flow's record was last written and its
  // packet count then, so only flows that changed are written again.
  uint64_t exported_ns = 0;
  uint64_t exported_packets = 0;
  bool in_use = false;
  // The shaper lane of a migration flow (ShaperClassConfig::flow_lanes),
  // handed out round robin on its first shaped packet; kNoLane until then.
  static constexpr uint8_t kNoLane = 0xff;
  uint8_t shaper_lane = kNoLane;
};

// Brings a whole entry towards the cache: FlowFeatures::Observe touches
// most of its lines, and with a million flows each is a miss.
inline void PrefetchFlowEntry(const FlowEntry* e) {
  const char* p = reinterpret_cast<const char*>(e);
  for (size_t off = 0; off < sizeof(FlowEntry); off += 64) __builtin_prefetch(p + off, 1, 3);
}

struct WorkerFlowTableCounters {
  uint64_t created = 0;
  uint64_t evicted_idle = 0;
  // Packets whose flow could not be added because the table was full. They
  // are still classified (by rules, statelessly) and forwarded.
  uint64_t table_full = 0;
};

class WorkerFlowTable {
 public:
  // `name` must be unique in the process (rte_hash names are global).
  static absl::StatusOr<std::unique_ptr<WorkerFlowTable>> Create(const std::string& name,
                                                           uint32_t max_flows, int socket_id);
  ~WorkerFlowTable();
  WorkerFlowTable(const WorkerFlowTable&) = delete;
  WorkerFlowTable& operator=(const WorkerFlowTable&) = delete;

  // The entry of `key`, added (zeroed, class kNew) when absent; null when the
  // table is full. `*created` says whether it was added now.
  FlowEntry* FindOrAdd(const FlowKey& key, uint64_t now_ns, bool* created);
  FlowEntry* Find(const FlowKey& key);

  // Looks up `n` (<= 64) keys at once (rte_hash's bulk lookup prefetches the
  // buckets of all of them); out[i] is the entry or null when absent.
  void LookupBulk(const FlowKey* const* keys, uint32_t n, FlowEntry** out);

  // Looks at the next `max_slots` slots (round robin) and evicts those idle
  // for at least `idle_ns`. Returns how many were evicted.
  uint32_t SweepIdle(uint64_t now_ns, uint64_t idle_ns, uint32_t max_slots) {
    return Sweep(now_ns, idle_ns, max_slots, [](FlowEntry&, bool) {});
  }
  // The same, calling visit(entry, evicting) for every flow it looks at,
  // before an idle one is evicted (the entry is still intact then): the
  // mirror exporter's hook.
  template <typename Visit>
  uint32_t Sweep(uint64_t now_ns, uint64_t idle_ns, uint32_t max_slots, Visit&& visit) {
    uint32_t evicted = 0;
    for (uint32_t i = 0; i < max_slots && size_ > 0; ++i) {
      FlowEntry& e = entries_[sweep_cursor_];
      if (e.in_use) {
        const bool idle = now_ns > e.last_seen_ns && now_ns - e.last_seen_ns >= idle_ns;
        visit(e, idle);
        if (idle) {
          Evict(e);
          ++evicted;
        }
      }
      if (++sweep_cursor_ == capacity_) sweep_cursor_ = 0;
    }
    return evicted;
  }

  uint32_t size() const { return size_; }
  uint32_t capacity() const { return capacity_; }
  const WorkerFlowTableCounters& counters() const { return counters_; }
  // Slot access for exporters (in_use tells whether a slot holds a flow).
  const FlowEntry& slot(uint32_t i) const { return entries_[i]; }
  FlowEntry& mutable_slot(uint32_t i) { return entries_[i]; }

 private:
  WorkerFlowTable() = default;
  void Evict(FlowEntry& e);

  rte_hash* hash_ = nullptr;
  std::unique_ptr<FlowEntry[]> entries_;
  uint32_t capacity_ = 0;
  uint32_t size_ = 0;
  uint32_t sweep_cursor_ = 0;
  WorkerFlowTableCounters counters_;
};

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_FLOW_TABLE_H_
