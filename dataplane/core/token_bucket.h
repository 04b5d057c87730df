// Dynamic Hierarchical Token Bucket (DHTB), the shaper of the gateway (paper
// Section V-A): a root (link) bucket, a migration class whose rate Algorithm 3
// re-draws every 10 ms, a chaff class, and the default class that passes
// untouched.
//
// Pure C++: time (`now_ns`, any monotonic nanosecond clock, TSC-derived in the
// dataplane, simulated in tests) is an argument, nothing reads a clock or a
// global, and nothing on the per-packet path allocates or locks. Every queue
// is allocated when the shaper is created.
//
// Threading: a Shaper and its buckets belong to one worker thread and are not
// thread-safe. In the shipped design Algorithm 3 runs on that worker too (see
// rate_variation.h: the loop asks ShouldStep(now) and calls SetRate), so a rate
// change is a plain store with no atomics at all. A control thread never
// touches a Shaper; to override a rate it publishes through a RateMailbox (one
// std::atomic<uint64_t>), which the worker reads at the top of its loop and
// applies with SetRate.
#ifndef SHROUD_DATAPLANE_CORE_TOKEN_BUCKET_H_
#define SHROUD_DATAPLANE_CORE_TOKEN_BUCKET_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shroud {

// Tokens are kept in units of 1e-9 byte. With the rate in bytes per second, a
// refill over `elapsed_ns` adds exactly rate * elapsed_ns units: integer
// arithmetic with no rounding at all, so a bucket refilled at arbitrary times
// for years holds exactly what the rate allows -- no drift.
inline constexpr int64_t kTokenUnitsPerByte = 1'000'000'000;
// Caps that keep the unit arithmetic inside int64 (debt down to -burst, room
// up to 2 * burst): 4 GB of burst, 1 TB/s of rate.
inline constexpr uint64_t kMaxBurstBytes = 4'000'000'000;
inline constexpr uint64_t kMaxRateBytesPerSec = 1'000'000'000'000;

constexpr int64_t BytesToTokenUnits(uint64_t bytes) {
  return static_cast<int64_t>(bytes) * kTokenUnitsPerByte;
}

// One token bucket: `rate` bytes per second, at most `burst` bytes. Starts
// full, as Linux HTB's buckets do.
class TokenBucket {
 public:
  TokenBucket() = default;
  TokenBucket(uint64_t rate_bytes_per_sec, uint64_t burst_bytes, uint64_t now_ns)
      : tokens_(BytesToTokenUnits(burst_bytes)),
        burst_(BytesToTokenUnits(burst_bytes)),
        rate_(rate_bytes_per_sec),
        last_ns_(now_ns) {}

  // Credits the time since the previous refill at the current rate; tokens stop
  // at burst. Time that goes backwards (or stands still) credits nothing.
  void Refill(uint64_t now_ns) {
    if (now_ns <= last_ns_) return;
    const uint64_t elapsed = now_ns - last_ns_;
    last_ns_ = now_ns;
    if (tokens_ >= burst_) return;
    const uint64_t room = static_cast<uint64_t>(burst_ - tokens_);
    uint64_t add;
    // An overflowing product is larger than any room, so it just fills.
    if (__builtin_mul_overflow(rate_, elapsed, &add) || add >= room) {
      tokens_ = burst_;
    } else {
      tokens_ += static_cast<int64_t>(add);
    }
  }

  // A plain store, by design: tokens are left as they are (re-configuring an
  // rte_sched pipe refills them, which would leak a burst every 10 ms). The new
  // rate applies from the previous refill on, so a caller that wants the change
  // to start exactly at `now` refills at `now` first -- the worker's loop does,
  // because it dequeues (and so refills) before it steps the rate.
  void SetRate(uint64_t rate_bytes_per_sec) { rate_ = rate_bytes_per_sec; }

  bool Has(int64_t units) const { return tokens_ >= units; }
  // Takes tokens unconditionally; the balance may go negative (debt) but not
  // below -burst, so a debt is repaid within burst / rate.
  void Take(int64_t units) {
    tokens_ -= units;
    if (tokens_ < -burst_) tokens_ = -burst_;
  }
  // Takes the tokens for `bytes` only if all of them are there.
  bool TryConsume(uint64_t bytes) {
    const int64_t units = BytesToTokenUnits(bytes);
    if (tokens_ < units) return false;
    tokens_ -= units;
    return true;
  }

