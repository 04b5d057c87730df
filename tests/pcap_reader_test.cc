// Tests of the capture input: PcapReader (pcap/pcapng through libpcap, from a
// file or from memory) and AnalyzeCapture (reader -> parser -> flow table).
//
// Expected numbers come from Wireshark 4.0 on the same files:
//   capinfos -c FILE                                   record counts
//   tshark -r FILE -c1 -T fields -e frame.time_epoch   first timestamp
//   tshark -r FILE -Y 'ip or ipv6' | wc -l             IP packets
// tests/data/small.{pcap,pcapng} are the first 200 packets of
// ../shared/traces/public/mercury__surfshark.pcap:
//   editcap -F pcap   -r mercury__surfshark.pcap small.pcap   1-200
//   editcap -F pcapng -r mercury__surfshark.pcap small.pcapng 1-200
// tests/data/bad/ holds crafted broken files (see BadFiles below for how each
// was made).
#include <pcap/pcap.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "control/capture/capture_analysis.h"
#include "control/capture/pcap_reader.h"
#include "dataplane/core/packet_parser.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shroud/flow_key.h"
#include "tests/frame_builder.h"
#include "tests/test_util.h"

namespace shroud {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::SizeIs;

#define SKIP_WITHOUT_SHARED_TRACES()                                                          \
  do {                                                                                        \
    if (::shroud::testing::SharedTracesDir().empty()) {                                       \
      GTEST_SKIP() << "real captures not found: set SHROUD_SHARED_TRACES to "                 \
                      "../shared/traces/public (meson test does) to run this test";           \
    }                                                                                         \
  } while (0)

std::string Trace(const std::string& name) {
  return ::shroud::testing::SharedTracesDir() + "/" + name;
}

std::string Data(const std::string& name) { return ::shroud::testing::TestDataPath(name); }

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

// A record copied out of the reader (CaptureRecord::data dies with Next()).
struct Record {
  std::vector<uint8_t> bytes;
  uint32_t wire_length = 0;
  uint64_t time_ns = 0;
  bool operator==(const Record&) const = default;
};

struct ReadResult {
  std::vector<Record> records;
  absl::Status status;  // OK when the file ended cleanly
};

ReadResult ReadAll(PcapReader& reader) {
  ReadResult result;
  CaptureRecord rec;
  while (true) {
    absl::StatusOr<bool> more = reader.Next(&rec);
    if (!more.ok()) {
      result.status = more.status();
      break;
    }
    if (!*more) break;
    result.records.push_back(
        Record{std::vector<uint8_t>(rec.data, rec.data + rec.captured), rec.wire_length,
               rec.time_ns});
  }
  return result;
}

std::unique_ptr<PcapReader> OpenOrDie(const std::string& path) {
  absl::StatusOr<std::unique_ptr<PcapReader>> reader = PcapReader::Open(path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  return reader.ok() ? *std::move(reader) : nullptr;
}

// --- in-memory pcap files --------------------------------------------------

struct PcapRecordSpec {
  uint32_t sec = 0;
  uint32_t frac = 0;  // microseconds, or nanoseconds with a nanosecond file
  std::vector<uint8_t> bytes;
  uint32_t wire_length = 0;  // 0: the number of bytes
  uint32_t caplen = 0;       // 0: the number of bytes (override for broken headers)
};

struct PcapFileSpec {
  uint32_t linktype = 1;
  bool nanoseconds = false;
  bool big_endian = false;
  uint32_t snaplen = 65535;
};

void Put32(std::vector<uint8_t>& out, uint32_t v, bool big_endian) {
  for (int i = 0; i < 4; ++i) {
    int shift = big_endian ? 24 - 8 * i : 8 * i;
    out.push_back(static_cast<uint8_t>(v >> shift));
  }
}

void Put16(std::vector<uint8_t>& out, uint16_t v, bool big_endian) {
  out.push_back(static_cast<uint8_t>(big_endian ? v >> 8 : v));
  out.push_back(static_cast<uint8_t>(big_endian ? v : v >> 8));
}

std::vector<uint8_t> MakePcap(const PcapFileSpec& spec, const std::vector<PcapRecordSpec>& recs) {
  std::vector<uint8_t> out;
  Put32(out, spec.nanoseconds ? 0xa1b23c4d : 0xa1b2c3d4, spec.big_endian);
  Put16(out, 2, spec.big_endian);
  Put16(out, 4, spec.big_endian);
  Put32(out, 0, spec.big_endian);  // thiszone
  Put32(out, 0, spec.big_endian);  // sigfigs
  Put32(out, spec.snaplen, spec.big_endian);
  Put32(out, spec.linktype, spec.big_endian);
  for (const PcapRecordSpec& r : recs) {
    uint32_t size = static_cast<uint32_t>(r.bytes.size());
    Put32(out, r.sec, spec.big_endian);
    Put32(out, r.frac, spec.big_endian);
    Put32(out, r.caplen != 0 ? r.caplen : size, spec.big_endian);
    Put32(out, r.wire_length != 0 ? r.wire_length : size, spec.big_endian);
    out.insert(out.end(), r.bytes.begin(), r.bytes.end());
  }
  return out;
}

ReadResult ReadMemory(const std::vector<uint8_t>& bytes, uint32_t* linktype = nullptr) {
  absl::StatusOr<std::unique_ptr<PcapReader>> reader =
      PcapReader::OpenMemory(bytes.data(), bytes.size(), "memory.pcap");
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return ReadResult{{}, reader.status()};
  if (linktype != nullptr) *linktype = (*reader)->linktype();
  return ReadAll(**reader);
}

// --- real captures ------------------------------------------------------------

TEST(PcapReaderTest, RealPcapMatchesCapinfos) {
  SKIP_WITHOUT_SHARED_TRACES();
  const std::string path = Trace("nfstream__anydesk.pcap");
  std::unique_ptr<PcapReader> reader = OpenOrDie(path);
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->linktype(), static_cast<uint32_t>(LinkType::kEthernet));
  EXPECT_EQ(reader->name(), path);

  CaptureRecord rec;
  uint64_t count = 0;
  uint64_t previous_ns = 0;
  while (true) {
    absl::StatusOr<bool> more = reader->Next(&rec);
    ASSERT_TRUE(more.ok()) << more.status();
    if (!*more) break;
    if (count == 0) {
      // tshark -r nfstream__anydesk.pcap -c1 -T fields -e frame.time_epoch -e frame.len
      //   -> 1591342198.821353000  105
      EXPECT_EQ(rec.time_ns, 1591342198'821353000ULL);
      EXPECT_EQ(rec.captured, 105u);
      EXPECT_EQ(rec.wire_length, 105u);
    } else {
      ASSERT_GE(rec.time_ns, previous_ns) << "record " << count;  // capinfos: strict time order
    }
    // A microsecond file: nanoseconds are whole microseconds.
    ASSERT_EQ(rec.time_ns % 1000, 0u) << "record " << count;
    ASSERT_NE(rec.data, nullptr);
    ASSERT_GE(rec.wire_length, rec.captured);
    previous_ns = rec.time_ns;
    ++count;
  }
  EXPECT_EQ(count, 6963u);  // capinfos -c
  EXPECT_EQ(reader->records(), 6963u);
  // Last packet: 2020-06-05 07:30:55.171414 UTC.
  EXPECT_EQ(previous_ns, 1591342255'171414000ULL);
  // The end of the file stays the end.
  absl::StatusOr<bool> again = reader->Next(&rec);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(*again);
}

TEST(PcapReaderTest, EveryPublicCaptureReadsToItsCapinfosCount) {
  SKIP_WITHOUT_SHARED_TRACES();
  // capinfos -c -E on each file (Wireshark 4.0.17).
  const std::map<std::string, std::pair<uint64_t, LinkType>> expected = {
      {"PcapPlusPlus__tls2.pcap", {7451, LinkType::kEthernet}},
      {"RequetDataSet__baseline_Jan17_exp_41.pcap", {44439, LinkType::kEthernet}},
      {"RequetDataSet__baseline_Mar16_exp_220.pcap", {31056, LinkType::kEthernet}},
      {"RequetDataSet__baseline_Mar22_exp_28.pcap", {46389, LinkType::kEthernet}},
      {"RequetDataSet__baseline_Mar22_exp_31.pcap", {41427, LinkType::kEthernet}},
      {"RequetDataSet__movement_Apr17_exp_116.pcap", {42603, LinkType::kEthernet}},
      {"RequetDataSet__movement_Apr27_exp_158.pcap", {38554, LinkType::kEthernet}},
      {"ja4__ssh-r.pcap", {1852, LinkType::kEthernet}},
      {"ja4__ssh-scp-1050.pcap", {1000, LinkType::kEthernet}},
      {"mercury__surfshark.pcap", {5012, LinkType::kEthernet}},
      {"nDPI__forticlient.pcap", {2000, LinkType::kEthernet}},
      {"nDPI__vnc.pcap", {4551, LinkType::kEthernet}},
      {"nfstream__anydesk.pcap", {6963, LinkType::kEthernet}},
      {"nfstream__tor.pcap", {3859, LinkType::kEthernet}},
      {"pymptcpanalyzer__iperf-mptcp-0-0.pcap", {2560, LinkType::kPpp}},
      {"zeek__206_example_b.pcap", {1556, LinkType::kEthernet}},
      {"zeek__cwd-navigation.pcap", {8317, LinkType::kEthernet}},
      {"zeek__ssh_kex_mlkem.pcap", {3763, LinkType::kEthernet}},
  };
  for (const auto& [name, want] : expected) {
    SCOPED_TRACE(name);
    std::unique_ptr<PcapReader> reader = OpenOrDie(Trace(name));
    if (reader == nullptr) continue;
    EXPECT_EQ(reader->linktype(), static_cast<uint32_t>(want.second));
    ReadResult result = ReadAll(*reader);
    EXPECT_TRUE(result.status.ok()) << result.status;
    EXPECT_EQ(result.records.size(), want.first);
  }
}

TEST(PcapReaderTest, SnaplenCutRecordsKeepTheirWireLength) {
  SKIP_WITHOUT_SHARED_TRACES();
  // Requet captures keep headers only: 99.9% of the records are cut to <= 72
  // bytes (capinfos: inferred snaplen 72).
  std::unique_ptr<PcapReader> reader = OpenOrDie(Trace("RequetDataSet__baseline_Jan17_exp_41.pcap"));
  ASSERT_NE(reader, nullptr);
  CaptureRecord rec;
  uint64_t cut = 0;
  uint64_t short_records = 0;
  uint64_t wire_bytes = 0;
  while (true) {
    absl::StatusOr<bool> more = reader->Next(&rec);
    ASSERT_TRUE(more.ok()) << more.status();
    if (!*more) break;
    if (rec.wire_length > rec.captured) ++cut;
    if (rec.captured <= 72) ++short_records;
    wire_bytes += rec.wire_length;
  }
  // tshark -Y 'frame.cap_len < frame.len' and -Y 'frame.cap_len > 72'.
  EXPECT_EQ(cut, 28038u);
  EXPECT_EQ(short_records, 44439u - 40u);
  EXPECT_EQ(wire_bytes, 38052594u);  // capinfos: "Data size: 38052594 bytes"
}

// --- pcap vs pcapng -----------------------------------------------------------

TEST(PcapReaderTest, PcapngGivesTheSameRecordsAsPcap) {
  std::unique_ptr<PcapReader> pcap = OpenOrDie(Data("small.pcap"));
  std::unique_ptr<PcapReader> pcapng = OpenOrDie(Data("small.pcapng"));
  ASSERT_NE(pcap, nullptr);
  ASSERT_NE(pcapng, nullptr);
  EXPECT_EQ(pcapng->linktype(), pcap->linktype());
  ReadResult a = ReadAll(*pcap);
  ReadResult b = ReadAll(*pcapng);
  ASSERT_TRUE(a.status.ok()) << a.status;
  ASSERT_TRUE(b.status.ok()) << b.status;
  ASSERT_THAT(a.records, SizeIs(200));  // capinfos -c
  ASSERT_EQ(a.records.size(), b.records.size());
  for (size_t i = 0; i < a.records.size(); ++i) {
    ASSERT_EQ(a.records[i], b.records[i]) << "record " << i;
  }
  // tshark -r small.pcap -c1 -T fields -e frame.time_epoch -> 1695766882.409994000
  EXPECT_EQ(a.records[0].time_ns, 1695766882'409994000ULL);
  EXPECT_EQ(a.records[0].bytes.size(), 54u);
}

TEST(PcapReaderTest, PcapngGivesTheSameFlowsAsPcap) {
  CaptureOptions options;
  options.selector = "udp port 53";
  absl::StatusOr<CaptureAnalysis> a = AnalyzeCapture(Data("small.pcap"), options);
  absl::StatusOr<CaptureAnalysis> b = AnalyzeCapture(Data("small.pcapng"), options);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  // 200 frames: 2 ARP, 198 IPv4/IPv6 (tshark -Y 'ip or ipv6'): 14 TCP, 14 DNS,
  // 2 IGMP and 2 ICMPv6 (MLD behind a hop-by-hop header) directional flows.
  EXPECT_EQ(a->frames, 200u);
  EXPECT_EQ(a->table->stream_packets(), 198u);
  EXPECT_EQ(a->table->status_counts()[static_cast<size_t>(ParseStatus::kNotIp)], 2u);
  ASSERT_THAT(a->table->flows(), SizeIs(32));
  EXPECT_EQ(b->frames, a->frames);
  EXPECT_EQ(b->table->stream_packets(), a->table->stream_packets());
  EXPECT_EQ(b->table->status_counts(), a->table->status_counts());
  ASSERT_EQ(b->table->flows().size(), a->table->flows().size());
  std::map<uint8_t, int> per_protocol;
  int selected = 0;
  for (size_t i = 0; i < a->table->flows().size(); ++i) {
    const FlowRecord& x = a->table->flows()[i];
    const FlowRecord& y = b->table->flows()[i];
    SCOPED_TRACE(FormatFlowKey(x.key));
    EXPECT_EQ(x.key, y.key);
    EXPECT_EQ(x.selected, y.selected);
    EXPECT_EQ(std::memcmp(&x.features, &y.features, sizeof(FlowFeatures)), 0);
    ++per_protocol[x.key.protocol];
    if (x.selected) {
      ++selected;
      EXPECT_EQ(x.key.protocol, kProtoUdp);
      EXPECT_TRUE(x.key.src_port == 53 || x.key.dst_port == 53);
    }
  }
  EXPECT_EQ(per_protocol[kProtoTcp], 14);
  EXPECT_EQ(per_protocol[kProtoUdp], 14);
  EXPECT_EQ(per_protocol[2], 2);  // IGMP
  EXPECT_EQ(per_protocol[kProtoIcmpV6], 2);
  EXPECT_EQ(selected, 14);
}

// --- timestamps and link types, from crafted in-memory files -----------------

TEST(PcapReaderTest, TimestampPrecisionAndByteOrder) {
  const std::vector<uint8_t> frame = test_frames::Ethernet(test_frames::kEtherTypeIpv4,
                                                           test_frames::TcpIpv4Packet(10));
  struct Case {
    PcapFileSpec spec;
    uint32_t frac;
    uint64_t want_ns;
  };
  const Case cases[] = {
      {{.nanoseconds = false, .big_endian = false}, 999'999, 1'999'999'000ULL},
      {{.nanoseconds = false, .big_endian = true}, 1, 1'000'001'000ULL},
      {{.nanoseconds = true, .big_endian = false}, 999'999'999, 1'999'999'999ULL},
      {{.nanoseconds = true, .big_endian = true}, 7, 1'000'000'007ULL},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "nanoseconds=" << c.spec.nanoseconds
                                      << " big_endian=" << c.spec.big_endian);
    // The largest time a pcap can hold, too: 2^32-1 s (2106) must not wrap.
    std::vector<uint8_t> file = MakePcap(
        c.spec, {{.sec = 1, .frac = c.frac, .bytes = frame},
                 {.sec = 0xFFFFFFFFu, .frac = 0, .bytes = frame}});
    ReadResult r = ReadMemory(file);
    ASSERT_TRUE(r.status.ok()) << r.status;
    ASSERT_THAT(r.records, SizeIs(2));
    EXPECT_EQ(r.records[0].time_ns, c.want_ns);
    EXPECT_EQ(r.records[0].bytes, frame);
    EXPECT_EQ(r.records[1].time_ns, 4294967295'000000000ULL);
  }
}

TEST(PcapReaderTest, WireLengthIsNeverBelowCapturedLength) {
  const std::vector<uint8_t> frame = test_frames::Ethernet(test_frames::kEtherTypeIpv4,
                                                           test_frames::TcpIpv4Packet(100));
  std::vector<uint8_t> head(frame.begin(), frame.begin() + 54);
  std::vector<uint8_t> file = MakePcap(
      {}, {{.sec = 1, .bytes = head, .wire_length = static_cast<uint32_t>(frame.size())},
           {.sec = 2, .bytes = frame, .wire_length = 60}});  // broken: len < caplen
  ReadResult r = ReadMemory(file);
  ASSERT_TRUE(r.status.ok()) << r.status;
  ASSERT_THAT(r.records, SizeIs(2));
  EXPECT_EQ(r.records[0].bytes.size(), 54u);
  EXPECT_EQ(r.records[0].wire_length, frame.size());
  EXPECT_EQ(r.records[1].bytes.size(), frame.size());
  EXPECT_EQ(r.records[1].wire_length, frame.size());
}

TEST(PcapReaderTest, SupportedLinkTypesMapToTheParsersLinkType) {
  using namespace test_frames;
  const Frame ip = TcpIpv4Packet(4);
  struct Case {
    uint32_t file_linktype;
    LinkType want;
    Frame frame;
  };
  const Case cases[] = {
      {0, LinkType::kNull, NullLoopback(kBsdAfInet, ip)},
      {1, LinkType::kEthernet, Ethernet(kEtherTypeIpv4, ip)},
      {9, LinkType::kPpp, Ppp(kPppIpv4, ip, true)},
      // LINKTYPE_RAW is 101 in files but DLT_RAW (12) inside libpcap.
      {101, LinkType::kRaw, ip},
      {108, LinkType::kLoop, NullLoopback(kBsdAfInet, ip, /*little_endian=*/false)},
      {113, LinkType::kLinuxSll, LinuxSll(kEtherTypeIpv4, ip)},
      {228, LinkType::kIpv4, ip},
      {229, LinkType::kIpv6, TcpIpv6Packet(4)},
      {276, LinkType::kLinuxSll2, LinuxSll2(kEtherTypeIpv4, ip)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "LINKTYPE " << c.file_linktype);
    uint32_t linktype = 0;
    ReadResult r = ReadMemory(MakePcap({.linktype = c.file_linktype}, {{.bytes = c.frame}}),
                              &linktype);
    ASSERT_TRUE(r.status.ok()) << r.status;
    ASSERT_THAT(r.records, SizeIs(1));
    EXPECT_EQ(linktype, static_cast<uint32_t>(c.want));
    ParsedPacket parsed;
    EXPECT_EQ(ParsePacket(r.records[0].bytes.data(), r.records[0].bytes.size(),
                          r.records[0].wire_length, static_cast<LinkType>(linktype), &parsed),
              ParseStatus::kOk);
    EXPECT_EQ(parsed.key.protocol, kProtoTcp);
  }
}

// --- errors -------------------------------------------------------------------

TEST(PcapReaderErrorTest, MissingFile) {
  const std::string path = Data("no-such-file.pcap");
  absl::StatusOr<std::unique_ptr<PcapReader>> r = PcapReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), AllOf(HasSubstr(path), HasSubstr("No such file")));
}

TEST(PcapReaderErrorTest, Directory) {
  const std::string path = Data("bad");
  absl::StatusOr<std::unique_ptr<PcapReader>> r = PcapReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr(path));
}

TEST(PcapReaderErrorTest, EmptyFile) {
  const std::string path = Data("bad/empty.pcap");  // 0 bytes
  absl::StatusOr<std::unique_ptr<PcapReader>> r = PcapReader::Open(path);
  ASSERT_FALSE(r.ok());
  // The path itself says "empty": look for the word after it.
  const std::string message(r.status().message());
  ASSERT_THAT(message, ::testing::StartsWith(path + ": "));
  EXPECT_THAT(message.substr(path.size()), HasSubstr("empty"));
  absl::StatusOr<std::unique_ptr<PcapReader>> m = PcapReader::OpenMemory(nullptr, 0, "mem.pcap");
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), AllOf(HasSubstr("mem.pcap"), HasSubstr("empty")));
}

TEST(PcapReaderErrorTest, TextFileIsNotACapture) {
  const std::string path = Data("bad/not_a_capture.txt");
  absl::StatusOr<std::unique_ptr<PcapReader>> r = PcapReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              AllOf(HasSubstr(path), HasSubstr("cannot read capture"),
                    HasSubstr("unknown file format")));
}

TEST(PcapReaderErrorTest, TruncatedFileHeader) {
  const std::string path = Data("bad/truncated_file_header.pcap");  // 13 of 24 bytes
  absl::StatusOr<std::unique_ptr<PcapReader>> r = PcapReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), AllOf(HasSubstr(path), HasSubstr("truncated")));
}

