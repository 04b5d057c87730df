#include "control/capture/pcap_reader.h"

#include <pcap/pcap.h>

#include <cstdio>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "dataplane/core/packet_parser.h"

namespace shroud {

namespace {

// libpcap hands out DLT_* values, which equal the file's LINKTYPE_* values
// except for a few historical ones (raw IP is DLT 12 or 14, LINKTYPE 101).
uint32_t LinkTypeFromDlt(int dlt) {
  switch (dlt) {
    case 12:
    case 14:
      return static_cast<uint32_t>(LinkType::kRaw);
    default:
      return static_cast<uint32_t>(dlt);
  }
}

}  // namespace

PcapReader::PcapReader(pcap* handle, std::string name)
    : handle_(handle), name_(std::move(name)) {}

PcapReader::~PcapReader() { pcap_close(handle_); }

absl::StatusOr<std::unique_ptr<PcapReader>> PcapReader::Wrap(pcap* handle, std::string name) {
  std::unique_ptr<PcapReader> reader(new PcapReader(handle, std::move(name)));
  int dlt = pcap_datalink(handle);
  reader->linktype_ = LinkTypeFromDlt(dlt);
  if (!IsSupportedLinkType(reader->linktype_)) {
    const char* dlt_name = pcap_datalink_val_to_name(dlt);
    return absl::InvalidArgumentError(absl::StrCat(
        reader->name_, ": unsupported link type ", reader->linktype_, " (",
        dlt_name != nullptr ? dlt_name : "unknown",
        "); supported: Ethernet, raw IP, Linux cooked (SLL/SLL2), PPP, BSD loopback"));
  }
  return reader;
}

absl::StatusOr<std::unique_ptr<PcapReader>> PcapReader::Open(const std::string& path) {
  // libpcap calls an empty file a "truncated dump file"; say what it is.
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec) && std::filesystem::file_size(path, ec) == 0 &&
      !ec) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": empty file (0 bytes), not a capture"));
  }
  char err[PCAP_ERRBUF_SIZE] = {0};
  pcap* handle = pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_NANO,
                                                         err);
  if (handle == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read capture: ", err));
  }
  return Wrap(handle, path);
}

absl::StatusOr<std::unique_ptr<PcapReader>> PcapReader::OpenMemory(const uint8_t* data,
                                                                   size_t size,
                                                                   const std::string& name) {
  if (size == 0) return absl::InvalidArgumentError(absl::StrCat(name, ": empty capture"));
  FILE* f = fmemopen(const_cast<uint8_t*>(data), size, "rb");
  if (f == nullptr) return absl::InternalError(absl::StrCat(name, ": fmemopen failed"));
  char err[PCAP_ERRBUF_SIZE] = {0};
  pcap* handle = pcap_fopen_offline_with_tstamp_precision(f, PCAP_TSTAMP_PRECISION_NANO, err);
  if (handle == nullptr) {
    fclose(f);
    return absl::InvalidArgumentError(absl::StrCat(name, ": cannot read capture: ", err));
  }
  return Wrap(handle, name);
}

absl::StatusOr<bool> PcapReader::Next(CaptureRecord* out) {
  pcap_pkthdr* header = nullptr;
  const u_char* data = nullptr;
  int rc = pcap_next_ex(handle_, &header, &data);
  if (rc == PCAP_ERROR_BREAK) return false;  // end of file
  if (rc != 1) {
    return absl::DataLossError(absl::StrCat(name_, ": truncated or corrupt capture after ",
                                            records_, " records: ", pcap_geterr(handle_)));
  }
  ++records_;
  last_header_ = header;
  last_data_ = data;
  out->data = data;
  out->captured = header->caplen;
  out->wire_length = header->len < header->caplen ? header->caplen : header->len;
  // pcap stores the seconds as an unsigned 32-bit field but libpcap reads them
  // through a signed one, so times from 2038-01-19 on come back negative.
  const uint64_t seconds = header->ts.tv_sec < 0 ? static_cast<uint32_t>(header->ts.tv_sec)
                                                 : static_cast<uint64_t>(header->ts.tv_sec);
  // With PCAP_TSTAMP_PRECISION_NANO, tv_usec holds nanoseconds.
  out->time_ns = seconds * 1'000'000'000ULL +
                 static_cast<uint64_t>(header->ts.tv_usec);
  return true;
}

absl::StatusOr<std::shared_ptr<bpf_program>> PcapReader::CompileFilter(
    const std::string& expression) const {
  auto program = std::shared_ptr<bpf_program>(new bpf_program{}, [](bpf_program* p) {
    pcap_freecode(p);
    delete p;
  });
  if (pcap_compile(handle_, program.get(), expression.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("flow filter '", expression, "' (for ", name_,
                                                   "): ", pcap_geterr(handle_)));
  }
  return program;
}

bool PcapReader::LastRecordMatches(const bpf_program& filter) const {
  if (last_header_ == nullptr) return false;
  return pcap_offline_filter(&filter, static_cast<const pcap_pkthdr*>(last_header_), last_data_) !=
         0;
}

}  // namespace shroud
