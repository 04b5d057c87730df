// Tests of ParsePacket: link layers, VLAN tags, IPv4 (options, fragments),
// IPv6 (extension headers, fragments), TCP/UDP/ICMP, and every way a frame can
// be cut short or lie about its lengths.
#include "dataplane/core/packet_parser.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "shroud/flow_key.h"
#include "tests/frame_builder.h"

namespace shroud {

// Lets GoogleTest print statuses by name in failure messages.
void PrintTo(ParseStatus status, std::ostream* os) { *os << ParseStatusName(status); }

namespace {

using test_frames::Frame;

struct ParseResult {
  ParseStatus status;
  ParsedPacket packet;
};

// Parses `captured` bytes of `frame` copied into a heap buffer of exactly that
// size, so that a read past the captured length shows up under ASan/valgrind.
ParseResult ParseCaptured(const Frame& frame, size_t captured, uint32_t wire_length,
                          LinkType link) {
  std::unique_ptr<uint8_t[]> buffer(new uint8_t[captured]);
  if (captured > 0) std::memcpy(buffer.get(), frame.data(), captured);
  ParseResult r;
  r.status = ParsePacket(buffer.get(), captured, wire_length, link, &r.packet);
  return r;
}

// The whole frame, captured in full.
ParseResult Parse(const Frame& frame, LinkType link = LinkType::kEthernet) {
  return ParseCaptured(frame, frame.size(), static_cast<uint32_t>(frame.size()), link);
}

Frame EthernetIpv4(const test_frames::Ipv4Header& ip, const Frame& l4,
                   const std::vector<test_frames::VlanTag>& tags = {}) {
  return test_frames::Ethernet(test_frames::kEtherTypeIpv4, test_frames::Ipv4Packet(ip, l4), tags);
}

Frame EthernetIpv6(const test_frames::Ipv6Header& ip, const Frame& l4,
                   const std::vector<test_frames::VlanTag>& tags = {}) {
  return test_frames::Ethernet(test_frames::kEtherTypeIpv6, test_frames::Ipv6Packet(ip, l4), tags);
}

void ExpectSameParse(const ParsedPacket& a, const ParsedPacket& b) {
  EXPECT_EQ(a.key, b.key) << FormatFlowKey(a.key) << " vs " << FormatFlowKey(b.key);
  EXPECT_EQ(a.l3_offset, b.l3_offset);
  EXPECT_EQ(a.l4_offset, b.l4_offset);
  EXPECT_EQ(a.payload_offset, b.payload_offset);
  EXPECT_EQ(a.payload_length, b.payload_length);
  EXPECT_EQ(a.vlan_tags, b.vlan_tags);
  EXPECT_EQ(a.tcp_flags, b.tcp_flags);
  EXPECT_EQ(a.is_fragment, b.is_fragment);
  EXPECT_EQ(a.is_later_fragment, b.is_later_fragment);
}

// ------------------------------------------------------------ IPv4 transport

TEST(PacketParserTest, EthernetIpv4TcpFillsKeyOffsetsAndFlags) {
  const Frame frame = test_frames::Ethernet(
      test_frames::kEtherTypeIpv4,
      test_frames::TcpIpv4Packet(100, test_frames::kTcpPsh | test_frames::kTcpAck));
  ASSERT_EQ(frame.size(), 14u + 20 + 20 + 100);

  ParseResult r = Parse(frame);
  ASSERT_EQ(r.status, ParseStatus::kOk);
  const ParsedPacket& p = r.packet;
  EXPECT_EQ(p.key.ip_version, 4);
  EXPECT_EQ(p.key.protocol, kProtoTcp);
  EXPECT_EQ(p.key.src_port, 49152);
  EXPECT_EQ(p.key.dst_port, 80);
  EXPECT_EQ(FormatFlowKey(p.key), "192.0.2.1:49152>198.51.100.2:80/tcp");
  EXPECT_EQ(FormatFlowKey(p.key.Reversed()), "198.51.100.2:80>192.0.2.1:49152/tcp");
  EXPECT_EQ(p.tcp_flags, test_frames::kTcpPsh | test_frames::kTcpAck);
  EXPECT_EQ(p.wire_length, frame.size());
  EXPECT_EQ(p.l3_offset, 14);
  EXPECT_EQ(p.l4_offset, 34);
  EXPECT_EQ(p.payload_offset, 54);
  EXPECT_EQ(p.payload_length, 100u);
  EXPECT_EQ(p.vlan_tags, 0);
  EXPECT_FALSE(p.is_fragment);
  EXPECT_FALSE(p.is_later_fragment);
  // IPv4 addresses occupy the first 4 bytes; the rest of the key is zero.
  for (size_t i = 4; i < 16; ++i) {
    EXPECT_EQ(p.key.src_addr[i], 0) << i;
    EXPECT_EQ(p.key.dst_addr[i], 0) << i;
  }
  EXPECT_EQ(p.key.reserved[0], 0);
  EXPECT_EQ(p.key.reserved[1], 0);
}

TEST(PacketParserTest, TcpFlagsAreCopiedVerbatim) {
  for (uint8_t flags :
       {uint8_t{0x02}, uint8_t{0x12}, uint8_t{0x11}, uint8_t{0x04}, uint8_t{0xFF}}) {
    ParseResult r = Parse(
        test_frames::Ethernet(test_frames::kEtherTypeIpv4,
                              test_frames::Ipv4Packet({}, test_frames::TcpSegment(1, 2, flags))));
    ASSERT_EQ(r.status, ParseStatus::kOk);
    EXPECT_EQ(r.packet.tcp_flags, flags);
  }
}

TEST(PacketParserTest, TcpOptionsMovePayloadOffset) {
  // Data offset 8 words: 12 bytes of options.
  ParseResult r =
      Parse(EthernetIpv4({}, test_frames::TcpSegment(1234, 443, test_frames::kTcpSyn, 7, 8)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.l4_offset, 34);
  EXPECT_EQ(r.packet.payload_offset, 34 + 32);
  EXPECT_EQ(r.packet.payload_length, 7u);
}

TEST(PacketParserTest, EthernetIpv4Udp) {
  test_frames::Ipv4Header ip{.src = test_frames::Ipv4Addr("203.0.113.7"),
                             .dst = test_frames::Ipv4Addr("192.0.2.53"),
                             .protocol = test_frames::kIpProtoUdp};
  ParseResult r = Parse(EthernetIpv4(ip, test_frames::UdpDatagram(5353, 53, 33)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.key.protocol, kProtoUdp);
  EXPECT_EQ(FormatFlowKey(r.packet.key), "203.0.113.7:5353>192.0.2.53:53/udp");
  EXPECT_EQ(r.packet.l4_offset, 34);
  EXPECT_EQ(r.packet.payload_offset, 42);
  EXPECT_EQ(r.packet.payload_length, 33u);
  EXPECT_EQ(r.packet.tcp_flags, 0);
}

TEST(PacketParserTest, EthernetIpv4IcmpEchoUsesTypeCodeAndIdentifierAsPorts) {
  test_frames::Ipv4Header ip{.protocol = test_frames::kIpProtoIcmp};
  ParseResult r = Parse(EthernetIpv4(ip, test_frames::IcmpEcho(8, 0x1234, 7, 56)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.key.protocol, kProtoIcmp);
  EXPECT_EQ(r.packet.key.src_port, 8 << 8);  // type 8, code 0
  EXPECT_EQ(r.packet.key.dst_port, 0x1234);  // echo identifier
  EXPECT_EQ(FormatFlowKey(r.packet.key), "192.0.2.1:2048>198.51.100.2:4660/icmp");
  EXPECT_EQ(r.packet.payload_offset, 42);
  EXPECT_EQ(r.packet.payload_length, 56u);

  // The reply (type 0) of the same echo shares the identifier.
  test_frames::Ipv4Header back{.src = ip.dst, .dst = ip.src, .protocol = test_frames::kIpProtoIcmp};
  ParseResult reply = Parse(EthernetIpv4(back, test_frames::IcmpEcho(0, 0x1234, 7, 56)));
  ASSERT_EQ(reply.status, ParseStatus::kOk);
  EXPECT_EQ(reply.packet.key.src_port, 0);
  EXPECT_EQ(reply.packet.key.dst_port, 0x1234);
}

TEST(PacketParserTest, OtherIpProtocolGivesAddressPairFlowWithoutPorts) {
  test_frames::Ipv4Header ip{.protocol = 47};  // GRE
  ParseResult r = Parse(EthernetIpv4(ip, test_frames::PayloadBytes(24)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.key.protocol, 47);
  EXPECT_EQ(r.packet.key.src_port, 0);
  EXPECT_EQ(r.packet.key.dst_port, 0);
  EXPECT_EQ(FormatFlowKey(r.packet.key), "192.0.2.1:0>198.51.100.2:0/47");
  EXPECT_EQ(r.packet.payload_offset, 34);
  EXPECT_EQ(r.packet.payload_length, 24u);
}

TEST(PacketParserTest, EthernetPaddingAfterShortIpPacketIsIgnored) {
  // A bare TCP ACK is 54 bytes; Ethernet pads it to the 60-byte minimum.
  Frame frame = test_frames::Ethernet(test_frames::kEtherTypeIpv4, test_frames::TcpIpv4Packet(0));
  ASSERT_EQ(frame.size(), 54u);
  frame.resize(60, 0);
  ParseResult r = Parse(frame);
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.payload_offset, 54);
  EXPECT_EQ(r.packet.payload_length, 0u);  // from the IP header, not the frame
  EXPECT_EQ(r.packet.wire_length, 60u);
}

// ----------------------------------------------------------------- VLAN tags

TEST(PacketParserTest, SingleDot1QTag) {
  ParseResult r = Parse(EthernetIpv4({}, test_frames::TcpSegment(49152, 80), {{0x8100, 42}}));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.vlan_tags, 1);
  EXPECT_EQ(r.packet.l3_offset, 18);
  EXPECT_EQ(r.packet.l4_offset, 38);
  EXPECT_EQ(FormatFlowKey(r.packet.key), "192.0.2.1:49152>198.51.100.2:80/tcp");
}

TEST(PacketParserTest, QinQOuter88A8ThenInner8100) {
  ParseResult r = Parse(
      EthernetIpv6({.protocol = test_frames::kIpProtoUdp}, test_frames::UdpDatagram(4789, 4789, 50),
                   {{test_frames::kTpidDot1Ad, 10}, {test_frames::kTpidDot1Q, 20}}));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.vlan_tags, 2);
  EXPECT_EQ(r.packet.l3_offset, 22);
  EXPECT_EQ(r.packet.l4_offset, 62);
  EXPECT_EQ(r.packet.payload_length, 50u);
  EXPECT_EQ(FormatFlowKey(r.packet.key), "[2001:db8::1]:4789>[2001:db8::2]:4789/udp");
}

TEST(PacketParserTest, LegacyQinQTpid9100IsATag) {
  ParseResult r =
      Parse(EthernetIpv4({}, test_frames::TcpSegment(1, 2), {{0x9100, 10}, {0x8100, 20}}));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.vlan_tags, 2);
  EXPECT_EQ(r.packet.l3_offset, 22);
}

TEST(PacketParserTest, ThreeTagsAreTooMany) {
  ParseResult r = Parse(
      EthernetIpv4({}, test_frames::TcpSegment(1, 2), {{0x88A8, 1}, {0x8100, 2}, {0x8100, 3}}));
  EXPECT_EQ(r.status, ParseStatus::kTooManyVlanTags);
  EXPECT_TRUE(IsMalformed(r.status));
}

TEST(PacketParserTest, TagWithNonIpInnerTypeIsNotIp) {
  ParseResult r = Parse(test_frames::Ethernet(test_frames::kEtherTypeArp,
                                              test_frames::ArpRequestBody(), {{0x8100, 5}}));
  EXPECT_EQ(r.status, ParseStatus::kNotIp);
  EXPECT_FALSE(IsMalformed(r.status));
}

// -------------------------------------------------------------- IPv4 header

class Ipv4OptionsTest : public ::testing::TestWithParam<int> {};

TEST_P(Ipv4OptionsTest, TransportFollowsOptions) {
  const int ihl = GetParam();
  test_frames::Ipv4Header ip;
  ip.options = Frame(static_cast<size_t>(ihl - 5) * 4, 1);  // NOP options
  Frame frame = EthernetIpv4(ip, test_frames::TcpSegment(49152, 80, test_frames::kTcpAck, 9));
  ASSERT_EQ(frame[14] & 0x0F, ihl);
  ParseResult r = Parse(frame);
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.l4_offset, 14 + ihl * 4);
  EXPECT_EQ(r.packet.payload_offset, 14 + ihl * 4 + 20);
  EXPECT_EQ(r.packet.payload_length, 9u);
  EXPECT_EQ(r.packet.key.src_port, 49152);
  EXPECT_EQ(r.packet.key.dst_port, 80);
}

INSTANTIATE_TEST_SUITE_P(AllIhl, Ipv4OptionsTest, ::testing::Range(6, 16));

TEST(PacketParserTest, Ipv4HeaderLengthBelowFiveIsBad) {
  for (uint8_t ihl = 0; ihl < 5; ++ihl) {
    test_frames::Ipv4Header ip;
    ip.ihl_words = ihl;
    ParseResult r = Parse(EthernetIpv4(ip, test_frames::TcpSegment(1, 2)));
    EXPECT_EQ(r.status, ParseStatus::kBadIpHeaderLength) << "ihl=" << int{ihl};
  }
}

TEST(PacketParserTest, Ipv4OptionsCutByCaptureAreTruncatedHeader) {
  test_frames::Ipv4Header ip;
  ip.options = Frame(40, 1);  // IHL 15
  Frame frame = EthernetIpv4(ip, test_frames::TcpSegment(1, 2));
  ParseResult r =
      ParseCaptured(frame, 14 + 40, static_cast<uint32_t>(frame.size()), LinkType::kEthernet);
  EXPECT_EQ(r.status, ParseStatus::kTruncatedIpHeader);
}

TEST(PacketParserTest, Ipv4TotalLengthLargerThanFrameIsBad) {
  test_frames::Ipv4Header ip;
  ip.total_length = 20 + 20 + 11;  // one byte more than the frame holds
  ParseResult r = Parse(EthernetIpv4(ip, test_frames::TcpSegment(1, 2, 0, 10)));
  EXPECT_EQ(r.status, ParseStatus::kBadIpTotalLength);
}

TEST(PacketParserTest, Ipv4TotalLengthSmallerThanHeaderIsBad) {
  test_frames::Ipv4Header ip;
  ip.options = Frame(8, 1);  // IHL 7 = 28 bytes
  ip.total_length = 27;
  ParseResult r = Parse(EthernetIpv4(ip, test_frames::TcpSegment(1, 2)));
  EXPECT_EQ(r.status, ParseStatus::kBadIpTotalLength);

  ip.total_length = 0;  // e.g. a segmentation-offloaded packet captured on the host
  r = Parse(EthernetIpv4(ip, test_frames::TcpSegment(1, 2)));
  EXPECT_EQ(r.status, ParseStatus::kBadIpTotalLength);
}

TEST(PacketParserTest, Ipv4TotalLengthTooSmallForTransportHeader) {
  // Total length covers only 6 bytes of a UDP header.
  test_frames::Ipv4Header ip{.protocol = test_frames::kIpProtoUdp};
  ip.total_length = 26;
  ParseResult r = Parse(EthernetIpv4(ip, test_frames::UdpDatagram(1, 2, 10)));
  EXPECT_TRUE(IsMalformed(r.status)) << ParseStatusName(r.status);
  EXPECT_EQ(r.status, ParseStatus::kTruncatedL4Header);
}

TEST(PacketParserTest, WrongVersionNibbleBehindIpv4EtherType) {
  test_frames::Ipv4Header ip;
  ip.version = 6;
  ParseResult r = Parse(EthernetIpv4(ip, test_frames::TcpSegment(1, 2)));
  EXPECT_EQ(r.status, ParseStatus::kBadIpVersion);
}

TEST(PacketParserTest, Ipv4FirstFragmentHasPorts) {
  test_frames::Ipv4Header ip;
  ip.flags_fragment = test_frames::kIpv4MoreFragments;
  ParseResult r =
      Parse(EthernetIpv4(ip, test_frames::TcpSegment(49152, 80, test_frames::kTcpAck, 1000)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_TRUE(r.packet.is_fragment);
  EXPECT_FALSE(r.packet.is_later_fragment);
  EXPECT_EQ(r.packet.key.src_port, 49152);
  EXPECT_EQ(r.packet.key.dst_port, 80);
  EXPECT_EQ(r.packet.l4_offset, 34);
  EXPECT_EQ(r.packet.payload_length, 1000u);
}

TEST(PacketParserTest, Ipv4LaterFragmentHasNoTransportHeader) {
  test_frames::Ipv4Header ip;
  ip.flags_fragment = 185;  // offset 1480 bytes, last fragment (MF clear)
  // The fragment's bytes look like a TCP header but must not be read as one.
  ParseResult r = Parse(EthernetIpv4(ip, test_frames::TcpSegment(1111, 2222, 0, 30)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_TRUE(r.packet.is_fragment);
  EXPECT_TRUE(r.packet.is_later_fragment);
  EXPECT_EQ(r.packet.key.protocol, kProtoTcp);
  EXPECT_EQ(r.packet.key.src_port, 0);
  EXPECT_EQ(r.packet.key.dst_port, 0);
  EXPECT_EQ(r.packet.l4_offset, 0);
  EXPECT_EQ(r.packet.tcp_flags, 0);
  EXPECT_EQ(r.packet.payload_offset, 34);
  EXPECT_EQ(r.packet.payload_length, 50u);
  EXPECT_EQ(FormatFlowKey(r.packet.key), "192.0.2.1:0>198.51.100.2:0/tcp");
}

TEST(PacketParserTest, FragmentOffsetUsesEveryOffsetBit) {
  // Only the highest offset bit set: 4096 * 8 bytes into the datagram.
  test_frames::Ipv4Header ip;
  ip.flags_fragment = 0x1000;
  ParseResult v4 = Parse(EthernetIpv4(ip, test_frames::PayloadBytes(24)));
  ASSERT_EQ(v4.status, ParseStatus::kOk);
  EXPECT_TRUE(v4.packet.is_later_fragment);
  EXPECT_EQ(v4.packet.key.src_port, 0);

  test_frames::Ipv6Header ip6;
  ip6.extensions = {test_frames::Ipv6FragmentHeader(0x1000, /*more_fragments=*/false)};
  ParseResult v6 = Parse(EthernetIpv6(ip6, test_frames::PayloadBytes(24)));
  ASSERT_EQ(v6.status, ParseStatus::kOk);
  EXPECT_TRUE(v6.packet.is_later_fragment);
  EXPECT_EQ(v6.packet.l4_offset, 0);

  // The IPv6 M flag alone (offset 0) is a first fragment.
  ip6.extensions = {test_frames::Ipv6FragmentHeader(0, /*more_fragments=*/true)};
  ParseResult first = Parse(EthernetIpv6(ip6, test_frames::TcpSegment(7, 8)));
  ASSERT_EQ(first.status, ParseStatus::kOk);
  EXPECT_TRUE(first.packet.is_fragment);
  EXPECT_FALSE(first.packet.is_later_fragment);
  EXPECT_EQ(first.packet.key.src_port, 7);
}

TEST(PacketParserTest, Ipv4LaterFragmentShorterThanATransportHeaderIsFine) {
  test_frames::Ipv4Header ip;
  ip.flags_fragment = test_frames::kIpv4MoreFragments | 3;
  ParseResult r = Parse(EthernetIpv4(ip, test_frames::PayloadBytes(4)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_TRUE(r.packet.is_later_fragment);
  EXPECT_EQ(r.packet.payload_length, 4u);
}

TEST(PacketParserTest, Ipv4DontFragmentIsNotAFragment) {
  test_frames::Ipv4Header ip;
  ip.flags_fragment = test_frames::kIpv4DontFragment;
  ParseResult r = Parse(EthernetIpv4(ip, test_frames::TcpSegment(1, 2)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_FALSE(r.packet.is_fragment);
  EXPECT_FALSE(r.packet.is_later_fragment);
}

// ------------------------------------------------------------- TCP header

TEST(PacketParserTest, TcpDataOffsetBelowFiveIsBad) {
  for (uint8_t words = 0; words < 5; ++words) {
    Frame l4 = test_frames::TcpSegment(1, 2, test_frames::kTcpAck, 8);
    l4[12] = static_cast<uint8_t>(words << 4);
    ParseResult r = Parse(EthernetIpv4({}, l4));
    EXPECT_EQ(r.status, ParseStatus::kBadTcpHeaderLength) << "data offset " << int{words};
  }
}

TEST(PacketParserTest, TcpDataOffsetPastIpEndIsBad) {
  // Data offset 15 (60 bytes), but the IP packet holds only 20 + 30 bytes of TCP.
  Frame l4 = test_frames::TcpSegment(1, 2, test_frames::kTcpAck, 30);
  l4[12] = 15 << 4;
  Frame frame = EthernetIpv4({}, l4);
  frame.resize(frame.size() + 40, 0);  // Ethernet trailer: captured but not IP
  ParseResult r = Parse(frame);
  EXPECT_EQ(r.status, ParseStatus::kBadTcpHeaderLength);
}

TEST(PacketParserTest, TcpOptionsCutBySnaplenAreAccepted) {
  // 40 bytes of options; a snaplen cut after the fixed header still gives the
  // key and the lengths, and payload_offset then lies past the captured bytes.
  Frame frame = EthernetIpv4({}, test_frames::TcpSegment(1, 2, test_frames::kTcpAck, 100, 15));
  const uint32_t wire = static_cast<uint32_t>(frame.size());
  ParseResult r = ParseCaptured(frame, 34 + 40, wire, LinkType::kEthernet);
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.key.src_port, 1);
  EXPECT_EQ(r.packet.key.dst_port, 2);
  EXPECT_EQ(r.packet.tcp_flags, test_frames::kTcpAck);
  EXPECT_EQ(r.packet.payload_offset, 94);
  EXPECT_GT(r.packet.payload_offset, 34u + 40);
  EXPECT_EQ(r.packet.payload_length, 100u);
  // The fixed 20-byte header itself must be captured.
  EXPECT_EQ(ParseCaptured(frame, 34 + 19, wire, LinkType::kEthernet).status,
            ParseStatus::kTruncatedL4Header);
  EXPECT_EQ(ParseCaptured(frame, 34 + 20, wire, LinkType::kEthernet).status, ParseStatus::kOk);
}

// ------------------------------------------------------------------- IPv6

TEST(PacketParserTest, EthernetIpv6Tcp) {
  ParseResult r = Parse(test_frames::Ethernet(
      test_frames::kEtherTypeIpv6, test_frames::TcpIpv6Packet(10, test_frames::kTcpSyn)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  const ParsedPacket& p = r.packet;
  EXPECT_EQ(p.key.ip_version, 6);
  EXPECT_EQ(p.key.protocol, kProtoTcp);
  EXPECT_EQ(p.key.src_addr, test_frames::Ipv6Addr("2001:db8::1"));
  EXPECT_EQ(p.key.dst_addr, test_frames::Ipv6Addr("2001:db8::2"));
  EXPECT_EQ(FormatFlowKey(p.key), "[2001:db8::1]:443>[2001:db8::2]:5555/tcp");
  EXPECT_EQ(p.tcp_flags, test_frames::kTcpSyn);
  EXPECT_EQ(p.l3_offset, 14);
  EXPECT_EQ(p.l4_offset, 54);
  EXPECT_EQ(p.payload_offset, 74);
  EXPECT_EQ(p.payload_length, 10u);
  EXPECT_FALSE(p.is_fragment);
}

TEST(PacketParserTest, Ipv6HopByHopDestinationOptionsRoutingChain) {
  test_frames::Ipv6Header ip;
  ip.extensions = {
      test_frames::Ipv6OptionsHeader(test_frames::kIpv6HopByHop, 0),     // 8 bytes
      test_frames::Ipv6OptionsHeader(test_frames::kIpv6DestOptions, 1),  // 16 bytes
      test_frames::Ipv6RoutingHeader({test_frames::Ipv6Addr("2001:db8::a"),
                                      test_frames::Ipv6Addr("2001:db8::b")}),  // 40 bytes
  };
  ParseResult r =
      Parse(EthernetIpv6(ip, test_frames::TcpSegment(40000, 22, test_frames::kTcpAck, 10)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.key.protocol, kProtoTcp);
  EXPECT_EQ(r.packet.key.src_port, 40000);
  EXPECT_EQ(r.packet.key.dst_port, 22);
  EXPECT_EQ(r.packet.l4_offset, 14 + 40 + 8 + 16 + 40);
  EXPECT_EQ(r.packet.payload_offset, 14 + 40 + 64 + 20);
  EXPECT_EQ(r.packet.payload_length, 10u);
}

TEST(PacketParserTest, Ipv6AuthenticationHeaderLengthIsInFourByteUnits) {
  // AH: payload length field 4 -> (4 + 2) * 4 = 24 bytes.
  test_frames::Ipv6Extension ah{51, Frame(24, 0)};
  ah.bytes[1] = 4;
  test_frames::Ipv6Header ip{.protocol = test_frames::kIpProtoUdp};
  ip.extensions = {ah};
  ParseResult r = Parse(EthernetIpv6(ip, test_frames::UdpDatagram(500, 4500, 12)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.key.protocol, kProtoUdp);
  EXPECT_EQ(r.packet.l4_offset, 14 + 40 + 24);
  EXPECT_EQ(r.packet.key.src_port, 500);
  EXPECT_EQ(r.packet.payload_length, 12u);
}

TEST(PacketParserTest, Ipv6FirstFragmentHasPorts) {
  test_frames::Ipv6Header ip;
  ip.extensions = {test_frames::Ipv6FragmentHeader(0, /*more_fragments=*/true)};
  ParseResult r =
      Parse(EthernetIpv6(ip, test_frames::TcpSegment(443, 5555, test_frames::kTcpAck, 64)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_TRUE(r.packet.is_fragment);
  EXPECT_FALSE(r.packet.is_later_fragment);
  EXPECT_EQ(r.packet.key.protocol, kProtoTcp);
  EXPECT_EQ(r.packet.key.src_port, 443);
  EXPECT_EQ(r.packet.key.dst_port, 5555);
  EXPECT_EQ(r.packet.l4_offset, 14 + 40 + 8);
  EXPECT_EQ(r.packet.payload_length, 64u);
}

TEST(PacketParserTest, Ipv6LaterFragmentHasNoPorts) {
  test_frames::Ipv6Header ip;
  ip.extensions = {test_frames::Ipv6FragmentHeader(100, /*more_fragments=*/false)};
  ParseResult r = Parse(EthernetIpv6(ip, test_frames::TcpSegment(443, 5555, 0, 44)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_TRUE(r.packet.is_fragment);
  EXPECT_TRUE(r.packet.is_later_fragment);
  EXPECT_EQ(r.packet.key.protocol, kProtoTcp);
  EXPECT_EQ(r.packet.key.src_port, 0);
  EXPECT_EQ(r.packet.key.dst_port, 0);
  EXPECT_EQ(r.packet.l4_offset, 0);
  EXPECT_EQ(r.packet.payload_offset, 14 + 40 + 8);
  EXPECT_EQ(r.packet.payload_length, 64u);
}

TEST(PacketParserTest, Ipv6LaterFragmentDataIsNotParsedAsExtensionHeaders) {
  // The fragmentable part starts with a destination-options header, which only
  // the first fragment carries. A later fragment's data must not be walked as
  // headers: here it would claim a 2 KiB header and make a valid packet look
  // malformed.
  test_frames::Ipv6Header ip{.protocol = test_frames::kIpv6DestOptions};
  ip.extensions = {test_frames::Ipv6FragmentHeader(100, /*more_fragments=*/true)};
  Frame data = test_frames::PayloadBytes(64);
  data[0] = test_frames::kIpProtoTcp;
  data[1] = 0xFF;
  ParseResult r = Parse(EthernetIpv6(ip, data));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_TRUE(r.packet.is_later_fragment);
  EXPECT_EQ(r.packet.key.protocol, test_frames::kIpv6DestOptions);
  EXPECT_EQ(r.packet.key.src_port, 0);
  EXPECT_EQ(r.packet.payload_offset, 14 + 40 + 8);
  EXPECT_EQ(r.packet.payload_length, 64u);
}

TEST(PacketParserTest, Icmpv6Echo) {
  test_frames::Ipv6Header ip{.protocol = test_frames::kIpProtoIcmpV6};
  ParseResult r = Parse(EthernetIpv6(ip, test_frames::IcmpEcho(128, 0xBEEF, 1, 16)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.key.protocol, kProtoIcmpV6);
  EXPECT_EQ(r.packet.key.src_port, 128 << 8);
  EXPECT_EQ(r.packet.key.dst_port, 0xBEEF);
  EXPECT_EQ(FormatFlowKey(r.packet.key), "[2001:db8::1]:32768>[2001:db8::2]:48879/icmp6");
  EXPECT_EQ(r.packet.payload_offset, 14 + 40 + 8);
  EXPECT_EQ(r.packet.payload_length, 16u);
}

TEST(PacketParserTest, Ipv6ExtensionChainLimit) {
  auto chain_of = [](int n) {
    test_frames::Ipv6Header ip;
    for (int i = 0; i < n; ++i) {
      ip.extensions.push_back(test_frames::Ipv6OptionsHeader(test_frames::kIpv6DestOptions));
    }
    return EthernetIpv6(ip, test_frames::TcpSegment(1, 2));
  };
  ParseResult at_limit = Parse(chain_of(kMaxIpv6ExtHeaders));
  ASSERT_EQ(at_limit.status, ParseStatus::kOk);
  EXPECT_EQ(at_limit.packet.l4_offset, 14 + 40 + 8 * kMaxIpv6ExtHeaders);
  EXPECT_EQ(Parse(chain_of(kMaxIpv6ExtHeaders + 1)).status, ParseStatus::kBadIpv6ExtensionHeader);
  EXPECT_EQ(Parse(chain_of(40)).status, ParseStatus::kBadIpv6ExtensionHeader);
}

TEST(PacketParserTest, Ipv6ExtensionHeaderPastPayloadLengthIsBad) {
  // The header says 11 * 8 = 88 bytes; the packet holds 8 + 20.
  test_frames::Ipv6Extension opts = test_frames::Ipv6OptionsHeader(test_frames::kIpv6DestOptions);
  opts.bytes[1] = 10;
  test_frames::Ipv6Header ip;
  ip.extensions = {opts};
  EXPECT_EQ(Parse(EthernetIpv6(ip, test_frames::TcpSegment(1, 2))).status,
            ParseStatus::kBadIpv6ExtensionHeader);
}

TEST(PacketParserTest, Ipv6ExtensionHeaderCutBySnaplen) {
  // Destination options of 32 bytes, then "no next header". The walk needs the
  // first 8 bytes of each extension header (next header, length); the rest,
  // like TCP options, may be cut by a snaplen.
  test_frames::Ipv6Header ip{.protocol = test_frames::kIpv6NoNext};
  ip.extensions = {test_frames::Ipv6OptionsHeader(test_frames::kIpv6DestOptions, 3)};
  Frame frame = EthernetIpv6(ip, {});
  ASSERT_EQ(frame.size(), 14u + 40 + 32);
  const uint32_t wire = static_cast<uint32_t>(frame.size());
  ParseResult full = Parse(frame);
  ASSERT_EQ(full.status, ParseStatus::kOk);
  EXPECT_EQ(full.packet.key.protocol, test_frames::kIpv6NoNext);
  EXPECT_EQ(full.packet.payload_offset, frame.size());
  EXPECT_EQ(full.packet.payload_length, 0u);
  for (size_t captured = 54; captured < frame.size(); ++captured) {
    ParseResult r = ParseCaptured(frame, captured, wire, LinkType::kEthernet);
    if (captured < 62) {
      EXPECT_EQ(r.status, ParseStatus::kBadIpv6ExtensionHeader) << "captured " << captured;
    } else {
      ASSERT_EQ(r.status, ParseStatus::kOk) << "captured " << captured;
      ExpectSameParse(r.packet, full.packet);
    }
  }
}

TEST(PacketParserTest, Ipv6PayloadLengthLargerThanFrameIsBad) {
  test_frames::Ipv6Header ip;
  ip.payload_length = 21;
  EXPECT_EQ(Parse(EthernetIpv6(ip, test_frames::TcpSegment(1, 2))).status,
            ParseStatus::kBadIpTotalLength);
}

TEST(PacketParserTest, Ipv6ZeroPayloadLengthTakesRestOfFrame) {
  test_frames::Ipv6Header ip;
  ip.payload_length = 0;  // jumbogram convention
  ParseResult r = Parse(EthernetIpv6(ip, test_frames::TcpSegment(1, 2, test_frames::kTcpAck, 5)));
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.payload_length, 5u);
}

TEST(PacketParserTest, WrongVersionNibbleBehindIpv6EtherType) {
  test_frames::Ipv6Header ip;
  ip.version = 4;
  EXPECT_EQ(Parse(EthernetIpv6(ip, test_frames::TcpSegment(1, 2))).status,
            ParseStatus::kBadIpVersion);
}

// ---------------------------------------------------------- non-IP frames

TEST(PacketParserTest, ArpIsNotIpAndNotMalformed) {
  ParseResult r =
      Parse(test_frames::Ethernet(test_frames::kEtherTypeArp, test_frames::ArpRequestBody()));
  EXPECT_EQ(r.status, ParseStatus::kNotIp);
  EXPECT_FALSE(IsMalformed(r.status));
  EXPECT_EQ(r.packet.key.ip_version, 0);
}

TEST(PacketParserTest, IsMalformedClassification) {
  EXPECT_FALSE(IsMalformed(ParseStatus::kOk));
  EXPECT_FALSE(IsMalformed(ParseStatus::kNotIp));
  for (int s = static_cast<int>(ParseStatus::kTruncatedLinkHeader);
       s < static_cast<int>(ParseStatus::kCount); ++s) {
    EXPECT_TRUE(IsMalformed(static_cast<ParseStatus>(s))) << s;
  }
}

TEST(PacketParserTest, EveryStatusHasADistinctName) {
  std::vector<std::string> names;
  for (int s = 0; s < static_cast<int>(ParseStatus::kCount); ++s) {
    std::string name(ParseStatusName(static_cast<ParseStatus>(s)));
    EXPECT_NE(name, "unknown") << s;
    for (const auto& other : names) EXPECT_NE(name, other);
    names.push_back(name);
  }
  EXPECT_EQ(ParseStatusName(ParseStatus::kOk), "ok");
  EXPECT_EQ(ParseStatusName(ParseStatus::kNotIp), "not_ip");
  EXPECT_EQ(ParseStatusName(ParseStatus::kCount), "unknown");
}

// -------------------------------------------------------------- link types

TEST(PacketParserTest, RawLinkTypeTakesVersionFromFirstNibble) {
  ParseResult v4 = Parse(test_frames::TcpIpv4Packet(3), LinkType::kRaw);
  ASSERT_EQ(v4.status, ParseStatus::kOk);
  EXPECT_EQ(v4.packet.l3_offset, 0);
  EXPECT_EQ(v4.packet.l4_offset, 20);
  EXPECT_EQ(FormatFlowKey(v4.packet.key), "192.0.2.1:49152>198.51.100.2:80/tcp");

  ParseResult v6 = Parse(test_frames::TcpIpv6Packet(3), LinkType::kRaw);
  ASSERT_EQ(v6.status, ParseStatus::kOk);
  EXPECT_EQ(v6.packet.l4_offset, 40);
  EXPECT_EQ(FormatFlowKey(v6.packet.key), "[2001:db8::1]:443>[2001:db8::2]:5555/tcp");

  Frame v5 = test_frames::TcpIpv4Packet(3);
  v5[0] = 0x55;
  EXPECT_EQ(Parse(v5, LinkType::kRaw).status, ParseStatus::kBadIpVersion);
  EXPECT_EQ(Parse(Frame{}, LinkType::kRaw).status, ParseStatus::kTruncatedIpHeader);
}

TEST(PacketParserTest, Ipv4AndIpv6LinkTypesCheckTheVersion) {
  ParseResult v4 = Parse(test_frames::TcpIpv4Packet(), LinkType::kIpv4);
  ASSERT_EQ(v4.status, ParseStatus::kOk);
  EXPECT_EQ(v4.packet.key.ip_version, 4);
  ParseResult v6 = Parse(test_frames::TcpIpv6Packet(), LinkType::kIpv6);
  ASSERT_EQ(v6.status, ParseStatus::kOk);
  EXPECT_EQ(v6.packet.key.ip_version, 6);
  EXPECT_EQ(Parse(test_frames::TcpIpv6Packet(), LinkType::kIpv4).status,
            ParseStatus::kBadIpVersion);
  EXPECT_EQ(Parse(test_frames::TcpIpv4Packet(40), LinkType::kIpv6).status,
            ParseStatus::kBadIpVersion);
  // Shorter than an IPv6 header.
  EXPECT_EQ(Parse(Frame{0x45, 0, 0, 20}, LinkType::kIpv6).status, ParseStatus::kTruncatedIpHeader);
}

TEST(PacketParserTest, LinuxCookedV1) {
  ParseResult v4 =
      Parse(test_frames::LinuxSll(0x0800, test_frames::TcpIpv4Packet(5)), LinkType::kLinuxSll);
  ASSERT_EQ(v4.status, ParseStatus::kOk);
  EXPECT_EQ(v4.packet.l3_offset, 16);
  EXPECT_EQ(v4.packet.l4_offset, 36);
  EXPECT_EQ(FormatFlowKey(v4.packet.key), "192.0.2.1:49152>198.51.100.2:80/tcp");
  ParseResult v6 =
      Parse(test_frames::LinuxSll(0x86DD, test_frames::TcpIpv6Packet(5)), LinkType::kLinuxSll);
  ASSERT_EQ(v6.status, ParseStatus::kOk);
  EXPECT_EQ(v6.packet.l4_offset, 56);
  EXPECT_EQ(Parse(test_frames::LinuxSll(0x0806, test_frames::ArpRequestBody()), LinkType::kLinuxSll)
                .status,
            ParseStatus::kNotIp);
  EXPECT_EQ(Parse(Frame(15, 0), LinkType::kLinuxSll).status, ParseStatus::kTruncatedLinkHeader);
}

TEST(PacketParserTest, LinuxCookedV2) {
  ParseResult v4 =
      Parse(test_frames::LinuxSll2(0x0800, test_frames::TcpIpv4Packet(5)), LinkType::kLinuxSll2);
  ASSERT_EQ(v4.status, ParseStatus::kOk);
  EXPECT_EQ(v4.packet.l3_offset, 20);
  EXPECT_EQ(v4.packet.l4_offset, 40);
  EXPECT_EQ(v4.packet.key.dst_port, 80);
  ParseResult v6 =
      Parse(test_frames::LinuxSll2(0x86DD, test_frames::TcpIpv6Packet(5)), LinkType::kLinuxSll2);
  ASSERT_EQ(v6.status, ParseStatus::kOk);
  EXPECT_EQ(v6.packet.l4_offset, 60);
  EXPECT_EQ(Parse(test_frames::LinuxSll2(0x88CC, Frame(30, 0)), LinkType::kLinuxSll2).status,
            ParseStatus::kNotIp);
  EXPECT_EQ(Parse(Frame(19, 0), LinkType::kLinuxSll2).status, ParseStatus::kTruncatedLinkHeader);
}

TEST(PacketParserTest, NullLoopbackFamilyInEitherByteOrder) {
  // Little-endian AF_INET = 2, as written by a little-endian BSD host.
  ParseResult le =
      Parse(test_frames::NullLoopback(2, test_frames::TcpIpv4Packet(1)), LinkType::kNull);
  ASSERT_EQ(le.status, ParseStatus::kOk);
  EXPECT_EQ(le.packet.l3_offset, 4);
  EXPECT_EQ(le.packet.l4_offset, 24);
  EXPECT_EQ(le.packet.key.ip_version, 4);

  ParseResult be =
      Parse(test_frames::NullLoopback(2, test_frames::TcpIpv4Packet(1), false), LinkType::kNull);
  ASSERT_EQ(be.status, ParseStatus::kOk);
  EXPECT_EQ(be.packet.key.ip_version, 4);

  // AF_INET6 differs between systems: Linux 10, NetBSD/OpenBSD 24, FreeBSD 28, macOS 30.
  for (uint32_t family : {10u, 24u, 28u, 30u}) {
    ParseResult v6 =
        Parse(test_frames::NullLoopback(family, test_frames::TcpIpv6Packet(1)), LinkType::kNull);
    ASSERT_EQ(v6.status, ParseStatus::kOk) << family;
    EXPECT_EQ(v6.packet.key.ip_version, 6);
    EXPECT_EQ(v6.packet.l4_offset, 44);
  }
  EXPECT_EQ(
      Parse(test_frames::NullLoopback(7, test_frames::TcpIpv4Packet()), LinkType::kNull).status,
      ParseStatus::kNotIp);
  EXPECT_EQ(Parse(Frame{2, 0, 0}, LinkType::kNull).status, ParseStatus::kTruncatedLinkHeader);
}

TEST(PacketParserTest, OpenBsdLoopIsNetworkOrder) {
  ParseResult r =
      Parse(test_frames::NullLoopback(2, test_frames::TcpIpv4Packet(), false), LinkType::kLoop);
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.l3_offset, 4);
  ParseResult v6 =
      Parse(test_frames::NullLoopback(24, test_frames::TcpIpv6Packet(), false), LinkType::kLoop);
  ASSERT_EQ(v6.status, ParseStatus::kOk);
  EXPECT_EQ(v6.packet.key.ip_version, 6);
}

TEST(PacketParserTest, PppWithAndWithoutHdlcFraming) {
  ParseResult hdlc = Parse(
      test_frames::Ppp(test_frames::kPppIpv4, test_frames::TcpIpv4Packet(), true), LinkType::kPpp);
  ASSERT_EQ(hdlc.status, ParseStatus::kOk);
  EXPECT_EQ(hdlc.packet.l3_offset, 4);
  EXPECT_EQ(hdlc.packet.l4_offset, 24);

  ParseResult bare = Parse(
      test_frames::Ppp(test_frames::kPppIpv4, test_frames::TcpIpv4Packet(), false), LinkType::kPpp);
  ASSERT_EQ(bare.status, ParseStatus::kOk);
  EXPECT_EQ(bare.packet.l3_offset, 2);
  EXPECT_EQ(bare.packet.l4_offset, 22);
  EXPECT_EQ(FormatFlowKey(bare.packet.key), "192.0.2.1:49152>198.51.100.2:80/tcp");

  ParseResult v6 = Parse(
      test_frames::Ppp(test_frames::kPppIpv6, test_frames::TcpIpv6Packet(), true), LinkType::kPpp);
  ASSERT_EQ(v6.status, ParseStatus::kOk);
  EXPECT_EQ(v6.packet.key.ip_version, 6);
  EXPECT_EQ(v6.packet.l4_offset, 44);

  // LCP (0xc021) carries no IP flow.
  EXPECT_EQ(Parse(test_frames::Ppp(0xC021, Frame(10, 0), true), LinkType::kPpp).status,
            ParseStatus::kNotIp);
  EXPECT_EQ(Parse(Frame{0xFF, 0x03, 0x00}, LinkType::kPpp).status,
            ParseStatus::kTruncatedLinkHeader);
}

TEST(PacketParserTest, SupportedLinkTypesAndNames) {
  const std::vector<std::pair<uint32_t, std::string>> supported = {
      {0, "NULL"},        {1, "ETHERNET"}, {9, "PPP"},    {101, "RAW"},        {108, "LOOP"},
      {113, "LINUX_SLL"}, {228, "IPV4"},   {229, "IPV6"}, {276, "LINUX_SLL2"},
  };
  for (const auto& [linktype, name] : supported) {
    EXPECT_TRUE(IsSupportedLinkType(linktype)) << linktype;
    EXPECT_EQ(LinkTypeName(linktype), name);
  }
  // 147 = USER0, 105 = IEEE 802.11, 127 = radiotap, 12 = OpenBSD raw (not handled).
  for (uint32_t linktype : {2u, 12u, 105u, 127u, 147u, 1000u, 0xFFFFFFFFu}) {
    EXPECT_FALSE(IsSupportedLinkType(linktype)) << linktype;
    EXPECT_EQ(LinkTypeName(linktype), "unsupported");
  }
}

// ------------------------------------------------- truncation and lengths

struct Sample {
  std::string name;
  LinkType link;
  Frame frame;
};

// One valid frame per link type and protocol shape.
std::vector<Sample> Samples() {
  using namespace test_frames;  // NOLINT(build/namespaces): test-local brevity
  Ipv4Header udp4{.protocol = kIpProtoUdp};
  Ipv4Header icmp4{.protocol = kIpProtoIcmp};
  Ipv4Header opts4;
  opts4.options = Frame(12, 1);
  Ipv4Header first_frag4;
  first_frag4.flags_fragment = kIpv4MoreFragments;
  Ipv4Header later_frag4;
  later_frag4.flags_fragment = 100;
  Ipv6Header chain6;
  chain6.extensions = {Ipv6OptionsHeader(kIpv6HopByHop, 0), Ipv6OptionsHeader(kIpv6DestOptions, 1),
                       Ipv6RoutingHeader({Ipv6Addr("2001:db8::a"), Ipv6Addr("2001:db8::b")})};
  Ipv6Header frag6;
  frag6.extensions = {Ipv6FragmentHeader(0, true)};
  Ipv6Header later_frag6;
  later_frag6.extensions = {Ipv6FragmentHeader(10, false)};
  Ipv6Header icmp6{.protocol = kIpProtoIcmpV6};
  Ipv6Header udp6{.protocol = kIpProtoUdp};
  Ipv6Header nonext6{.protocol = kIpv6NoNext};
  nonext6.extensions = {Ipv6OptionsHeader(kIpv6DestOptions, 2)};

  return {
      {"eth_ipv4_tcp", LinkType::kEthernet, Ethernet(kEtherTypeIpv4, TcpIpv4Packet(100))},
      {"eth_ipv4_udp", LinkType::kEthernet, EthernetIpv4(udp4, UdpDatagram(5353, 53, 20))},
      {"eth_ipv4_icmp", LinkType::kEthernet, EthernetIpv4(icmp4, IcmpEcho(8, 1, 2, 32))},
      {"eth_ipv4_options", LinkType::kEthernet, EthernetIpv4(opts4, TcpSegment(1, 2, kTcpAck, 9))},
      {"eth_ipv4_tcp_options", LinkType::kEthernet,
       EthernetIpv4({}, TcpSegment(1, 2, kTcpSyn, 0, 10))},
      {"eth_ipv4_first_fragment", LinkType::kEthernet,
       EthernetIpv4(first_frag4, TcpSegment(1, 2, kTcpAck, 40))},
      {"eth_ipv4_later_fragment", LinkType::kEthernet, EthernetIpv4(later_frag4, PayloadBytes(40))},
      {"eth_ipv4_gre", LinkType::kEthernet, EthernetIpv4({.protocol = 47}, PayloadBytes(12))},
      {"eth_vlan_ipv4_tcp", LinkType::kEthernet,
       EthernetIpv4({}, TcpSegment(1, 2, kTcpAck, 10), {{kTpidDot1Q, 7}})},
      {"eth_qinq_ipv6_udp", LinkType::kEthernet,
       EthernetIpv6(udp6, UdpDatagram(1, 2, 10), {{kTpidDot1Ad, 7}, {kTpidDot1Q, 8}})},
      {"eth_ipv6_tcp", LinkType::kEthernet, Ethernet(kEtherTypeIpv6, TcpIpv6Packet(10))},
      {"eth_ipv6_ext_chain", LinkType::kEthernet,
       EthernetIpv6(chain6, TcpSegment(1, 2, kTcpAck, 10))},
      {"eth_ipv6_first_fragment", LinkType::kEthernet,
       EthernetIpv6(frag6, TcpSegment(1, 2, kTcpAck, 16))},
      {"eth_ipv6_later_fragment", LinkType::kEthernet, EthernetIpv6(later_frag6, PayloadBytes(16))},
      {"eth_ipv6_no_next_header", LinkType::kEthernet, EthernetIpv6(nonext6, {})},
      {"eth_icmpv6", LinkType::kEthernet, EthernetIpv6(icmp6, IcmpEcho(128, 1, 1, 8))},
      {"raw_ipv4", LinkType::kRaw, TcpIpv4Packet(10)},
      {"raw_ipv6", LinkType::kRaw, TcpIpv6Packet(10)},
      {"ipv4", LinkType::kIpv4, TcpIpv4Packet(10)},
      {"ipv6", LinkType::kIpv6, TcpIpv6Packet(10)},
      {"sll_ipv4", LinkType::kLinuxSll, LinuxSll(kEtherTypeIpv4, TcpIpv4Packet(10))},
      {"sll2_ipv6", LinkType::kLinuxSll2, LinuxSll2(kEtherTypeIpv6, TcpIpv6Packet(10))},
      {"null_ipv4", LinkType::kNull, NullLoopback(kBsdAfInet, TcpIpv4Packet(10))},
      {"loop_ipv6", LinkType::kLoop, NullLoopback(24, TcpIpv6Packet(10), false)},
      {"ppp_hdlc_ipv4", LinkType::kPpp, Ppp(kPppIpv4, TcpIpv4Packet(10), true)},
      {"ppp_ipv6", LinkType::kPpp, Ppp(kPppIpv6, TcpIpv6Packet(10), false)},
  };
}

TEST(PacketParserTest, SamplesParse) {
  for (const Sample& s : Samples()) {
    ParseResult r = Parse(s.frame, s.link);
    EXPECT_EQ(r.status, ParseStatus::kOk) << s.name;
    EXPECT_LE(r.packet.payload_offset, s.frame.size()) << s.name;
    EXPECT_EQ(r.packet.payload_offset + r.packet.payload_length, s.frame.size()) << s.name;
  }
}

// A snaplen cut anywhere: the wire length is the whole frame, the capture holds
// `captured` bytes. Below some length (the headers the parser must read) the
// frame is malformed; from there on the parse says exactly what the parse of
// the whole frame says. Everything up to the payload is always enough.
TEST(PacketParserTest, EveryCaptureCutOfEverySample) {
  for (const Sample& s : Samples()) {
    SCOPED_TRACE(s.name);
    const ParseResult full = Parse(s.frame, s.link);
    ASSERT_EQ(full.status, ParseStatus::kOk);
    std::optional<size_t> first_ok;
    for (size_t captured = 0; captured <= s.frame.size(); ++captured) {
      SCOPED_TRACE(captured);
      ParseResult r =
          ParseCaptured(s.frame, captured, static_cast<uint32_t>(s.frame.size()), s.link);
      ASSERT_LT(r.status, ParseStatus::kCount);
      EXPECT_EQ(r.packet.wire_length, s.frame.size());
      if (r.status == ParseStatus::kOk) {
        if (!first_ok) first_ok = captured;
        ExpectSameParse(r.packet, full.packet);
      } else {
        EXPECT_TRUE(IsMalformed(r.status)) << ParseStatusName(r.status);
        EXPECT_FALSE(first_ok.has_value()) << "malformed again after ok at " << *first_ok;
      }
    }
    ASSERT_TRUE(first_ok.has_value());
    EXPECT_LE(*first_ok, full.packet.payload_offset);
    // At least the IP header (and for TCP/UDP/ICMP the fixed transport header)
    // must be there.
    size_t needed = full.packet.l3_offset + (full.packet.key.ip_version == 4 ? 20u : 40u);
    if (full.packet.key.protocol == kProtoTcp && full.packet.l4_offset != 0) {
      needed = full.packet.l4_offset + 20u;
    }
    if ((full.packet.key.protocol == kProtoUdp || full.packet.key.protocol == kProtoIcmp ||
         full.packet.key.protocol == kProtoIcmpV6) &&
        full.packet.l4_offset != 0) {
      needed = full.packet.l4_offset + 8u;
    }
    EXPECT_GE(*first_ok, needed);
  }
}

// The frame itself cut short (wire length = captured length): only the whole
// frame is valid, since the IP length field then points past the end.
TEST(PacketParserTest, EveryFrameCutOfEverySample) {
  for (const Sample& s : Samples()) {
    SCOPED_TRACE(s.name);
    for (size_t length = 0; length <= s.frame.size(); ++length) {
      SCOPED_TRACE(length);
      ParseResult r = ParseCaptured(s.frame, length, static_cast<uint32_t>(length), s.link);
      ASSERT_LT(r.status, ParseStatus::kCount);
      if (length == s.frame.size()) {
        EXPECT_EQ(r.status, ParseStatus::kOk);
      } else {
        EXPECT_TRUE(IsMalformed(r.status)) << ParseStatusName(r.status);
      }
    }
  }
}

TEST(PacketParserTest, CaptureCutStatusesOfIpv4Tcp) {
  const Frame frame =
      test_frames::Ethernet(test_frames::kEtherTypeIpv4, test_frames::TcpIpv4Packet(100));
  const uint32_t wire = static_cast<uint32_t>(frame.size());
  for (size_t captured = 0; captured <= frame.size(); ++captured) {
    ParseStatus expected = captured < 14   ? ParseStatus::kTruncatedLinkHeader
                           : captured < 34 ? ParseStatus::kTruncatedIpHeader
                           : captured < 54 ? ParseStatus::kTruncatedL4Header
                                           : ParseStatus::kOk;
    EXPECT_EQ(ParseCaptured(frame, captured, wire, LinkType::kEthernet).status, expected)
        << "captured " << captured;
    // Cut frame (wire = captured): once the IP header is there its total
    // length points past the end.
    ParseStatus expected_cut = captured < 14             ? ParseStatus::kTruncatedLinkHeader
                               : captured < 34           ? ParseStatus::kTruncatedIpHeader
                               : captured < frame.size() ? ParseStatus::kBadIpTotalLength
                                                         : ParseStatus::kOk;
    EXPECT_EQ(
        ParseCaptured(frame, captured, static_cast<uint32_t>(captured), LinkType::kEthernet).status,
        expected_cut)
        << "length " << captured;
  }
}

TEST(PacketParserTest, CaptureCutStatusesOfIpv6ExtensionChain) {
  test_frames::Ipv6Header ip;
  ip.extensions = {
      test_frames::Ipv6OptionsHeader(test_frames::kIpv6HopByHop, 0),     // [54, 62)
      test_frames::Ipv6OptionsHeader(test_frames::kIpv6DestOptions, 1),  // [62, 78)
      test_frames::Ipv6RoutingHeader({test_frames::Ipv6Addr("2001:db8::a"),
                                      test_frames::Ipv6Addr("2001:db8::b")}),  // [78, 118)
  };
  const Frame frame = EthernetIpv6(ip, test_frames::TcpSegment(1, 2, test_frames::kTcpAck, 10));
  const uint32_t wire = static_cast<uint32_t>(frame.size());
  for (size_t captured = 0; captured <= frame.size(); ++captured) {
    ParseStatus expected = captured < 14   ? ParseStatus::kTruncatedLinkHeader
                           : captured < 54 ? ParseStatus::kTruncatedIpHeader
                           // The walk reads each header's first 8 bytes; the
                           // routing header's are in at 86.
                           : captured < 86  ? ParseStatus::kBadIpv6ExtensionHeader
                           : captured < 138 ? ParseStatus::kTruncatedL4Header
                                            : ParseStatus::kOk;
    EXPECT_EQ(ParseCaptured(frame, captured, wire, LinkType::kEthernet).status, expected)
        << "captured " << captured;
  }
}

TEST(PacketParserTest, SnaplenCutCaptureUsesIpLengths) {
  const Frame frame =
      test_frames::Ethernet(test_frames::kEtherTypeIpv4, test_frames::TcpIpv4Packet(1400));
  ParseResult r =
      ParseCaptured(frame, 64, static_cast<uint32_t>(frame.size()), LinkType::kEthernet);
  ASSERT_EQ(r.status, ParseStatus::kOk);
  EXPECT_EQ(r.packet.wire_length, frame.size());
  EXPECT_EQ(r.packet.payload_offset, 54);
  EXPECT_EQ(r.packet.payload_length, 1400u);
  EXPECT_EQ(FormatFlowKey(r.packet.key), "192.0.2.1:49152>198.51.100.2:80/tcp");

  const Frame frame6 =
      test_frames::Ethernet(test_frames::kEtherTypeIpv6, test_frames::TcpIpv6Packet(1400));
  ParseResult r6 =
      ParseCaptured(frame6, 74, static_cast<uint32_t>(frame6.size()), LinkType::kEthernet);
  ASSERT_EQ(r6.status, ParseStatus::kOk);
  EXPECT_EQ(r6.packet.payload_length, 1400u);
}

TEST(PacketParserTest, WireLengthBoundsIpLengthEvenWhenMoreIsCaptured) {
  // A broken record claims more captured bytes than the wire carried: the
  // parser trusts the smaller, so the IP packet no longer fits.
  const Frame frame =
      test_frames::Ethernet(test_frames::kEtherTypeIpv4, test_frames::TcpIpv4Packet(100));
  ParseResult r = ParseCaptured(frame, frame.size(), 60, LinkType::kEthernet);
  EXPECT_EQ(r.status, ParseStatus::kBadIpTotalLength);
  EXPECT_EQ(r.packet.wire_length, 60u);
  // Below the headers the capture counts as cut there.
  EXPECT_EQ(ParseCaptured(frame, frame.size(), 20, LinkType::kEthernet).status,
            ParseStatus::kTruncatedIpHeader);
  EXPECT_EQ(ParseCaptured(frame, frame.size(), 0, LinkType::kEthernet).status,
            ParseStatus::kTruncatedLinkHeader);
  // When the wire length still covers the IP packet, the extra captured bytes
  // are ignored.
  Frame longer = frame;
  longer.resize(frame.size() + 10, 0xEE);
  ParseResult ok = ParseCaptured(longer, longer.size(), static_cast<uint32_t>(frame.size()),
                                 LinkType::kEthernet);
  ASSERT_EQ(ok.status, ParseStatus::kOk);
  EXPECT_EQ(ok.packet.wire_length, frame.size());
  EXPECT_EQ(ok.packet.payload_length, 100u);
}

TEST(PacketParserTest, FailedParseResetsPreviousOutput) {
  ParsedPacket p;
  ASSERT_EQ(ParsePacket(nullptr, 0, 0, LinkType::kEthernet, &p), ParseStatus::kTruncatedLinkHeader);
  const Frame good =
      test_frames::Ethernet(test_frames::kEtherTypeIpv4, test_frames::TcpIpv4Packet(10));
  ASSERT_EQ(ParsePacket(good.data(), good.size(), static_cast<uint32_t>(good.size()),
                        LinkType::kEthernet, &p),
            ParseStatus::kOk);
  const Frame arp =
      test_frames::Ethernet(test_frames::kEtherTypeArp, test_frames::ArpRequestBody());
  ASSERT_EQ(ParsePacket(arp.data(), arp.size(), static_cast<uint32_t>(arp.size()),
                        LinkType::kEthernet, &p),
            ParseStatus::kNotIp);
  EXPECT_EQ(p.key.ip_version, 0);
  EXPECT_EQ(p.key.src_port, 0);
  EXPECT_EQ(p.l4_offset, 0);
  EXPECT_EQ(p.payload_length, 0u);
}

// ------------------------------------------------------------- randomized

// Checks what every successful parse must satisfy, whatever the input.
void ExpectConsistent(const ParseResult& r, size_t captured, uint32_t wire) {
  ASSERT_LT(r.status, ParseStatus::kCount);
  EXPECT_EQ(r.packet.wire_length, wire);
  if (r.status != ParseStatus::kOk) return;
  const ParsedPacket& p = r.packet;
  const size_t available = std::min<size_t>(captured, wire);
  ASSERT_TRUE(p.key.ip_version == 4 || p.key.ip_version == 6);
  const size_t ip_header = p.key.ip_version == 4 ? 20 : 40;
  // The fixed headers the parser read were captured; the payload (and TCP or
  // IPv6 options) may be cut, but the payload ends where the IP packet ends.
  EXPECT_LE(p.l3_offset + ip_header, available);
  EXPECT_GE(p.payload_offset, p.l3_offset + ip_header);
  EXPECT_LE(p.payload_offset + uint64_t{p.payload_length}, wire);
  if (p.l4_offset != 0) {
    EXPECT_GE(p.l4_offset, p.l3_offset + ip_header);
    EXPECT_LE(p.l4_offset, p.payload_offset);
    size_t l4_fixed = p.key.protocol == kProtoTcp ? 20
                      : (p.key.protocol == kProtoUdp || p.key.protocol == kProtoIcmp ||
                         p.key.protocol == kProtoIcmpV6)
                          ? 8
                          : 0;
    // Only a header the parser reads must be captured (an unknown protocol's
    // may start past a snaplen cut inside the IPv6 extension headers).
    if (l4_fixed > 0) {
      EXPECT_LE(p.l4_offset + l4_fixed, available);
    }
    const size_t l4_header = p.payload_offset - p.l4_offset;
    if (p.key.protocol == kProtoTcp) {
      EXPECT_TRUE(l4_header >= 20 && l4_header <= 60 && l4_header % 4 == 0) << l4_header;
    } else {
      EXPECT_EQ(l4_header, l4_fixed);
    }
  } else {
    EXPECT_TRUE(p.is_later_fragment);
  }
  if (p.is_later_fragment) {
    EXPECT_TRUE(p.is_fragment);
    EXPECT_EQ(p.key.src_port, 0);
    EXPECT_EQ(p.key.dst_port, 0);
  }
  EXPECT_EQ(p.key.reserved[0], 0);
  EXPECT_EQ(p.key.reserved[1], 0);
}

TEST(PacketParserTest, RandomMutationsNeverCrash) {
  const std::vector<Sample> samples = Samples();
  std::mt19937 rng(20240611);
  std::vector<int> status_counts(static_cast<size_t>(ParseStatus::kCount), 0);
  constexpr int kIterations = 100'000;
  for (int i = 0; i < kIterations; ++i) {
    const Sample& s = samples[rng() % samples.size()];
    Frame f = s.frame;
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations; ++m) {
      switch (rng() % 5) {
        case 0:  // flip a bit
          f[rng() % f.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 1:  // random byte, biased to the headers
          f[rng() % std::min<size_t>(f.size(), 80)] = static_cast<uint8_t>(rng());
          break;
        case 2:  // interesting byte values
          f[rng() % f.size()] = std::array<uint8_t, 6>{0, 1, 0x0F, 0x7F, 0x80, 0xFF}[rng() % 6];
          break;
        case 3:  // cut
          f.resize(1 + rng() % f.size());
          break;
        case 4:  // append garbage
          for (uint32_t n = rng() % 32; n > 0; --n) f.push_back(static_cast<uint8_t>(rng()));
          break;
      }
      if (f.empty()) f.push_back(0);
    }
    uint32_t wire;
    switch (rng() % 3) {
      case 0:
        wire = static_cast<uint32_t>(f.size());
        break;
      case 1:
        wire = static_cast<uint32_t>(f.size() + rng() % 2000);
        break;
      default:
        wire = static_cast<uint32_t>(rng() % (f.size() + 1));
        break;
    }
    const LinkType link = rng() % 8 == 0 ? samples[rng() % samples.size()].link : s.link;
    ParseResult r = ParseCaptured(f, f.size(), wire, link);
    ExpectConsistent(r, f.size(), wire);
    if (::testing::Test::HasFailure()) {
      FAIL() << "iteration " << i << " sample " << s.name;
    }
    ++status_counts[static_cast<size_t>(r.status)];
  }
  // The mutations reach both the good and the bad paths.
  EXPECT_GT(status_counts[static_cast<size_t>(ParseStatus::kOk)], kIterations / 10);
  int distinct = 0;
  for (int c : status_counts) distinct += c > 0 ? 1 : 0;
  EXPECT_GE(distinct, 9);
}

}  // namespace
}  // namespace shroud
