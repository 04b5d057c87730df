#include "control/capture/capture_analysis.h"

#include <pcap/pcap.h>

#include "absl/strings/str_cat.h"
#include "control/capture/pcap_reader.h"
#include "dataplane/core/packet_parser.h"

namespace shroud {

absl::StatusOr<CaptureAnalysis> AnalyzeCapture(const std::string& path,
                                               const CaptureOptions& options) {
  absl::StatusOr<std::unique_ptr<PcapReader>> reader = PcapReader::Open(path);
  if (!reader.ok()) return reader.status();
  std::shared_ptr<bpf_program> selector;
  if (!options.selector.empty()) {
    auto compiled = (*reader)->CompileFilter(options.selector);
    if (!compiled.ok()) return compiled.status();
    selector = *std::move(compiled);
  }
  CaptureAnalysis result;
  result.path = path;
  result.linktype = (*reader)->linktype();
  result.table = std::make_unique<FlowTable>(options.features, options.max_flows);
  const LinkType link = static_cast<LinkType>(result.linktype);
  CaptureRecord record;
  ParsedPacket parsed;
  while (true) {
    absl::StatusOr<bool> more = (*reader)->Next(&record);
    if (!more.ok()) return more.status();
    if (!*more) break;
    ++result.frames;
    ParseStatus status =
        ParsePacket(record.data, record.captured, record.wire_length, link, &parsed);
    if (status != ParseStatus::kOk) {
      result.table->CountUnparsed(status);
      continue;
    }
    FlowTable::Observed observed = result.table->Observe(parsed, record.time_ns);
    if (observed.created && selector != nullptr) {
      observed.flow->selected = (*reader)->LastRecordMatches(*selector);
    }
    if (options.on_packet) options.on_packet(parsed, record.time_ns);
  }
  if (result.table->dropped_flow_limit() > 0 && options.warn) {
    options.warn(absl::StrCat(path, ": ", result.table->dropped_flow_limit(),
                              " packets of flows beyond the first ", options.max_flows,
                              " were not tracked (--max_flows)"));
  }
  return result;
}

}  // namespace shroud
