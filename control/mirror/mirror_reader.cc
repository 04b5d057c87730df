#include "control/mirror/mirror_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace shroud {
namespace {

uint64_t UnixNowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

bool IsPowerOfTwo(uint32_t x) { return x != 0 && (x & (x - 1)) == 0; }

absl::Status OpenError(const std::string& path, int err) {
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(absl::StrCat(
          "mirror ", path,
          " does not exist: is the dataplane running, with the same runtime dir and instance?"));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(absl::StrCat(
          "cannot open mirror ", path, ": ", strerror(err),
          "; the control process must run as the dataplane's user (or as root)"));
    default:
      return absl::ErrnoToStatus(err, absl::StrCat("cannot open mirror ", path));
  }
}

// Reads a header field before the file is mapped, so a short or foreign file
// is reported for what it is.
template <typename T>
bool ReadField(int fd, off_t offset, T* value) {
  return pread(fd, value, sizeof(T), offset) == static_cast<ssize_t>(sizeof(T));
}

// The checks that need only the mapped header; the caller has checked the
// magic and version and that the file holds a whole header.
absl::Status CheckLayout(const std::string& path, const MirrorHeader& h, uint64_t file_bytes) {
  auto layout_error = [&](const char* what, uint64_t got, uint64_t want) {
    return absl::FailedPreconditionError(
        absl::StrCat("mirror ", path, ": layout mismatch: ", what, " is ", got,
                     ", this reader knows ", want, " (mismatched shroud versions?)"));
  };
  if (h.header_bytes != sizeof(MirrorHeader)) {
    return layout_error("header size", h.header_bytes, sizeof(MirrorHeader));
  }
  if (h.ring_header_bytes != sizeof(MirrorRingHeader)) {
    return layout_error("ring header size", h.ring_header_bytes, sizeof(MirrorRingHeader));
  }
  if (h.record_bytes != sizeof(MirrorRecord)) {
    return layout_error("record size", h.record_bytes, sizeof(MirrorRecord));
  }
  if (h.ring_count < 1 || h.ring_count > kMirrorMaxRings) {
    return absl::DataLossError(absl::StrCat("mirror ", path, ": corrupt header: ring count ",
                                            h.ring_count, " is not in 1..", kMirrorMaxRings));
  }
  if (!IsPowerOfTwo(h.ring_capacity) || h.ring_capacity > (1u << 24)) {
    return absl::DataLossError(absl::StrCat("mirror ", path, ": corrupt header: ring capacity ",
                                            h.ring_capacity,
                                            " is not a power of two up to 2^24"));
  }
  // The control process indexes per-window arrays with these; a corrupt
  // window count must not reach it.
  if (absl::Status s = FromMirrorFeatureConfig(h.features).Validate(); !s.ok()) {
    return absl::DataLossError(absl::StrCat("mirror ", path,
                                            ": corrupt header: feature configuration: ",
                                            s.message()));
  }
  const uint64_t stride = sizeof(MirrorRingHeader) + uint64_t{h.ring_capacity} * sizeof(MirrorRecord);
  if (h.ring_offset != sizeof(MirrorHeader)) {
    return layout_error("ring offset", h.ring_offset, sizeof(MirrorHeader));
  }
  if (h.ring_stride != stride) return layout_error("ring stride", h.ring_stride, stride);
  const uint64_t expected = MirrorFileBytes(h.ring_count, h.ring_capacity);
  if (h.total_bytes != expected) {
    return absl::DataLossError(absl::StrCat(
        "mirror ", path, ": size mismatch: header says ", h.total_bytes, " bytes in all, but ",
        h.ring_count, " rings of ", h.ring_capacity, " records take ", expected));
  }
  if (file_bytes < h.total_bytes) {
    return absl::DataLossError(absl::StrCat("mirror ", path, ": truncated: ", file_bytes,
                                            " bytes, header says ", h.total_bytes));
  }
  if (file_bytes > h.total_bytes) {
    return absl::DataLossError(absl::StrCat("mirror ", path, ": size mismatch: file is ",
                                            file_bytes, " bytes, header says ", h.total_bytes));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<MirrorReader>> MirrorReader::Open(const std::string& path) {
  // Read-write: the reader owns its rings' tail and heartbeat.
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return OpenError(path, errno);
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};

  struct stat st;
  if (fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot stat mirror ", path));
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("mirror ", path, " is not a regular file: not a shroud mirror file"));
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  uint64_t magic = 0;
  if (!ReadField(fd, offsetof(MirrorHeader, magic), &magic) || magic != kMirrorMagic) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " is not a shroud mirror file (", file_bytes, " bytes, no mirror magic)"));
  }
  uint32_t version = 0;
  if (!ReadField(fd, offsetof(MirrorHeader, version), &version)) {
    return absl::DataLossError(absl::StrCat("mirror ", path, ": truncated: ", file_bytes,
                                            " bytes, shorter than its header"));
  }
  if (version != kMirrorVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "mirror ", path, ": mirror version ", version, ", this reader knows ", kMirrorVersion,
        version > kMirrorVersion ? ": upgrade shroud-control"
                                 : ": the dataplane is older than shroud-control; run matching "
                                   "versions"));
  }
  if (file_bytes < sizeof(MirrorHeader)) {
    return absl::DataLossError(absl::StrCat("mirror ", path, ": truncated: ", file_bytes,
                                            " bytes, shorter than its ", sizeof(MirrorHeader),
                                            "-byte header"));
  }

  void* map = mmap(nullptr, file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot map mirror ", path));
  }
  auto* header = static_cast<MirrorHeader*>(map);
  if (absl::Status s = CheckLayout(path, *header, file_bytes); !s.ok()) {
    munmap(map, file_bytes);
    return s;
  }

  std::unique_ptr<MirrorReader> reader(new MirrorReader());
  reader->path_ = path;
  reader->map_ = map;
  reader->map_bytes_ = file_bytes;
  reader->header_ = header;
  reader->dev_ = st.st_dev;
  reader->ino_ = st.st_ino;
  return reader;
}