// Opens `path`, expects exactly `good` records, then an error naming the file,
// the damage and the count.
void ExpectDamageAfter(const std::string& path, uint64_t good, const std::string& detail) {
  std::unique_ptr<PcapReader> reader = OpenOrDie(path);
  ASSERT_NE(reader, nullptr);
  ReadResult r = ReadAll(*reader);
  EXPECT_THAT(r.records, SizeIs(good));
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status.message(),
              AllOf(HasSubstr(path), HasSubstr("truncated or corrupt"),
                    HasSubstr("after " + std::to_string(good) + " records"), HasSubstr(detail)));
  EXPECT_EQ(reader->records(), good);
}

TEST(PcapReaderErrorTest, TruncatedInTheMiddleOfARecord) {
  // small.pcap cut at byte 3001: 18 whole records, then 515 of the 19th
  // record's 1301 data bytes.
  ExpectDamageAfter(Data("bad/truncated_record.pcap"), 18, "1301 captured bytes");
  // The records before the damage are the real ones.
  std::unique_ptr<PcapReader> whole = OpenOrDie(Data("small.pcap"));
  std::unique_ptr<PcapReader> cut = OpenOrDie(Data("bad/truncated_record.pcap"));
  ASSERT_NE(whole, nullptr);
  ASSERT_NE(cut, nullptr);
  ReadResult a = ReadAll(*whole);
  ReadResult b = ReadAll(*cut);
  ASSERT_THAT(b.records, SizeIs(18));
  for (size_t i = 0; i < b.records.size(); ++i) EXPECT_EQ(a.records[i], b.records[i]) << i;
}

