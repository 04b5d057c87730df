#include "dataplane/core/token_bucket.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace shroud {

namespace {

// Far above any sane queue, low enough that a typo does not allocate gigabytes.
constexpr uint32_t kMaxQueuePackets = 1u << 20;
constexpr uint32_t kMaxQueueDepthMs = 10'000;
constexpr uint32_t kMaxTrainFrames = 1024;

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

absl::Status ValidateClass(const std::string& name, const ShaperClassConfig& c,
                           uint32_t max_frame_bytes) {
  if (c.ceil_bytes_per_sec == 0 || c.ceil_bytes_per_sec > kMaxRateBytesPerSec) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".ceil_bytes_per_sec must be in (0, ",
                                                   kMaxRateBytesPerSec, "], got ",
                                                   c.ceil_bytes_per_sec));
  }
  if (c.rate_bytes_per_sec > c.ceil_bytes_per_sec) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ".rate_bytes_per_sec (", c.rate_bytes_per_sec,
                     ") must be <= ", name, ".ceil_bytes_per_sec (", c.ceil_bytes_per_sec, ")"));
  }
  if (c.burst_bytes < max_frame_bytes || c.burst_bytes > kMaxBurstBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ".burst_bytes must be in [max_frame_bytes (", max_frame_bytes, "), ",
        kMaxBurstBytes, "] so that one frame fits, got ", c.burst_bytes));
  }
  if (c.queue_packets == 0 || c.queue_packets > kMaxQueuePackets) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".queue_packets must be in [1, ",
                                                   kMaxQueuePackets, "], got ", c.queue_packets));
  }
  if (c.queue_depth_ms == 0 || c.queue_depth_ms > kMaxQueueDepthMs) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".queue_depth_ms must be in [1, ",
                                                   kMaxQueueDepthMs, "], got ", c.queue_depth_ms));
  }
  if (c.train_max_frames == 0 || c.train_max_frames > kMaxTrainFrames) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".train_max_frames must be in [1, ",
                                                   kMaxTrainFrames, "], got ", c.train_max_frames));
  }
  if (c.flow_lanes == 0 || c.flow_lanes > LaneQueue::kMaxLanes) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".flow_lanes must be in [1, ",
                                                   LaneQueue::kMaxLanes, "], got ", c.flow_lanes));
  }
  if (static_cast<uint64_t>(c.flow_lanes) * c.queue_packets > kMaxQueuePackets) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ".flow_lanes x ", name, ".queue_packets must be at most ", kMaxQueuePackets,
        " (each lane can hold the whole queue), got ", c.flow_lanes, " x ", c.queue_packets));
  }
  if (c.lane_quantum_bytes < max_frame_bytes || c.lane_quantum_bytes > kMaxBurstBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ".lane_quantum_bytes must be in [max_frame_bytes (", max_frame_bytes, "), ",
        kMaxBurstBytes, "], got ", c.lane_quantum_bytes));
  }
  if (c.queue_bytes() < max_frame_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ".queue_depth_ms: ", c.queue_depth_ms, " ms at ", name, ".ceil_bytes_per_sec = ",
        c.queue_bytes(), " bytes, less than one frame of max_frame_bytes (", max_frame_bytes,
        ")"));
  }
  return absl::OkStatus();
}

}  // namespace

const char* ShapedClassName(ShapedClass c) {
  switch (c) {
    case ShapedClass::kMigration:
      return "migration";
    case ShapedClass::kChaff:
      return "chaff";
  }
  return "unknown";
}

absl::Status ShaperConfig::Validate() const {
  if (max_frame_bytes == 0 || max_frame_bytes > kMaxBurstBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_frame_bytes must be in [1, ", kMaxBurstBytes, "], got ",
                     max_frame_bytes));
  }
  if (link_rate_bytes_per_sec == 0 || link_rate_bytes_per_sec > kMaxRateBytesPerSec) {
    return absl::InvalidArgumentError(absl::StrCat("link_rate_bytes_per_sec must be in (0, ",
                                                   kMaxRateBytesPerSec, "], got ",
                                                   link_rate_bytes_per_sec));
  }
  if (link_burst_bytes < max_frame_bytes || link_burst_bytes > kMaxBurstBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "link_burst_bytes must be in [max_frame_bytes (", max_frame_bytes, "), ", kMaxBurstBytes,
        "] so that one frame fits, got ", link_burst_bytes));
  }
  if (auto s = ValidateClass("migration", migration, max_frame_bytes); !s.ok()) return s;
  if (auto s = ValidateClass("chaff", chaff, max_frame_bytes); !s.ok()) return s;
  return absl::OkStatus();
}

