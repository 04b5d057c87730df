// Tests of the gateway classifier: prefix/port/protocol parsing, rule matching
// (edges, order, direction), Hyperscan signatures (anchoring, ordering,
// per-worker scratch) and the per-flow decision state machine.
#include "dataplane/core/classifier.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shroud/flow_key.h"

namespace shroud {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// "192.0.2.1" or "2001:db8::1" into a FlowKey address slot; returns the version.
uint8_t SetAddr(const char* text, std::array<uint8_t, 16>* out) {
  out->fill(0);
  if (inet_pton(AF_INET, text, out->data()) == 1) return 4;
  if (inet_pton(AF_INET6, text, out->data()) == 1) return 6;
  ADD_FAILURE() << "bad test address " << text;
  return 0;
}

FlowKey Key(const char* src, uint16_t sport, const char* dst, uint16_t dport,
            uint8_t protocol = kProtoTcp) {
  FlowKey k;
  k.ip_version = SetAddr(src, &k.src_addr);
  EXPECT_EQ(SetAddr(dst, &k.dst_addr), k.ip_version);
  k.src_port = sport;
  k.dst_port = dport;
  k.protocol = protocol;
  return k;
}

std::vector<uint8_t> Bytes(std::string_view s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// The start of an unencrypted QEMU migration stream: QEVM, version 3, then
// QEMU_VM_CONFIGURATION (7) and a section name, as QEMU writes it.
std::vector<uint8_t> QemuStreamStart() {
  std::vector<uint8_t> p = {'Q', 'E', 'V', 'M', 0, 0, 0, 3, 7, 0, 0, 0, 6};
  for (char c : std::string("pc-q35")) p.push_back(static_cast<uint8_t>(c));
  p.resize(1448, 0x5a);
  return p;
}

// MultiFDInit_t: magic, version 1, 16-byte UUID, channel id.
std::vector<uint8_t> MultifdStart() {
  std::vector<uint8_t> p = {0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1};
  for (int i = 0; i < 16; ++i) p.push_back(static_cast<uint8_t>(0xa0 + i));
  p.push_back(2);
  return p;
}

IpPrefix Prefix(std::string_view text) {
  absl::StatusOr<IpPrefix> p = ParseIpPrefix(text);
  EXPECT_TRUE(p.ok()) << text << ": " << p.status();
  return p.ok() ? *p : IpPrefix{};
}

PortRange Ports(std::string_view text) {
  absl::StatusOr<PortRange> p = ParsePortRange(text);
  EXPECT_TRUE(p.ok()) << text << ": " << p.status();
  return p.ok() ? *p : PortRange{};
}

bool Contains(const IpPrefix& prefix, const char* address) {
  std::array<uint8_t, 16> a;
  uint8_t v = SetAddr(address, &a);
  return prefix.Contains(a, v);
}

// --- classes, prefixes, ports, protocols -----------------------------------

TEST(TrafficClassTest, NamesRoundTrip) {
  for (TrafficClass c : {TrafficClass::kDefault, TrafficClass::kMigration, TrafficClass::kChaff}) {
    absl::StatusOr<TrafficClass> parsed = ParseTrafficClass(TrafficClassName(c));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, c);
  }
  absl::StatusOr<TrafficClass> bad = ParseTrafficClass("migrate");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(Msg(bad.status()), HasSubstr("\"migrate\""));
  EXPECT_THAT(Msg(bad.status()), HasSubstr("\"migration\""));
}

TEST(IpPrefixTest, ParsesBothFamiliesAndBareAddresses) {
  IpPrefix v4 = Prefix("192.0.2.0/24");
  EXPECT_EQ(v4.version, 4);
  EXPECT_EQ(v4.length, 24);
  EXPECT_EQ(v4.ToString(), "192.0.2.0/24");
  IpPrefix host = Prefix("198.51.100.7");
  EXPECT_EQ(host.length, 32);
  IpPrefix v6 = Prefix("2001:db8::/32");
  EXPECT_EQ(v6.version, 6);
  EXPECT_EQ(v6.length, 32);
  EXPECT_EQ(Prefix("2001:db8::1").length, 128);
  EXPECT_EQ(Prefix("::/0").length, 0);
  EXPECT_EQ(IpPrefix{}.ToString(), "any");
}

TEST(IpPrefixTest, RejectsMalformedPrefixesWithTheReason) {
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case& c : {
           Case{"192.0.2.1/24", "did you mean 192.0.2.0/24?"},
           Case{"2001:db8::1/64", "did you mean 2001:db8::/64?"},
           Case{"192.0.2.0/33", "prefix length must be 0-32"},
           Case{"2001:db8::/129", "prefix length must be 0-128"},
           Case{"192.0.2.0/", "missing prefix length"},
           Case{"192.0.2.0/+24", "prefix length"},
           Case{"192.0.2.0/ 24", "prefix length"},
           Case{"300.0.2.0/24", "is not an IPv4 or IPv6 address"},
           Case{"192.0.2/24", "is not an IPv4 or IPv6 address"},
           Case{"", "is not an IPv4 or IPv6 address"},
           Case{"example.com", "is not an IPv4 or IPv6 address"},
       }) {
    absl::StatusOr<IpPrefix> p = ParseIpPrefix(c.text);
    ASSERT_FALSE(p.ok()) << c.text;
    EXPECT_THAT(Msg(p.status()), HasSubstr(c.message)) << c.text;
  }
}

