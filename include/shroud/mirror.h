// The mirror channel: how the dataplane hands per-flow feature records to the
// control process. Part of the dataplane/control contract, like flow_key.h.
//
// One shared-memory file per dataplane run, `<runtime dir>/mirror` (see
// runtime_paths.h), mapped by the dataplane read-write and by the control
// process read-write (the control process only ever writes its ring cursors
// `tail` and `reader_heartbeat_ns`). Nothing in it needs DPDK to read.
//
//   offset 0                  MirrorHeader (4096 bytes)
//   ring_offset + k*ring_stride   MirrorRingHeader of ring k (256 bytes)
//                                 then ring_capacity MirrorRecords
//
// One ring per dataplane worker, single producer (the worker), single consumer
// (the control process):
//   - the writer fills slot head % capacity, then stores head + 1 (release);
//   - the reader loads head (acquire), copies slots [tail, head), then stores
//     tail (release);
//   - the writer never waits: when head - tail == capacity the record is
//     dropped and `dropped` counts it. A stalled or absent reader costs the
//     dataplane one load per record.
//
// Life cycle. The dataplane builds the file under a temporary name and
// renames it into place, so a reader never sees a half-written header; a new
// dataplane run makes a new file (new inode, new run_id). The control process
// re-opens when the path's inode changes and treats a header whose state is
// kStopped, or whose heartbeat is older than kMirrorHeartbeatStaleNs, as a
// dataplane that is gone. A restarted control process maps the same file and
// goes on from `tail`, so nothing already in the ring is lost.
//
// Versioning: `magic` and `version` first, and every size the reader relies
// on (header, ring header, record) is in the header; a reader refuses a file
// whose version or sizes it does not know instead of guessing.
#ifndef SHROUD_MIRROR_H_
#define SHROUD_MIRROR_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "dataplane/core/flow_features.h"
#include "shroud/feature_config.h"
#include "shroud/flow_key.h"

