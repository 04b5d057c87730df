// The control process's end of the mirror channel (layout and protocol:
// mirror.h). No DPDK. One reader per mirror file: the rings are
// single-consumer, and two readers would share (and fight over) one tail.
#ifndef SHROUD_CONTROL_MIRROR_MIRROR_READER_H_
#define SHROUD_CONTROL_MIRROR_MIRROR_READER_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "shroud/feature_config.h"
#include "shroud/mirror.h"

namespace shroud {

class MirrorReader {
 public:
  // Maps an existing mirror file and checks that this reader understands it:
  // magic, version, every size in the header, ring count and capacity, and
  // that the file is exactly as long as the header says. Errors name the path
  // and what is wrong (and, for a permission error, what to do about it).
  static absl::StatusOr<std::unique_ptr<MirrorReader>> Open(const std::string& path);
  ~MirrorReader();
  MirrorReader(const MirrorReader&) = delete;
  MirrorReader& operator=(const MirrorReader&) = delete;

  // Appends up to `max` records to `out`: every ring gets a fair share first
  // (starting from a different ring each call), oldest first per ring. Frees
  // the slots for the writer and marks every ring as read now (heartbeat,
  // pid). Returns how many records were appended.
  size_t Poll(std::vector<MirrorRecord>& out, size_t max);

  const MirrorHeader& header() const { return *header_; }
  FeatureConfig features() const { return FromMirrorFeatureConfig(header_->features); }
  uint64_t run_id() const { return header_->run_id; }
  const std::string& path() const { return path_; }

  // The run is not stopped, its heartbeat is within kMirrorHeartbeatStaleNs of
  // `now_unix_ns` (CLOCK_REALTIME), and its pid does not say "no such process".
  bool DataplaneAlive(uint64_t now_unix_ns) const;
  // The dataplane stopped cleanly; the rings still hold its last records.
  bool Stopped() const;
  // The path now names another file (a new dataplane run) or nothing.
  bool Replaced() const;

  struct RingStats {
    uint64_t published;  // records the writer put in the ring
    uint64_t consumed;   // records taken out by readers (this one and earlier ones)
    uint64_t dropped;    // records the writer dropped because the ring was full
  };
  std::vector<RingStats> Stats() const;  // one per ring
  // Times a ring held more than its capacity (only a broken writer does that)
  // and the reader skipped to the newest capacity records.
  uint64_t resyncs() const { return resyncs_; }

 private:
  MirrorReader() = default;
  MirrorRingHeader* ring(uint32_t k) const;
  const MirrorRecord* slots(uint32_t k) const;
  // Copies up to `max` records of ring `k` to `out`; returns how many.
  size_t Drain(uint32_t k, std::vector<MirrorRecord>& out, size_t max);

  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  MirrorHeader* header_ = nullptr;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  uint32_t next_ring_ = 0;  // where the next Poll starts, for fairness
  uint64_t resyncs_ = 0;
};

}  // namespace shroud

#endif  // SHROUD_CONTROL_MIRROR_MIRROR_READER_H_