TEST(IpPrefixTest, ContainsAtTheEdges) {
  IpPrefix all4 = Prefix("0.0.0.0/0");
  EXPECT_TRUE(Contains(all4, "0.0.0.0"));
  EXPECT_TRUE(Contains(all4, "255.255.255.255"));
  EXPECT_FALSE(Contains(all4, "::"));  // /0 of one family is not the other family

  IpPrefix host = Prefix("192.0.2.7/32");
  EXPECT_TRUE(Contains(host, "192.0.2.7"));
  EXPECT_FALSE(Contains(host, "192.0.2.6"));
  EXPECT_FALSE(Contains(host, "192.0.2.8"));

  // Not byte-aligned: 192.0.2.128/25 is .128-.255.
  IpPrefix half = Prefix("192.0.2.128/25");
  EXPECT_FALSE(Contains(half, "192.0.2.127"));
  EXPECT_TRUE(Contains(half, "192.0.2.128"));
  EXPECT_TRUE(Contains(half, "192.0.2.255"));
  EXPECT_FALSE(Contains(half, "192.0.3.128"));

  IpPrefix top = Prefix("128.0.0.0/1");
  EXPECT_TRUE(Contains(top, "128.0.0.0"));
  EXPECT_FALSE(Contains(top, "127.255.255.255"));

  IpPrefix all6 = Prefix("::/0");
  EXPECT_TRUE(Contains(all6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_FALSE(Contains(all6, "0.0.0.0"));

  IpPrefix host6 = Prefix("2001:db8::1/128");
  EXPECT_TRUE(Contains(host6, "2001:db8::1"));
  EXPECT_FALSE(Contains(host6, "2001:db8::0"));
  EXPECT_FALSE(Contains(host6, "2001:db8::2"));

  // The 64-bit word boundary of the compiled matcher.
  IpPrefix p65 = Prefix("2001:db8:0:1:8000::/65");
  EXPECT_TRUE(Contains(p65, "2001:db8:0:1:8000::1"));
  EXPECT_FALSE(Contains(p65, "2001:db8:0:1:7fff:ffff:ffff:ffff"));
}

TEST(PortRangeTest, ParsesRangesAndSinglePorts) {
  PortRange r = Ports("49152-49215");
  EXPECT_EQ(r.first, 49152);
  EXPECT_EQ(r.last, 49215);
  EXPECT_FALSE(r.Contains(49151));
  EXPECT_TRUE(r.Contains(49152));
  EXPECT_TRUE(r.Contains(49215));
  EXPECT_FALSE(r.Contains(49216));
  EXPECT_EQ(r.ToString(), "49152-49215");
  PortRange one = Ports("16514");
  EXPECT_EQ(one.first, 16514);
  EXPECT_EQ(one.last, 16514);
  EXPECT_EQ(one.ToString(), "16514");
  EXPECT_TRUE(Ports("0-65535").IsAny());
  EXPECT_EQ(Ports(" 1 - 2 ").last, 2);
}

TEST(PortRangeTest, RejectsBadRanges) {
  absl::StatusOr<PortRange> reversed = ParsePortRange("9-1");
  ASSERT_FALSE(reversed.ok());
  EXPECT_THAT(Msg(reversed.status()), HasSubstr("is empty: 9 > 1"));
  for (const char* text : {"65536", "-1", "1-", "-", "", "a-b", "80,443", "1-2-3", "0x50"}) {
    absl::StatusOr<PortRange> r = ParsePortRange(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_THAT(Msg(r.status()), HasSubstr("port")) << text;
  }
}

TEST(ProtocolTest, NamesAndNumbers) {
  EXPECT_EQ(*ParseProtocol("tcp"), kProtoTcp);
  EXPECT_EQ(*ParseProtocol("UDP"), kProtoUdp);
  EXPECT_EQ(*ParseProtocol("icmp6"), kProtoIcmpV6);
  EXPECT_EQ(*ParseProtocol("any"), kAnyProtocol);
  EXPECT_EQ(*ParseProtocol("47"), 47);
  EXPECT_EQ(*ParseProtocol("0"), 0);
  for (const char* text : {"256", "tpc", "", "-6"}) {
    absl::StatusOr<int> p = ParseProtocol(text);
    ASSERT_FALSE(p.ok()) << text;
    EXPECT_THAT(Msg(p.status()), HasSubstr("unknown protocol")) << text;
  }
}

// --- rules -----------------------------------------------------------------

ClassRule MigrationPorts(std::string name = "qemu") {
  ClassRule r;
  r.name = std::move(name);
  r.traffic_class = TrafficClass::kMigration;
  r.protocol = kProtoTcp;
  r.dst_ports = {49152, 49215};
  return r;
}

RuleSet Compile(const std::vector<ClassRule>& rules) {
  absl::StatusOr<RuleSet> set = RuleSet::Compile(rules);
  EXPECT_TRUE(set.ok()) << set.status();
  return set.ok() ? *std::move(set) : RuleSet();
}

TEST(RuleSetTest, PortRangeEdges) {
  RuleSet set = Compile({MigrationPorts()});
  EXPECT_FALSE(set.Match(Key("192.0.2.1", 40000, "198.51.100.1", 49151)).matched());
  EXPECT_TRUE(set.Match(Key("192.0.2.1", 40000, "198.51.100.1", 49152)).matched());
  EXPECT_TRUE(set.Match(Key("192.0.2.1", 40000, "198.51.100.1", 49215)).matched());
  EXPECT_FALSE(set.Match(Key("192.0.2.1", 40000, "198.51.100.1", 49216)).matched());
  // Wrong protocol.
  EXPECT_FALSE(set.Match(Key("192.0.2.1", 40000, "198.51.100.1", 49152, kProtoUdp)).matched());
}

TEST(RuleSetTest, ForwardMatchIsTheDataDirection) {
  RuleSet set = Compile({MigrationPorts()});
  RuleMatch m = set.Match(Key("192.0.2.1", 40000, "198.51.100.1", 49152));
  ASSERT_TRUE(m.matched());
  EXPECT_EQ(m.rule, 0);
  EXPECT_EQ(m.traffic_class, TrafficClass::kMigration);
  EXPECT_FALSE(m.reverse);
}

TEST(RuleSetTest, BidirectionalRuleMatchesTheAckDirectionAsReverse) {
  FlowKey data = Key("192.0.2.1", 40000, "198.51.100.1", 49152);
  RuleSet both = Compile({MigrationPorts()});
  RuleMatch ack = both.Match(data.Reversed());
  ASSERT_TRUE(ack.matched());
  EXPECT_EQ(ack.traffic_class, TrafficClass::kMigration);
  EXPECT_TRUE(ack.reverse);

  ClassRule one_way = MigrationPorts();
  one_way.bidirectional = false;
  RuleSet forward_only = Compile({one_way});
  EXPECT_TRUE(forward_only.Match(data).matched());
  EXPECT_FALSE(forward_only.Match(data.Reversed()).matched());
}

TEST(RuleSetTest, FirstMatchingRuleWins) {
  ClassRule chaff;
  chaff.name = "chaff-host";
  chaff.traffic_class = TrafficClass::kChaff;
  chaff.dst = Prefix("198.51.100.0/24");
  ClassRule exclude = MigrationPorts("not-this-host");
  exclude.traffic_class = TrafficClass::kDefault;
  exclude.dst = Prefix("198.51.100.9/32");
  FlowKey k = Key("192.0.2.1", 40000, "198.51.100.1", 49160);

  RuleMatch m = Compile({MigrationPorts(), chaff}).Match(k);
  EXPECT_EQ(m.rule, 0);
  EXPECT_EQ(m.traffic_class, TrafficClass::kMigration);
  m = Compile({chaff, MigrationPorts()}).Match(k);
  EXPECT_EQ(m.rule, 0);
  EXPECT_EQ(m.traffic_class, TrafficClass::kChaff);

  // An earlier default-class rule carves an exception out of a later one.
  RuleSet with_exception = Compile({exclude, MigrationPorts()});
  RuleMatch excluded = with_exception.Match(Key("192.0.2.1", 40000, "198.51.100.9", 49160));
  EXPECT_TRUE(excluded.matched());
  EXPECT_EQ(excluded.rule, 0);
  EXPECT_EQ(excluded.traffic_class, TrafficClass::kDefault);
  EXPECT_EQ(with_exception.Match(k).rule, 1);
}

TEST(RuleSetTest, EarlierRuleReverseBeatsLaterRuleForward) {
  // Key 192.0.2.1:49160 -> 198.51.100.1:443. Rule 0 (migration, dst ports
  // 49152-49215) matches it only reversed; rule 1 (chaff, dst 443) forward.
  ClassRule https;
  https.name = "https-chaff";
  https.traffic_class = TrafficClass::kChaff;
  https.protocol = kProtoTcp;
  https.dst_ports = {443, 443};
  RuleMatch m =
      Compile({MigrationPorts(), https}).Match(Key("192.0.2.1", 49160, "198.51.100.1", 443));
  EXPECT_EQ(m.rule, 0);
  EXPECT_TRUE(m.reverse);
}

TEST(RuleSetTest, PrefixesSelectFamilyAndHosts) {
  ClassRule v4;
  v4.name = "v4-peer";
  v4.dst = Prefix("203.0.113.0/24");
  ClassRule v6;
  v6.name = "v6-any";
  v6.traffic_class = TrafficClass::kChaff;
  v6.src = Prefix("::/0");
  v6.bidirectional = false;
  RuleSet set = Compile({v4, v6});
  EXPECT_EQ(set.Match(Key("192.0.2.1", 1, "203.0.113.255", 2)).rule, 0);
  EXPECT_FALSE(set.Match(Key("192.0.2.1", 1, "203.0.114.0", 2)).matched());
  RuleMatch m6 = set.Match(Key("2001:db8::1", 1, "2001:db8::2", 2));
  EXPECT_EQ(m6.rule, 1);
  // An IPv6 address whose first four bytes equal 203.0.113.x must not match
  // the IPv4 prefix (FlowKey uses the same bytes for both families).
  EXPECT_EQ(set.Match(Key("2001:db8::1", 1, "cb00:7100::1", 2)).rule, 1);

  ClassRule host6;
  host6.name = "v6-host";
  host6.src = Prefix("2001:db8::1/128");
  host6.dst = Prefix("2001:db8:1::/48");
  host6.bidirectional = false;
  RuleSet h = Compile({host6});
  EXPECT_TRUE(h.Match(Key("2001:db8::1", 1, "2001:db8:1:ffff::9", 2)).matched());
  EXPECT_FALSE(h.Match(Key("2001:db8::2", 1, "2001:db8:1::9", 2)).matched());
  EXPECT_FALSE(h.Match(Key("2001:db8::1", 1, "2001:db8:2::9", 2)).matched());
}

TEST(RuleSetTest, CompiledMasksAgreeWithPrefixContains) {
  // The matcher compares 64-bit words under masks; IpPrefix::Contains goes
  // byte by byte. Random prefixes of every length must agree on addresses
  // just inside and just outside them.
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> byte(0, 255);
  int inside = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    const bool v6 = trial % 2 == 1;
    const int max_length = v6 ? 128 : 32;
    IpPrefix prefix;
    prefix.version = v6 ? 6 : 4;
    prefix.length = static_cast<uint8_t>(trial / 2 % (max_length + 1));
    FlowKey key;
    key.ip_version = prefix.version;
    key.protocol = kProtoTcp;
    for (int i = 0; i < max_length / 8; ++i) {
      key.src_addr[i] = static_cast<uint8_t>(byte(rng));
      key.dst_addr[i] = static_cast<uint8_t>(byte(rng));
    }
    // The prefix is the key's source masked, so the key is inside; flipping
    // one bit (inside or outside the prefix) moves it in or out.
    for (int i = 0; i < 16; ++i) {
      int bits = std::clamp(prefix.length - 8 * i, 0, 8);
      prefix.addr[i] = key.src_addr[i] & static_cast<uint8_t>(0xFF00 >> bits);
    }
    int flip = std::uniform_int_distribution<int>(0, max_length - 1)(rng);
    key.src_addr[flip / 8] ^= static_cast<uint8_t>(0x80 >> (flip % 8));
    ClassRule rule;
    rule.name = "p";
    rule.src = prefix;
    rule.bidirectional = false;
    RuleSet set = Compile({rule});
    bool contains = prefix.Contains(key.src_addr, key.ip_version);
    EXPECT_EQ(contains, flip >= prefix.length) << prefix.ToString() << " bit " << flip;
    EXPECT_EQ(set.Match(key).matched(), contains) << prefix.ToString() << " bit " << flip;
    inside += contains ? 1 : 0;
  }
  EXPECT_GT(inside, 100);
  EXPECT_LT(inside, 1900);
}

TEST(RuleSetTest, PortRulesOnlyMatchTcpAndUdp) {
  // The parser stores ICMP type/code in the port fields (echo request: 8<<8).
  ClassRule r;
  r.name = "port-2048";
  r.src_ports = {2048, 2048};
  r.bidirectional = false;
  RuleSet set = Compile({r});
  EXPECT_TRUE(set.Match(Key("192.0.2.1", 2048, "192.0.2.2", 1, kProtoTcp)).matched());
  EXPECT_TRUE(set.Match(Key("192.0.2.1", 2048, "192.0.2.2", 1, kProtoUdp)).matched());
  EXPECT_FALSE(set.Match(Key("192.0.2.1", 2048, "192.0.2.2", 1, kProtoIcmp)).matched());
}

TEST(RuleSetTest, EmptyRuleSetMatchesNothing) {
  RuleSet set;
  RuleMatch m = set.Match(Key("192.0.2.1", 1, "192.0.2.2", 49152));
  EXPECT_FALSE(m.matched());
  EXPECT_EQ(m.traffic_class, TrafficClass::kDefault);
}

TEST(RuleSetTest, CompileRejectsInconsistentRulesNamingTheField) {
  ClassRule mixed = MigrationPorts("mixed");
  mixed.src = Prefix("192.0.2.0/24");
  mixed.dst = Prefix("2001:db8::/32");
  absl::StatusOr<RuleSet> s = RuleSet::Compile({MigrationPorts(), mixed});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(Msg(s.status()), HasSubstr("rule 1 (\"mixed\"): dst:"));
  EXPECT_THAT(Msg(s.status()), HasSubstr("one address family"));

  ClassRule icmp_ports = MigrationPorts("icmp");
  icmp_ports.protocol = kProtoIcmp;
  std::optional<RuleProblem> p = CheckClassRule(icmp_ports);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->field, "dst_ports");
  EXPECT_THAT(p->message, HasSubstr("only apply to tcp and udp"));
  EXPECT_FALSE(CheckClassRule(MigrationPorts()).has_value());
}

// --- signatures ------------------------------------------------------------

SignatureDatabase CompileSignatures(std::vector<SignatureSpec> specs) {
  absl::StatusOr<SignatureDatabase> db = SignatureDatabase::Compile(std::move(specs));
  EXPECT_TRUE(db.ok()) << db.status();
  return db.ok() ? *std::move(db) : SignatureDatabase();
}

SignatureScanner NewScanner(const SignatureDatabase& db) {
  absl::StatusOr<SignatureScanner> s = db.NewScanner();
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

TEST(SignatureTest, QemuHeaderAtOffsetZeroMatches) {
  SignatureDatabase db = CompileSignatures(BuiltinSignatures());
  SignatureScanner scanner = NewScanner(db);
  std::optional<SignatureMatch> m = scanner.Scan(QemuStreamStart(), /*stream_start=*/true);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->name, "qemu-migration-stream");
  EXPECT_EQ(m->traffic_class, TrafficClass::kMigration);
  EXPECT_EQ(m->signature, 0u);
  // Exactly the 8 header bytes suffice.
  std::vector<uint8_t> stream = QemuStreamStart();
  std::vector<uint8_t> header(stream.begin(), stream.begin() + 8);
  EXPECT_TRUE(scanner.Scan(header, true).has_value());
}

TEST(SignatureTest, AnchoredHeaderDoesNotMatchLaterInThePayload) {
  SignatureDatabase db = CompileSignatures(BuiltinSignatures());
  SignatureScanner scanner = NewScanner(db);
  std::vector<uint8_t> shifted = Bytes("xx");
  std::vector<uint8_t> q = QemuStreamStart();
  shifted.insert(shifted.end(), q.begin(), q.end());
  EXPECT_FALSE(scanner.Scan(shifted, true).has_value());
  // Another stream version is not the header we know.
  std::vector<uint8_t> v2 = q;
  v2[7] = 2;
  EXPECT_FALSE(scanner.Scan(v2, true).has_value());
  // Truncated header.
  EXPECT_FALSE(scanner.Scan(std::span(q).first(7), true).has_value());
}

TEST(SignatureTest, AnchoredHeaderOnlyCountsAtStreamStart) {
  SignatureDatabase db = CompileSignatures(BuiltinSignatures());
  SignatureScanner scanner = NewScanner(db);
  EXPECT_FALSE(scanner.Scan(QemuStreamStart(), /*stream_start=*/false).has_value());
}

TEST(SignatureTest, MultifdChannelMagicMatches) {
  SignatureDatabase db = CompileSignatures(BuiltinSignatures());
  SignatureScanner scanner = NewScanner(db);
  std::optional<SignatureMatch> m = scanner.Scan(MultifdStart(), true);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->name, "qemu-multifd-channel");
  EXPECT_EQ(m->signature, 1u);
  // The magic with another version is not a multifd channel we know.
  std::vector<uint8_t> other = MultifdStart();
  other[7] = 9;
  EXPECT_FALSE(scanner.Scan(other, true).has_value());
}

