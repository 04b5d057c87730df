#include "dataplane/mirror_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <new>
#include <random>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace shroud {
namespace {

uint64_t ClockNs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// A run_id distinguishes two runs that reuse one path; /dev/urandom, and
// std::random_device where it cannot be read (e.g. a chroot without /dev).
uint64_t RandomRunId() {
  uint64_t id = 0;
  const int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    const ssize_t n = read(fd, &id, sizeof(id));
    close(fd);
    if (n == static_cast<ssize_t>(sizeof(id)) && id != 0) return id;
  }
  std::random_device rd;
  do {
    id = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  } while (id == 0);
  return id;
}

bool IsPowerOfTwo(uint32_t x) { return x != 0 && (x & (x - 1)) == 0; }

absl::Status ValidateOptions(const MirrorWriterOptions& o) {
  if (o.path.empty()) return absl::InvalidArgumentError("mirror path is empty");
  if (o.rings < 1 || o.rings > kMirrorMaxRings) {
    return absl::InvalidArgumentError(absl::StrCat("mirror ", o.path, ": rings must be 1..",
                                                   kMirrorMaxRings, ", got ", o.rings));
  }
  if (!IsPowerOfTwo(o.ring_capacity) || o.ring_capacity < 2 || o.ring_capacity > (1u << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("mirror ", o.path, ": ring capacity must be a power of two in [2, 2^24], got ",
                     o.ring_capacity));
  }
  if (o.mode != MirrorMode::kGateway && o.mode != MirrorMode::kTap) {
    return absl::InvalidArgumentError(absl::StrCat("mirror ", o.path, ": unknown mode ",
                                                   static_cast<uint32_t>(o.mode)));
  }
  if (o.instance.size() >= sizeof(MirrorHeader::instance)) {
    return absl::InvalidArgumentError(absl::StrCat("mirror ", o.path, ": instance name is ",
                                                   o.instance.size(), " characters, at most ",
                                                   sizeof(MirrorHeader::instance) - 1, " fit"));
  }
  if (absl::Status s = o.features.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("mirror ", o.path, ": ", s.message()));
  }
  return absl::OkStatus();
}

MirrorRingHeader* RingAt(void* map, uint32_t ring, uint32_t capacity) {
  const uint64_t stride = sizeof(MirrorRingHeader) + uint64_t{capacity} * sizeof(MirrorRecord);
  return reinterpret_cast<MirrorRingHeader*>(static_cast<char*>(map) + sizeof(MirrorHeader) +
                                             ring * stride);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MirrorWriter>> MirrorWriter::Create(
    const MirrorWriterOptions& options) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  const uint64_t bytes = MirrorFileBytes(options.rings, options.ring_capacity);
  const std::string tmp = absl::StrCat(options.path, ".tmp.", getpid());

  // A leftover with our pid is from an earlier run that died before its
  // rename (containers reuse pids): nobody else can be building it.
  if (unlink(tmp.c_str()) != 0 && errno != ENOENT) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot remove stale mirror file ", tmp));
  }
  const int fd = open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot create mirror file ", tmp));
  auto fail = [&](const std::string& what) {
    const int saved = errno;
    close(fd);
    unlink(tmp.c_str());
    return absl::ErrnoToStatus(saved, absl::StrCat(what, " ", tmp, " (", bytes, " bytes)"));
  };
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) return fail("cannot size mirror file");
  // Reserve the pages now: on a full tmpfs a sparse file would fail later, in
  // a worker, as SIGBUS instead of an error here.
  if (const int err = posix_fallocate(fd, 0, static_cast<off_t>(bytes)); err != 0) {
    errno = err;
    return fail("cannot allocate mirror file");
  }
  void* map = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return fail("cannot map mirror file");
  close(fd);

  auto* header = new (map) MirrorHeader{};
  header->magic = kMirrorMagic;
  header->version = kMirrorVersion;
  header->header_bytes = sizeof(MirrorHeader);
  header->ring_header_bytes = sizeof(MirrorRingHeader);
  header->record_bytes = sizeof(MirrorRecord);
  header->ring_count = options.rings;
  header->ring_capacity = options.ring_capacity;
  header->ring_offset = sizeof(MirrorHeader);
  header->ring_stride =
      sizeof(MirrorRingHeader) + uint64_t{options.ring_capacity} * sizeof(MirrorRecord);
  header->total_bytes = bytes;
  header->run_id = RandomRunId();
  header->dataplane_pid = getpid();
  header->mode = options.mode;
  header->start_unix_ns = ClockNs(CLOCK_REALTIME);
  header->features = ToMirrorFeatureConfig(options.features);
  std::memcpy(header->instance, options.instance.data(), options.instance.size());
  header->heartbeat_ns.store(header->start_unix_ns, std::memory_order_relaxed);
  header->state.store(static_cast<uint32_t>(MirrorState::kStarting), std::memory_order_relaxed);
  for (uint32_t k = 0; k < options.rings; ++k) {
    new (RingAt(map, k, options.ring_capacity)) MirrorRingHeader{};
  }

  if (rename(tmp.c_str(), options.path.c_str()) != 0) {
    const int saved = errno;
    munmap(map, bytes);
    unlink(tmp.c_str());
    return absl::ErrnoToStatus(
        saved, absl::StrCat("cannot rename mirror file ", tmp, " to ", options.path));
  }

  std::unique_ptr<MirrorWriter> writer(new MirrorWriter());
  writer->path_ = options.path;
  writer->map_ = map;
  writer->map_bytes_ = bytes;
  writer->header_ = header;
  return writer;
}

MirrorWriter::~MirrorWriter() {
  if (map_ == nullptr) return;
  SetState(MirrorState::kStopped);
  msync(map_, map_bytes_, MS_SYNC);
  munmap(map_, map_bytes_);
}

MirrorProducer MirrorWriter::producer(uint32_t ring) {
  CHECK_LT(ring, header_->ring_count) << "mirror " << path_ << " has no ring " << ring;
  MirrorRingHeader* rh = RingAt(map_, ring, header_->ring_capacity);
  return MirrorProducer(rh, reinterpret_cast<MirrorRecord*>(rh + 1), header_->ring_capacity);
}

void MirrorWriter::Heartbeat(uint64_t unix_ns) {
  header_->heartbeat_ns.store(unix_ns, std::memory_order_relaxed);
}

void MirrorWriter::SetState(MirrorState s) {
  // Release: a reader that sees kStopped also sees every head published before
  // it (by workers joined before this call), so its final drain misses nothing.
  header_->state.store(static_cast<uint32_t>(s), std::memory_order_release);
}

bool MirrorProducer::WriteWaiting(const MirrorRecord& r, uint64_t timeout_ns) {
  const uint64_t start = ClockNs(CLOCK_MONOTONIC);
  const uint64_t head = ring_->head.load(std::memory_order_relaxed);
  while (!HasRoom(head)) {
    if (ClockNs(CLOCK_MONOTONIC) - start >= timeout_ns) {
      CountDrop();
      return false;
    }
    const timespec pause = {0, 50'000};
    nanosleep(&pause, nullptr);
  }
  Publish(head, r);
  return true;
}

bool MirrorProducer::ReaderAttached(uint64_t now_unix_ns) const {
  const uint64_t seen = ring_->reader_heartbeat_ns.load(std::memory_order_relaxed);
  if (seen == 0) return false;
  // A reader whose clock runs a little ahead of ours is still attached.
  return seen >= now_unix_ns || now_unix_ns - seen <= kMirrorHeartbeatStaleNs;
}

}  // namespace shroud