namespace shroud {

inline constexpr uint64_t kMirrorMagic = 0x5252494d44524853ull;  // "SHRDMIRR" little-endian
inline constexpr uint32_t kMirrorVersion = 1;
inline constexpr uint64_t kMirrorHeartbeatStaleNs = 3'000'000'000ull;  // 3 s
inline constexpr uint32_t kMirrorMaxRings = 64;

enum class MirrorState : uint32_t {
  kStarting = 0,  // header written, workers not yet running
  kRunning = 1,
  kStopped = 2,   // the dataplane stopped cleanly; the rings hold its last records
};

enum class MirrorMode : uint32_t { kGateway = 1, kTap = 2 };

enum class MirrorRecordType : uint8_t {
  kUpdate = 1,      // the flow is alive; features so far
  kEndIdle = 2,     // evicted after idle_timeout; final features
  kEndStop = 3,     // the dataplane stopped; final features
  kEndReplaced = 4, // evicted to make room (table full); final features
};

// The dataplane's class of the flow (gateway mode; a tap says kUnclassified).
enum class MirrorFlowClass : uint8_t {
  kUnclassified = 0,
  kDefault = 1,
  kMigration = 2,
  kChaff = 3,
};

// The feature configuration the records were computed under, so the control
// process evaluates them exactly as `shroud analyze` would with that config.
struct MirrorFeatureConfig {
  uint64_t burst_gap_ns;
  uint32_t pattern_window;
  uint32_t pattern_count_threshold;
  double pattern_delta;
  uint32_t pattern_min_distances;
  uint32_t byte_window_count;
  uint32_t byte_windows[kMaxByteWindows];
};
static_assert(sizeof(MirrorFeatureConfig) == 64);

struct MirrorHeader {
  uint64_t magic;                // kMirrorMagic
  uint32_t version;              // kMirrorVersion
  uint32_t header_bytes;         // sizeof(MirrorHeader)
  uint32_t ring_header_bytes;    // sizeof(MirrorRingHeader)
  uint32_t record_bytes;         // sizeof(MirrorRecord)
  uint32_t ring_count;           // one per worker, <= kMirrorMaxRings
  uint32_t ring_capacity;        // records per ring, a power of two
  uint64_t ring_offset;          // file offset of ring 0's header
  uint64_t ring_stride;          // bytes from one ring's header to the next
  uint64_t total_bytes;          // file size
  uint64_t run_id;               // random per dataplane run
  int32_t dataplane_pid;
  MirrorMode mode;
  uint64_t start_unix_ns;        // CLOCK_REALTIME at start
  MirrorFeatureConfig features;
  char instance[64];             // NUL-terminated instance name
  // Written by the dataplane while it runs (relaxed): CLOCK_REALTIME every
  // ~100 ms, and the state.
  alignas(64) std::atomic<uint64_t> heartbeat_ns;
  std::atomic<uint32_t> state;   // MirrorState
  uint8_t reserved[4096 - 320];
};

struct MirrorRingHeader {
  // Writer's line.
  alignas(64) std::atomic<uint64_t> head;  // records published so far
  std::atomic<uint64_t> dropped;           // records dropped because the ring was full
  // Reader's line.
  alignas(64) std::atomic<uint64_t> tail;  // records consumed so far
  std::atomic<uint64_t> reader_heartbeat_ns;  // CLOCK_REALTIME of the reader's last poll (0: none yet)
  std::atomic<int32_t> reader_pid;
  uint8_t reserved[256 - 84];
};

struct MirrorRecord {
  MirrorRecordType type;
  MirrorFlowClass flow_class;
  uint8_t worker;          // ring index
  uint8_t reserved0;
  uint32_t reserved1;
  // Packets of the observed stream when the record was written (Algorithm 2's
  // windows need it: FlowView::stream_packets).
  uint64_t stream_packets;
  // Flow-clock time of the record (rx timestamps in a replay, TSC otherwise), ns.
  uint64_t time_ns;
  FlowKey key;
  FlowFeatures features;
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "the mirror needs lock-free 64-bit atomics");
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(sizeof(MirrorHeader) == 4096, "mirror contract: header is one page");
static_assert(offsetof(MirrorHeader, heartbeat_ns) == 256);
static_assert(sizeof(MirrorRingHeader) == 256, "mirror contract: ring header is 256 bytes");
static_assert(sizeof(MirrorRecord) == 320, "mirror contract: record is 320 bytes (5 cache lines)");
static_assert(std::is_trivially_copyable_v<MirrorRecord>);

// Bytes of a mirror file with `rings` rings of `capacity` records.
inline constexpr uint64_t MirrorFileBytes(uint32_t rings, uint32_t capacity) {
  return sizeof(MirrorHeader) +
         static_cast<uint64_t>(rings) *
             (sizeof(MirrorRingHeader) + static_cast<uint64_t>(capacity) * sizeof(MirrorRecord));
}

inline MirrorFeatureConfig ToMirrorFeatureConfig(const FeatureConfig& c) {
  MirrorFeatureConfig m{};
  m.burst_gap_ns = c.burst_gap_ns;
  m.pattern_window = c.pattern_window;
  m.pattern_count_threshold = c.pattern_count_threshold;
  m.pattern_delta = c.pattern_delta;
  m.pattern_min_distances = c.pattern_min_distances;
  m.byte_window_count = static_cast<uint32_t>(c.byte_window_count);
  for (size_t i = 0; i < kMaxByteWindows; ++i) m.byte_windows[i] = c.byte_windows[i];
  return m;
}

inline FeatureConfig FromMirrorFeatureConfig(const MirrorFeatureConfig& m) {
  FeatureConfig c;
  c.burst_gap_ns = m.burst_gap_ns;
  c.pattern_window = m.pattern_window;
  c.pattern_count_threshold = m.pattern_count_threshold;
  c.pattern_delta = m.pattern_delta;
  c.pattern_min_distances = m.pattern_min_distances;
  c.byte_window_count = m.byte_window_count;
  for (size_t i = 0; i < kMaxByteWindows; ++i) c.byte_windows[i] = m.byte_windows[i];
  return c;
}

}  // namespace shroud

#endif  // SHROUD_MIRROR_H_