TEST(SignatureTest, RandomPayloadsDoNotMatch) {
  SignatureDatabase db = CompileSignatures(BuiltinSignatures());
  SignatureScanner scanner = NewScanner(db);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> payload(64);
  int matches = 0;
  for (int i = 0; i < 20000; ++i) {
    for (uint8_t& b : payload) b = static_cast<uint8_t>(byte(rng));
    if (scanner.Scan(payload, true).has_value()) ++matches;
  }
  EXPECT_EQ(matches, 0);
  EXPECT_EQ(scanner.errors(), 0u);
  // Sanity: the same loop does find a planted header.
  std::memcpy(payload.data(), "QEVM\0\0\0\3", 8);
  EXPECT_TRUE(scanner.Scan(payload, true).has_value());
}

TEST(SignatureTest, UnanchoredSignatureMatchesAnywhereAndAfterStreamStart) {
  SignatureDatabase db = CompileSignatures({{"hello", "HELLO[0-9]", TrafficClass::kChaff}});
  EXPECT_FALSE(db.anchored(0));
  SignatureScanner scanner = NewScanner(db);
  std::optional<SignatureMatch> m = scanner.Scan(Bytes("....HELLO7...."), /*stream_start=*/false);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->traffic_class, TrafficClass::kChaff);
  EXPECT_FALSE(scanner.Scan(Bytes("....HELLO...."), false).has_value());
}

