// libFuzzer target for the whole offline path: bytes -> PcapReader (libpcap,
// pcap and pcapng, from memory) -> ParsePacket -> FlowTable (flow features) ->
// the per-flow summaries the detectors read, plus a BPF selector on every
// record as AnalyzeCapture uses it.
//
// Besides memory safety (ASan/UBSan in the -Dfuzz=true build) it checks the
// invariants callers rely on and aborts when one breaks:
//   - a record never has more captured bytes than wire bytes;
//   - a parsed packet's offsets stay inside the frame and its IP payload ends
//     at or before the frame's end;
//   - every frame is counted exactly once (parsed or by ParseStatus), and
//     every parsed packet lands in a flow or in the flow-limit drop count.
//
// Seeds: tests/fuzz/corpus/pcap/ (tiny valid captures: Ethernet, raw IP,
// Linux SLL, pcapng). The gcc build replays tests/fuzz/corpus with
// replay_main.cc.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "control/analysis/flow_table.h"
#include "control/capture/pcap_reader.h"
#include "dataplane/core/flow_features.h"
#include "dataplane/core/packet_parser.h"
#include "shroud/feature_config.h"

namespace {

constexpr int kMaxRecords = 10000;   // bound the work per input
constexpr size_t kMaxFlows = 4096;   // small enough to hit the flow limit

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "pcap_reader_fuzz: invariant broken: %s\n", what);
    std::abort();
  }
}

const shroud::FeatureConfig& Config() {
  static const shroud::FeatureConfig* config = [] {
    auto* c = new shroud::FeatureConfig();
    // Short windows so Algorithm 1 windows complete within small inputs.
    c->pattern_window = 8;
    c->burst_gap_ns = 1000;
    c->byte_windows = {2, 3, 5, 10, 100, 0, 0, 0};
    c->byte_window_count = 5;
    Check(c->Validate().ok(), "fuzz FeatureConfig is valid");
    return c;
  }();
  return *config;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shroud;
  absl::StatusOr<std::unique_ptr<PcapReader>> opened =
      PcapReader::OpenMemory(data, size, "fuzz-input");
  if (!opened.ok()) return 0;
  PcapReader& reader = **opened;
  Check(IsSupportedLinkType(reader.linktype()), "an opened reader has a supported link type");
  const LinkType link = static_cast<LinkType>(reader.linktype());

  // As AnalyzeCapture does with a selector; compiled for this link type.
  absl::StatusOr<std::shared_ptr<bpf_program>> selector =
      reader.CompileFilter("tcp dst port 80 or udp or icmp6");

  const FeatureConfig& config = Config();
  FlowTable table(config, kMaxFlows);
  CaptureRecord record;
  ParsedPacket parsed;
  uint64_t frames = 0;
  for (int i = 0; i < kMaxRecords; ++i) {
    absl::StatusOr<bool> more = reader.Next(&record);
    if (!more.ok() || !*more) break;
    ++frames;
    Check(reader.records() == frames, "records() counts the records returned");
    Check(record.captured <= record.wire_length, "captured <= wire_length");
    Check(record.captured == 0 || record.data != nullptr, "record data present");
    // Touch every captured byte so ASan sees reads past libpcap's buffer.
    volatile uint8_t sink = 0;
    for (uint32_t b = 0; b < record.captured; ++b) sink = sink ^ record.data[b];
    (void)sink;

    ParseStatus status =
        ParsePacket(record.data, record.captured, record.wire_length, link, &parsed);
    Check(status < ParseStatus::kCount, "status in range");
    if (status != ParseStatus::kOk) {
      table.CountUnparsed(status);
      continue;
    }
    Check(parsed.key.ip_version == 4 || parsed.key.ip_version == 6, "parsed key has a version");
    Check(parsed.wire_length == record.wire_length, "wire length passed through");
    Check(parsed.l3_offset < record.captured, "IP header starts inside the captured bytes");
    Check(uint64_t{parsed.payload_offset} + parsed.payload_length <= record.wire_length,
          "IP payload ends inside the frame");
    if (record.captured == record.wire_length) {
      Check(parsed.payload_offset <= record.captured, "payload offset inside a whole frame");
    }
    if (!parsed.is_later_fragment) {
      Check(parsed.l4_offset > parsed.l3_offset, "transport header after the IP header");
      Check(parsed.payload_offset >= parsed.l4_offset, "payload after the transport header");
    }
    FlowTable::Observed observed = table.Observe(parsed, record.time_ns);
    if (observed.flow != nullptr) {
      Check(observed.flow->key == parsed.key, "observed flow has the packet's key");
      if (observed.created && selector.ok()) {
        observed.flow->selected = reader.LastRecordMatches(**selector);
      }
    }
  }

  // Everything the detectors derive from the table.
  uint64_t counted = 0;
  for (uint64_t c : table.status_counts()) counted += c;
  Check(counted == frames, "every frame counted once");
  uint64_t in_flows = 0;
  for (const FlowRecord& flow : table.flows()) {
    const FlowFeatures& f = flow.features;
    in_flows += f.packets;
    Check(f.packets > 0, "a flow has packets");
    Check(f.first_ns <= f.last_ns, "first_ns <= last_ns");
    Check(f.first_stream_index <= f.last_stream_index, "stream indices ordered");
    Check(f.last_stream_index < table.stream_packets(), "stream index inside the stream");
    for (size_t slot = 0; slot < config.byte_window_count; ++slot) {
      (void)ByteWindowCov(f, config, slot, table.stream_packets());
      Check(ByteWindowCount(f, config, slot, table.stream_packets()) <=
                table.stream_packets() / config.byte_windows[slot] + 1,
            "window count bounded by the stream");
    }
    uint64_t ipt = 0;
    for (const IptCategoryCount& e : TopIptCategories(f)) ipt += e.count;
    Check(ipt == f.packets - 1, "one inter-packet time per packet after the first");
    (void)f.pattern_detected(config);
    (void)f.duration_seconds();
  }
  Check(in_flows + table.dropped_flow_limit() == table.stream_packets(),
        "parsed packets are in flows or dropped at the flow limit");
  return 0;
}