MirrorReader::~MirrorReader() {
  if (map_ != nullptr) munmap(map_, map_bytes_);
}

MirrorRingHeader* MirrorReader::ring(uint32_t k) const {
  return reinterpret_cast<MirrorRingHeader*>(static_cast<char*>(map_) + header_->ring_offset +
                                             k * header_->ring_stride);
}

const MirrorRecord* MirrorReader::slots(uint32_t k) const {
  return reinterpret_cast<const MirrorRecord*>(ring(k) + 1);
}

size_t MirrorReader::Drain(uint32_t k, std::vector<MirrorRecord>& out, size_t max) {
  MirrorRingHeader* rh = ring(k);
  const uint64_t capacity = header_->ring_capacity;
  // Acquire pairs with the writer's release of head: the slots below it are
  // filled.
  const uint64_t head = rh->head.load(std::memory_order_acquire);
  uint64_t tail = rh->tail.load(std::memory_order_relaxed);
  bool resynced = false;
  if (tail > head) {  // a reader of a broken run went past the writer
    tail = head;
    resynced = true;
  } else if (head - tail > capacity) {
    tail = head - capacity;
    resynced = true;
  }
  if (resynced) ++resyncs_;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(head - tail, max));
  if (n == 0) {
    if (resynced) rh->tail.store(tail, std::memory_order_release);
    return 0;
  }
  const MirrorRecord* base = slots(k);
  const size_t first = static_cast<size_t>(tail & (capacity - 1));
  const size_t before_wrap = std::min<size_t>(n, capacity - first);
  out.insert(out.end(), base + first, base + first + before_wrap);
  out.insert(out.end(), base, base + (n - before_wrap));
  // Release: our copies are complete before the writer may reuse the slots.
  rh->tail.store(tail + n, std::memory_order_release);
  return n;
}

size_t MirrorReader::Poll(std::vector<MirrorRecord>& out, size_t max) {
  const uint32_t rings = header_->ring_count;
  size_t appended = 0;
  if (max > 0) {
    // A fair share per ring first, so one busy worker cannot starve the
    // others' rings; then whatever budget is left, greedily.
    const size_t share = (max + rings - 1) / rings;
    for (uint32_t i = 0; i < rings && appended < max; ++i) {
      appended += Drain((next_ring_ + i) % rings, out, std::min(share, max - appended));
    }
    for (uint32_t i = 0; i < rings && appended < max; ++i) {
      appended += Drain((next_ring_ + i) % rings, out, max - appended);
    }
    next_ring_ = (next_ring_ + 1) % rings;
  }
  const uint64_t now = UnixNowNs();
  const pid_t pid = getpid();
  for (uint32_t k = 0; k < rings; ++k) {
    ring(k)->reader_heartbeat_ns.store(now, std::memory_order_relaxed);
    ring(k)->reader_pid.store(pid, std::memory_order_relaxed);
  }
  return appended;
}

bool MirrorReader::DataplaneAlive(uint64_t now_unix_ns) const {
  if (Stopped()) return false;
  const uint64_t beat = header_->heartbeat_ns.load(std::memory_order_relaxed);
  // A dataplane whose clock runs a little ahead of ours is still alive.
  if (beat < now_unix_ns && now_unix_ns - beat > kMirrorHeartbeatStaleNs) return false;
  const pid_t pid = header_->dataplane_pid;
  // EPERM (the dataplane runs as another user) still means it exists; only
  // ESRCH says it is gone. (A dataplane in another pid namespace can look gone.)
  return pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH;
}

bool MirrorReader::Stopped() const {
  return header_->state.load(std::memory_order_acquire) ==
         static_cast<uint32_t>(MirrorState::kStopped);
}

bool MirrorReader::Replaced() const {
  struct stat st;
  if (stat(path_.c_str(), &st) != 0) return errno == ENOENT || errno == ENOTDIR;
  return st.st_dev != dev_ || st.st_ino != ino_;
}

std::vector<MirrorReader::RingStats> MirrorReader::Stats() const {
  std::vector<RingStats> stats;
  stats.reserve(header_->ring_count);
  for (uint32_t k = 0; k < header_->ring_count; ++k) {
    const MirrorRingHeader* rh = ring(k);
    stats.push_back({rh->head.load(std::memory_order_relaxed),
                     rh->tail.load(std::memory_order_relaxed),
                     rh->dropped.load(std::memory_order_relaxed)});
  }
  return stats;
}

}  // namespace shroud
