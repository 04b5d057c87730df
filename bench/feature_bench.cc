// Benchmarks of the per-packet feature path (Google Benchmark 1.7).
//
//   BM_ParsePacket            ParsePacket over a synthetic mix of frames
//   BM_FeatureExtraction      ParsePacket + FlowTable::Observe over every record
//                             of a real capture held in memory: the offline
//                             twin of the dataplane's per-packet work. Target:
//                             >= 10 M packets/s per core.
//   BM_FeatureExtraction_ParseOnly / _ObserveOnly
//                             the two halves of it, to see where time goes
//   BM_FlowFeaturesObserve    FlowFeatures::Observe alone on synthetic flows
//
// Every benchmark reports items_per_second (= packets/s) and per_packet.
//
// The capture: $SHROUD_BENCH_CAPTURE, else
// ../shared/traces/public/RequetDataSet__baseline_Jan17_exp_41.pcap found next
// to $SHROUD_SOURCE_ROOT or the current directory (or its parent), else
// tests/data/small.pcap. Example:
//   SHROUD_BENCH_CAPTURE=/path/x.pcap build/feature_bench --benchmark_filter=FeatureExtraction
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "control/analysis/flow_table.h"
#include "control/capture/pcap_reader.h"
#include "dataplane/core/flow_features.h"
#include "dataplane/core/packet_parser.h"
#include "shroud/feature_config.h"
#include "tests/frame_builder.h"