TEST(PcapReaderErrorTest, TruncatedInARecordHeader) {
  // small.pcap cut at byte 2475: 5 bytes of the 19th record's 16-byte header.
  ExpectDamageAfter(Data("bad/truncated_header.pcap"), 18, "header");
}

TEST(PcapReaderErrorTest, TruncatedPcapng) {
  // small.pcapng cut at byte 3001, inside an Enhanced Packet Block.
  ExpectDamageAfter(Data("bad/truncated.pcapng"), 18, "truncated");
}

TEST(PcapReaderErrorTest, CorruptRecordHeader) {
  // Two good records of small.pcap, then a header with caplen 0x7ffffff0.
  ExpectDamageAfter(Data("bad/huge_caplen.pcap"), 2, "invalid packet capture length");
}

TEST(PcapReaderErrorTest, UnsupportedLinkType) {
  // small.pcap's header with linktype 147 (LINKTYPE_USER0), and one record.
  const std::string path = Data("bad/user0.pcap");
  absl::StatusOr<std::unique_ptr<PcapReader>> r = PcapReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              AllOf(HasSubstr(path), HasSubstr("unsupported link type 147"),
                    HasSubstr("supported: Ethernet")));
  // Same from memory (and no leak/double close of the memory FILE on this path).
  std::vector<uint8_t> bytes = ReadBytes(path);
  absl::StatusOr<std::unique_ptr<PcapReader>> m =
      PcapReader::OpenMemory(bytes.data(), bytes.size(), "user0-in-memory");
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(),
              AllOf(HasSubstr("user0-in-memory"), HasSubstr("unsupported link type 147")));
}