  int64_t tokens() const { return tokens_; }  // in 1e-9 byte units
  double tokens_bytes() const { return static_cast<double>(tokens_) / kTokenUnitsPerByte; }
  int64_t burst() const { return burst_; }  // in 1e-9 byte units
  uint64_t burst_bytes() const { return static_cast<uint64_t>(burst_ / kTokenUnitsPerByte); }
  uint64_t rate() const { return rate_; }
  uint64_t last_refill_ns() const { return last_ns_; }

 private:
  int64_t tokens_ = 0;
  int64_t burst_ = 0;
  uint64_t rate_ = 0;  // bytes/s == token units per ns
  uint64_t last_ns_ = 0;
};

// Cross-thread rate publication for a control thread (an operator override, or
// Algorithm 3 run off the worker). Relaxed ordering is enough: the rate is the
// only datum, and a worker that sees it one loop iteration late is still on
// time for a 10 ms schedule. On x86 Publish is a plain store and Peek a plain
// load. Worker, at the top of its loop:
//   if (uint64_t r = mailbox.Peek(); r != applied) shaper.SetRate(c, applied = r);
class RateMailbox {
 public:
  void Publish(uint64_t rate_bytes_per_sec) {
    rate_.store(rate_bytes_per_sec, std::memory_order_relaxed);
  }
  // 0 until something is published.
  uint64_t Peek() const { return rate_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> rate_{0};
};

// Bounded FIFO of packet handles, allocated once. The handle is opaque (an
// rte_mbuf* cast to uintptr_t in the dataplane, an index in tests).
class PacketQueue {
 public:
  struct Entry {
    uint64_t handle = 0;
    uint64_t enqueue_ns = 0;
    uint32_t bytes = 0;
  };

  PacketQueue() = default;
  PacketQueue(uint32_t max_packets, uint64_t max_bytes)
      : ring_(std::make_unique<Entry[]>(max_packets)),
        capacity_(max_packets),
        max_bytes_(max_bytes) {}

  // False (and nothing stored) when the packet would exceed either cap.
  bool Push(const Entry& e) {
    if (size_ == capacity_ || bytes_ + e.bytes > max_bytes_) return false;
    uint32_t tail = head_ + size_;
    if (tail >= capacity_) tail -= capacity_;
    ring_[tail] = e;
    ++size_;
    bytes_ += e.bytes;
    return true;
  }
  const Entry& Front() const { return ring_[head_]; }
  // The i-th entry from the front; i < size().
  const Entry& At(uint32_t i) const {
    uint32_t at = head_ + i;
    if (at >= capacity_) at -= capacity_;
    return ring_[at];
  }
  void Pop() {
    bytes_ -= ring_[head_].bytes;
    if (++head_ == capacity_) head_ = 0;
    --size_;
  }

  bool empty() const { return size_ == 0; }
  uint32_t size() const { return size_; }
  uint64_t bytes() const { return bytes_; }
  uint32_t capacity() const { return capacity_; }
  uint64_t max_bytes() const { return max_bytes_; }

 private:
  std::unique_ptr<Entry[]> ring_;
  uint32_t capacity_ = 0;
  uint32_t head_ = 0;
  uint32_t size_ = 0;
  uint64_t bytes_ = 0;
  uint64_t max_bytes_ = 0;
};

// A shaped class's queue: one FIFO per lane (a lane = one flow, or a few
// sharing it), served in turns. A turn lasts while its lane has packets and
// has sent less than `quantum_bytes`; the next turn goes to the next lane with
// packets, round robin. Turns change only where the caller says
// (NextTurnIfDue, at a train's start), so a train never mixes flows. One lane
// is a plain FIFO.
//
// Why: several connections queued in one FIFO leave interleaved, so each one
// alone shows gaps of two or more frames where a TCP flow on the same link
// shows back-to-back ones -- a tell for whoever compares each flow's
// inter-packet times with the background's (QEMU multifd: one connection per
// channel). In turns, each flow leaves in runs as a single stream does.
// The packet and byte caps are the class's, over all lanes.
class LaneQueue {
 public:
  static constexpr uint32_t kMaxLanes = 16;

  LaneQueue() = default;
  LaneQueue(uint32_t lanes, uint32_t max_packets, uint64_t max_bytes, uint64_t quantum_bytes);

  // `lane` is taken modulo the lane count. False (nothing stored) over a cap.
  bool Push(uint32_t lane, const PacketQueue::Entry& e);
  // The lane whose turn it is: its front, its i-th entry (i < lane_size()).
  const PacketQueue::Entry& Front() const { return lanes_[current_].Front(); }
  const PacketQueue::Entry& At(uint32_t i) const { return lanes_[current_].At(i); }
  uint32_t lane_size() const { return lanes_[current_].size(); }
  // Removes the current lane's front, counted towards its turn.
  void Pop();
  // Ends the current turn when its lane is empty or has had its quantum, and
  // gives the next lane with packets its turn (the same lane again if it is the
  // only one). Call it where a new train may start.
  void NextTurnIfDue();

