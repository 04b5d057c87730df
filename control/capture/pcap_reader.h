// Reads pcap and pcapng files through libpcap, with errors that name the file.
#ifndef SHROUD_CONTROL_CAPTURE_PCAP_READER_H_
#define SHROUD_CONTROL_CAPTURE_PCAP_READER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

struct pcap;
struct bpf_program;

namespace shroud {

struct CaptureRecord {
  const uint8_t* data = nullptr;  // valid until the next call to Next()
  uint32_t captured = 0;
  uint32_t wire_length = 0;
  uint64_t time_ns = 0;
};

class PcapReader {
 public:
  // Opens a pcap or pcapng file. Errors: missing/unreadable file, not a
  // capture, unsupported link type; the message names the file.
  static absl::StatusOr<std::unique_ptr<PcapReader>> Open(const std::string& path);
  // Reads a capture held in memory (for the fuzzer and tests); `name` is used
  // in messages. The buffer must outlive the reader.
  static absl::StatusOr<std::unique_ptr<PcapReader>> OpenMemory(const uint8_t* data, size_t size,
                                                                const std::string& name);
  ~PcapReader();
  PcapReader(const PcapReader&) = delete;
  PcapReader& operator=(const PcapReader&) = delete;

  // Reads the next record: true with `out` filled, false at the end of the
  // file. A truncated or corrupt file is an error naming the file and how many
  // records were read before the damage.
  absl::StatusOr<bool> Next(CaptureRecord* out);

  uint32_t linktype() const { return linktype_; }
  const std::string& name() const { return name_; }
  uint64_t records() const { return records_; }

  // Compiles a BPF filter expression (tcpdump syntax) for this file's link
  // type. The error says what is wrong with the expression.
  absl::StatusOr<std::shared_ptr<bpf_program>> CompileFilter(const std::string& expression) const;
  // True when the last record returned by Next() matches `filter`.
  bool LastRecordMatches(const bpf_program& filter) const;

 private:
  PcapReader(pcap* handle, std::string name);
  // Takes ownership of `handle`; pcap_close also closes a FILE* it was opened on.
  static absl::StatusOr<std::unique_ptr<PcapReader>> Wrap(pcap* handle, std::string name);

  pcap* handle_;
  std::string name_;
  uint32_t linktype_ = 0;
  uint64_t records_ = 0;
  const void* last_header_ = nullptr;
  const uint8_t* last_data_ = nullptr;
};

}  // namespace shroud

#endif  // SHROUD_CONTROL_CAPTURE_PCAP_READER_H_