TEST(PcapReaderErrorTest, AnalyzeCapturePassesErrorsOn) {
  CaptureOptions options;
  absl::StatusOr<CaptureAnalysis> missing = AnalyzeCapture(Data("no-such-file.pcap"), options);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("no-such-file.pcap"));

  absl::StatusOr<CaptureAnalysis> cut = AnalyzeCapture(Data("bad/truncated_record.pcap"), options);
  ASSERT_FALSE(cut.ok());
  EXPECT_THAT(cut.status().message(),
              AllOf(HasSubstr("truncated_record.pcap"), HasSubstr("truncated or corrupt"),
                    HasSubstr("after 18 records")));

  options.selector = "tcp port";
  absl::StatusOr<CaptureAnalysis> bad = AnalyzeCapture(Data("small.pcap"), options);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), AllOf(HasSubstr("tcp port"), HasSubstr("small.pcap")));
}

// --- BPF filters --------------------------------------------------------------

TEST(PcapReaderFilterTest, BadExpressionSaysWhatIsWrong) {
  std::unique_ptr<PcapReader> reader = OpenOrDie(Data("small.pcap"));
  ASSERT_NE(reader, nullptr);
  absl::StatusOr<std::shared_ptr<bpf_program>> f = reader->CompileFilter("tcp and and port 80");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), AllOf(HasSubstr("'tcp and and port 80'"),
                                          HasSubstr("small.pcap"), HasSubstr("syntax error")));
  absl::StatusOr<std::shared_ptr<bpf_program>> g = reader->CompileFilter("port 99999");
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), AllOf(HasSubstr("port 99999"), HasSubstr("illegal port number")));
  // The reader still works after failed compilations.
  ReadResult r = ReadAll(*reader);
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_THAT(r.records, SizeIs(200));
}

