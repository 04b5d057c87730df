// The dataplane's end of the mirror channel (layout and protocol: mirror.h).
// Plain C++, no DPDK: a worker publishes with MirrorProducer::TryWrite, which
// costs a 320-byte copy and two or three atomic loads/stores, and never
// allocates, locks, waits or makes a system call.
#ifndef SHROUD_DATAPLANE_MIRROR_WRITER_H_
#define SHROUD_DATAPLANE_MIRROR_WRITER_H_

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "shroud/feature_config.h"
#include "shroud/mirror.h"

namespace shroud {

struct MirrorWriterOptions {
  std::string path;               // usually RuntimePaths::mirror
  uint32_t rings = 1;             // one per worker, 1..kMirrorMaxRings
  uint32_t ring_capacity = 65536; // records per ring, a power of two in [2, 2^24]
  MirrorMode mode = MirrorMode::kGateway;
  FeatureConfig features;         // the configuration the records are computed under
  std::string instance;           // at most 63 characters
};

// The writing end of one ring. A cheap, copyable handle into the writer's
// mapping; valid while its MirrorWriter lives. The ring is single-producer:
// only one thread at a time may write through the handles of one ring.
class MirrorProducer {
 public:
  MirrorProducer() = default;  // detached; only for assigning a real one later

  // Publishes `r`, or returns false and counts a drop when the ring is full.
  // Never waits. The reader's tail is cached and reloaded only when the cached
  // view says full, so a ring with room costs no access to the reader's line.
  bool TryWrite(const MirrorRecord& r) {
    const uint64_t head = ring_->head.load(std::memory_order_relaxed);
    if (!HasRoom(head)) {
      CountDrop();
      return false;
    }
    Publish(head, r);
    return true;
  }

  // For the final flush at stop only: retries until written or `timeout_ns`
  // of CLOCK_MONOTONIC passed, sleeping ~50 us between tries. A timeout
  // counts one drop.
  bool WriteWaiting(const MirrorRecord& r, uint64_t timeout_ns);

  // A reader polled this ring within kMirrorHeartbeatStaleNs of
  // `now_unix_ns` (CLOCK_REALTIME).
  bool ReaderAttached(uint64_t now_unix_ns) const;

  uint64_t published() const { return ring_->head.load(std::memory_order_relaxed); }
  uint64_t dropped() const { return ring_->dropped.load(std::memory_order_relaxed); }

  // True when a TryWrite now would drop: lets a caller skip building a
  // record nobody has room for. Counts nothing.
  bool Full() { return !HasRoom(ring_->head.load(std::memory_order_relaxed)); }
  // Counts a record the caller dropped without calling TryWrite (Full()).
  void CountDropped() { CountDrop(); }

 private:
  friend class MirrorWriter;
  MirrorProducer(MirrorRingHeader* ring, MirrorRecord* slots, uint32_t capacity)
      : ring_(ring),
        slots_(slots),
        capacity_(capacity),
        cached_tail_(ring->tail.load(std::memory_order_acquire)) {}

  bool HasRoom(uint64_t head) {
    if (head - cached_tail_ < capacity_) return true;
    // Acquire pairs with the reader's release of tail: its copies out of the
    // slots we are about to reuse are complete before we overwrite them.
    cached_tail_ = ring_->tail.load(std::memory_order_acquire);
    return head - cached_tail_ < capacity_;
  }
  void Publish(uint64_t head, const MirrorRecord& r) {
    std::memcpy(&slots_[head & (capacity_ - 1)], &r, sizeof(MirrorRecord));
    // Release: the record is in the slot before the reader can see head move.
    ring_->head.store(head + 1, std::memory_order_release);
  }
  // Single producer, so a load and a store instead of a locked read-modify-write.
  void CountDrop() {
    ring_->dropped.store(ring_->dropped.load(std::memory_order_relaxed) + 1,
                         std::memory_order_relaxed);
  }

  MirrorRingHeader* ring_ = nullptr;
  MirrorRecord* slots_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t cached_tail_ = 0;  // a lower bound of the reader's tail
};

// Creates and owns one mirror file for the life of a dataplane run.
class MirrorWriter {
 public:
  // Validates the options, builds the file under `path.tmp.<pid>` (0600),
  // fills the header (state kStarting, a fresh random run_id) and renames it
  // over `path`, so a reader sees either the previous run's file or all of
  // this one. Errors name the path and the system's reason.
  static absl::StatusOr<std::unique_ptr<MirrorWriter>> Create(const MirrorWriterOptions& options);
  // Marks the run kStopped and unmaps. The file stays, so a reader can drain
  // the last records and see that the dataplane stopped cleanly.
  ~MirrorWriter();
  MirrorWriter(const MirrorWriter&) = delete;
  MirrorWriter& operator=(const MirrorWriter&) = delete;

  // The producer of ring `ring` (< header().ring_count).
  MirrorProducer producer(uint32_t ring);

  // CLOCK_REALTIME in ns; call every ~100 ms so readers know the run is alive.
  void Heartbeat(uint64_t unix_ns);
  void SetState(MirrorState s);

  const MirrorHeader& header() const { return *header_; }
  const std::string& path() const { return path_; }

 private:
  MirrorWriter() = default;

  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  MirrorHeader* header_ = nullptr;
};

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_MIRROR_WRITER_H_
