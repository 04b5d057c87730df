// Tests of the mirror channel (include/shroud/mirror.h): records cross from
// MirrorWriter to MirrorReader bit for bit, in order, in one process and from
// a forked writer process; a full ring drops and counts without waiting; a
// restarted reader resumes; a new run replaces the file; liveness; every
// Open error; and the runtime directory's names and permission checks.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "control/mirror/mirror_reader.h"
#include "dataplane/mirror_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shroud/mirror.h"
#include "shroud/runtime_paths.h"
#include "tests/allocation_counter.h"

namespace shroud {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSec = 1'000'000'000;

uint64_t ClockNs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * kSec + static_cast<uint64_t>(ts.tv_nsec);
}
uint64_t UnixNowNs() { return ClockNs(CLOCK_REALTIME); }

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Every byte of record `seq` of ring `ring` follows from (ring, seq), so a
// reader can check a record's whole content from its own two fields.
MirrorRecord MakeRecord(uint8_t ring, uint64_t seq) {
  MirrorRecord r;
  uint64_t state = (uint64_t{ring} << 56) ^ (seq * 0xD1B54A32D192ED03ull) ^ 0x5eed;
  for (size_t offset = 0; offset < sizeof(r); offset += sizeof(uint64_t)) {
    const uint64_t word = SplitMix64(state);
    std::memcpy(reinterpret_cast<char*>(&r) + offset, &word, sizeof(word));
  }
  r.type = MirrorRecordType::kUpdate;
  r.worker = ring;
  r.stream_packets = seq;
  return r;
}

// True when `r` is exactly MakeRecord(r.worker, r.stream_packets).
bool IsExpectedRecord(const MirrorRecord& r) {
  const MirrorRecord expected = MakeRecord(r.worker, r.stream_packets);
  return std::memcmp(&r, &expected, sizeof(r)) == 0;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

class MirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/shroud-mirror-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr) << strerror(errno);
    dir_ = pattern;
    path_ = dir_ + "/mirror";
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  MirrorWriterOptions Options(uint32_t rings, uint32_t capacity) const {
    MirrorWriterOptions o;
    o.path = path_;
    o.rings = rings;
    o.ring_capacity = capacity;
    o.instance = "test-instance";
    return o;
  }
  std::unique_ptr<MirrorWriter> MustCreate(const MirrorWriterOptions& o) {
    auto writer = MirrorWriter::Create(o);
    EXPECT_TRUE(writer.ok()) << writer.status();
    return writer.ok() ? std::move(*writer) : nullptr;
  }
  std::unique_ptr<MirrorReader> MustOpen() {
    auto reader = MirrorReader::Open(path_);
    EXPECT_TRUE(reader.ok()) << reader.status();
    return reader.ok() ? std::move(*reader) : nullptr;
  }
  // Rewrites `bytes` at `offset` of the mirror file, as a corrupt or foreign
  // writer would have left them.
  void Patch(off_t offset, const void* bytes, size_t n) {
    const int fd = open(path_.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0) << strerror(errno);
    ASSERT_EQ(pwrite(fd, bytes, n, offset), static_cast<ssize_t>(n));
    close(fd);
  }

  std::string dir_;
  std::string path_;
};

// --- writer and reader in one process ---

TEST_F(MirrorTest, HeaderDescribesTheRun) {
  MirrorWriterOptions o = Options(3, 16);
  o.mode = MirrorMode::kTap;
  o.features.burst_gap_ns = 7'000'000;
  o.features.pattern_window = 500;
  const uint64_t before = UnixNowNs();
  auto writer = MustCreate(o);
  ASSERT_NE(writer, nullptr);
  auto reader = MustOpen();
  ASSERT_NE(reader, nullptr);

  const MirrorHeader& h = reader->header();
  EXPECT_EQ(h.magic, kMirrorMagic);
  EXPECT_EQ(h.version, kMirrorVersion);
  EXPECT_EQ(h.ring_count, 3u);
  EXPECT_EQ(h.ring_capacity, 16u);
  EXPECT_EQ(h.total_bytes, MirrorFileBytes(3, 16));
  EXPECT_EQ(h.dataplane_pid, getpid());
  EXPECT_EQ(h.mode, MirrorMode::kTap);
  EXPECT_STREQ(h.instance, "test-instance");
  EXPECT_GE(h.start_unix_ns, before);
  EXPECT_NE(reader->run_id(), 0u);
  EXPECT_EQ(reader->run_id(), writer->header().run_id);
  EXPECT_EQ(reader->features().burst_gap_ns, 7'000'000u);
  EXPECT_EQ(reader->features().pattern_window, 500u);
  EXPECT_EQ(reader->features().byte_window_count, o.features.byte_window_count);
  EXPECT_EQ(reader->features().byte_windows, o.features.byte_windows);
  EXPECT_EQ(h.state.load(), static_cast<uint32_t>(MirrorState::kStarting));
  writer->SetState(MirrorState::kRunning);
  EXPECT_EQ(h.state.load(), static_cast<uint32_t>(MirrorState::kRunning));

  // Private to the dataplane's user, and no temporary file left behind.
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_),
                          std::filesystem::directory_iterator()),
            1);
}