LaneQueue::LaneQueue(uint32_t lanes, uint32_t max_packets, uint64_t max_bytes,
                     uint64_t quantum_bytes)
    : lanes_(std::make_unique<PacketQueue[]>(lanes)),
      lane_count_(lanes),
      quantum_bytes_(quantum_bytes),
      capacity_(max_packets),
      max_bytes_(max_bytes) {
  // Each lane could hold the whole class: the caps are checked here, over all.
  for (uint32_t i = 0; i < lanes; ++i) lanes_[i] = PacketQueue(max_packets, max_bytes);
}

bool LaneQueue::Push(uint32_t lane, const PacketQueue::Entry& e) {
  if (size_ == capacity_ || bytes_ + e.bytes > max_bytes_) return false;
  if (!lanes_[lane % lane_count_].Push(e)) return false;
  ++size_;
  bytes_ += e.bytes;
  return true;
}

void LaneQueue::Pop() {
  PacketQueue& q = lanes_[current_];
  const uint32_t b = q.Front().bytes;
  q.Pop();
  --size_;
  bytes_ -= b;
  served_bytes_ += b;
}

void LaneQueue::NextTurnIfDue() {
  if (lane_count_ == 1) return;
  if (!lanes_[current_].empty() && served_bytes_ < quantum_bytes_) return;
  served_bytes_ = 0;
  for (uint32_t step = 1; step <= lane_count_; ++step) {
    const uint32_t lane = (current_ + step) % lane_count_;
    if (!lanes_[lane].empty()) {
      if (lane != current_) ++turns_;
      current_ = lane;
      return;
    }
  }
}

absl::StatusOr<Shaper> Shaper::Create(const ShaperConfig& config, uint64_t now_ns) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  Shaper shaper;
  shaper.root_ = TokenBucket(config.link_rate_bytes_per_sec, config.link_burst_bytes, now_ns);
  auto init = [&](ShapedClass c, const ShaperClassConfig& cc, bool may_borrow) {
    ClassState& s = shaper.cls(c);
    s.rate = TokenBucket(cc.rate_bytes_per_sec, cc.burst_bytes, now_ns);
    s.ceil = TokenBucket(cc.ceil_bytes_per_sec, cc.burst_bytes, now_ns);
    s.queue = LaneQueue(cc.flow_lanes, cc.queue_packets, cc.queue_bytes(), cc.lane_quantum_bytes);
    s.may_borrow = may_borrow;
    s.train_max = cc.train_max_frames;
    s.waits_for_root = cc.waits_for_root;
  };
  shaper.train_rng_ = config.train_seed;
  init(ShapedClass::kMigration, config.migration, config.migration_borrows_from_chaff);
  init(ShapedClass::kChaff, config.chaff, config.chaff_borrows_from_migration);
  shaper.max_frame_bytes_ = config.max_frame_bytes;
  shaper.default_counts_against_root_ = config.default_counts_against_root;
  for (ClassState& s : shaper.classes_) shaper.NextTrain(s);
  return shaper;
}

bool Shaper::Enqueue(ShapedClass c, uint64_t handle, uint32_t bytes, uint64_t now_ns, uint32_t lane) {
  ClassState& s = cls(c);
  // A frame no bucket can hold would block its queue forever.
  const bool oversize = bytes > max_frame_bytes_;
  if (oversize || !s.queue.Push(lane, {handle, now_ns, bytes})) {
    ++s.counters.dropped_packets;
    s.counters.dropped_bytes += bytes;
    if (oversize) ++s.counters.oversize_packets;
    return false;
  }
  ++s.counters.enqueued_packets;
  s.counters.enqueued_bytes += bytes;
  return true;
}

size_t Shaper::Discard(ShapedClass c, uint64_t* out, size_t max_packets) {
  ClassState& s = cls(c);
  size_t n = 0;
  while (n < max_packets && !s.queue.empty()) {
    s.queue.NextTurnIfDue();
    const PacketQueue::Entry& e = s.queue.Front();
    out[n++] = e.handle;
    ++s.counters.dropped_packets;
    s.counters.dropped_bytes += e.bytes;
    s.queue.Pop();
  }
  return n;
}

void Shaper::Refill(uint64_t now_ns) {
  root_.Refill(now_ns);
  for (ClassState& s : classes_) {
    s.rate.Refill(now_ns);
    s.ceil.Refill(now_ns);
  }
}

Shaper::SendResult Shaper::TrySend(ClassState& self, ClassState& other, uint32_t bytes) {
  const int64_t need = BytesToTokenUnits(bytes);
  if (!self.ceil.Has(need)) return SendResult::kWaitOwn;
  int64_t from_lender = 0;
  if (!self.rate.Has(need)) {
    // Only the tokens of a class with nothing queued are unused; a backlogged
    // class keeps them for its own head packet.
    if (!self.may_borrow || !other.queue.empty()) return SendResult::kWaitOwn;
    from_lender = need - std::max<int64_t>(self.rate.tokens(), 0);
    if (!other.rate.Has(from_lender)) return SendResult::kWaitOwn;
  }
  // Checked last so that "waiting for root" means the class could go otherwise.
  if (self.waits_for_root && !root_.Has(need)) return SendResult::kWaitRoot;
  self.rate.Take(need - from_lender);
  if (from_lender > 0) {
    other.rate.Take(from_lender);
    self.counters.borrowed_bytes +=
        static_cast<uint64_t>((from_lender + kTokenUnitsPerByte - 1) / kTokenUnitsPerByte);
  }
  self.ceil.Take(need);
  root_.Take(need);
  return SendResult::kSent;
}