// Counts the records of `path` that match `expression`.
uint64_t CountMatches(const std::string& path, const std::string& expression) {
  std::unique_ptr<PcapReader> reader = OpenOrDie(path);
  if (reader == nullptr) return 0;
  absl::StatusOr<std::shared_ptr<bpf_program>> filter = reader->CompileFilter(expression);
  EXPECT_TRUE(filter.ok()) << filter.status();
  if (!filter.ok()) return 0;
  EXPECT_FALSE(reader->LastRecordMatches(**filter)) << "no record read yet";
  CaptureRecord rec;
  uint64_t matches = 0;
  while (true) {
    absl::StatusOr<bool> more = reader->Next(&rec);
    EXPECT_TRUE(more.ok()) << more.status();
    if (!more.ok() || !*more) break;
    if (reader->LastRecordMatches(**filter)) ++matches;
  }
  return matches;
}

TEST(PcapReaderFilterTest, LastRecordMatches) {
  // tshark -r small.pcap -Y '<display filter>' | wc -l
  EXPECT_EQ(CountMatches(Data("small.pcap"), "udp port 53"), 14u);
  EXPECT_EQ(CountMatches(Data("small.pcap"), "arp"), 2u);
  EXPECT_EQ(CountMatches(Data("small.pcap"), "ip6"), 2u);
  EXPECT_EQ(CountMatches(Data("small.pcap"), "tcp port 443"), 180u);
  EXPECT_EQ(CountMatches(Data("small.pcapng"), "tcp port 443"), 180u);
  EXPECT_EQ(CountMatches(Data("small.pcap"), "tcp port 80"), 0u);
}