TEST_F(MirrorTest, RecordsRoundTripBitExactInOrderPerRing) {
  constexpr uint32_t kRings = 3;
  constexpr uint64_t kPerRing = 10;
  auto writer = MustCreate(Options(kRings, 16));
  ASSERT_NE(writer, nullptr);
  auto reader = MustOpen();
  ASSERT_NE(reader, nullptr);
  for (uint32_t ring = 0; ring < kRings; ++ring) {
    MirrorProducer producer = writer->producer(ring);
    for (uint64_t seq = 0; seq < kPerRing; ++seq) {
      ASSERT_TRUE(producer.TryWrite(MakeRecord(static_cast<uint8_t>(ring), seq)));
    }
    EXPECT_EQ(producer.published(), kPerRing);
  }

  // A small budget is shared among the rings rather than spent on the first.
  std::vector<MirrorRecord> out;
  ASSERT_EQ(reader->Poll(out, 6), 6u);
  std::set<uint8_t> rings_served;
  for (const MirrorRecord& r : out) rings_served.insert(r.worker);
  EXPECT_EQ(rings_served.size(), kRings);

  while (reader->Poll(out, 4) > 0) {
  }
  ASSERT_EQ(out.size(), kRings * kPerRing);
  std::map<uint8_t, uint64_t> next_seq;
  for (const MirrorRecord& r : out) {
    ASSERT_LT(r.worker, kRings);
    EXPECT_EQ(r.stream_packets, next_seq[r.worker]++) << "ring " << int{r.worker};
    EXPECT_TRUE(IsExpectedRecord(r)) << "ring " << int{r.worker} << " seq " << r.stream_packets;
  }
  for (const MirrorReader::RingStats& s : reader->Stats()) {
    EXPECT_EQ(s.published, kPerRing);
    EXPECT_EQ(s.consumed, kPerRing);
    EXPECT_EQ(s.dropped, 0u);
  }
  EXPECT_EQ(reader->resyncs(), 0u);
}

TEST_F(MirrorTest, IndicesWrapAroundTheRing) {
  auto writer = MustCreate(Options(1, 8));
  ASSERT_NE(writer, nullptr);
  auto reader = MustOpen();
  ASSERT_NE(reader, nullptr);
  MirrorProducer producer = writer->producer(0);
  std::vector<MirrorRecord> out;
  uint64_t written = 0;
  for (int round = 0; round < 40; ++round) {
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(producer.TryWrite(MakeRecord(0, written++)));
    reader->Poll(out, 3 + round % 5);
  }
  while (reader->Poll(out, 100) > 0) {
  }
  ASSERT_EQ(out.size(), written);
  for (uint64_t i = 0; i < written; ++i) {
    EXPECT_EQ(out[i].stream_packets, i);
    EXPECT_TRUE(IsExpectedRecord(out[i])) << i;
  }
  EXPECT_EQ(producer.dropped(), 0u);
}