TEST(SignatureTest, FirstSignatureInOrderWinsEvenWhenItMatchesLater) {
  // Hyperscan reports in end-offset order: "^QEVM" ends first, but the
  // longer signature comes first in config order, so it must win.
  SignatureDatabase db = CompileSignatures({
      {"long", R"(^QEVM\x00\x00\x00\x03)", TrafficClass::kChaff},
      {"short", "^QEVM", TrafficClass::kMigration},
  });
  SignatureScanner scanner = NewScanner(db);
  std::optional<SignatureMatch> m = scanner.Scan(QemuStreamStart(), true);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->name, "long");
  EXPECT_EQ(m->traffic_class, TrafficClass::kChaff);
  // Only the short one matches a version-2 stream.
  std::vector<uint8_t> v2 = QemuStreamStart();
  v2[7] = 2;
  m = scanner.Scan(v2, true);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->name, "short");
}

TEST(SignatureTest, BadPatternErrorNamesTheSignature) {
  absl::StatusOr<SignatureDatabase> db = SignatureDatabase::Compile({
      {"fine", "^abc", TrafficClass::kMigration},
      {"broken", "^(QEVM", TrafficClass::kMigration},
  });
  ASSERT_FALSE(db.ok());
  EXPECT_THAT(Msg(db.status()), HasSubstr("signature 1 (\"broken\""));
  EXPECT_THAT(Msg(db.status()), HasSubstr("Missing close parenthesis"));

  absl::StatusOr<SignatureDatabase> empty_match =
      SignatureDatabase::Compile({{"everything", ".*", TrafficClass::kMigration}});
  ASSERT_FALSE(empty_match.ok());
  EXPECT_THAT(Msg(empty_match.status()), HasSubstr("\"everything\""));
  EXPECT_THAT(Msg(empty_match.status()), HasSubstr("empty payload"));
}