TEST(PcapReaderFilterTest, LastRecordMatchesOnARealCapture) {
  SKIP_WITHOUT_SHARED_TRACES();
  const std::string path = Trace("nfstream__anydesk.pcap");
  EXPECT_EQ(CountMatches(path, "tcp port 80"), 6963u);
  EXPECT_EQ(CountMatches(path, "tcp dst port 80"), 2952u);  // 2942 + 10
  EXPECT_EQ(CountMatches(path, "tcp dst port 80 and dst host 51.83.238.219"), 2942u);
  EXPECT_EQ(CountMatches(path, "udp"), 0u);
}

// --- AnalyzeCapture -------------------------------------------------------------

TEST(AnalyzeCaptureTest, AnydeskFlowsAndSelector) {
  SKIP_WITHOUT_SHARED_TRACES();
  // tshark -r nfstream__anydesk.pcap -Y ip -T fields -e ip.src -e ip.dst
  //   -e tcp.srcport -e tcp.dstport | sort | uniq -c:
  //   4001 51.83.238.219:80 > 192.168.149.129:43535
  //   2942 192.168.149.129:43535 > 51.83.238.219:80
  //     10 51.83.239.144:80 > 192.168.149.129:36351
  //     10 192.168.149.129:36351 > 51.83.239.144:80
  CaptureOptions options;
  options.selector = "tcp dst port 80 and dst host 51.83.238.219";
  absl::StatusOr<CaptureAnalysis> a = AnalyzeCapture(Trace("nfstream__anydesk.pcap"), options);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->linktype, static_cast<uint32_t>(LinkType::kEthernet));
  EXPECT_EQ(a->frames, 6963u);
  EXPECT_EQ(a->table->stream_packets(), 6963u);  // all are IPv4
  EXPECT_EQ(a->table->dropped_flow_limit(), 0u);
  const std::map<std::string, uint64_t> want = {
      {"51.83.238.219:80>192.168.149.129:43535/tcp", 4001},
      {"192.168.149.129:43535>51.83.238.219:80/tcp", 2942},
      {"51.83.239.144:80>192.168.149.129:36351/tcp", 10},
      {"192.168.149.129:36351>51.83.239.144:80/tcp", 10},
  };
  std::map<std::string, uint64_t> got;
  std::vector<std::string> selected;
  uint64_t bytes = 0;
  for (const FlowRecord& f : a->table->flows()) {
    got[FormatFlowKey(f.key)] = f.features.packets;
    if (f.selected) selected.push_back(FormatFlowKey(f.key));
    bytes += f.features.bytes;
    EXPECT_LE(f.features.first_ns, f.features.last_ns);
  }
  EXPECT_EQ(got, want);
  EXPECT_THAT(selected, ::testing::ElementsAre("192.168.149.129:43535>51.83.238.219:80/tcp"));
  EXPECT_EQ(bytes, 2795460u);  // capinfos: "Data size: 2795460 bytes"

  // "tcp dst port 80": both client->server flows, neither server->client one.
  options.selector = "tcp dst port 80";
  a = AnalyzeCapture(Trace("nfstream__anydesk.pcap"), options);
  ASSERT_TRUE(a.ok()) << a.status();
  selected.clear();
  for (const FlowRecord& f : a->table->flows()) {
    if (f.selected) selected.push_back(FormatFlowKey(f.key));
    EXPECT_EQ(f.selected, f.key.dst_port == 80) << FormatFlowKey(f.key);
  }
  EXPECT_THAT(selected, SizeIs(2));

  // No selector: nothing selected.
  a = AnalyzeCapture(Trace("nfstream__anydesk.pcap"), CaptureOptions{});
  ASSERT_TRUE(a.ok()) << a.status();
  for (const FlowRecord& f : a->table->flows()) EXPECT_FALSE(f.selected);
}