TEST_F(MirrorTest, FullRingDropsAndCountsExactlyWithoutWaiting) {
  auto writer = MustCreate(Options(1, 8));
  ASSERT_NE(writer, nullptr);
  MirrorProducer producer = writer->producer(0);
  std::vector<MirrorRecord> records;
  for (uint64_t seq = 0; seq < 20; ++seq) records.push_back(MakeRecord(0, seq));

  const uint64_t allocations = test::ThreadAllocations();
  // Nobody reads: a writer that waited for room would never get past this
  // loop (meson's timeout fails it); one that returns refuses 12 of 20.
  int accepted = 0;
  for (const MirrorRecord& r : records) accepted += producer.TryWrite(r) ? 1 : 0;
  EXPECT_EQ(test::ThreadAllocations(), allocations) << "TryWrite must not allocate";
  EXPECT_EQ(accepted, 8);
  EXPECT_EQ(producer.published(), 8u);
  EXPECT_EQ(producer.dropped(), 12u);

  auto reader = MustOpen();
  ASSERT_NE(reader, nullptr);
  std::vector<MirrorRecord> out;
  EXPECT_EQ(reader->Poll(out, 100), 8u);
  for (uint64_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].stream_packets, i) << "the oldest records are kept, the newest dropped";
    EXPECT_TRUE(IsExpectedRecord(out[i]));
  }
  ASSERT_EQ(reader->Stats().size(), 1u);
  EXPECT_EQ(reader->Stats()[0].published, 8u);
  EXPECT_EQ(reader->Stats()[0].consumed, 8u);
  EXPECT_EQ(reader->Stats()[0].dropped, 12u);

  // The cached tail is refreshed once the reader frees room.
  EXPECT_TRUE(producer.TryWrite(MakeRecord(0, 100)));
  EXPECT_EQ(producer.dropped(), 12u);
}

TEST_F(MirrorTest, WriteWaitingWaitsForRoomAndTimesOut) {
  auto writer = MustCreate(Options(1, 2));
  ASSERT_NE(writer, nullptr);
  auto reader = MustOpen();
  ASSERT_NE(reader, nullptr);
  MirrorProducer producer = writer->producer(0);
  ASSERT_TRUE(producer.TryWrite(MakeRecord(0, 0)));
  ASSERT_TRUE(producer.TryWrite(MakeRecord(0, 1)));

  const uint64_t start = ClockNs(CLOCK_MONOTONIC);
  EXPECT_FALSE(producer.WriteWaiting(MakeRecord(0, 2), 5 * kMs));
  EXPECT_GE(ClockNs(CLOCK_MONOTONIC) - start, 5 * kMs);
  EXPECT_EQ(producer.dropped(), 1u);

  std::vector<MirrorRecord> out;
  std::thread late_reader([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    reader->Poll(out, 1);
  });
  EXPECT_TRUE(producer.WriteWaiting(MakeRecord(0, 2), 10 * kSec));
  late_reader.join();
  EXPECT_EQ(producer.dropped(), 1u);
  while (reader->Poll(out, 10) > 0) {
  }
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[2].stream_packets, 2u);
  EXPECT_TRUE(IsExpectedRecord(out[2]));
}

TEST_F(MirrorTest, RestartedReaderResumesAtTheTail) {
  auto writer = MustCreate(Options(1, 64));
  ASSERT_NE(writer, nullptr);
  MirrorProducer producer = writer->producer(0);
  for (uint64_t seq = 0; seq < 10; ++seq) ASSERT_TRUE(producer.TryWrite(MakeRecord(0, seq)));

  std::vector<MirrorRecord> out;
  {
    auto first = MustOpen();
    ASSERT_NE(first, nullptr);
    ASSERT_EQ(first->Poll(out, 4), 4u);
  }
  auto second = MustOpen();
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->Poll(out, 100), 6u);
  for (uint64_t seq = 10; seq < 15; ++seq) ASSERT_TRUE(producer.TryWrite(MakeRecord(0, seq)));
  EXPECT_EQ(second->Poll(out, 100), 5u);
  ASSERT_EQ(out.size(), 15u);
  for (uint64_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].stream_packets, i) << "nothing lost or repeated across the restart";
    EXPECT_TRUE(IsExpectedRecord(out[i]));
  }
  EXPECT_EQ(second->Stats()[0].consumed, 15u);
}

TEST_F(MirrorTest, NewRunReplacesTheFile) {
  auto first_run = MustCreate(Options(1, 8));
  ASSERT_NE(first_run, nullptr);
  auto reader = MustOpen();
  ASSERT_NE(reader, nullptr);
  EXPECT_FALSE(reader->Replaced());
  const uint64_t first_id = reader->run_id();

  auto second_run = MustCreate(Options(2, 16));
  ASSERT_NE(second_run, nullptr);
  EXPECT_TRUE(reader->Replaced());
  // The old mapping still works: the first run's last records are not lost.
  ASSERT_TRUE(first_run->producer(0).TryWrite(MakeRecord(0, 0)));
  std::vector<MirrorRecord> out;
  EXPECT_EQ(reader->Poll(out, 10), 1u);

  auto reopened = MustOpen();
  ASSERT_NE(reopened, nullptr);
  EXPECT_FALSE(reopened->Replaced());
  EXPECT_EQ(reopened->run_id(), second_run->header().run_id);
  EXPECT_NE(reopened->run_id(), first_id);
  EXPECT_EQ(reopened->header().ring_count, 2u);

  ASSERT_EQ(unlink(path_.c_str()), 0);
  EXPECT_TRUE(reopened->Replaced()) << "no file at all is also a replaced run";
}