void Shaper::NextTrain(ClassState& s) {
  s.train_left = 0;
  s.train_target = s.train_max <= 1 ? 1 : 1 + static_cast<uint32_t>(SplitMix64(train_rng_) % s.train_max);
}

bool Shaper::TrainMayStart(const ClassState& self, const ClassState& other) const {
  const uint32_t frames = std::min(self.train_target, self.queue.lane_size());
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < frames; ++i) bytes += self.queue.At(i).bytes;
  // Tokens never exceed the bucket depth: a longer train starts at a full one.
  const int64_t need = std::min(BytesToTokenUnits(bytes), self.rate.burst());
  if (!self.ceil.Has(std::min(need, self.ceil.burst()))) return false;
  if (self.rate.Has(need)) return true;
  if (!self.may_borrow || !other.queue.empty()) return false;
  return other.rate.Has(need - std::max<int64_t>(self.rate.tokens(), 0));
}

size_t Shaper::Dequeue(uint64_t now_ns, uint64_t* out, size_t max_packets) {
  Refill(now_ns);
  size_t n = 0;
  ClassState& migration = cls(ShapedClass::kMigration);
  ClassState& chaff = cls(ShapedClass::kChaff);
  ClassState* order[2][2] = {{&migration, &chaff}, {&chaff, &migration}};
  for (auto& [self, other] : order) {
    SendResult result = SendResult::kSent;
    const bool trains = self->train_max > 1;
    while (n < max_packets && !self->queue.empty()) {
      // Between trains (every frame when there are none) a lane may hand
      // over its turn; a train is one lane's.
      if (self->train_left > 0 && self->queue.lane_size() == 0) NextTrain(*self);  // Discard'd mid-train
      if (self->train_left == 0) self->queue.NextTurnIfDue();
      if (trains && self->train_left == 0) {
        if (!TrainMayStart(*self, *other)) {
          result = SendResult::kWaitOwn;
          break;
        }
        self->train_left = std::min(self->train_target, self->queue.lane_size());
      }
      const PacketQueue::Entry& e = self->queue.Front();
      result = TrySend(*self, *other, e.bytes);
      if (result != SendResult::kSent) break;
      out[n++] = e.handle;
      ShaperClassCounters& k = self->counters;
      ++k.sent_packets;
      k.sent_bytes += e.bytes;
      const uint64_t sojourn = now_ns > e.enqueue_ns ? now_ns - e.enqueue_ns : 0;
      k.sojourn_ns_total += sojourn;
      k.sojourn_ns_max = std::max(k.sojourn_ns_max, sojourn);
      self->queue.Pop();
      if (trains && --self->train_left == 0) NextTrain(*self);
    }
    // A train whose queue ran dry ends there: what comes next waits for the
    // tokens of a whole new train rather than trickling out paced.
    if (trains && self->queue.lane_size() == 0 && self->train_left > 0) NextTrain(*self);
    // Strict priority at the root: lower classes must not take the root
    // tokens a higher class's head is waiting for.
    if (result == SendResult::kWaitRoot) break;
  }
  return n;
}

uint64_t Shaper::MaxIdleNs() const {
  bool queued = false;
  for (const ClassState& s : classes_) queued = queued || !s.queue.empty();
  if (!queued) return UINT64_MAX;
  // A class sends at most its rate bucket's tokens (its ceil bucket, as deep
  // and faster, is full first and binds only within a burst), a borrower its
  // lender's: so every class's rate bucket counts, and the root if the rates
  // together would fill it sooner.
  double fill_ns = 1.8e19;
  double rates = 0;
  for (const ClassState& s : classes_) {
    const double rate = static_cast<double>(s.rate.rate());
    if (rate <= 0) continue;
    rates += rate;
    fill_ns = std::min(fill_ns, static_cast<double>(s.rate.burst_bytes()) * 1e9 / rate);
  }
  if (rates > 0) {
    fill_ns = std::min(fill_ns, static_cast<double>(root_.burst_bytes()) * 1e9 / rates);
  }
  return fill_ns >= 1.8e19 ? UINT64_MAX : static_cast<uint64_t>(fill_ns / 2);
}

ShaperClassCounters Shaper::counters(ShapedClass c) const {
  const ClassState& s = cls(c);
  ShaperClassCounters k = s.counters;
  k.backlog_packets = s.queue.size();
  k.backlog_bytes = s.queue.bytes();
  k.lane_turns = s.queue.turns();
  return k;
}

}  // namespace shroud