TEST(SignatureTest, InspectReportsAnchoringAndLength) {
  struct Case {
    const char* pattern;
    bool anchored;
  };
  for (const Case& c : {
           Case{"^abc", true}, Case{"\\Aabc", true}, Case{"(?i)^abc", true},
           Case{"(?s)(?i)^abc", true}, Case{"^(a|b)c", true}, Case{"^[|(]x", true},
           Case{"^a\\|b", true}, Case{"^a(?#|)b", true}, Case{"abc", false},
           Case{"^a|b", false},      // the second branch is not anchored
           Case{"(?m)^abc", false},  // multiline: '^' after any newline
           Case{"(?:^abc)", false},  // not recognised: treated as unanchored
       }) {
    absl::StatusOr<SignaturePatternInfo> info = InspectSignaturePattern(c.pattern);
    ASSERT_TRUE(info.ok()) << c.pattern << ": " << info.status();
    EXPECT_EQ(info->anchored, c.anchored) << c.pattern;
  }
  EXPECT_EQ(InspectSignaturePattern(R"(^QEVM\x00\x00\x00\x03)")->min_length, 8u);
}

TEST(SignatureTest, EmptyDatabaseNeverMatches) {
  SignatureDatabase db = CompileSignatures({});
  EXPECT_TRUE(db.empty());
  SignatureScanner scanner = NewScanner(db);
  EXPECT_FALSE(scanner.Scan(QemuStreamStart(), true).has_value());
}