  bool empty() const { return size_ == 0; }
  uint32_t size() const { return size_; }
  uint64_t bytes() const { return bytes_; }
  uint32_t capacity() const { return capacity_; }
  uint64_t max_bytes() const { return max_bytes_; }
  uint32_t lanes() const { return lane_count_; }
  uint32_t current_lane() const { return current_; }
  uint64_t turns() const { return turns_; }  // turns handed to another lane

 private:
  std::unique_ptr<PacketQueue[]> lanes_;
  uint32_t lane_count_ = 0;
  uint32_t current_ = 0;
  uint64_t served_bytes_ = 0;  // in the current turn
  uint64_t quantum_bytes_ = 0;
  uint32_t size_ = 0;
  uint32_t capacity_ = 0;
  uint64_t bytes_ = 0;
  uint64_t max_bytes_ = 0;
  uint64_t turns_ = 0;
};

// The two shaped classes; the default class is not shaped and has no queue.
enum class ShapedClass : uint8_t { kMigration = 0, kChaff = 1 };
inline constexpr size_t kShapedClassCount = 2;
const char* ShapedClassName(ShapedClass c);

struct ShaperClassConfig {
  // Assured rate: the class's own tokens. For migration this is only the rate
  // until Algorithm 3's first step (which happens at once); for chaff it is the
  // chaff policy's own rate, 0 when chaff only lives on migration's leftovers.
  uint64_t rate_bytes_per_sec = 0;
  // Hard cap on the class, borrowed tokens included. Also the "max rate" the
  // queue depth is measured at. For migration, maxR.
  uint64_t ceil_bytes_per_sec = 0;
  // Depth of both the rate and the ceil bucket: the most the class can send
  // back to back after being idle, and the most a rate change can release.
  uint64_t burst_bytes = 16 * 1024;
  // Queue byte limit = ceil * depth: the delay the queue may add at full rate.
  uint32_t queue_depth_ms = 50;
  // Queue packet limit (and ring capacity).
  uint32_t queue_packets = 1024;
  // Release in trains: 1 = each packet leaves as soon as its tokens are there
  // (a paced, evenly spaced output). N > 1 = the class sends trains of 1..N
  // frames (uniform, drawn per train): a train waits until the class's tokens
  // cover all of it, then leaves back to back. The rate is the same either
  // way; what changes is the spacing. A paced flow has no back-to-back frames
  // and one dominant gap, which TCP flows, whose ACK clock and segmentation
  // offload send trains, do not -- a tell for an adversary who learns what
  // shaped flows look like. A train larger than burst_bytes starts when the
  // bucket is full and the rest follows as tokens come.
  uint32_t train_max_frames = 1;
  // Lanes of the class's queue (LaneQueue): 1 = one FIFO. With N > 1 the
  // caller names a lane per packet (one per flow) and the class serves them in
  // turns of up to lane_quantum_bytes, switching only between trains.
  uint32_t flow_lanes = 1;
  uint64_t lane_quantum_bytes = 64 * 1024;
  // Whether the class waits for root tokens. Off: it goes on its own class
  // tokens alone and still takes its bytes from root (into debt, as the
  // default class does), so the classes that wait hold back for it. For a
  // class carrying real TCP that must compete with unshaped traffic for the
  // link as it would without the gateway, rather than get only what the
  // unshaped traffic leaves.
  bool waits_for_root = true;

  uint64_t queue_bytes() const {
    return ceil_bytes_per_sec * queue_depth_ms / 1000;
  }
};

struct ShaperConfig {
  // Root: what the outside link may carry. 10GbE.
  uint64_t link_rate_bytes_per_sec = 1'250'000'000;
  uint64_t link_burst_bytes = 256 * 1024;
  // Largest frame (as counted by the caller: wire bytes) a class may queue;
  // every bucket must hold at least one. 9018 so jumbo frames pass as shipped.
  uint32_t max_frame_bytes = 9018;

  // The paper's 4 MB/s start rate and 8 MB/s maxR (rate_variation.h), 50 ms
  // of queue at maxR: 400 kB, about 270 full-size frames.
  ShaperClassConfig migration{.rate_bytes_per_sec = 4'000'000,
                              .ceil_bytes_per_sec = 8'000'000,
                              .queue_depth_ms = 50,
                              .queue_packets = 1024};
  // Chaff only on migration's leftovers, capped at the same envelope (maxR);
  // its own packets are generated on demand, so a short queue suffices.
  ShaperClassConfig chaff{.rate_bytes_per_sec = 0,
                          .ceil_bytes_per_sec = 8'000'000,
                          .queue_depth_ms = 10,
                          .queue_packets = 256};

