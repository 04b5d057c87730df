// Synthetic labelled flows for detector and evaluation tests, in simulated
// time: a paced "migration" (bursts of equal size every 100 ms, as QEMU's rate
// limiter sends) and irregular "background" flows.
#ifndef SHROUD_TESTS_SYNTHETIC_FLOWS_H_
#define SHROUD_TESTS_SYNTHETIC_FLOWS_H_

#include <random>
#include <vector>

#include "control/analysis/evaluation.h"
#include "control/analysis/flow_table.h"

namespace shroud::testing {

inline ParsedPacket SyntheticPacket(uint8_t host, uint16_t sport, uint16_t dport, uint32_t len) {
  ParsedPacket p;
  p.key.ip_version = 4;
  p.key.protocol = kProtoTcp;
  p.key.src_addr = {192, 0, 2, host};
  p.key.dst_addr = {198, 51, 100, 1};
  p.key.src_port = sport;
  p.key.dst_port = dport;
  p.wire_length = len;
  return p;
}

// One stream holding a paced migration flow (port 49152) interleaved with
// `background_flows` irregular flows; returns the labelled flows.
inline std::vector<LabelledFlow> MakeSyntheticStream(uint64_t seed, int background_flows,
                                                     const FeatureConfig& config,
                                                     double seconds = 20.0,
                                                     int burst_packets = 276) {
  std::mt19937_64 rng(seed);
  struct Event {
    uint64_t t;
    ParsedPacket p;
  };
  std::vector<Event> events;
  const uint64_t end = static_cast<uint64_t>(seconds * 1e9);
  // Migration: a burst of burst_packets back-to-back full-size segments every
  // 100 ms, 12 us apart (~1 Gbit/s on the wire).
  for (uint64_t slice = 0; slice * 100'000'000 < end; ++slice) {
    uint64_t t0 = slice * 100'000'000 + (rng() % 200'000);
    for (int i = 0; i < burst_packets; ++i) {
      events.push_back({t0 + static_cast<uint64_t>(i) * 12'000,
                        SyntheticPacket(1, 40000, 49152, 1514)});
    }
  }
  // Background: on/off flows with exponential gaps and random sizes.
  for (int f = 0; f < background_flows; ++f) {
    std::exponential_distribution<double> gap_ms(1.0 / (1.0 + rng() % 20));
    std::uniform_int_distribution<uint32_t> size(60, 1514);
    double t = static_cast<double>(rng() % 1'000'000'000);
    while (t < static_cast<double>(end)) {
      int run = 1 + static_cast<int>(rng() % 30);
      for (int i = 0; i < run && t < static_cast<double>(end); ++i) {
        events.push_back({static_cast<uint64_t>(t),
                          SyntheticPacket(static_cast<uint8_t>(10 + f), 50000 + f, 443, size(rng))});
        t += 20'000 + static_cast<double>(rng() % 200'000);
      }
      t += gap_ms(rng) * 1e6 * (1 + rng() % 10);
    }
  }
  std::stable_sort(events.begin(), events.end(),
                   [](const Event& a, const Event& b) { return a.t < b.t; });
  FlowTable table(config);
  for (const Event& e : events) table.Observe(e.p, e.t);
  std::vector<LabelledFlow> flows;
  for (const FlowRecord& r : table.flows()) {
    flows.push_back(LabelledFlow{"synthetic", r.key, r.features, table.stream_packets(),
                                 r.key.dst_port == 49152});
  }
  return flows;
}

}  // namespace shroud::testing

#endif  // SHROUD_TESTS_SYNTHETIC_FLOWS_H_