TEST_F(MirrorTest, DataplaneAliveFollowsStateHeartbeatAndPid) {
  auto writer = MustCreate(Options(1, 8));
  ASSERT_NE(writer, nullptr);
  auto reader = MustOpen();
  ASSERT_NE(reader, nullptr);
  const uint64_t now = UnixNowNs();
  writer->Heartbeat(now);
  EXPECT_TRUE(reader->DataplaneAlive(now));
  EXPECT_TRUE(reader->DataplaneAlive(now + kMirrorHeartbeatStaleNs));
  EXPECT_FALSE(reader->DataplaneAlive(now + kMirrorHeartbeatStaleNs + kSec)) << "stale heartbeat";
  writer->Heartbeat(now + 10 * kSec);
  EXPECT_TRUE(reader->DataplaneAlive(now + 10 * kSec));
  EXPECT_FALSE(reader->Stopped());

  writer.reset();
  EXPECT_TRUE(reader->Stopped());
  EXPECT_FALSE(reader->DataplaneAlive(now + 10 * kSec)) << "stopped, though the heartbeat is fresh";
}

TEST_F(MirrorTest, DataplaneThatDiedWithoutStoppingIsNotAlive) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // A dataplane that crashes: the file stays in state kStarting.
    auto writer = MirrorWriter::Create(Options(1, 8));
    _exit(writer.ok() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto reader = MustOpen();
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->header().dataplane_pid, child);
  EXPECT_FALSE(reader->Stopped());
  EXPECT_FALSE(reader->DataplaneAlive(UnixNowNs())) << "its pid is gone";
}

TEST_F(MirrorTest, ProducerSeesWhetherAReaderIsAttached) {
  auto writer = MustCreate(Options(2, 8));
  ASSERT_NE(writer, nullptr);
  MirrorProducer producer = writer->producer(1);
  EXPECT_FALSE(producer.ReaderAttached(UnixNowNs()));
  auto reader = MustOpen();
  ASSERT_NE(reader, nullptr);
  EXPECT_FALSE(producer.ReaderAttached(UnixNowNs())) << "opening is not polling";
  std::vector<MirrorRecord> out;
  reader->Poll(out, 10);  // nothing to read, still a sign of life on every ring
  const uint64_t now = UnixNowNs();
  EXPECT_TRUE(producer.ReaderAttached(now));
  EXPECT_TRUE(writer->producer(0).ReaderAttached(now));
  EXPECT_FALSE(producer.ReaderAttached(now + kMirrorHeartbeatStaleNs + kSec));
}