namespace shroud {
namespace {

void ReportPackets(benchmark::State& state, uint64_t packets_per_iteration) {
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * packets_per_iteration));
  // Seconds per packet, printed with an SI prefix (e.g. "42.1n" = 42.1 ns).
  state.counters["per_packet"] = benchmark::Counter(
      static_cast<double>(packets_per_iteration),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

// ------------------------------------------------------------ the capture

struct LoadedCapture {
  std::string path;
  std::string error;
  LinkType link = LinkType::kEthernet;
  struct Rec {
    size_t offset;
    uint32_t captured;
    uint32_t wire_length;
    uint64_t time_ns;
  };
  std::vector<uint8_t> bytes;  // all records back to back
  std::vector<Rec> records;
  const uint8_t* data(const Rec& r) const { return bytes.data() + r.offset; }
};

std::string DefaultCapturePath() {
  if (const char* env = std::getenv("SHROUD_BENCH_CAPTURE"); env != nullptr && *env != '\0') {
    return env;
  }
  const std::string rel = "shared/traces/public/RequetDataSet__baseline_Jan17_exp_41.pcap";
  std::vector<std::filesystem::path> roots;
  if (const char* root = std::getenv("SHROUD_SOURCE_ROOT"); root != nullptr && *root != '\0') {
    roots.emplace_back(root);
  }
  roots.emplace_back(".");   // run from the source root
  roots.emplace_back("..");  // run from a build directory
  for (const auto& root : roots) {
    std::filesystem::path candidate = root / ".." / rel;
    if (std::filesystem::is_regular_file(candidate)) return candidate.string();
  }
  for (const auto& root : roots) {
    std::filesystem::path candidate = root / "tests/data/small.pcap";
    if (std::filesystem::is_regular_file(candidate)) return candidate.string();
  }
  return (roots.front() / ".." / rel).string();  // for the error message
}

const LoadedCapture& Capture() {
  static const LoadedCapture* capture = [] {
    auto* c = new LoadedCapture;
    c->path = DefaultCapturePath();
    absl::StatusOr<std::unique_ptr<PcapReader>> reader = PcapReader::Open(c->path);
    if (!reader.ok()) {
      c->error = std::string(reader.status().message()) +
                 " (set SHROUD_BENCH_CAPTURE or SHROUD_SOURCE_ROOT)";
      return c;
    }
    c->link = static_cast<LinkType>((*reader)->linktype());
    CaptureRecord rec;
    while (true) {
      absl::StatusOr<bool> more = (*reader)->Next(&rec);
      if (!more.ok()) {
        c->error = std::string(more.status().message());
        return c;
      }
      if (!*more) break;
      c->records.push_back({c->bytes.size(), rec.captured, rec.wire_length, rec.time_ns});
      c->bytes.insert(c->bytes.end(), rec.data, rec.data + rec.captured);
    }
    if (c->records.empty()) c->error = c->path + ": no records";
    std::fprintf(stderr, "feature_bench: %s: %zu records, %zu captured bytes in memory\n",
                 c->path.c_str(), c->records.size(), c->bytes.size());
    return c;
  }();
  return *capture;
}

// ------------------------------------------------------------ frame mix

struct Frame {
  std::vector<uint8_t> bytes;
  LinkType link;
};

// Roughly what a gateway sees: mostly IPv4 TCP (data and ACKs), some IPv6,
// DNS over UDP, a VLAN-tagged share, the odd ICMP and ARP.
std::vector<Frame> FrameMix() {
  using namespace test_frames;
  std::vector<Frame> mix;
  auto add = [&mix](int copies, std::vector<uint8_t> f, LinkType link = LinkType::kEthernet) {
    for (int i = 0; i < copies; ++i) mix.push_back({f, link});
  };
  Ipv4Header v4;
  add(30, Ethernet(kEtherTypeIpv4, Ipv4Packet(v4, TcpSegment(443, 51000, kTcpAck, 1448))));
  add(25, Ethernet(kEtherTypeIpv4, Ipv4Packet(v4, TcpSegment(51000, 443, kTcpAck, 0, 8))));
  add(10, Ethernet(kEtherTypeIpv6, TcpIpv6Packet(1200)));
  add(8, Ethernet(kEtherTypeIpv4, Ipv4Packet({.protocol = kIpProtoUdp}, UdpDatagram(53000, 53, 40))));
  add(8, Ethernet(kEtherTypeIpv4, Ipv4Packet({.protocol = kIpProtoUdp}, UdpDatagram(443, 60000, 1200))));
  add(10, Ethernet(kEtherTypeIpv4, TcpIpv4Packet(512), {{kTpidDot1Q, 100}}));
  add(3, Ethernet(kEtherTypeIpv4, TcpIpv4Packet(0), {{kTpidDot1Ad, 10}, {kTpidDot1Q, 20}}));
  add(2, Ethernet(kEtherTypeIpv4, Ipv4Packet({.protocol = kIpProtoIcmp}, IcmpEcho(8, 7, 1, 56))));
  add(2, Ethernet(kEtherTypeArp, ArpRequestBody()));
  add(2, LinuxSll(kEtherTypeIpv4, TcpIpv4Packet(100)), LinkType::kLinuxSll);
  // Shuffle deterministically so the branch predictor sees a mix, not runs.
  std::mt19937 rng(42);
  std::shuffle(mix.begin(), mix.end(), rng);
  return mix;
}

void BM_ParsePacket(benchmark::State& state) {
  const std::vector<Frame> mix = FrameMix();
  ParsedPacket parsed;
  uint64_t ok = 0;
  for (auto _ : state) {
    for (const Frame& f : mix) {
      ParseStatus s = ParsePacket(f.bytes.data(), f.bytes.size(),
                                  static_cast<uint32_t>(f.bytes.size()), f.link, &parsed);
      ok += s == ParseStatus::kOk;
      benchmark::DoNotOptimize(parsed);
    }
  }
  benchmark::DoNotOptimize(ok);
  ReportPackets(state, mix.size());
}
BENCHMARK(BM_ParsePacket);

// ------------------------------------------------------------ the capture path

void BM_FeatureExtraction(benchmark::State& state) {
  const LoadedCapture& cap = Capture();
  if (!cap.error.empty()) {
    state.SkipWithError(cap.error.c_str());
    return;
  }
  const FeatureConfig config;
  ParsedPacket parsed;
  uint64_t flows = 0;
  for (auto _ : state) {
    // A fresh table per pass, as AnalyzeCapture has per file.
    FlowTable table(config);
    for (const LoadedCapture::Rec& r : cap.records) {
      ParseStatus s = ParsePacket(cap.data(r), r.captured, r.wire_length, cap.link, &parsed);
      if (s != ParseStatus::kOk) {
        table.CountUnparsed(s);
        continue;
      }
      table.Observe(parsed, r.time_ns);
    }
    flows = table.flows().size();
    benchmark::DoNotOptimize(flows);
  }
  ReportPackets(state, cap.records.size());
  state.counters["flows"] = static_cast<double>(flows);
  state.SetLabel(std::filesystem::path(cap.path).filename().string());
}
BENCHMARK(BM_FeatureExtraction)->Unit(benchmark::kMillisecond);

void BM_FeatureExtraction_ParseOnly(benchmark::State& state) {
  const LoadedCapture& cap = Capture();
  if (!cap.error.empty()) {
    state.SkipWithError(cap.error.c_str());
    return;
  }
  ParsedPacket parsed;
  uint64_t ok = 0;
  for (auto _ : state) {
    for (const LoadedCapture::Rec& r : cap.records) {
      ok += ParsePacket(cap.data(r), r.captured, r.wire_length, cap.link, &parsed) ==
            ParseStatus::kOk;
      benchmark::DoNotOptimize(parsed);
    }
  }
  benchmark::DoNotOptimize(ok);
  ReportPackets(state, cap.records.size());
}
BENCHMARK(BM_FeatureExtraction_ParseOnly)->Unit(benchmark::kMillisecond);

void BM_FeatureExtraction_ObserveOnly(benchmark::State& state) {
  const LoadedCapture& cap = Capture();
  if (!cap.error.empty()) {
    state.SkipWithError(cap.error.c_str());
    return;
  }
  struct Parsed {
    ParsedPacket packet;
    uint64_t time_ns;
  };
  std::vector<Parsed> parsed;
  parsed.reserve(cap.records.size());
  for (const LoadedCapture::Rec& r : cap.records) {
    Parsed p{{}, r.time_ns};
    if (ParsePacket(cap.data(r), r.captured, r.wire_length, cap.link, &p.packet) ==
        ParseStatus::kOk) {
      parsed.push_back(p);
    }
  }
  const FeatureConfig config;
  for (auto _ : state) {
    FlowTable table(config);
    for (const Parsed& p : parsed) table.Observe(p.packet, p.time_ns);
    benchmark::DoNotOptimize(table.flows().data());
  }
  ReportPackets(state, parsed.size());
}
BENCHMARK(BM_FeatureExtraction_ObserveOnly)->Unit(benchmark::kMillisecond);

// ------------------------------------------------------------ features alone

// state.range(0) flows, packets interleaved at random; gaps mostly small with
// periodic 100 ms pauses (bursts), sizes from a few values, as in a capture.
void BM_FlowFeaturesObserve(benchmark::State& state) {
  const size_t flow_count = static_cast<size_t>(state.range(0));
  constexpr size_t kSchedule = 1 << 16;
  struct Step {
    uint32_t flow;
    uint32_t wire_bytes;
    uint64_t gap_ns;
  };
  std::mt19937_64 rng(7);
  std::vector<Step> schedule(kSchedule);
  const uint32_t sizes[] = {66, 66, 1514, 1514, 1514, 590, 1200};
  for (size_t i = 0; i < kSchedule; ++i) {
    uint64_t gap = (rng() % 64 == 0) ? 100'000'000 : 2'000 + rng() % 50'000;
    schedule[i] = {static_cast<uint32_t>(rng() % flow_count),
                   sizes[rng() % (sizeof(sizes) / sizeof(sizes[0]))], gap};
  }
  const FeatureConfig config;
  std::vector<FlowFeatures> flows(flow_count);
  std::vector<uint64_t> clock(flow_count, 1'000'000'000);
  StreamPosition stream(config);
  for (auto _ : state) {
    for (const Step& s : schedule) {
      stream.Advance();
      uint64_t& t = clock[s.flow];
      t += s.gap_ns;
      flows[s.flow].Observe(PacketObservation{t, s.wire_bytes}, stream, config);
    }
    benchmark::DoNotOptimize(flows.data());
  }
  ReportPackets(state, kSchedule);
}
BENCHMARK(BM_FlowFeaturesObserve)->Arg(1)->Arg(64)->Arg(4096);

}  // namespace
}  // namespace shroud

BENCHMARK_MAIN();