TEST(AnalyzeCaptureTest, RequetStreamPacketsAreTheIpPackets) {
  SKIP_WITHOUT_SHARED_TRACES();
  absl::StatusOr<CaptureAnalysis> a =
      AnalyzeCapture(Trace("RequetDataSet__baseline_Jan17_exp_41.pcap"), CaptureOptions{});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->frames, 44439u);
  // tshark -r F -Y 'ip or ipv6' | wc -l  (no IPv6 TCP, so the 72-byte snaplen
  // never cuts into a transport header).
  EXPECT_EQ(a->table->stream_packets(), 44411u);
  EXPECT_EQ(a->table->status_counts()[static_cast<size_t>(ParseStatus::kNotIp)], 28u);
  for (size_t s = 0; s < a->table->status_counts().size(); ++s) {
    if (IsMalformed(static_cast<ParseStatus>(s))) {
      EXPECT_EQ(a->table->status_counts()[s], 0u) << ParseStatusName(static_cast<ParseStatus>(s));
    }
  }
  // Distinct (addresses, protocol, ports / ICMP type) tuples from tshark.
  EXPECT_THAT(a->table->flows(), SizeIs(115));
  uint64_t packets = 0;
  for (const FlowRecord& f : a->table->flows()) packets += f.features.packets;
  EXPECT_EQ(packets, 44411u);
}

