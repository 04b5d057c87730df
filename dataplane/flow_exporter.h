// Writes a worker's flows to its mirror ring (include/shroud/mirror.h): an
// update for a flow whose packet count changed since its last record, at most
// once per export interval, found by the flow table's paced sweep; an end
// record when the sweep evicts a flow; and, at stop, a final record for every
// flow still in the table.
//
// On the poll loop it never waits: a full ring drops the record (the ring
// counts it) and the flow is simply written again at its next interval. Only
// the final flush waits, boundedly, for a reader that is attached, so a
// replay's last records reach the control process.
#ifndef SHROUD_DATAPLANE_FLOW_EXPORTER_H_
#define SHROUD_DATAPLANE_FLOW_EXPORTER_H_

#include <cstdint>
#include <cstring>
#include <ctime>

#include "dataplane/core/classifier.h"
#include "dataplane/flow_table.h"
#include "dataplane/mirror_writer.h"
#include "shroud/mirror.h"

namespace shroud {

struct FlowExporterCounters {
  uint64_t updates = 0;  // records written (accepted by the ring), by type
  uint64_t ends = 0;
  uint64_t finals = 0;
  uint64_t dropped = 0;  // refused: ring full (or flush timeout)
};

inline MirrorFlowClass ToMirrorFlowClass(const FlowClass& c) {
  if (!c.decided()) return MirrorFlowClass::kUnclassified;
  switch (QueueClass(c)) {
    case TrafficClass::kMigration: return MirrorFlowClass::kMigration;
    case TrafficClass::kChaff: return MirrorFlowClass::kChaff;
    default: return MirrorFlowClass::kDefault;
  }
}

inline uint64_t UnixNowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

class FlowExporter {
 public:
  // `classified`: the flows carry a class (gateway); a tap's are unclassified.
  FlowExporter(MirrorProducer producer, uint8_t worker, uint64_t interval_ns, bool classified)
      : producer_(producer), worker_(worker), interval_ns_(interval_ns), classified_(classified) {}

  // The flow table's sweep hook.
  void Visit(FlowEntry& e, bool evicting, uint64_t now_ns, uint64_t stream_packets) {
    if (evicting) {
      Write(e, MirrorRecordType::kEndIdle, now_ns, stream_packets, /*wait_ns=*/0);
      return;
    }
    if (e.features.packets != e.exported_packets && now_ns - e.exported_ns >= interval_ns_) {
      Write(e, MirrorRecordType::kUpdate, now_ns, stream_packets, 0);
    }
  }

  // Every flow of `table`, once, as kEndStop. Waits up to `timeout_ns` in all
  // for room when a reader is attached; without one, writes what fits.
  void FlushAll(WorkerFlowTable& table, uint64_t now_ns, uint64_t stream_packets, uint64_t timeout_ns) {
    const bool reader = producer_.ReaderAttached(UnixNowNs());
    const uint64_t deadline = MonotonicNs() + timeout_ns;
    for (uint32_t i = 0; i < table.capacity(); ++i) {
      FlowEntry& e = table.mutable_slot(i);
      if (!e.in_use) continue;
      const uint64_t now = MonotonicNs();
      const uint64_t wait = reader && now < deadline ? deadline - now : 0;
      Write(e, MirrorRecordType::kEndStop, now_ns, stream_packets, wait);
    }
  }

  const FlowExporterCounters& counters() const { return counters_; }
  const MirrorProducer& producer() const { return producer_; }

 private:
  static uint64_t MonotonicNs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
  }

  void Write(FlowEntry& e, MirrorRecordType type, uint64_t now_ns, uint64_t stream_packets,
             uint64_t wait_ns) {
    if (wait_ns == 0 && producer_.Full()) {
      // No room: skip copying a cold flow entry into a record that would be
      // dropped anyway (it cost a tap ~20 ns/packet at 1 M flows with no reader).
      producer_.CountDropped();
      ++counters_.dropped;
      e.exported_ns = now_ns;
      return;
    }
    MirrorRecord& r = record_;
    r.type = type;
    r.flow_class = classified_ ? ToMirrorFlowClass(e.cls) : MirrorFlowClass::kUnclassified;
    r.worker = worker_;
    r.stream_packets = stream_packets;
    r.time_ns = now_ns;
    r.key = e.key;
    std::memcpy(&r.features, &e.features, sizeof(FlowFeatures));
    const bool ok = wait_ns > 0 ? producer_.WriteWaiting(r, wait_ns) : producer_.TryWrite(r);
    // Tried now either way: a flow whose record found the ring full is tried
    // again at its next interval, not at every sweep visit until it fits.
    e.exported_ns = now_ns;
    if (!ok) {
      ++counters_.dropped;
      return;
    }
    e.exported_packets = e.features.packets;
    switch (type) {
      case MirrorRecordType::kUpdate: ++counters_.updates; break;
      case MirrorRecordType::kEndStop: ++counters_.finals; break;
      default: ++counters_.ends; break;
    }
  }

  MirrorProducer producer_;
  uint8_t worker_;
  uint64_t interval_ns_;
  bool classified_;
  MirrorRecord record_{};
  FlowExporterCounters counters_;
};

// One paced sweep step of a worker: evicts idle flows and, with a mirror,
// writes their end records and the changed flows' updates.
inline void SweepFlows(WorkerFlowTable& table, FlowExporter* exporter, uint64_t now_ns,
                       uint64_t idle_ns, uint32_t max_slots, uint64_t stream_packets) {
  if (exporter == nullptr) {
    table.SweepIdle(now_ns, idle_ns, max_slots);
    return;
  }
  table.Sweep(now_ns, idle_ns, max_slots, [&](FlowEntry& e, bool evicting) {
    exporter->Visit(e, evicting, now_ns, stream_packets);
  });
}

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_FLOW_EXPORTER_H_