  // Borrowing (see Shaper for the exact rule). Chaff filling what migration
  // leaves unused is what makes migration + chaff a constant envelope.
  bool chaff_borrows_from_migration = true;
  // Off by default: migration running faster than Algorithm 3's rate would
  // show the very pattern the rate variation hides.
  bool migration_borrows_from_chaff = false;
  // Default traffic takes root tokens (never waiting for them), so the shaped
  // classes leave room for it on the link rather than queueing it in the NIC.
  bool default_counts_against_root = true;
  // Seed of the train lengths (train_max_frames); any value, 0 included.
  uint64_t train_seed = 1;

  // OK, or InvalidArgument naming the offending field.
  absl::Status Validate() const;
};

struct ShaperClassCounters {
  uint64_t enqueued_packets = 0;
  uint64_t enqueued_bytes = 0;
  uint64_t sent_packets = 0;
  uint64_t sent_bytes = 0;
  // Tail drops: queue full (packets or bytes) or frame over max_frame_bytes.
  uint64_t dropped_packets = 0;
  uint64_t dropped_bytes = 0;
  uint64_t oversize_packets = 0;  // the part of dropped_packets over max_frame_bytes
  // Tokens taken from the other class, in bytes (each packet's share rounded up).
  uint64_t borrowed_bytes = 0;
  uint64_t backlog_packets = 0;
  uint64_t backlog_bytes = 0;
  // Queueing delay of the packets sent.
  uint64_t sojourn_ns_total = 0;
  uint64_t sojourn_ns_max = 0;
  // Turns handed from one flow lane to another (flow_lanes > 1).
  uint64_t lane_turns = 0;
};

struct DefaultClassCounters {
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

// The hierarchy.
//
//   root (link rate, link burst)
//   ├── migration: rate bucket (Algorithm 3's r) + ceil bucket (maxR) + queue
//   ├── chaff:     rate bucket (policy rate)     + ceil bucket          + queue
//   └── default:   no bucket, no queue; optionally charged to root
//
// A shaped packet of B bytes goes when all of these hold, and then takes B from
// each bucket involved:
//   - root has B tokens (root never exceeds the link rate), unless the class
//     does not wait for root (waits_for_root off: it takes B from root into
//     debt, like the default class);
//   - its class's ceil bucket has B (no class exceeds its ceil, borrowing
//     included);
//   - its class's rate bucket has B, or -- when the class may borrow and the
//     lending class has nothing queued -- the class's own tokens plus the
//     lender's cover B (own first, the rest from the lender).
// "Unused" tokens are therefore the tokens of a class with an empty queue: a
// backlogged class keeps its tokens for its own head packet, so a lender always
// gets exactly its rate while it has traffic and a borrower only fills the gap
// it leaves. With migration lending to chaff, migration + chaff together run
// at Algorithm 3's rate whether or not a migration is under way.
//
// Dequeue serves migration, then chaff, in strict priority. When migration's
// head has its class tokens and waits only for root tokens, chaff waits too
// (it must not slip smaller packets into the root tokens migration's head is
// waiting for). Within a class, order is FIFO: a head packet that does not fit
// waits and nothing behind it overtakes -- within its lane, when the class
// has several (LaneQueue: lanes take turns between trains).
//
// The default class never waits: PassDefault counts the packet and, when
// default_counts_against_root, takes its bytes from root even into debt (down
// to -link burst), so the shaped classes hold back until the link has had time
// to carry it.
//
// The worker's loop, in this order so that each rate holds exactly from one
// step to the next (Dequeue refills at the old rate up to `now`, then the new
// rate counts from `now`):
//   for (;;) {
//     now = tsc_ns();
//     rx, classify: shaper.Enqueue(c, mbuf, len, now) / shaper.PassDefault(len, now)
//     n = shaper.Dequeue(now, handles, 32); tx them
//     if (rv.ShouldStep(now)) shaper.SetRate(kMigration, RateToBytesPerSec(rv.StepAt(now, rng)));
//   }
class Shaper {
 public:
  // Validates `config`; all queues are allocated here. Buckets start full.
  static absl::StatusOr<Shaper> Create(const ShaperConfig& config, uint64_t now_ns);

  Shaper(Shaper&&) = default;
  Shaper& operator=(Shaper&&) = default;