TEST(SignatureTest, PerWorkerScannersShareOneDatabase) {
  SignatureDatabase db = CompileSignatures(BuiltinSignatures());
  constexpr int kWorkers = 4;
  std::vector<SignatureScanner> scanners;
  for (int i = 0; i < kWorkers; ++i) scanners.push_back(NewScanner(db));
  // Scanners keep the database alive on their own.
  db = SignatureDatabase();

  std::vector<uint8_t> qemu = QemuStreamStart();
  std::vector<uint8_t> multifd = MultifdStart();
  std::vector<uint8_t> other = Bytes("GET / HTTP/1.1\r\nHost: example\r\n\r\n");
  std::vector<int> counts(kWorkers, 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < 3000; ++i) {
        const std::vector<uint8_t>& p = i % 3 == 0 ? qemu : i % 3 == 1 ? multifd : other;
        std::optional<SignatureMatch> m = scanners[w].Scan(p, true);
        bool expected = i % 3 != 2;
        if (m.has_value() == expected &&
            (!m.has_value() || m->signature == static_cast<uint32_t>(i % 3))) {
          ++counts[w];
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int w = 0; w < kWorkers; ++w) {
    EXPECT_EQ(counts[w], 3000) << "worker " << w;
    EXPECT_EQ(scanners[w].errors(), 0u);
  }
}

TEST(SignatureTest, ConfigSignaturesComeFirstAndReplaceBuiltinsByName) {
  ClassifierConfig config;
  config.signatures = {{"qemu-migration-stream", "^QEVM", TrafficClass::kChaff},
                       {"mine", "^MINE", TrafficClass::kMigration}};
  std::vector<SignatureSpec> effective = EffectiveSignatures(config);
  ASSERT_EQ(effective.size(), 3u);
  EXPECT_EQ(effective[0].pattern, "^QEVM");
  EXPECT_EQ(effective[1].name, "mine");
  EXPECT_EQ(effective[2].name, "qemu-multifd-channel");
  config.builtin_signatures = false;
  EXPECT_EQ(EffectiveSignatures(config).size(), 2u);
}

// --- the per-flow state machine ---------------------------------------------

class FlowDecisionTest : public ::testing::Test {
 protected:
  void Build(ClassifierConfig config) {
    absl::StatusOr<Classifier> c = Classifier::Create(config);
    ASSERT_TRUE(c.ok()) << c.status();
    classifier_ = *std::move(c);
    absl::StatusOr<SignatureScanner> s = classifier_.NewScanner();
    ASSERT_TRUE(s.ok()) << s.status();
    scanner_.emplace(*std::move(s));
  }
  void SetUp() override {
    ClassifierConfig config;
    config.rules = {MigrationPorts()};
    Build(config);
  }
  FlowClass Step(const FlowClass& state, const FlowKey& key, std::span<const uint8_t> payload) {
    return classifier_.Decide(state, key, payload, *scanner_);
  }

  // Builds the classifier of `config` = one migration signature "mine"
  // ("^MINE") and the built-ins; `c` = a flow it decided.
  void DecideByMine(ClassifierConfig* config, FlowClass* c) {
    config->signatures = {{"mine", "^MINE", TrafficClass::kMigration}};
    Build(*config);
    *c = Step(FlowClass{}, other_port_, Bytes("MINE and more"));
    ASSERT_EQ(c->source, ClassSource::kSignature);
  }

  Classifier classifier_;
  std::optional<SignatureScanner> scanner_;
  const std::vector<uint8_t> junk_ = std::vector<uint8_t>(1448, 0x42);
  const FlowKey other_port_ = Key("192.0.2.1", 40000, "198.51.100.1", 8080);
};

TEST_F(FlowDecisionTest, FreshStateIsNewAndDefault) {
  FlowClass c;
  EXPECT_EQ(c.source, ClassSource::kNew);
  EXPECT_EQ(c.traffic_class, TrafficClass::kDefault);
  EXPECT_FALSE(c.decided());
}

TEST_F(FlowDecisionTest, RuleDecidesOnTheFirstPacketAndSticks) {
  FlowKey key = Key("192.0.2.1", 40000, "198.51.100.1", 49152);
  FlowClass c = Step(FlowClass{}, key, {});  // SYN: no payload needed for a rule
  EXPECT_EQ(c.source, ClassSource::kRule);
  EXPECT_EQ(c.traffic_class, TrafficClass::kMigration);
  EXPECT_EQ(QueueClass(c), TrafficClass::kMigration);
  EXPECT_EQ(classifier_.SourceName(c), "qemu");
  // Final: later payloads are not looked at.
  FlowClass later = Step(c, key, junk_);
  EXPECT_EQ(later.source, ClassSource::kRule);
  EXPECT_EQ(later.payloads_scanned, 0);
}

TEST_F(FlowDecisionTest, AckDirectionIsClassifiedButNotShaped) {
  FlowKey ack = Key("198.51.100.1", 49152, "192.0.2.1", 40000);
  FlowClass c = Step(FlowClass{}, ack, {});
  EXPECT_EQ(c.source, ClassSource::kRule);
  EXPECT_EQ(c.traffic_class, TrafficClass::kMigration);
  EXPECT_TRUE(c.reverse);
  EXPECT_EQ(QueueClass(c), TrafficClass::kDefault);
}

TEST_F(FlowDecisionTest, SignatureDecidesOnTheFirstPayloadPacket) {
  FlowClass c = Step(FlowClass{}, other_port_, {});  // SYN
  EXPECT_EQ(c.source, ClassSource::kPending);
  EXPECT_EQ(QueueClass(c), TrafficClass::kDefault);
  c = Step(c, other_port_, {});  // pure ACK: does not count
  EXPECT_EQ(c.payloads_scanned, 0);
  c = Step(c, other_port_, QemuStreamStart());
  EXPECT_EQ(c.source, ClassSource::kSignature);
  EXPECT_EQ(QueueClass(c), TrafficClass::kMigration);
  EXPECT_EQ(classifier_.SourceName(c), "qemu-migration-stream");

  FlowClass back = ReverseFlowClass(c);
  EXPECT_TRUE(back.reverse);
  EXPECT_EQ(back.traffic_class, TrafficClass::kMigration);
  EXPECT_EQ(QueueClass(back), TrafficClass::kDefault);
}

TEST_F(FlowDecisionTest, SettlesAsDefaultAfterTheScanLimit) {
  ASSERT_EQ(classifier_.limits().packets, 4u);
  FlowClass c;
  for (int i = 1; i <= 3; ++i) {
    c = Step(c, other_port_, junk_);
    EXPECT_EQ(c.source, ClassSource::kPending) << i;
    EXPECT_EQ(c.payloads_scanned, i);
  }
  c = Step(c, other_port_, junk_);
  EXPECT_EQ(c.source, ClassSource::kNoMatch);
  EXPECT_TRUE(c.decided());
  // A header arriving after the decision changes nothing.
  c = Step(c, other_port_, QemuStreamStart());
  EXPECT_EQ(c.source, ClassSource::kNoMatch);
  EXPECT_EQ(c.traffic_class, TrafficClass::kDefault);
  EXPECT_FALSE(ReverseFlowClass(c).reverse);
}

// The classifier a reload builds: `config`, carrying on the current one's
// signature ids.
Classifier Reloaded(const Classifier& current, const ClassifierConfig& config) {
  absl::StatusOr<Classifier> c = Classifier::Create(config, current.signature_ids());
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : Classifier();
}

TEST_F(FlowDecisionTest, AReloadSendsRuleAndPendingFlowsBackToNewAndKeepsSignatureFlows) {
  FlowClass pending = Step(FlowClass{}, other_port_, junk_);
  ASSERT_EQ(pending.source, ClassSource::kPending);
  pending.counted = 0;
  FlowClass signature = Step(Step(FlowClass{}, other_port_, {}), other_port_, QemuStreamStart());
  ASSERT_EQ(signature.source, ClassSource::kSignature);
  signature.counted = 1;
  FlowClass rule;
  rule.source = ClassSource::kRule;
  rule.traffic_class = TrafficClass::kMigration;
  rule.index = 3;
  rule.counted = 1;
  ClassifierConfig same;
  same.rules = {MigrationPorts()};
  const Classifier next = Reloaded(classifier_, same);

  const FlowClass p = next.Refresh(pending, other_port_, 5);
  EXPECT_EQ(p.source, ClassSource::kNew);
  EXPECT_EQ(p.payloads_scanned, 0);
  EXPECT_EQ(p.rules_epoch, 5);
  EXPECT_EQ(p.counted, 0);
  const FlowClass r = next.Refresh(rule, other_port_, 5);
  EXPECT_EQ(r.source, ClassSource::kNew);
  EXPECT_EQ(r.traffic_class, TrafficClass::kDefault);
  EXPECT_EQ(r.rules_epoch, 5);
  EXPECT_EQ(r.counted, 1);  // counted once as a flow, whatever it becomes
  const FlowClass s = next.Refresh(signature, other_port_, 5);
  EXPECT_EQ(s.source, ClassSource::kSignature);
  EXPECT_EQ(s.traffic_class, TrafficClass::kMigration);
  EXPECT_EQ(s.index, signature.index);
  EXPECT_EQ(s.rules_epoch, 5);
  EXPECT_EQ(s.counted, 1);
  EXPECT_EQ(next.SourceName(s), "qemu-migration-stream");
  // The epoch is 15 bits: kRulesEpochs is epoch 0 again.
  EXPECT_EQ(next.Refresh(rule, other_port_, kRulesEpochs + 2).rules_epoch, 2);
}

TEST_F(FlowDecisionTest, ASignatureFlowFollowsItsSignatureByNameThroughAReload) {
  ClassifierConfig before;
  FlowClass c;
  ASSERT_NO_FATAL_FAILURE(DecideByMine(&before, &c));
  ASSERT_EQ(classifier_.SourceName(c), "mine");

  // Another signature now comes first, and "mine" marks chaff: the flow keeps
  // "mine" (not whatever sits at its old place) and takes its new class.
  ClassifierConfig after;
  after.signatures = {{"other", "^OTHER", TrafficClass::kMigration},
                      {"mine", "^MINE", TrafficClass::kChaff}};
  const Classifier next = Reloaded(classifier_, after);
  const FlowClass r = next.Refresh(c, other_port_, 1);
  EXPECT_EQ(r.source, ClassSource::kSignature);
  EXPECT_EQ(r.traffic_class, TrafficClass::kChaff);
  EXPECT_EQ(next.SourceName(r), "mine");
  // Its return direction too: same class, still not shaped.
  const FlowClass back = next.Refresh(ReverseFlowClass(c), other_port_.Reversed(), 1);
  EXPECT_EQ(back.traffic_class, TrafficClass::kChaff);
  EXPECT_EQ(QueueClass(back), TrafficClass::kDefault);
}

TEST_F(FlowDecisionTest, ASignatureFlowIsDecidedAgainWhenItsSignatureIsGoneOrARuleNamesIt) {
  ClassifierConfig before;
  FlowClass c;
  ASSERT_NO_FATAL_FAILURE(DecideByMine(&before, &c));
  c.counted = 1;

  ClassifierConfig gone;
  gone.builtin_signatures = false;
  const Classifier without = Reloaded(classifier_, gone);
  const FlowClass r = without.Refresh(c, other_port_, 1);
  EXPECT_EQ(r.source, ClassSource::kNew);
  EXPECT_EQ(r.traffic_class, TrafficClass::kDefault);
  EXPECT_EQ(r.counted, 1);
  EXPECT_EQ(without.SourceName(c), "signature (unloaded)");

  // A rule for the flow's port comes before the signature, as for a new flow.
  ClassifierConfig ruled = before;
  ClassRule to_8080 = MigrationPorts("to-8080");
  to_8080.dst_ports = {8080, 8080};
  to_8080.traffic_class = TrafficClass::kChaff;
  ruled.rules = {to_8080};
  const Classifier with_rule = Reloaded(classifier_, ruled);
  const FlowClass again = with_rule.Refresh(c, other_port_, 1);
  EXPECT_EQ(again.source, ClassSource::kNew);
  SignatureScanner scanner = *with_rule.NewScanner();
  const FlowClass decided = with_rule.Decide(again, other_port_, Bytes("later bytes"), scanner);
  EXPECT_EQ(decided.source, ClassSource::kRule);
  EXPECT_EQ(decided.traffic_class, TrafficClass::kChaff);
}

TEST(SignatureIdsTest, NamesKeepTheirIdsAndNewNamesNeverReuseOne) {
  SignatureIds ids;
  absl::StatusOr<std::vector<uint16_t>> first =
      ids.Assign({{"a", "^A", TrafficClass::kMigration}, {"b", "^B", TrafficClass::kMigration}});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(*first, ElementsAre(0, 1));
  // "a" dropped, "c" new, "b" moved: "c" does not get "a"'s id.
  absl::StatusOr<std::vector<uint16_t>> second =
      ids.Assign({{"c", "^C", TrafficClass::kMigration}, {"b", "^B", TrafficClass::kMigration}});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_THAT(*second, ElementsAre(2, 1));
  absl::StatusOr<std::vector<uint16_t>> back = ids.Assign({{"a", "^A", TrafficClass::kMigration}});
  ASSERT_TRUE(back.ok());
  EXPECT_THAT(*back, ElementsAre(0));
  EXPECT_EQ(ids.next, 3u);
}

TEST(SignatureIdsTest, RunningOutOfIdsIsRefusedAndAssignsNothing) {
  SignatureIds ids;
  ids.next = 65535;  // one id left
  EXPECT_TRUE(ids.Assign({{"last", "^L", TrafficClass::kMigration}}).ok());
  absl::StatusOr<std::vector<uint16_t>> over =
      ids.Assign({{"last", "^L", TrafficClass::kMigration}, {"one-more", "^O", TrafficClass::kMigration}});
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(Msg(over.status()), HasSubstr("restart"));
  EXPECT_FALSE(ids.by_name.contains("one-more"));
  EXPECT_EQ(ids.next, 65536u);
  // A known name still gets its id.
  EXPECT_TRUE(ids.Assign({{"last", "^L", TrafficClass::kMigration}}).ok());
}

TEST_F(FlowDecisionTest, TcpHeaderInALaterSegmentIsNotAStreamStart) {
  FlowClass c = Step(FlowClass{}, other_port_, junk_);
  c = Step(c, other_port_, QemuStreamStart());
  EXPECT_EQ(c.source, ClassSource::kPending);
  EXPECT_EQ(c.payloads_scanned, 2);
}

TEST_F(FlowDecisionTest, EveryUdpDatagramStartsAMessage) {
  FlowKey udp = Key("192.0.2.1", 40000, "198.51.100.1", 8080, kProtoUdp);
  FlowClass c = Step(FlowClass{}, udp, junk_);
  c = Step(c, udp, QemuStreamStart());
  EXPECT_EQ(c.source, ClassSource::kSignature);
}

TEST_F(FlowDecisionTest, OnlyTheFirstScanBytesAreScanned) {
  ClassifierConfig config;
  config.builtin_signatures = false;
  config.signatures = {{"late-word", "MAGICWORD", TrafficClass::kMigration}};
  config.limits.bytes = 64;
  Build(config);
  std::vector<uint8_t> payload(100, '.');
  std::vector<uint8_t> word = Bytes("MAGICWORD");
  payload.insert(payload.end(), word.begin(), word.end());
  FlowClass c = Step(FlowClass{}, other_port_, payload);
  EXPECT_EQ(c.source, ClassSource::kPending);

  config.limits.bytes = 128;
  Build(config);
  c = Step(FlowClass{}, other_port_, payload);
  EXPECT_EQ(c.source, ClassSource::kSignature);
  EXPECT_EQ(classifier_.SourceName(c), "late-word");
}

TEST_F(FlowDecisionTest, UnanchoredSignatureMatchesInALaterPacket) {
  ClassifierConfig config;
  config.signatures = {{"greeting-then-sync", "SYNC!", TrafficClass::kChaff}};
  Build(config);
  FlowClass c = Step(FlowClass{}, other_port_, Bytes("hello"));
  c = Step(c, other_port_, Bytes("world"));
  c = Step(c, other_port_, Bytes("..SYNC!.."));
  EXPECT_EQ(c.source, ClassSource::kSignature);
  EXPECT_EQ(QueueClass(c), TrafficClass::kChaff);
}

TEST_F(FlowDecisionTest, NoSignaturesOrZeroScanPacketsDecideAtOnce) {
  ClassifierConfig none;
  none.builtin_signatures = false;
  Build(none);
  FlowClass c = Step(FlowClass{}, other_port_, {});
  EXPECT_EQ(c.source, ClassSource::kNoMatch);

  ClassifierConfig zero;
  zero.limits.packets = 0;
  Build(zero);
  c = Step(FlowClass{}, other_port_, QemuStreamStart());
  EXPECT_EQ(c.source, ClassSource::kNoMatch);
}

TEST_F(FlowDecisionTest, PureFunctionWithCallerSuppliedRule) {
  // The free function: the rule result only counts in state kNew.
  RuleMatch rule{3, TrafficClass::kChaff, false};
  FlowClass c = DecideFlowClass(FlowClass{}, rule, kProtoTcp, {}, nullptr, false, ScanLimits{});
  EXPECT_EQ(c.source, ClassSource::kRule);
  EXPECT_EQ(c.index, 3);
  EXPECT_EQ(c.traffic_class, TrafficClass::kChaff);
  FlowClass pending;
  pending.source = ClassSource::kPending;
  c = DecideFlowClass(pending, rule, kProtoTcp, junk_, &*scanner_, true, ScanLimits{4, 64});
  EXPECT_EQ(c.source, ClassSource::kPending);  // a rule result cannot override a pending flow
  EXPECT_EQ(c.payloads_scanned, 1);
}

TEST(ClassifierTest, CreateReportsBadRulesAndSignatures) {
  ClassifierConfig config;
  ClassRule bad = MigrationPorts("icmp-with-ports");
  bad.protocol = kProtoIcmp;
  config.rules = {bad};
  absl::StatusOr<Classifier> c = Classifier::Create(config);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Msg(c.status()), HasSubstr("icmp-with-ports"));

  ClassifierConfig sigs;
  sigs.signatures = {{"oops", "[a-", TrafficClass::kMigration}};
  c = Classifier::Create(sigs);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Msg(c.status()), HasSubstr("\"oops\""));
}

}  // namespace
}  // namespace shroud