TEST_F(MirrorTest, ReaderResyncsARingHoldingMoreThanItsCapacity) {
  constexpr uint32_t kCapacity = 8;
  auto writer = MustCreate(Options(1, kCapacity));
  ASSERT_NE(writer, nullptr);
  MirrorProducer producer = writer->producer(0);
  for (uint64_t seq = 0; seq < kCapacity; ++seq) ASSERT_TRUE(producer.TryWrite(MakeRecord(0, seq)));

  // A broken writer that ignored the tail: three more records over the oldest.
  const int fd = open(path_.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  void* map = mmap(nullptr, MirrorFileBytes(1, kCapacity), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT_NE(map, MAP_FAILED);
  auto* ring = reinterpret_cast<MirrorRingHeader*>(static_cast<char*>(map) + sizeof(MirrorHeader));
  auto* slots = reinterpret_cast<MirrorRecord*>(ring + 1);
  for (uint64_t seq = kCapacity; seq < kCapacity + 3; ++seq) {
    slots[seq % kCapacity] = MakeRecord(0, seq);
  }
  ring->head.store(kCapacity + 3);
  munmap(map, MirrorFileBytes(1, kCapacity));

  auto reader = MustOpen();
  ASSERT_NE(reader, nullptr);
  std::vector<MirrorRecord> out;
  EXPECT_EQ(reader->Poll(out, 100), kCapacity);
  EXPECT_EQ(reader->resyncs(), 1u);
  ASSERT_EQ(out.size(), kCapacity);
  for (uint64_t i = 0; i < kCapacity; ++i) {
    EXPECT_EQ(out[i].stream_packets, i + 3) << "the newest capacity records";
    EXPECT_TRUE(IsExpectedRecord(out[i]));
  }
}

// --- a writer process and a reader process ---

TEST_F(MirrorTest, ForkedWriterConcurrentReaderLosesNothing) {
  constexpr uint64_t kPerRing = 100'000;
  constexpr uint32_t kCapacity = 1024;
  const MirrorWriterOptions options = Options(2, kCapacity);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Ring 0 spins on TryWrite (each refusal must count exactly one drop);
    // ring 1 uses WriteWaiting (no drop at all when the reader keeps up).
    int code = 0;
    {
      auto writer = MirrorWriter::Create(options);
      if (!writer.ok()) _exit(10);
      (*writer)->SetState(MirrorState::kRunning);
      std::atomic<int> failure{0};
      std::thread spinning([&] {
        MirrorProducer p = (*writer)->producer(0);
        uint64_t refusals = 0;
        for (uint64_t seq = 0; seq < kPerRing; ++seq) {
          const MirrorRecord r = MakeRecord(0, seq);
          while (!p.TryWrite(r)) {
            ++refusals;
            std::this_thread::yield();
          }
        }
        if (p.dropped() != refusals) failure = 11;
      });
      std::thread waiting([&] {
        MirrorProducer p = (*writer)->producer(1);
        for (uint64_t seq = 0; seq < kPerRing; ++seq) {
          if (!p.WriteWaiting(MakeRecord(1, seq), 20 * kSec)) {
            failure = 12;
            return;
          }
        }
        if (p.dropped() != 0) failure = 13;
      });
      spinning.join();
      waiting.join();
      code = failure.load();
    }  // the writer marks the run stopped
    _exit(code);
  }
  struct ChildGuard {
    pid_t pid;
    bool reaped = false;
    ~ChildGuard() {
      if (!reaped) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  } guard{child};

  const uint64_t deadline = ClockNs(CLOCK_MONOTONIC) + 60 * kSec;
  while (access(path_.c_str(), F_OK) != 0) {
    ASSERT_LT(ClockNs(CLOCK_MONOTONIC), deadline) << "the writer never created " << path_;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  auto reader = MustOpen();
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->header().dataplane_pid, child);

  uint64_t next_seq[2] = {0, 0};
  uint64_t bad_records = 0;
  std::vector<MirrorRecord> out;
  while (next_seq[0] < kPerRing || next_seq[1] < kPerRing) {
    ASSERT_LT(ClockNs(CLOCK_MONOTONIC), deadline)
        << "received " << next_seq[0] << " + " << next_seq[1];
    out.clear();
    if (reader->Poll(out, 512) == 0) std::this_thread::yield();
    for (const MirrorRecord& r : out) {
      ASSERT_LT(r.worker, 2);
      ASSERT_EQ(r.stream_packets, next_seq[r.worker]) << "ring " << int{r.worker};
      ++next_seq[r.worker];
      if (!IsExpectedRecord(r)) ++bad_records;
    }
  }
  EXPECT_EQ(bad_records, 0u);

  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  guard.reaped = true;
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "11: drops miscounted, 12: timed out, 13: dropped";
  EXPECT_TRUE(reader->Stopped());
  EXPECT_FALSE(reader->DataplaneAlive(UnixNowNs()));
  out.clear();
  EXPECT_EQ(reader->Poll(out, 100), 0u);
  const std::vector<MirrorReader::RingStats> stats = reader->Stats();
  ASSERT_EQ(stats.size(), 2u);
  for (const MirrorReader::RingStats& s : stats) {
    EXPECT_EQ(s.published, kPerRing);
    EXPECT_EQ(s.consumed, kPerRing);
  }
  EXPECT_EQ(stats[1].dropped, 0u);
  EXPECT_EQ(reader->resyncs(), 0u);
}

// --- Create and Open errors ---

TEST_F(MirrorTest, CreateRefusesBadOptions) {
  struct Case {
    uint32_t rings, capacity;
    const char* word;
  };
  for (const Case& c : {Case{0, 8, "rings"}, Case{kMirrorMaxRings + 1, 8, "rings"},
                        Case{1, 0, "power of two"}, Case{1, 1, "power of two"},
                        Case{1, 12, "power of two"}, Case{1, 1u << 25, "power of two"}}) {
    auto writer = MirrorWriter::Create(Options(c.rings, c.capacity));
    ASSERT_FALSE(writer.ok()) << c.rings << " x " << c.capacity;
    EXPECT_EQ(writer.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(writer.status()), HasSubstr(c.word));
  }
  MirrorWriterOptions no_path = Options(1, 8);
  no_path.path = "";
  EXPECT_THAT(Message(MirrorWriter::Create(no_path).status()), HasSubstr("path"));
  MirrorWriterOptions long_instance = Options(1, 8);
  long_instance.instance = std::string(64, 'x');
  EXPECT_THAT(Message(MirrorWriter::Create(long_instance).status()), HasSubstr("instance"));

  MirrorWriterOptions missing_dir = Options(1, 8);
  missing_dir.path = dir_ + "/no/such/dir/mirror";
  auto writer = MirrorWriter::Create(missing_dir);
  ASSERT_FALSE(writer.ok());
  EXPECT_THAT(Message(writer.status()), HasSubstr(dir_ + "/no/such/dir/mirror"));
  EXPECT_THAT(Message(writer.status()), HasSubstr("No such file"));
}

TEST_F(MirrorTest, OpenMissingFile) {
  auto reader = MirrorReader::Open(path_);
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(reader.status()), HasSubstr(path_));
  EXPECT_THAT(Message(reader.status()), HasSubstr("does not exist"));
}

TEST_F(MirrorTest, OpenForeignFile) {
  for (size_t bytes : {size_t{0}, size_t{5}, size_t{8192}}) {
    const int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    const std::string junk(bytes, 'x');
    ASSERT_EQ(write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
    close(fd);
    auto reader = MirrorReader::Open(path_);
    ASSERT_FALSE(reader.ok()) << bytes;
    EXPECT_THAT(Message(reader.status()), HasSubstr("not a shroud mirror file")) << bytes;
    EXPECT_THAT(Message(reader.status()), HasSubstr(path_));
  }
}

TEST_F(MirrorTest, OpenWrongVersion) {
  MustCreate(Options(1, 8)).reset();
  const uint32_t newer = 7;
  Patch(offsetof(MirrorHeader, version), &newer, sizeof(newer));
  auto reader = MirrorReader::Open(path_);
  ASSERT_FALSE(reader.ok());
  EXPECT_THAT(Message(reader.status()), HasSubstr("mirror version 7, this reader knows 1"));
  EXPECT_THAT(Message(reader.status()), HasSubstr("upgrade shroud-control"));
}

TEST_F(MirrorTest, OpenWrongRecordSize) {
  MustCreate(Options(1, 8)).reset();
  const uint32_t other = 256;
  Patch(offsetof(MirrorHeader, record_bytes), &other, sizeof(other));
  auto reader = MirrorReader::Open(path_);
  ASSERT_FALSE(reader.ok());
  EXPECT_THAT(Message(reader.status()), HasSubstr("record size is 256"));
}

TEST_F(MirrorTest, OpenCorruptFeatureConfig) {
  MustCreate(Options(1, 8)).reset();
  const uint32_t windows = kMaxByteWindows + 1;
  Patch(offsetof(MirrorHeader, features) + offsetof(MirrorFeatureConfig, byte_window_count),
        &windows, sizeof(windows));
  auto reader = MirrorReader::Open(path_);
  ASSERT_FALSE(reader.ok());
  EXPECT_THAT(Message(reader.status()), HasSubstr("feature configuration"));
}

TEST_F(MirrorTest, OpenTruncatedFile) {
  MustCreate(Options(2, 8)).reset();
  const uint64_t full = MirrorFileBytes(2, 8);
  ASSERT_EQ(truncate(path_.c_str(), static_cast<off_t>(full - 320)), 0);
  auto reader = MirrorReader::Open(path_);
  ASSERT_FALSE(reader.ok());
  EXPECT_THAT(Message(reader.status()), HasSubstr("truncated"));
  EXPECT_THAT(Message(reader.status()), HasSubstr(absl::StrCat(full - 320, " bytes, header says ", full)));

  ASSERT_EQ(truncate(path_.c_str(), 100), 0);  // not even a whole header
  reader = MirrorReader::Open(path_);
  ASSERT_FALSE(reader.ok());
  EXPECT_THAT(Message(reader.status()), HasSubstr("truncated"));
}

TEST_F(MirrorTest, OpenSizeMismatch) {
  MustCreate(Options(1, 8)).reset();
  const uint64_t full = MirrorFileBytes(1, 8);
  ASSERT_EQ(truncate(path_.c_str(), static_cast<off_t>(full + 4096)), 0);
  auto reader = MirrorReader::Open(path_);
  ASSERT_FALSE(reader.ok());
  EXPECT_THAT(Message(reader.status()), HasSubstr("size mismatch"));

  ASSERT_EQ(truncate(path_.c_str(), static_cast<off_t>(full)), 0);
  ASSERT_NE(MustOpen(), nullptr);
  const uint64_t wrong_total = full + 4096;
  Patch(offsetof(MirrorHeader, total_bytes), &wrong_total, sizeof(wrong_total));
  reader = MirrorReader::Open(path_);
  ASSERT_FALSE(reader.ok());
  EXPECT_THAT(Message(reader.status()), HasSubstr("size mismatch"));
}

TEST_F(MirrorTest, OpenWithoutPermissionSaysWhoMustRunIt) {
  MustCreate(Options(1, 8)).reset();
  if (geteuid() != 0) {
    ASSERT_EQ(chmod(path_.c_str(), 0), 0);
    auto reader = MirrorReader::Open(path_);
    ASSERT_FALSE(reader.ok());
    EXPECT_EQ(reader.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_THAT(Message(reader.status()), HasSubstr("dataplane's user"));
    return;
  }
  // Root opens anything; check as an unprivileged user in a child.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
    auto reader = MirrorReader::Open(path_);
    if (reader.ok()) _exit(3);
    if (reader.status().code() != absl::StatusCode::kPermissionDenied) _exit(4);
    if (Message(reader.status()).find("dataplane's user") == std::string::npos) _exit(5);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: setuid failed, 3: opened, 4: wrong code, 5: no hint";
}

// --- runtime paths ---

TEST(RuntimePathsTest, InstanceNames) {
  for (const char* ok : {"default", "a", "gw-1", "tap_east.2", "A.B-c_9"}) {
    EXPECT_TRUE(ValidateInstanceName(ok).ok()) << ok;
  }
  EXPECT_TRUE(ValidateInstanceName(std::string(63, 'x')).ok());
  struct Case {
    std::string name;
    const char* word;
  };
  for (const Case& c : {Case{"", "empty"}, Case{".", "reserved"}, Case{"..", "reserved"},
                        Case{std::string(64, 'x'), "64 characters"}, Case{"a/b", "'/'"},
                        Case{"a b", "0x20"}, Case{"gw\n", "0x0a"}, Case{"ü", "0xc3"}}) {
    const absl::Status s = ValidateInstanceName(c.name);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(Message(s), HasSubstr(c.word)) << c.name;
  }
  // "..." is an ordinary name, not a directory reference.
  EXPECT_TRUE(ValidateInstanceName("...").ok());
}

// Sets or unsets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(RuntimePathsTest, ExplicitDirectoryWins) {
  ScopedEnv env("SHROUD_RUNTIME_DIR", "/somewhere/else");
  auto paths = ResolveRuntimePaths("/srv/shroud/", "gw1");
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_EQ(paths->root, "/srv/shroud");
  EXPECT_EQ(paths->dir, "/srv/shroud/gw1");
  EXPECT_EQ(paths->mirror, "/srv/shroud/gw1/mirror");
  EXPECT_EQ(paths->ctl_socket, "/srv/shroud/gw1/ctl.sock");
  EXPECT_EQ(paths->instance, "gw1");
}

TEST(RuntimePathsTest, EmptyInstanceIsDefault) {
  auto paths = ResolveRuntimePaths("/srv/shroud", "");
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_EQ(paths->instance, "default");
  EXPECT_EQ(paths->mirror, "/srv/shroud/default/mirror");
}

TEST(RuntimePathsTest, BadInstanceIsRefused) {
  auto paths = ResolveRuntimePaths("/srv/shroud", "../etc");
  ASSERT_FALSE(paths.ok());
  EXPECT_EQ(paths.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(paths.status()), HasSubstr("instance name"));
}

TEST(RuntimePathsTest, EnvironmentThenFallbacks) {
  {
    ScopedEnv env("SHROUD_RUNTIME_DIR", "/var/lib/shroud-rt");
    auto paths = ResolveRuntimePaths("", "tap");
    ASSERT_TRUE(paths.ok()) << paths.status();
    EXPECT_EQ(paths->root, "/var/lib/shroud-rt");
    EXPECT_EQ(paths->ctl_socket, "/var/lib/shroud-rt/tap/ctl.sock");
  }
  ScopedEnv no_env("SHROUD_RUNTIME_DIR", nullptr);
  {
    ScopedEnv xdg("XDG_RUNTIME_DIR", "/run/user/4242");
    auto paths = ResolveRuntimePaths("", "");
    ASSERT_TRUE(paths.ok()) << paths.status();
    EXPECT_EQ(paths->root, geteuid() == 0 ? "/run/shroud" : "/run/user/4242/shroud");
  }
  ScopedEnv no_xdg("XDG_RUNTIME_DIR", nullptr);
  auto paths = ResolveRuntimePaths("", "");
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_EQ(paths->root,
            geteuid() == 0 ? std::string("/run/shroud") : absl::StrCat("/tmp/shroud-", geteuid()));
}

class PrepareRuntimeDirTest : public MirrorTest {
 protected:
  RuntimePaths Paths(const std::string& root, const char* instance) {
    auto paths = ResolveRuntimePaths(root, instance);
    EXPECT_TRUE(paths.ok()) << paths.status();
    return *paths;
  }
  static mode_t Mode(const std::string& path) {
    struct stat st;
    EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  }
};

TEST_F(PrepareRuntimeDirTest, CreatesPrivateInstanceDirectory) {
  const RuntimePaths paths = Paths(dir_ + "/run/shroud", "gw1");
  const absl::Status s = PrepareRuntimeDir(paths);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(std::filesystem::is_directory(paths.root));
  EXPECT_EQ(Mode(paths.dir), 0700u);
  EXPECT_TRUE(PrepareRuntimeDir(paths).ok()) << "a second run finds it as it left it";

  // The writer can create its mirror there.
  MirrorWriterOptions o = Options(1, 8);
  o.path = paths.mirror;
  ASSERT_NE(MustCreate(o), nullptr);
}

TEST_F(PrepareRuntimeDirTest, RefusesDirectoryOthersCanReach) {
  const RuntimePaths paths = Paths(dir_, "open");
  ASSERT_EQ(mkdir(paths.dir.c_str(), 0700), 0);
  ASSERT_EQ(chmod(paths.dir.c_str(), 0755), 0);
  const absl::Status s = PrepareRuntimeDir(paths);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(s), HasSubstr("mode 0755"));
  EXPECT_THAT(Message(s), HasSubstr(paths.dir));
  EXPECT_EQ(Mode(paths.dir), 0755u) << "refused, not silently repaired";
}

TEST_F(PrepareRuntimeDirTest, RefusesSymlink) {
  const std::string target = dir_ + "/elsewhere";
  ASSERT_EQ(mkdir(target.c_str(), 0700), 0);
  const RuntimePaths paths = Paths(dir_, "linked");
  ASSERT_EQ(symlink(target.c_str(), paths.dir.c_str()), 0);
  const absl::Status s = PrepareRuntimeDir(paths);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(s), HasSubstr("symlink"));
}