  // Queues a packet of `bytes` wire bytes in lane `lane` of the class (see
  // ShaperClassConfig::flow_lanes; taken modulo the lane count); false when it
  // was tail-dropped (counted), in which case the caller frees it.
  bool Enqueue(ShapedClass c, uint64_t handle, uint32_t bytes, uint64_t now_ns, uint32_t lane = 0);

  // Refills every bucket at `now_ns` and writes to `out`, in transmit order, the
  // handles of at most `max_packets` packets that may go now. Returns how many.
  size_t Dequeue(uint64_t now_ns, uint64_t* out, size_t max_packets);

  // Accounts one default-class packet (forwarded at once by the caller).
  void PassDefault(uint32_t bytes, uint64_t now_ns) {
    ++default_counters_.packets;
    default_counters_.bytes += bytes;
    if (default_counts_against_root_) {
      root_.Refill(now_ns);
      root_.Take(BytesToTokenUnits(bytes));
    }
  }

  // A plain store into the class's rate bucket: tokens are kept; the rate
  // counts from the last refill (see TokenBucket::SetRate).
  void SetRate(ShapedClass c, uint64_t rate_bytes_per_sec) {
    cls(c).rate.SetRate(rate_bytes_per_sec);
  }

  // The class's ceiling (e.g. a new maxR at run time), also a plain store.
  // The queue's byte limit stays what it was sized for at Create.
  void SetCeil(ShapedClass c, uint64_t ceil_bytes_per_sec) {
    cls(c).ceil.SetRate(ceil_bytes_per_sec);
  }

  // Refills every bucket at `now_ns` (Dequeue does this itself).
  void Refill(uint64_t now_ns);

  // Empties class `c`'s queue without sending: writes up to `max_packets`
  // handles to `out` (the caller frees them) and counts them as dropped, not
  // sent. For shutdown, when queued packets can no longer go out.
  size_t Discard(ShapedClass c, uint64_t* out, size_t max_packets);

  // Counters of class `c`, backlog included.
  ShaperClassCounters counters(ShapedClass c) const;

  // How long a caller with nothing else to do may sleep before calling
  // Dequeue again without losing tokens: half the time in which a class's
  // rate bucket (either class's: one may borrow the other's), or the root at
  // the classes' rates together, fills from empty. Tokens beyond a full
  // bucket are lost, so a longer sleep would cap the throughput at a bucket
  // per sleep. UINT64_MAX when nothing is queued or no class has a rate.
  uint64_t MaxIdleNs() const;
  const DefaultClassCounters& default_counters() const { return default_counters_; }

  const TokenBucket& root_bucket() const { return root_; }
  const TokenBucket& rate_bucket(ShapedClass c) const { return cls(c).rate; }
  const TokenBucket& ceil_bucket(ShapedClass c) const { return cls(c).ceil; }
  uint32_t queue_packet_limit(ShapedClass c) const { return cls(c).queue.capacity(); }
  uint32_t lanes(ShapedClass c) const { return cls(c).queue.lanes(); }
  uint64_t queue_byte_limit(ShapedClass c) const { return cls(c).queue.max_bytes(); }

 private:
  struct ClassState {
    TokenBucket rate;
    TokenBucket ceil;
    LaneQueue queue;
    ShaperClassCounters counters;
    bool may_borrow = false;
    bool waits_for_root = true;  // ShaperClassConfig::waits_for_root
    uint32_t train_max = 1;     // ShaperClassConfig::train_max_frames
    uint32_t train_target = 1;  // frames in the next train
    uint32_t train_left = 0;    // frames still to go in the current train; 0 = none started
  };
  enum class SendResult { kSent, kWaitOwn, kWaitRoot };

  Shaper() = default;
  ClassState& cls(ShapedClass c) { return classes_[static_cast<size_t>(c)]; }
  const ClassState& cls(ShapedClass c) const { return classes_[static_cast<size_t>(c)]; }
  // `other` is the class that may lend to `self`.
  SendResult TrySend(ClassState& self, ClassState& other, uint32_t bytes);
  // Whether a train of `self`'s next train_target frames (fewer if fewer are
  // queued) may start: its class tokens (own, or borrowed as TrySend would)
  // and ceil cover it, capped at the bucket depth.
  bool TrainMayStart(const ClassState& self, const ClassState& other) const;
  void NextTrain(ClassState& s);

  TokenBucket root_;
  std::array<ClassState, kShapedClassCount> classes_;
  DefaultClassCounters default_counters_;
  uint32_t max_frame_bytes_ = 0;
  bool default_counts_against_root_ = true;
  uint64_t train_rng_ = 0;  // SplitMix64 state
};

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_CORE_TOKEN_BUCKET_H_