TEST(AnalyzeCaptureTest, FlowLimitDropsNewFlowsButCountsTheirPackets) {
  CaptureOptions options;
  options.max_flows = 3;
  absl::StatusOr<CaptureAnalysis> a = AnalyzeCapture(Data("small.pcap"), options);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->table->flows(), SizeIs(3));
  EXPECT_EQ(a->table->stream_packets(), 198u);
  EXPECT_GT(a->table->dropped_flow_limit(), 0u);
}

// --- OpenMemory -----------------------------------------------------------------

TEST(PcapReaderMemoryTest, SameRecordsAsOpen) {
  for (const char* name : {"small.pcap", "small.pcapng"}) {
    SCOPED_TRACE(name);
    std::unique_ptr<PcapReader> file = OpenOrDie(Data(name));
    ASSERT_NE(file, nullptr);
    ReadResult from_file = ReadAll(*file);
    ASSERT_TRUE(from_file.status.ok()) << from_file.status;

    std::vector<uint8_t> bytes = ReadBytes(Data(name));
    absl::StatusOr<std::unique_ptr<PcapReader>> mem =
        PcapReader::OpenMemory(bytes.data(), bytes.size(), name);
    ASSERT_TRUE(mem.ok()) << mem.status();
    EXPECT_EQ((*mem)->name(), name);
    EXPECT_EQ((*mem)->linktype(), file->linktype());
    ReadResult from_memory = ReadAll(**mem);
    ASSERT_TRUE(from_memory.status.ok()) << from_memory.status;
    ASSERT_EQ(from_memory.records.size(), from_file.records.size());
    for (size_t i = 0; i < from_file.records.size(); ++i) {
      ASSERT_EQ(from_memory.records[i], from_file.records[i]) << "record " << i;
    }
    // Filters work on memory readers too.
    auto filter = (*mem)->CompileFilter("udp port 53");
    ASSERT_TRUE(filter.ok()) << filter.status();
  }
}

TEST(PcapReaderMemoryTest, ErrorsNameTheBuffer) {
  const std::string text = "not a capture at all\n";
  absl::StatusOr<std::unique_ptr<PcapReader>> r = PcapReader::OpenMemory(
      reinterpret_cast<const uint8_t*>(text.data()), text.size(), "bytes-from-test");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              AllOf(HasSubstr("bytes-from-test"), HasSubstr("unknown file format")));

  std::vector<uint8_t> cut = ReadBytes(Data("bad/truncated_record.pcap"));
  absl::StatusOr<std::unique_ptr<PcapReader>> m =
      PcapReader::OpenMemory(cut.data(), cut.size(), "cut-in-memory");
  ASSERT_TRUE(m.ok()) << m.status();
  ReadResult rr = ReadAll(**m);
  EXPECT_THAT(rr.records, SizeIs(18));
  EXPECT_THAT(rr.status.message(),
              AllOf(HasSubstr("cut-in-memory"), HasSubstr("truncated or corrupt"),
                    HasSubstr("after 18 records")));
}

}  // namespace
}  // namespace shroud