TEST_F(PrepareRuntimeDirTest, RefusesNonDirectory) {
  const RuntimePaths paths = Paths(dir_, "file");
  close(open(paths.dir.c_str(), O_WRONLY | O_CREAT, 0600));
  EXPECT_THAT(Message(PrepareRuntimeDir(paths)), HasSubstr("not a directory"));
}

TEST_F(PrepareRuntimeDirTest, RefusesRootOthersCanRenameIn) {
  const RuntimePaths paths = Paths(dir_ + "/shared", "gw1");
  ASSERT_EQ(mkdir(paths.root.c_str(), 0700), 0);
  ASSERT_EQ(chmod(paths.root.c_str(), 0777), 0);
  absl::Status s = PrepareRuntimeDir(paths);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(s), HasSubstr("sticky"));
  ASSERT_EQ(chmod(paths.root.c_str(), 01777), 0);  // like /tmp
  s = PrepareRuntimeDir(paths);
  EXPECT_TRUE(s.ok()) << s;
}

TEST_F(PrepareRuntimeDirTest, RefusesDirectoryOfAnotherUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give a directory away";
  const RuntimePaths paths = Paths(dir_, "theirs");
  ASSERT_EQ(mkdir(paths.dir.c_str(), 0700), 0);
  ASSERT_EQ(chown(paths.dir.c_str(), 65534, 65534), 0);
  const absl::Status s = PrepareRuntimeDir(paths);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(s), HasSubstr("owned by uid 65534"));

  const RuntimePaths their_root = Paths(dir_ + "/their-root", "gw1");
  ASSERT_EQ(mkdir(their_root.root.c_str(), 0755), 0);
  ASSERT_EQ(chown(their_root.root.c_str(), 65534, 65534), 0);
  EXPECT_THAT(Message(PrepareRuntimeDir(their_root)), HasSubstr("owned by uid 65534"));
}

}  // namespace
}  // namespace shroud
