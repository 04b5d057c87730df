#include "dataplane/gateway_worker.h"

#include <rte_branch_prediction.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_hash.h>
#include <rte_prefetch.h>

#include <algorithm>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dataplane/worker_cadence.h"
#include "glog/logging.h"

namespace shroud {
namespace {

// Chaff frames kept queued in the chaff class while the policy generates:
// enough that the shaper never waits for the generator, few enough that a
// frame's timestamps are fresh when it leaves and that the queue never
// overflows (a tail-dropped chaff frame would be a hole in its connection's
// sequence space that nobody retransmits).
constexpr uint64_t kChaffBacklogFrames = 2;

ShapedClass ToShaped(TrafficClass c) {
  return c == TrafficClass::kChaff ? ShapedClass::kChaff : ShapedClass::kMigration;
}

}  // namespace

GatewayWorkerOptions WorkerOptionsFromConfig(const GatewayConfig& config) {
  GatewayWorkerOptions o;
  o.burst = static_cast<uint16_t>(std::min<uint32_t>(config.dataplane.burst_size, kMaxBurst));
  o.malformed = config.dataplane.malformed;
  o.features = config.features;
  o.idle_timeout_ns = uint64_t{config.flows.idle_timeout_ms} * 1'000'000;
  o.rate_variation = config.rate_variation.enabled;
  o.rate_variation_config = ToRateVariationConfig(config.rate_variation);
  o.shaper = ToShaperConfig(config);
  o.seed = config.rate_variation.seed;
  if (config.chaff.enabled()) {
    o.chaff_key = config.chaff.key;
    o.chaff = ToChaffConfig(config);
    o.chaff_connections = config.chaff.connections;
  }
  return o;
}

absl::StatusOr<std::unique_ptr<GatewayWorker>> GatewayWorker::Create(
    const GatewayWorkerOptions& options, const Classifier& classifier,
    std::unique_ptr<WorkerFlowTable> flows) {
  if (options.burst == 0 || options.burst > kMaxBurst) {
    return absl::InvalidArgumentError(absl::StrFormat("burst must be in [1, %d]", kMaxBurst));
  }
  absl::StatusOr<SignatureScanner> scanner = classifier.NewScanner();
  if (!scanner.ok()) return scanner.status();
  const uint64_t tsc_now = rte_get_tsc_cycles();
  // The shaper's clock starts at 0 with the worker's.
  ShaperConfig shaper_config = options.shaper;
  shaper_config.train_seed = options.seed ^ 0x747261696e73ull;  // "trains": apart from Algorithm 3's stream
  absl::StatusOr<Shaper> shaper = Shaper::Create(shaper_config, 0);
  if (!shaper.ok()) return shaper.status();
  if (absl::Status s = options.rate_variation_config.Validate(); !s.ok()) return s;
  std::unique_ptr<GatewayWorker> w(new GatewayWorker(options, classifier, *std::move(scanner),
                                                     std::move(flows), *std::move(shaper)));
  if (options.chaff_key.has_value()) {
    if (options.mbuf_pool == nullptr) {
      return absl::InvalidArgumentError("chaff needs mbuf_pool (its frames and answers)");
    }
    const ChaffKeys keys(*options.chaff_key);
    if (options.chaff_connections == 0 || options.chaff_connections > kMaxChaffConnections) {
      return absl::InvalidArgumentError(
          absl::StrFormat("chaff connections must be in [1, %u]", kMaxChaffConnections));
    }
    std::vector<ChaffGenerator> generators;
    for (uint32_t i = 0; i < options.chaff_connections; ++i) {
      absl::StatusOr<ChaffGenerator> generator = ChaffGenerator::Create(options.chaff, keys);
      if (!generator.ok()) return generator.status();
      generators.push_back(*std::move(generator));
    }
    const size_t max_frame = MaxChaffFrameBytes(options.chaff.tcp);
    if (max_frame > RTE_MBUF_DEFAULT_DATAROOM) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "chaff frames of up to %u bytes do not fit an mbuf's %u-byte data room (chaff.mtu)",
          max_frame, RTE_MBUF_DEFAULT_DATAROOM));
    }
    w->chaff_.emplace(Chaff{
        .verifier = ChaffVerifier(keys, options.chaff.pools),
        .generators = std::move(generators),
        .scheduler = ChaffFlightScheduler(),
        .responder = ChaffResponder(options.chaff.tcp),
        .policy = ChaffPolicy(options.chaff.policy),
        .respond = options.chaff.respond,
        .max_frame_bytes = max_frame,
        .interval_ns = options.rate_variation_config.interval_ns,
    });
  }
  w->tsc_start_ = tsc_now;
  const uint64_t hz = rte_get_tsc_hz();
  if (hz == 0) return absl::InternalError("rte_get_tsc_hz() returned 0");
  w->tsc_to_ns_mult_ = static_cast<uint64_t>((static_cast<unsigned __int128>(1'000'000'000) << 32) / hz);
  return w;
}

GatewayWorker::GatewayWorker(const GatewayWorkerOptions& options, const Classifier& classifier,
                             SignatureScanner scanner, std::unique_ptr<WorkerFlowTable> flows,
                             Shaper shaper)
    : options_(options),
      classifier_(&classifier),
      scanner_(std::move(scanner)),
      flows_(std::move(flows)),
      shaper_(std::move(shaper)),
      stream_(options.features),
      rate_variation_(options.rate_variation_config),
      rng_(options.seed),
      chaff_rng_(options.seed ^ 0x63686166662d7267ull) {
  if (options_.mirror.has_value()) {
    exporter_.emplace(*options_.mirror, 0, options_.export_interval_ns, /*classified=*/true);
  }
  counters_.rate_bytes_per_sec = options.shaper.migration.rate_bytes_per_sec;
  counters_.rate_min_applied = counters_.rate_max_applied = counters_.rate_bytes_per_sec;
}

GatewayWorker::~GatewayWorker() {
  delete pending_update_.exchange(nullptr);
  CollectRetired();
  for (Staging& s : staging_) {
    for (uint16_t i = s.head; i < s.count; ++i) rte_pktmbuf_free(s.pkts[i]);
    s.head = s.count = 0;
  }
  for (TxBuffer& t : tx_) {
    for (uint16_t i = 0; i < t.count; ++i) rte_pktmbuf_free(t.pkts[i]);
    t.count = 0;
  }
}

uint64_t GatewayWorker::NowNs() const {
  const uint64_t cycles = rte_get_tsc_cycles() - tsc_start_;
  return static_cast<uint64_t>((static_cast<unsigned __int128>(cycles) * tsc_to_ns_mult_) >> 32);
}

uint16_t GatewayWorker::Receive(Direction dir, uint64_t now, rte_mbuf** out) {
  const uint16_t port = dir == kInsideToOutside ? options_.inside_port : options_.outside_port;
  if (options_.replay_speed <= 0.0) return rte_eth_rx_burst(port, 0, out, options_.burst);

  // Replay pacing: hold the burst until each packet is due.
  Staging& s = staging_[dir];
  if (s.head == s.count) {
    s.head = 0;
    s.count = rte_eth_rx_burst(port, 0, s.pkts.data(), options_.burst);
    if (s.count == 0) return 0;
  }
  uint16_t n = 0;
  while (s.head < s.count) {
    rte_mbuf* m = s.pkts[s.head];
    if (options_.timestamp_offset >= 0 && (m->ol_flags & options_.timestamp_flag) != 0) {
      const uint64_t ts =
          *RTE_MBUF_DYNFIELD(m, options_.timestamp_offset, rte_mbuf_timestamp_t*);
      if (!replay_started_) {
        replay_started_ = true;
        replay_base_ts_ = ts;
        replay_base_ns_ = now;
      }
      if (ts > replay_base_ts_) {
        // net_pcap stores the pcap record time in microseconds.
        const double offset_ns = static_cast<double>(ts - replay_base_ts_) * 1000.0 /
                                 options_.replay_speed;
        if (replay_base_ns_ + static_cast<uint64_t>(offset_ns) > now) break;
      }
    }
    out[n++] = m;
    ++s.head;
  }
  return n;
}

void GatewayWorker::Forward(Direction dir, rte_mbuf* m, uint32_t wire_bytes, uint64_t now) {
  DirectionCounters& c = counters_.direction[dir];
  ++c.forwarded_packets;
  c.forwarded_bytes += wire_bytes;
  // Default traffic leaving through the outside link uses the link the shaper
  // accounts for.
  if (dir == kInsideToOutside) shaper_.PassDefault(wire_bytes, now);
  TxBuffer& t = tx_[dir];
  t.pkts[t.count++] = m;
}

void GatewayWorker::ProcessBurst(Direction dir, rte_mbuf** pkts, uint16_t n, uint64_t now) {
  // Bulk lookups take at most RTE_HASH_LOOKUP_BULK_MAX keys.
  static_assert(RTE_HASH_LOOKUP_BULK_MAX >= 32);
  constexpr uint16_t kChunk = 32;
  for (uint16_t base = 0; base < n; base += kChunk) {
    const uint16_t count = std::min<uint16_t>(kChunk, n - base);
    const FlowKey* keys[kChunk];
    uint16_t key_slot[kChunk];
    uint32_t nkeys = 0;
    for (uint16_t i = 0; i < count; ++i) {
      rte_mbuf* m = pkts[base + i];
      if (i + 1 < count) rte_prefetch0(rte_pktmbuf_mtod(pkts[base + i + 1], void*));
      ParsedPacket& p = parsed_[i];
      status_[i] = ParsePacket(rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m),
                               rte_pktmbuf_pkt_len(m), LinkType::kEthernet, &p);
      // The peer's chaff never reaches the flow table, let alone the inside.
      if (dir == kOutsideToInside && chaff_.has_value() && status_[i] == ParseStatus::kOk &&
          chaff_->verifier.MaybeChaff(p.key)) {
        if (AbsorbChaff(m, p, now)) {
          pkts[base + i] = nullptr;
          continue;
        }
        ++counters_.chaff_traffic.unverified_forwarded;
      }
      if (status_[i] == ParseStatus::kOk) {
        key_slot[nkeys] = i;
        keys[nkeys++] = &p.key;
      }
    }
    FlowEntry* found[kChunk] = {};
    FlowEntry* entry_of[kChunk] = {};
    flows_->LookupBulk(keys, nkeys, found);
    for (uint32_t k = 0; k < nkeys; ++k) {
      entry_of[key_slot[k]] = found[k];
      if (found[k] != nullptr) PrefetchFlowEntry(found[k]);
    }
    for (uint16_t i = 0; i < count; ++i) {
      if (pkts[base + i] == nullptr) continue;  // absorbed chaff
      Process(dir, pkts[base + i], parsed_[i], status_[i], entry_of[i], now);
    }
  }
}

inline void GatewayWorker::RefreshIfStale(FlowEntry& e) const {
  if (unlikely(e.cls.rules_epoch != rules_epoch_)) {
    e.cls = classifier_->Refresh(e.cls, e.key, rules_epoch_);
  }
}

void GatewayWorker::Process(Direction dir, rte_mbuf* m, const ParsedPacket& p,
                            ParseStatus status, FlowEntry* looked_up, uint64_t now) {
  const uint8_t* data = rte_pktmbuf_mtod(m, const uint8_t*);
  const uint32_t captured = rte_pktmbuf_data_len(m);  // first segment: the headers
  const uint32_t wire = rte_pktmbuf_pkt_len(m);
  DirectionCounters& dc = counters_.direction[dir];
  ++dc.rx_packets;
  dc.rx_bytes += wire;

  ++counters_.parse_status[static_cast<size_t>(status)];
  if (unlikely(status != ParseStatus::kOk)) {
    if (IsMalformed(status) && options_.malformed == MalformedPolicy::kDrop) {
      ++counters_.malformed_dropped;
      rte_pktmbuf_free(m);
      return;
    }
    Forward(dir, m, wire, now);  // ARP, LLDP, ... and tolerated malformed frames
    return;
  }

  stream_.Advance();
  std::span<const uint8_t> payload;
  if (p.payload_offset > 0 && p.payload_offset < captured) {
    payload = {data + p.payload_offset,
               std::min<size_t>(captured - p.payload_offset, p.payload_length)};
  }
  bool created = false;
  // A miss in the bulk lookup may have been added by an earlier packet of
  // the same burst; FindOrAdd looks again before adding.
  FlowEntry* e = looked_up != nullptr ? looked_up : flows_->FindOrAdd(p.key, now, &created);
  FlowClass cls;
  if (likely(e != nullptr)) {
    e->last_seen_ns = now;
    e->features.Observe({now, wire}, stream_, options_.features);
    RefreshIfStale(*e);
    const FlowClass before = e->cls;
    cls = before.decided() ? before : classifier_->Decide(before, p.key, payload, scanner_);
    if (!before.decided() && cls.decided()) {
      cls.counted = 1;
      e->cls = cls;
      const bool again = before.counted;
      if (again) ++counters_.reclassified;
      switch (cls.source) {
        case ClassSource::kRule: counters_.classified_rule += !again; break;
        case ClassSource::kSignature: {
          counters_.classified_signature += !again;
          // The return direction (ACKs) belongs to the same flow; rules see
          // both directions themselves, signatures only the one they matched.
          bool reverse_created = false;
          FlowEntry* r = flows_->FindOrAdd(p.key.Reversed(), now, &reverse_created);
          if (r != nullptr) RefreshIfStale(*r);
          if (r != nullptr && r->cls.source != ClassSource::kRule && !cls.reverse) {
            r->cls = ReverseFlowClass(cls);
          }
          break;
        }
        default: counters_.classified_no_match += !again; break;
      }
    } else {
      e->cls = cls;
    }
  } else {
    // Table full: no per-flow state, but a rule still names the class, so a
    // migration is shaped whatever else the table holds.
    const RuleMatch r = classifier_->rules().Match(p.key);
    if (r.matched()) {
      cls.traffic_class = r.traffic_class;
      cls.source = ClassSource::kRule;
      cls.reverse = r.reverse;
      cls.index = static_cast<uint16_t>(r.rule);
    }
  }

  const TrafficClass q = QueueClass(cls);
  if (dir == kInsideToOutside && q != TrafficClass::kDefault) {
    ++dc.shaped_packets;
    uint32_t lane = 0;
    if (q == TrafficClass::kMigration) {
      if (options_.rate_variation) StartSessionIfNew(now);
      // A packet whose flow found no room in the table goes to lane 0 (its
      // flow may be reordered then; the table being full is counted).
      if (e != nullptr) {
        if (e->shaper_lane == FlowEntry::kNoLane) {
          e->shaper_lane = static_cast<uint8_t>(next_lane_++ % shaper_.lanes(ShapedClass::kMigration));
        }
        lane = e->shaper_lane;
      }
    }
    if (!shaper_.Enqueue(ToShaped(q), reinterpret_cast<uintptr_t>(m), wire, now, lane)) {
      rte_pktmbuf_free(m);  // tail drop, counted by the shaper
    }
    return;
  }
  Forward(dir, m, wire, now);
}

void GatewayWorker::Flush(Direction dir) {
  TxBuffer& t = tx_[dir];
  if (t.count == 0) return;
  const uint16_t port = dir == kInsideToOutside ? options_.outside_port : options_.inside_port;
  // Bytes are read before the mbufs are handed over (a NIC may recycle them
  // at once), then the refused ones are taken back out.
  uint64_t bytes = 0;
  for (uint16_t i = 0; i < t.count; ++i) bytes += rte_pktmbuf_pkt_len(t.pkts[i]);
  uint16_t sent = rte_eth_tx_burst(port, 0, t.pkts.data(), t.count);
  // One retry: af_packet refuses a burst when the socket's ring is full for a
  // moment; a second attempt usually finds room.
  if (unlikely(sent < t.count)) sent += rte_eth_tx_burst(port, 0, t.pkts.data() + sent, t.count - sent);
  DirectionCounters& c = counters_.direction[dir];
  // What the port still refuses waits at the front of the buffer for the
  // next Flush (a full TX ring drains within microseconds): dropping a chaff
  // frame would leave a hole in its connection that nobody retransmits, and
  // a shaped frame has had its tokens. Beyond a burst's worth they are
  // dropped, so appending a burst before each Flush never overflows the
  // buffer (2 bursts).
  const uint16_t keep = std::min<uint16_t>(t.count - sent, options_.burst);
  for (uint16_t i = sent; i < t.count; ++i) {
    bytes -= rte_pktmbuf_pkt_len(t.pkts[i]);
    if (i >= sent + keep) {
      ++c.tx_dropped;
      rte_pktmbuf_free(t.pkts[i]);
    }
  }
  for (uint16_t i = 0; i < keep; ++i) t.pkts[i] = t.pkts[sent + i];
  c.tx_packets += sent;
  c.tx_bytes += bytes;
  c.tx_retried += keep;
  t.count = keep;
}

void GatewayWorker::PostUpdate(std::unique_ptr<RuntimeUpdate> update) {
  std::lock_guard<std::mutex> lock(post_mu_);
  CollectRetired();
  // Taken out, so the worker cannot apply it while it is merged; it then
  // sees no update for one chore check at most.
  std::unique_ptr<RuntimeUpdate> unapplied(
      pending_update_.exchange(nullptr, std::memory_order_acq_rel));
  if (unapplied != nullptr && unapplied->classifier != nullptr && update->classifier == nullptr) {
    update->classifier = std::move(unapplied->classifier);
    update->scanner = std::move(unapplied->scanner);
  }
  pending_update_.store(update.release(), std::memory_order_release);
}

void GatewayWorker::ApplyUpdate(uint64_t now) {
  std::unique_ptr<RuntimeUpdate> u(pending_update_.exchange(nullptr, std::memory_order_acq_rel));
  if (u == nullptr) return;
  options_.rate_variation = u->rate_variation;
  options_.rate_variation_config = u->rate_variation_config;
  // A fresh window: the old rates were drawn under other bounds.
  std::swap(rate_variation_, u->rate_variation_state);
  shaper_.SetCeil(ShapedClass::kMigration, u->migration_ceil_bytes_per_sec);
  if (u->chaff_ceil_bytes_per_sec > 0) {
    shaper_.SetCeil(ShapedClass::kChaff, u->chaff_ceil_bytes_per_sec);
  }
  if (options_.rate_variation) {
    StepRate(now);
  } else {
    const uint64_t rate = RateToBytesPerSec(u->rate_variation_config.start_rate);
    shaper_.SetRate(ShapedClass::kMigration, rate);
    counters_.rate_bytes_per_sec = rate;
  }
  if (chaff_.has_value()) {
    chaff_->policy.Reconfigure(u->chaff_policy);
    // Without Algorithm 3 the policy steps on its own clock, at the interval
    // the update carries (with it, it steps with the walk).
    chaff_->interval_ns = u->rate_variation_config.interval_ns;
  }
  // Checked before the swap below empties u->classifier (the first reload
  // swaps in a null: the start's classifier is not owned by the worker).
  const bool new_rules = u->classifier != nullptr && u->scanner.has_value();
  if (new_rules) {
    // The old classifier and scanner leave with `u`.
    std::swap(owned_classifier_, u->classifier);
    classifier_ = owned_classifier_.get();
    std::swap(scanner_, *u->scanner);
    // Flows are decided again lazily, at their next packet (Classifier::Refresh
    // in Process): a walk over a million-entry table here would stall the
    // rx rings for milliseconds. Only when the 15-bit epoch wraps are all
    // flows brought to the new one here, so an old epoch is never mistaken
    // for the current one.
    rules_epoch_ = static_cast<uint16_t>((rules_epoch_ + 1) % kRulesEpochs);
    if (rules_epoch_ == 0) {
      for (uint32_t i = 0; i < flows_->capacity(); ++i) {
        FlowEntry& e = flows_->mutable_slot(i);
        if (e.in_use) e.cls = classifier_->Refresh(e.cls, e.key, 0);
      }
    }
    ++counters_.rules_reloaded;
    LOG(INFO) << absl::StrFormat(
        "rules reloaded: %zu rule(s), %zu signature(s); flows are classified again at their "
        "next packet (a flow a signature decided keeps that signature, and its class now, unless a "
        "rule matches it or the signature is gone)",
        classifier_->rules().size(), classifier_->signatures().size());
  }
  ++counters_.runtime_updates;
  LOG(INFO) << absl::StrFormat(
      "run-time update applied: migration %s [%.3f, %.3f] MB/s every %u ms (start %.3f)%s",
      options_.rate_variation ? "Algorithm 3" : "constant rate",
      u->rate_variation_config.min_rate * 1e-6, u->rate_variation_config.max_rate * 1e-6,
      static_cast<unsigned>(u->rate_variation_config.interval_ns / 1'000'000),
      u->rate_variation_config.start_rate * 1e-6,
      chaff_.has_value() ? absl::StrCat("; chaff policy ",
                                        std::string(ChaffPolicyKindName(u->chaff_policy.kind)))
                         : std::string());
  // The update and what it replaced (above all an old classifier's Hyperscan
  // database and scratch; a rules-less one holds the old rate window) are
  // freed by the main thread (CollectRetired), never on this core, also when
  // two updates come between two collections: the one still waiting goes
  // along with this one. The worker is the only one that stores here, so
  // nothing lands between the exchange and the store.
  u->older_retired.reset(retired_update_.exchange(nullptr, std::memory_order_acq_rel));
  retired_update_.store(u.release(), std::memory_order_release);
}

void GatewayWorker::StartSessionIfNew(uint64_t now) {
  const std::optional<RateSessionProfile> p = rate_variation_.OnMigrationPacket(now, rng_);
  if (!p.has_value()) return;
  ++counters_.rate_sessions;
  counters_.rate_session_min_rate = RateToBytesPerSec(p->min_rate);
  counters_.rate_session_window = p->window;
  last_session_ = *p;  // logged from the chore path, not here on the packet path
  StepRate(now);  // the session's first rate at once, as at start
}

void GatewayWorker::LogNewSession() {
  if (counters_.rate_sessions == logged_sessions_) return;
  logged_sessions_ = counters_.rate_sessions;
  // Once per migration: worth a line at 3 a.m.
  LOG(INFO) << absl::StrFormat(
      "migration session %u: Algorithm 3 walks with minR %.3f MB/s, win %u, paused ~%.0f %% "
      "of the time (draw u = %.3f)",
      counters_.rate_sessions, last_session_.min_rate * 1e-6, last_session_.window,
      100 * last_session_.pause_share, last_session_.u);
}

void GatewayWorker::StepRate(uint64_t now) {
  const uint64_t rate = RateToBytesPerSec(rate_variation_.StepAt(now, rng_));
  // A paused session holds the migration class still; the walk's rate stays
  // the chaff envelope's reference, so chaff fills the whole of it.
  const bool paused = rate_variation_.PausedAt(now, rng_);
  shaper_.SetRate(ShapedClass::kMigration, paused ? 0 : rate);
  rate_paused_ = paused;
  counters_.rate_paused_steps += paused;
  ++counters_.rate_steps;
  counters_.rate_bytes_per_sec = rate;
  counters_.rate_min_applied = std::min(counters_.rate_min_applied, rate);
  counters_.rate_max_applied = std::max(counters_.rate_max_applied, rate);
}

bool GatewayWorker::AbsorbChaff(rte_mbuf* m, const ParsedPacket& p, uint64_t now) {
  // Only the first segment is looked at: a frame split over segments (never
  // the case for the 1514-byte frames chaff uses) does not verify and is
  // forwarded.
  const std::span<const uint8_t> frame(rte_pktmbuf_mtod(m, const uint8_t*),
                                       rte_pktmbuf_data_len(m));
  const std::optional<ChaffSegment> seg = chaff_->verifier.Verify(frame, p);
  if (!seg.has_value()) return false;

  const uint32_t wire = rte_pktmbuf_pkt_len(m);
  DirectionCounters& dc = counters_.direction[kOutsideToInside];
  ++dc.rx_packets;
  dc.rx_bytes += wire;
  ChaffCounters& cc = counters_.chaff_traffic;
  const bool from_client = seg->direction == ChaffDirection::kClientToServer;
  ++(from_client ? cc.absorbed_peer_packets : cc.absorbed_answer_packets);
  cc.absorbed_bytes += wire;

  // The answer, if the segment gets one, is written into a fresh mbuf while
  // the segment's frame is still there to copy its link header from.
  if (!from_client || chaff_->respond) {
    rte_mbuf* reply = rte_pktmbuf_alloc(options_.mbuf_pool);
    if (unlikely(reply == nullptr)) {
      ++cc.no_mbuf;
    } else {
      const std::span<uint8_t> out(rte_pktmbuf_mtod(reply, uint8_t*),
                                   rte_pktmbuf_tailroom(reply));
      const size_t n = from_client ? chaff_->responder.Respond(*seg, frame, now, out)
                                   : AnswerToOurs(*seg, now, out);
      if (n == 0) {
        rte_pktmbuf_free(reply);
      } else {
        rte_pktmbuf_append(reply, static_cast<uint16_t>(n));
        ++cc.answered_packets;
        cc.answered_bytes += n;
        // Answers are ACK-sized mostly and are never queued behind data (as
        // ACKs of a migration are not); they use the link like default
        // traffic does.
        shaper_.PassDefault(static_cast<uint32_t>(n), now);
        TxBuffer& t = tx_[kInsideToOutside];
        t.pkts[t.count++] = reply;
      }
    }
  }
  rte_pktmbuf_free(m);
  return true;
}

size_t GatewayWorker::AnswerToOurs(const ChaffSegment& seg, uint64_t now, std::span<uint8_t> out) {
  // The generator whose connection it is answers; the others ignore a
  // segment of another 5-tuple.
  for (ChaffGenerator& g : chaff_->generators) {
    if (const size_t n = g.OnServerSegment(seg, now, out); n != 0) return n;
  }
  return 0;
}

void GatewayWorker::SupplyChaff(uint64_t now) {
  Chaff& ch = *chaff_;
  ShaperClassCounters q = shaper_.counters(ShapedClass::kChaff);
  const uint64_t byte_limit = shaper_.queue_byte_limit(ShapedClass::kChaff);
  const uint32_t packet_limit = shaper_.queue_packet_limit(ShapedClass::kChaff);
  // A frame is only crafted when the queue surely takes it: the generator
  // advances its connection with every frame, and a frame it made that then
  // got dropped would be a hole in the sequence space.
  while (q.backlog_packets < kChaffBacklogFrames && q.backlog_packets < packet_limit &&
         q.backlog_bytes + ch.max_frame_bytes <= byte_limit) {
    // A connection that has something to send (one waiting for its SYN-ACK
    // has not), in flights rather than round robin: see ChaffFlightScheduler.
    const size_t count = ch.generators.size();
    const size_t pick = ch.scheduler.Next(
        count, [&](size_t i) { return ch.generators[i].next_frame_ns() <= now; }, chaff_rng_);
    if (pick == count) return;
    ChaffGenerator& generator = ch.generators[pick];
    rte_mbuf* m = rte_pktmbuf_alloc(options_.mbuf_pool);
    if (unlikely(m == nullptr)) {
      ++counters_.chaff_traffic.no_mbuf;
      return;
    }
    const size_t n = generator.NextFrame(
        now, chaff_rng_,
        std::span<uint8_t>(rte_pktmbuf_mtod(m, uint8_t*), rte_pktmbuf_tailroom(m)));
    if (n == 0) {  // not expected: next_frame_ns said it had something
      rte_pktmbuf_free(m);
      return;
    }
    rte_pktmbuf_append(m, static_cast<uint16_t>(n));
    if (unlikely(!shaper_.Enqueue(ShapedClass::kChaff, reinterpret_cast<uintptr_t>(m),
                                  static_cast<uint32_t>(n), now))) {
      rte_pktmbuf_free(m);  // counted by the shaper; not expected after the checks above
      return;
    }
    ++counters_.chaff_traffic.generated_packets;
    counters_.chaff_traffic.generated_bytes += n;
    ++q.backlog_packets;
    q.backlog_bytes += n;
  }
}

ChaffGeneratorCounters GatewayWorker::GeneratorTotals() const {
  ChaffGeneratorCounters total;
  for (const ChaffGenerator& g : chaff_->generators) {
    total.connections += g.counters().connections;
    total.syn_retransmits += g.counters().syn_retransmits;
    total.abandoned += g.counters().abandoned;
  }
  return total;
}

void GatewayWorker::StepChaff(uint64_t now) {
  Chaff& ch = *chaff_;
  // The interval's measured rates: what migration sent and the default
  // class's outgoing traffic (our answers to the peer's chaff excluded).
  const uint64_t migration_sent = shaper_.counters(ShapedClass::kMigration).sent_bytes;
  const uint64_t default_bytes = shaper_.default_counters().bytes;
  const uint64_t answered = counters_.chaff_traffic.answered_bytes;
  ChaffLoad load;
  load.migration_rate_bytes_per_sec = counters_.rate_bytes_per_sec;
  load.migration_paused = rate_paused_;
  if (counters_.chaff_traffic.policy_steps > 0 && now > ch.last_step_ns) {
    const double seconds = static_cast<double>(now - ch.last_step_ns) * 1e-9;
    auto per_sec = [seconds](uint64_t bytes) {
      return static_cast<uint64_t>(static_cast<double>(bytes) / seconds);
    };
    load.migration_sent_bytes_per_sec = per_sec(migration_sent - ch.last_migration_sent_bytes);
    load.background_bytes_per_sec =
        per_sec((default_bytes - ch.last_default_bytes) - (answered - ch.last_answered_bytes));
  }
  ch.last_step_ns = now;
  ch.last_migration_sent_bytes = migration_sent;
  ch.last_default_bytes = default_bytes;
  ch.last_answered_bytes = answered;
  ch.decision = ch.policy.Update(now, load);
  shaper_.SetRate(ShapedClass::kChaff, ch.decision.class_rate_bytes_per_sec);
  ++counters_.chaff_traffic.policy_steps;
}

void GatewayWorker::DiscardQueued() {
  // Frames a port still refused: one last try, then dropped and counted, so
  // the counters account for every frame received.
  for (Direction dir : {kInsideToOutside, kOutsideToInside}) {
    TxBuffer& t = tx_[dir];
    if (t.count == 0) continue;
    Flush(dir);
    counters_.direction[dir].tx_dropped += t.count;
    for (uint16_t i = 0; i < t.count; ++i) rte_pktmbuf_free(t.pkts[i]);
    t.count = 0;
  }
  // Replay: received, not yet due.
  for (Staging& s : staging_) {
    for (uint16_t i = s.head; i < s.count; ++i) rte_pktmbuf_free(s.pkts[i]);
    counters_.discarded_at_exit += s.count - s.head;
    s.head = s.count = 0;
  }
  std::array<uint64_t, kMaxBurst> handles;
  for (ShapedClass c : {ShapedClass::kMigration, ShapedClass::kChaff}) {
    for (;;) {
      const size_t n = shaper_.Discard(c, handles.data(), handles.size());
      if (n == 0) break;
      for (size_t i = 0; i < n; ++i) rte_pktmbuf_free(reinterpret_cast<rte_mbuf*>(handles[i]));
      counters_.discarded_at_exit += n;
    }
  }
}

void GatewayWorker::LogStats(uint64_t now) const {
  const ShaperClassCounters mig = shaper_.counters(ShapedClass::kMigration);
  const DirectionCounters& in = counters_.direction[kInsideToOutside];
  const DirectionCounters& out = counters_.direction[kOutsideToInside];
  LOG(INFO) << absl::StrFormat(
      "t=%.1fs in->out rx=%u fwd=%u shaped=%u | out->in rx=%u fwd=%u | migration sent=%u "
      "dropped=%u backlog=%u rate=%.3f MB/s (steps %u)%s | flows=%u created=%u evicted=%u full=%u",
      static_cast<double>(now) * 1e-9, in.rx_packets, in.forwarded_packets, in.shaped_packets,
      out.rx_packets, out.forwarded_packets, mig.sent_packets, mig.dropped_packets,
      mig.backlog_packets, static_cast<double>(counters_.rate_bytes_per_sec) * 1e-6,
      counters_.rate_steps,
      shaper_.lanes(ShapedClass::kMigration) > 1
          ? absl::StrFormat(" lane turns %u of %u lanes", mig.lane_turns,
                            shaper_.lanes(ShapedClass::kMigration))
          : std::string(),
      flows_->size(), flows_->counters().created,
      flows_->counters().evicted_idle, flows_->counters().table_full);
  if (chaff_.has_value()) {
    const ChaffCounters& cc = counters_.chaff_traffic;
    const ShaperClassCounters q = shaper_.counters(ShapedClass::kChaff);
    LOG(INFO) << absl::StrFormat(
        "  chaff: generated=%u sent=%u own rate=%.3f MB/s + borrowed%s | absorbed peer=%u answers=%u | "
        "answered=%u | unverified forwarded=%u | connections=%u no_mbuf=%u",
        cc.generated_packets, q.sent_packets,
        static_cast<double>(chaff_->decision.class_rate_bytes_per_sec) * 1e-6,
        chaff_->decision.generate ? "" : " (not generating)", cc.absorbed_peer_packets,
        cc.absorbed_answer_packets, cc.answered_packets, cc.unverified_forwarded,
        GeneratorTotals().connections, cc.no_mbuf);
  }
}

void GatewayWorker::Run(const std::atomic<bool>& stop) {
  std::array<rte_mbuf*, kMaxBurst> rx;
  std::array<uint64_t, kMaxBurst> handles;
  uint64_t next_stats = options_.stats_interval_ns;
  uint64_t next_publish = 0;
  uint64_t now = NowNs();
  last_rx_ns_ = now;
  if (options_.rate_variation) StepRate(now);  // line 2 onwards: the first rate at once
  if (chaff_.has_value()) {
    StepChaff(now);
    chaff_->next_step_ns = now + chaff_->interval_ns;
  }

  for (uint64_t loop = 0;; ++loop) {
    now = NowNs();
    bool busy = false;
    for (Direction dir : {kInsideToOutside, kOutsideToInside}) {
      // Back-pressure: while the port of this direction refuses frames (see
      // Flush), its rx ring is not read, so what arrives waits there (and the
      // NIC counts what it cannot hold) instead of being dropped here.
      if (tx_[dir].count > 0) {
        Flush(dir);
        if (tx_[dir].count > 0) {
          busy = true;
          continue;
        }
      }
      const uint16_t n = Receive(dir, now, rx.data());
      if (n == 0) continue;
      busy = true;
      last_rx_ns_ = now;
      ProcessBurst(dir, rx.data(), n, now);
      Flush(kInsideToOutside);  // chaff answers go out while processing outside -> inside
      Flush(kOutsideToInside);
    }
    if (chaff_.has_value() && chaff_->decision.generate) SupplyChaff(now);
    // The shaper refills at `now` and releases what its buckets allow.
    // Not while the WAN port refuses frames: they stay queued, in order.
    while (tx_[kInsideToOutside].count == 0) {
      const size_t n = shaper_.Dequeue(now, handles.data(), options_.burst);
      if (n == 0) break;
      busy = true;
      TxBuffer& t = tx_[kInsideToOutside];
      for (size_t i = 0; i < n; ++i) t.pkts[t.count++] = reinterpret_cast<rte_mbuf*>(handles[i]);
      Flush(kInsideToOutside);
      if (n < options_.burst) break;
    }
    // After the dequeue, so the old rate held exactly up to `now`.
    if (options_.rate_variation && rate_variation_.ShouldStep(now)) {
      StepRate(now);
      if (chaff_.has_value()) StepChaff(now);  // on the new r, as the policy expects
    } else if (!options_.rate_variation && chaff_.has_value() && now >= chaff_->next_step_ns) {
      StepChaff(now);
      chaff_->next_step_ns = now + chaff_->interval_ns;
    }
    // Paced by time, not per loop: a busy loop would otherwise spend more on
    // sweeping than an idle table needs.
    if (now >= next_sweep_ns_) {
      SweepFlows(*flows_, exporter_.has_value() ? &*exporter_ : nullptr, now,
                 options_.idle_timeout_ns, kSweepSlotsPerLoop, stream_.packets());
      next_sweep_ns_ = now + kSweepPeriodNs;
    }
    // Frames the port refused last time are retried before any sleep.
    for (Direction dir : {kInsideToOutside, kOutsideToInside}) {
      if (tx_[dir].count > 0) {
        Flush(dir);
        busy = true;
      }
    }
    // Queued packets waiting for tokens are not "idle": a sleep longer than a
    // bucket takes to fill would lose tokens and clump the output.
    if (!busy) IdleSleep(std::min(options_.idle_sleep_ns, shaper_.MaxIdleNs()));

    if ((loop & kChoreLoopMask) != 0) continue;
    counters_.loops = loop;
    if (now >= next_publish) {
      counters_.elapsed_ns = now;
      Publish();
      next_publish = now + kPublishPeriodNs;
    }
    if (pending_update_.load(std::memory_order_relaxed) != nullptr) ApplyUpdate(now);
    LogNewSession();
    if (stop.load(std::memory_order_relaxed)) break;
    if (options_.duration_ns > 0 && now >= options_.duration_ns) {
      LOG(INFO) << "duration reached, stopping";
      break;
    }
    if (options_.exit_when_idle_ns > 0 && now - last_rx_ns_ >= options_.exit_when_idle_ns) {
      const bool staged = staging_[0].head < staging_[0].count ||
                          staging_[1].head < staging_[1].count || tx_[0].count > 0 ||
                          tx_[1].count > 0;
      const ShaperClassCounters mig = shaper_.counters(ShapedClass::kMigration);
      const ShaperClassCounters chaff = shaper_.counters(ShapedClass::kChaff);
      // Our own chaff never runs dry while generating; it does not count
      // as traffic still to deliver.
      const bool own_chaff = chaff_.has_value() && chaff_->decision.generate;
      if (!staged && mig.backlog_packets == 0 && (own_chaff || chaff.backlog_packets == 0)) {
        LOG(INFO) << "no packet for " << options_.exit_when_idle_ns / 1'000'000
                  << " ms and nothing queued, stopping";
        break;
      }
    }
    if (options_.stats_interval_ns > 0 && now >= next_stats) {
      LogStats(now);
      next_stats = now + options_.stats_interval_ns;
    }
  }
  counters_.elapsed_ns = NowNs();
  LogNewSession();  // one that started after the last chore check
  DiscardQueued();
  if (exporter_.has_value()) {
    exporter_->FlushAll(*flows_, now, stream_.packets(), options_.flush_timeout_ns);
  }
  Publish();
}

void GatewayWorker::Publish() {
  std::unique_lock<std::mutex> lock(published_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // a reader is copying; next time
  published_ = counters();
}

GatewayCounters GatewayWorker::LiveCounters() const {
  std::lock_guard<std::mutex> lock(published_mu_);
  return published_;
}

GatewayCounters GatewayWorker::counters() const {
  GatewayCounters c = counters_;
  c.flows = flows_->counters();
  c.flows_active = flows_->size();
  c.scanner_errors = scanner_.errors();
  c.migration = shaper_.counters(ShapedClass::kMigration);
  c.chaff = shaper_.counters(ShapedClass::kChaff);
  c.default_class = shaper_.default_counters();
  c.rate_window_cov = rate_variation_.WindowCov();
  c.chaff_enabled = chaff_.has_value();
  if (exporter_.has_value()) {
    c.records = exporter_->counters();
    c.mirror_ring_dropped = exporter_->producer().dropped();
  }
  if (chaff_.has_value()) {
    const ChaffGeneratorCounters g = GeneratorTotals();
    c.chaff_traffic.connections = g.connections;
    c.chaff_traffic.syn_retransmits = g.syn_retransmits;
    c.chaff_traffic.abandoned = g.abandoned;
    c.chaff_traffic.generating = chaff_->decision.generate;
    c.chaff_traffic.class_rate_bytes_per_sec = chaff_->decision.class_rate_bytes_per_sec;
  }
  return c;
}

}  // namespace shroud
