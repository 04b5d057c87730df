#include "dataplane/tap_worker.h"

#include <rte_branch_prediction.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_hash.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_prefetch.h>

#include <algorithm>

#include "absl/strings/str_format.h"
#include "dataplane/worker_cadence.h"
#include "glog/logging.h"

namespace shroud {

TapCounters SumTapCounters(const std::vector<TapCounters>& workers) {
  TapCounters total;
  for (const TapCounters& w : workers) {
    total.rx_packets += w.rx_packets;
    total.rx_bytes += w.rx_bytes;
    total.wire_length_from_ip += w.wire_length_from_ip;
    for (size_t i = 0; i < w.parse_status.size(); ++i) total.parse_status[i] += w.parse_status[i];
    total.flows.created += w.flows.created;
    total.flows.evicted_idle += w.flows.evicted_idle;
    total.flows.table_full += w.flows.table_full;
    total.flows_active += w.flows_active;
    total.stream_packets = std::max(total.stream_packets, w.stream_packets);
    total.records.updates += w.records.updates;
    total.records.ends += w.records.ends;
    total.records.finals += w.records.finals;
    total.records.dropped += w.records.dropped;
    total.mirror_ring_dropped += w.mirror_ring_dropped;
  }
  return total;
}

absl::StatusOr<std::unique_ptr<TapWorker>> TapWorker::Create(const TapWorkerOptions& options,
                                                             std::unique_ptr<WorkerFlowTable> flows) {
  if (options.burst == 0 || options.burst > kTapMaxBurst) {
    return absl::InvalidArgumentError(absl::StrFormat("burst must be in [1, %d]", kTapMaxBurst));
  }
  if (options.ports.empty()) return absl::InvalidArgumentError("a tap needs at least one port");
  if (absl::Status s = options.features.Validate(); !s.ok()) return s;
  if (flows == nullptr) return absl::InvalidArgumentError("a tap needs a flow table");
  const uint64_t hz = rte_get_tsc_hz();
  if (hz == 0) return absl::InternalError("rte_get_tsc_hz() returned 0");
  std::unique_ptr<TapWorker> w(new TapWorker(options, std::move(flows)));
  w->tsc_start_ = rte_get_tsc_cycles();
  w->tsc_to_ns_mult_ =
      static_cast<uint64_t>((static_cast<unsigned __int128>(1'000'000'000) << 32) / hz);
  return w;
}

TapWorker::TapWorker(const TapWorkerOptions& options, std::unique_ptr<WorkerFlowTable> flows)
    : options_(options), flows_(std::move(flows)), stream_(options.features) {
  if (options_.mirror.has_value()) {
    exporter_.emplace(*options_.mirror, options_.worker_index, options_.export_interval_ns,
                      /*classified=*/false);
  }
  use_rx_timestamps_ = options_.timestamp_offset >= 0;
}

uint64_t TapWorker::StreamPackets() const {
  // Algorithm 2's windows are windows of the whole stream, all workers'.
  return options_.shared_stream != nullptr ? options_.shared_stream->load(std::memory_order_relaxed)
                                           : stream_.packets();
}

uint64_t TapWorker::TscNs() const {
  const uint64_t cycles = rte_get_tsc_cycles() - tsc_start_;
  return static_cast<uint64_t>((static_cast<unsigned __int128>(cycles) * tsc_to_ns_mult_) >> 32);
}

void TapWorker::ProcessBurst(rte_mbuf** pkts, uint16_t n, uint64_t tsc_now) {
  constexpr uint16_t kChunk = 32;
  static_assert(RTE_HASH_LOOKUP_BULK_MAX >= kChunk);
  // Parse the whole burst first: the shared stream counter is advanced once
  // per burst by the number of IP packets in it.
  uint32_t ok = 0;
  for (uint16_t i = 0; i < n; ++i) {
    if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void*));
    rte_mbuf* m = pkts[i];
    const uint8_t* data = rte_pktmbuf_mtod(m, const uint8_t*);
    status_[i] = ParsePacket(data, rte_pktmbuf_data_len(m), rte_pktmbuf_pkt_len(m),
                             LinkType::kEthernet, &parsed_[i]);
    if (unlikely(status_[i] == ParseStatus::kBadIpTotalLength) && use_rx_timestamps_ &&
        rte_pktmbuf_data_len(m) == rte_pktmbuf_pkt_len(m)) {
      // A replayed capture cut at its snaplen: net_pcap kept only the captured
      // bytes. The IP header still knows the frame's length on the wire, which
      // is what `shroud analyze` counts from the pcap record.
      const uint32_t wire = ImpliedWireLength(data, rte_pktmbuf_data_len(m), parsed_[i]);
      if (wire > 0) {
        status_[i] = ParsePacket(data, rte_pktmbuf_data_len(m), wire, LinkType::kEthernet,
                                 &parsed_[i]);
        ++counters_.wire_length_from_ip;
      }
    }
    ++counters_.parse_status[static_cast<size_t>(status_[i])];
    counters_.rx_bytes += parsed_[i].wire_length;
    ok += status_[i] == ParseStatus::kOk ? 1 : 0;
  }
  counters_.rx_packets += n;
  uint64_t next_index = 0;
  if (options_.shared_stream != nullptr && ok > 0) {
    next_index = options_.shared_stream->fetch_add(ok, std::memory_order_relaxed);
  }

  for (uint16_t base = 0; base < n; base += kChunk) {
    const uint16_t count = std::min<uint16_t>(kChunk, n - base);
    const FlowKey* keys[kChunk];
    uint16_t key_slot[kChunk];
    uint32_t nkeys = 0;
    for (uint16_t i = base; i < base + count; ++i) {
      if (status_[i] != ParseStatus::kOk) continue;
      key_slot[nkeys] = i;
      keys[nkeys++] = &parsed_[i].key;
    }
    FlowEntry* found[kChunk] = {};
    flows_->LookupBulk(keys, nkeys, found);
    for (uint32_t k = 0; k < nkeys; ++k) {
      if (found[k] != nullptr) PrefetchFlowEntry(found[k]);
    }
    for (uint32_t k = 0; k < nkeys; ++k) {
      const uint16_t i = key_slot[k];
      rte_mbuf* m = pkts[i];
      uint64_t t = tsc_now;
      if (use_rx_timestamps_ && (m->ol_flags & options_.timestamp_flag) != 0) {
        // net_pcap: the capture's time in microseconds.
        t = *RTE_MBUF_DYNFIELD(m, options_.timestamp_offset, rte_mbuf_timestamp_t*) * 1000;
      }
      flow_now_ = std::max(flow_now_, t);
      if (options_.shared_stream != nullptr) {
        stream_.AdvanceTo(next_index++);
      } else {
        stream_.Advance();
      }
      FlowEntry* e = found[k];
      if (e == nullptr) {
        bool created = false;
        // An earlier packet of this burst may have added it.
        e = flows_->FindOrAdd(parsed_[i].key, t, &created);
        if (unlikely(e == nullptr)) continue;  // table full: counted by the table
      }
      e->last_seen_ns = t;
      e->features.Observe({t, parsed_[i].wire_length}, stream_, options_.features);
    }
  }
  rte_pktmbuf_free_bulk(pkts, n);
}

void TapWorker::Publish() {
  std::unique_lock<std::mutex> lock(published_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // a reader is copying; next time
  published_ = counters_;
  published_.flows = flows_->counters();
  published_.flows_active = flows_->size();
  published_.stream_packets = StreamPackets();
  if (exporter_.has_value()) {
    published_.records = exporter_->counters();
    published_.mirror_ring_dropped = exporter_->producer().dropped();
  }
}

TapCounters TapWorker::LiveCounters() const {
  std::lock_guard<std::mutex> lock(published_mu_);
  return published_;
}

TapCounters TapWorker::counters() const {
  TapCounters c = counters_;
  c.flows = flows_->counters();
  c.flows_active = flows_->size();
  c.stream_packets = StreamPackets();
  if (exporter_.has_value()) {
    c.records = exporter_->counters();
    c.mirror_ring_dropped = exporter_->producer().dropped();
  }
  return c;
}

void TapWorker::Run(const std::atomic<bool>& stop) {
  std::array<rte_mbuf*, kTapMaxBurst> rx;
  uint64_t now = TscNs();
  uint64_t last_rx = now;
  uint64_t next_sweep = 0;
  uint64_t next_publish = 0;
  uint64_t next_stats = options_.stats_interval_ns;
  if (!use_rx_timestamps_) flow_now_ = now;
  for (uint64_t loop = 0;; ++loop) {
    now = TscNs();
    bool busy = false;
    for (uint16_t port : options_.ports) {
      const uint16_t n = rte_eth_rx_burst(port, options_.queue, rx.data(), options_.burst);
      if (n == 0) continue;
      busy = true;
      last_rx = now;
      ProcessBurst(rx.data(), n, now);
    }
    if (!use_rx_timestamps_) flow_now_ = now;
    if (now >= next_sweep) {
      SweepFlows(*flows_, exporter_.has_value() ? &*exporter_ : nullptr, flow_now_,
                 options_.idle_timeout_ns, kSweepSlotsPerLoop, StreamPackets());
      next_sweep = now + kSweepPeriodNs;
    }
    if (!busy) IdleSleep(options_.idle_sleep_ns);
    if ((loop & kChoreLoopMask) != 0) continue;
    counters_.loops = loop;
    if (now >= next_publish) {
      counters_.elapsed_ns = now;
      Publish();
      next_publish = now + kPublishPeriodNs;
    }
    if (stop.load(std::memory_order_relaxed)) break;
    if (options_.duration_ns > 0 && now >= options_.duration_ns) {
      LOG(INFO) << "tap worker " << int{options_.worker_index} << ": duration reached, stopping";
      break;
    }
    if (options_.exit_when_idle_ns > 0 && now - last_rx >= options_.exit_when_idle_ns) {
      LOG(INFO) << "tap worker " << int{options_.worker_index} << ": no packet for "
                << options_.exit_when_idle_ns / 1'000'000 << " ms, stopping";
      break;
    }
    if (options_.stats_interval_ns > 0 && now >= next_stats) {
      const TapCounters c = counters();
      LOG(INFO) << absl::StrFormat(
          "tap worker %u: %u packets, %u flows live (%u created, %u evicted idle, %u table full), "
          "records %u updates %u ends %u dropped (ring full)",
          options_.worker_index, c.rx_packets, c.flows_active, c.flows.created, c.flows.evicted_idle,
          c.flows.table_full, c.records.updates, c.records.ends, c.mirror_ring_dropped);
      next_stats = now + options_.stats_interval_ns;
    }
  }
  counters_.elapsed_ns = TscNs();
  if (exporter_.has_value()) {
    exporter_->FlushAll(*flows_, flow_now_, StreamPackets(), options_.flush_timeout_ns);
  }
  Publish();
}

}  // namespace shroud
