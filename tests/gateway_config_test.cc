// Tests of the gateway config: the shipped example, defaults, and that every
// kind of mistake is reported with file, line, dotted key and the problem.
#include "dataplane/core/gateway_config.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace shroud {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kOrigin[] = "cfg.toml";

absl::StatusOr<GatewayConfig> Parse(const std::string& text) {
  return ParseGatewayConfig(text, kOrigin);
}

// The error message of parsing `text`; fails the test if it parses.
std::string Error(const std::string& text) {
  absl::StatusOr<GatewayConfig> c = Parse(text);
  EXPECT_FALSE(c.ok()) << "parsed:\n" << text;
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  return std::string(c.status().message());
}

std::string ExamplePath() { return testing::SourceRoot() + "/conf/gateway.example.toml"; }

FlowKey TcpKey(uint16_t sport, uint16_t dport) {
  FlowKey k;
  k.ip_version = 4;
  k.src_addr = {192, 0, 2, 1};
  k.dst_addr = {203, 0, 113, 1};
  k.src_port = sport;
  k.dst_port = dport;
  k.protocol = kProtoTcp;
  return k;
}

// --- the shipped example ----------------------------------------------------

TEST(GatewayConfigExampleTest, ParsesWithTheDocumentedValues) {
  absl::StatusOr<GatewayConfig> loaded = LoadGatewayConfig(ExamplePath());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const GatewayConfig& c = *loaded;

  EXPECT_EQ(c.dataplane.mode, DataplaneMode::kGateway);
  EXPECT_EQ(c.dataplane.malformed, MalformedPolicy::kForward);
  EXPECT_EQ(c.dataplane.rx_descriptors, 1024u);

  ASSERT_EQ(c.classify.rules.size(), 2u);
  const ClassRule& qemu = c.classify.rules[0];
  EXPECT_EQ(qemu.name, "qemu-migration");
  EXPECT_EQ(qemu.traffic_class, TrafficClass::kMigration);
  EXPECT_EQ(qemu.protocol, kProtoTcp);
  EXPECT_EQ(qemu.dst_ports.first, 49152);
  EXPECT_EQ(qemu.dst_ports.last, 49215);
  EXPECT_TRUE(qemu.src_ports.IsAny());
  EXPECT_TRUE(qemu.bidirectional);
  const ClassRule& tls = c.classify.rules[1];
  EXPECT_EQ(tls.name, "libvirt-tls");
  EXPECT_EQ(tls.dst_ports.first, 16514);
  EXPECT_EQ(tls.dst_ports.last, 16514);
  EXPECT_TRUE(tls.bidirectional);
  EXPECT_TRUE(c.classify.builtin_signatures);
  EXPECT_TRUE(c.classify.signatures.empty());

  // Algorithm 3 with the paper's parameters.
  const RateVariationSection& rv = c.rate_variation;
  EXPECT_TRUE(rv.enabled);
  EXPECT_EQ(rv.interval_ms, 10u);
  EXPECT_EQ(rv.window, 50u);
  EXPECT_DOUBLE_EQ(rv.lower_cov, 0.5);
  EXPECT_DOUBLE_EQ(rv.upper_cov, 1.0);
  EXPECT_EQ(rv.up_range, (std::array<double, 2>{1.0, 1.4}));
  EXPECT_EQ(rv.up_fast_range, (std::array<double, 2>{1.4, 1.9}));
  EXPECT_EQ(rv.down_range, (std::array<double, 2>{0.8, 1.0}));
  EXPECT_EQ(rv.down_fast_range, (std::array<double, 2>{0.1, 0.8}));
  EXPECT_LE(rv.min_rate_mbyte_s, rv.start_rate_mbyte_s);
  EXPECT_LE(rv.start_rate_mbyte_s, rv.max_rate_mbyte_s);
  EXPECT_DOUBLE_EQ(c.shaper.link_rate_mbyte_s, 125.0);  // integer in the file, float here

  // The paper's detector parameters.
  EXPECT_EQ(c.features.pattern_window, 1000u);
  EXPECT_DOUBLE_EQ(c.features.pattern_delta, 0.05);
  EXPECT_EQ(c.features.pattern_count_threshold, 3u);
  EXPECT_EQ(c.features.burst_gap_ns, 10'000'000u);
  EXPECT_EQ(c.features.byte_window_count, 7u);
}

TEST(GatewayConfigExampleTest, ClassifiesMigrationPortsAndQemuStreams) {
  absl::StatusOr<GatewayConfig> loaded = LoadGatewayConfig(ExamplePath());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  absl::StatusOr<Classifier> classifier = Classifier::Create(loaded->classify);
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  const RuleSet& rules = classifier->rules();
  EXPECT_EQ(rules.Match(TcpKey(40000, 49152)).traffic_class, TrafficClass::kMigration);
  EXPECT_EQ(rules.Match(TcpKey(40000, 49215)).traffic_class, TrafficClass::kMigration);
  EXPECT_FALSE(rules.Match(TcpKey(40000, 49216)).matched());
  RuleMatch tls = rules.Match(TcpKey(40000, 16514));
  EXPECT_EQ(rules.name(tls.rule), "libvirt-tls");
  EXPECT_TRUE(rules.Match(TcpKey(16514, 40000)).reverse);  // the TLS ACKs

  // An unencrypted QEMU stream on a port no rule names.
  absl::StatusOr<SignatureScanner> scanner = classifier->NewScanner();
  ASSERT_TRUE(scanner.ok());
  const uint8_t header[] = {'Q', 'E', 'V', 'M', 0, 0, 0, 3, 7};
  FlowClass c = classifier->Decide(FlowClass{}, TcpKey(40000, 4444), header, *scanner);
  EXPECT_EQ(c.source, ClassSource::kSignature);
  EXPECT_EQ(QueueClass(c), TrafficClass::kMigration);
}

TEST(GatewayConfigExampleTest, ExampleStatesTheDefaults) {
  // The example documents the defaults; an empty file must give the same
  // values, or the comments are lying.
  absl::StatusOr<GatewayConfig> example = LoadGatewayConfig(ExamplePath());
  absl::StatusOr<GatewayConfig> empty = Parse("");
  ASSERT_TRUE(example.ok()) << example.status();
  ASSERT_TRUE(empty.ok()) << empty.status();
  const GatewayConfig& e = *example;
  const GatewayConfig& d = *empty;
  EXPECT_EQ(e.dataplane.rx_queues, d.dataplane.rx_queues);
  EXPECT_EQ(e.dataplane.tx_descriptors, d.dataplane.tx_descriptors);
  EXPECT_EQ(e.dataplane.mempool_mbufs, d.dataplane.mempool_mbufs);
  EXPECT_EQ(e.dataplane.burst_size, d.dataplane.burst_size);
  EXPECT_EQ(e.flows.max_flows, d.flows.max_flows);
  EXPECT_EQ(e.flows.idle_timeout_ms, d.flows.idle_timeout_ms);
  EXPECT_EQ(e.features.burst_gap_ns, d.features.burst_gap_ns);
  EXPECT_EQ(e.features.byte_windows, d.features.byte_windows);
  EXPECT_EQ(e.classify.limits.packets, d.classify.limits.packets);
  EXPECT_EQ(e.classify.limits.bytes, d.classify.limits.bytes);
  EXPECT_EQ(e.shaper.migration_queue_ms, d.shaper.migration_queue_ms);
  EXPECT_EQ(e.shaper.chaff_queue_ms, d.shaper.chaff_queue_ms);
  EXPECT_EQ(e.shaper.queue_packets, d.shaper.queue_packets);
  EXPECT_EQ(e.shaper.migration_borrows_chaff, d.shaper.migration_borrows_chaff);
  EXPECT_EQ(e.shaper.migration_waits_for_root, d.shaper.migration_waits_for_root);
  EXPECT_EQ(e.shaper.train_max_frames, d.shaper.train_max_frames);
  EXPECT_EQ(e.shaper.flow_lanes, d.shaper.flow_lanes);
  EXPECT_EQ(e.shaper.flow_lane_quantum_bytes, d.shaper.flow_lane_quantum_bytes);
  EXPECT_DOUBLE_EQ(e.shaper.chaff_rate_mbyte_s, d.shaper.chaff_rate_mbyte_s);
  const RateVariationSection& er = e.rate_variation;
  const RateVariationSection& dr = d.rate_variation;
  EXPECT_DOUBLE_EQ(er.min_rate_mbyte_s, dr.min_rate_mbyte_s);
  EXPECT_DOUBLE_EQ(er.max_rate_mbyte_s, dr.max_rate_mbyte_s);
  EXPECT_DOUBLE_EQ(er.start_rate_mbyte_s, dr.start_rate_mbyte_s);
  EXPECT_DOUBLE_EQ(er.d, dr.d);
  EXPECT_DOUBLE_EQ(er.c_percent, dr.c_percent);
  EXPECT_EQ(er.seed, dr.seed);
  EXPECT_TRUE(d.classify.rules.empty());
}

TEST(GatewayConfigTest, DefaultsAreValid) {
  absl::Status s = ValidateGatewayConfig(GatewayConfig{});
  EXPECT_TRUE(s.ok()) << s;
}

// --- values that parse ------------------------------------------------------

TEST(GatewayConfigTest, ParsesEveryKindOfValue) {
  absl::StatusOr<GatewayConfig> c = Parse(R"(
[dataplane]
mode = "tap"
malformed = "drop"
rx_queues = 2

[features]
burst_gap_ms = 2.5
byte_windows = [100, 1000]

[classify]
signature_scan_packets = 2
builtin_signatures = false

[[classify.rule]]
name = "v6-peer"
class = "chaff"
protocol = 17
src = "2001:db8::/32"
dst = "2001:db8:ffff::1"
src_ports = "1000-2000"
dst_ports = 53
bidirectional = false

[[classify.rule]]
name = "icmp"
class = "default"
protocol = "icmp"

[[classify.signature]]
name = "repl"
pattern = "^REPL\\x01"
class = "migration"

[shaper]
link_rate_mbyte_s = 1250.5
migration_borrows_chaff = true
chaff_rate_mbyte_s = 2
train_max_frames = 6

[rate_variation]
enabled = false
seed = 1234567890123
up_range = [1, 2]
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dataplane.mode, DataplaneMode::kTap);
  EXPECT_EQ(c->dataplane.malformed, MalformedPolicy::kDrop);
  EXPECT_EQ(c->dataplane.rx_queues, 2u);
  EXPECT_EQ(c->features.burst_gap_ns, 2'500'000u);
  EXPECT_EQ(c->features.byte_window_count, 2u);
  EXPECT_EQ(c->features.byte_windows[1], 1000u);
  EXPECT_EQ(c->classify.limits.packets, 2u);
  EXPECT_FALSE(c->classify.builtin_signatures);
  ASSERT_EQ(c->classify.rules.size(), 2u);
  const ClassRule& r = c->classify.rules[0];
  EXPECT_EQ(r.traffic_class, TrafficClass::kChaff);
  EXPECT_EQ(r.protocol, 17);
  EXPECT_EQ(r.src.ToString(), "2001:db8::/32");
  EXPECT_EQ(r.dst.length, 128);
  EXPECT_EQ(r.src_ports.ToString(), "1000-2000");
  EXPECT_EQ(r.dst_ports.ToString(), "53");
  EXPECT_FALSE(r.bidirectional);
  EXPECT_EQ(c->classify.rules[1].protocol, kProtoIcmp);
  EXPECT_EQ(c->classify.rules[1].traffic_class, TrafficClass::kDefault);
  ASSERT_EQ(c->classify.signatures.size(), 1u);
  EXPECT_EQ(c->classify.signatures[0].pattern, "^REPL\\x01");
  EXPECT_DOUBLE_EQ(c->shaper.link_rate_mbyte_s, 1250.5);
  EXPECT_TRUE(c->shaper.migration_borrows_chaff);
  EXPECT_DOUBLE_EQ(c->shaper.chaff_rate_mbyte_s, 2.0);
  EXPECT_EQ(c->shaper.train_max_frames, 6u);
  EXPECT_FALSE(c->rate_variation.enabled);
  EXPECT_EQ(c->rate_variation.seed, 1234567890123u);
  EXPECT_EQ(c->rate_variation.up_range, (std::array<double, 2>{1.0, 2.0}));
}

// --- errors -------------------------------------------------------------------

TEST(GatewayConfigErrorTest, WrongTypeNamesKeyAndLine) {
  EXPECT_THAT(Error("[dataplane]\nrx_queues = \"four\"\n"),
              HasSubstr("cfg.toml:2: dataplane.rx_queues: expected an integer, got a string"));
  EXPECT_THAT(Error("[dataplane]\n\nrx_queues = 1.5\n"),
              HasSubstr("cfg.toml:3: dataplane.rx_queues: expected an integer, got a float"));
  EXPECT_THAT(Error("[shaper]\ntrain_max_frames = 0\n"), HasSubstr("cfg.toml:2: shaper.train_max_frames"));
  EXPECT_THAT(Error("[shaper]\nflow_lanes = 17\n"), HasSubstr("cfg.toml:2: shaper.flow_lanes"));
  EXPECT_THAT(Error("[shaper]\nflow_lane_quantum_bytes = 1500\n"),
              HasSubstr("cfg.toml:2: shaper.flow_lane_quantum_bytes"));
  EXPECT_THAT(Error("[shaper]\nflow_lanes = 16\nqueue_packets = 100000\n"),
              HasSubstr("shaper.flow_lanes: 16 lanes x shaper.queue_packets 100000 is more than"));
  EXPECT_THAT(Error("[shaper]\nmigration_borrows_chaff = \"yes\"\n"),
              HasSubstr("cfg.toml:2: shaper.migration_borrows_chaff: expected a boolean"));
  EXPECT_THAT(
      Error("[rate_variation]\nmin_rate_mbyte_s = \"1\"\n"),
      HasSubstr("cfg.toml:2: rate_variation.min_rate_mbyte_s: expected a number, got a string"));
  EXPECT_THAT(Error("dataplane = 3\n"),
              HasSubstr("cfg.toml:1: dataplane: expected a table ([dataplane]), got an integer"));
  EXPECT_THAT(Error("[rate_variation]\nup_range = [1.0]\n"),
              HasSubstr("cfg.toml:2: rate_variation.up_range: expected an array of two numbers"));
  EXPECT_THAT(Error("[rate_variation]\nup_range = [1.0, \"x\"]\n"),
              HasSubstr("element 1 is a string"));
  EXPECT_THAT(Error("[features]\nbyte_windows = [100, -1]\n"),
              HasSubstr("cfg.toml:2: features.byte_windows: element 1 must be a positive integer"));
}

TEST(GatewayConfigErrorTest, OutOfRangeNamesKeyLineAndValue) {
  EXPECT_THAT(Error("[dataplane]\nrx_queues = 0\n"),
              HasSubstr("cfg.toml:2: dataplane.rx_queues: must be between 1 and 128, got 0"));
  EXPECT_THAT(Error("[flows]\nmax_flows = -5\n"),
              HasSubstr("cfg.toml:2: flows.max_flows: must not be negative, got -5"));
  EXPECT_THAT(Error("[dataplane]\nrx_descriptors = 1000\n"),
              HasSubstr("dataplane.rx_descriptors: must be a power of two between 64 and 32768, "
                        "got 1000"));
  EXPECT_THAT(
      Error("[rate_variation]\nc_percent = 150\n"),
      HasSubstr("cfg.toml:2: rate_variation.c_percent: must be between 0 and 100, got 150"));
  EXPECT_THAT(Error("[rate_variation]\nmin_rate_mbyte_s = 0\n"),
              HasSubstr("rate_variation.min_rate_mbyte_s: must be > 0"));
  EXPECT_THAT(Error("[rate_variation]\nmax_rate_mbyte_s = nan\n"),
              HasSubstr("rate_variation.max_rate_mbyte_s: must be > 0 and <= 100000 MB/s, got nan"));
  EXPECT_THAT(Error("[features]\nburst_gap_ms = 0\n"),
              HasSubstr("cfg.toml:2: features.burst_gap_ms: must be in (0, 60000] ms, got 0"));
  EXPECT_THAT(Error("[classify]\nsignature_scan_packets = 300\n"),
              HasSubstr("classify.signature_scan_packets: must be between 0 and 255, got 300"));
  EXPECT_THAT(Error("[rate_variation]\ndown_fast_range = [0.8, 0.1]\n"),
              HasSubstr("cfg.toml:2: rate_variation.down_fast_range: must be [low, high] with "
                        "0 < low <= high"));
  EXPECT_THAT(Error("[features]\nbyte_windows = [300, 200]\n"),
              HasSubstr("features.byte_windows: must be 1 to 8 positive window sizes in strictly "
                        "ascending order, got [300,200]"));
}

TEST(GatewayConfigErrorTest, UnknownKeysAreErrors) {
  std::string typo = Error("[shaper]\nlink_rate_mbyte_s = 100\nlink_rate_mbp = 100\n");
  EXPECT_THAT(typo, HasSubstr("cfg.toml:3: shaper.link_rate_mbp: unknown key"));
  EXPECT_THAT(typo, HasSubstr("link_rate_mbyte_s"));  // the list of known keys helps spot the typo
  EXPECT_THAT(Error("[shapr]\nlink_rate_mbyte_s = 100\n"),
              HasSubstr("cfg.toml:1: shapr: unknown key"));
  EXPECT_THAT(Error("mode = \"tap\"\n"), HasSubstr("cfg.toml:1: mode: unknown key"));
  EXPECT_THAT(Error("[[classify.rule]]\nname = \"a\"\nclass = \"migration\"\ndst_port = 1\n"),
              HasSubstr("cfg.toml:4: classify.rule[0].dst_port: unknown key"));
  EXPECT_THAT(Error("[[classify.signature]]\nname = \"a\"\npattern = \"^a\"\nclass = \"chaff\"\n"
                    "flags = 1\n"),
              HasSubstr("cfg.toml:5: classify.signature[0].flags: unknown key"));
}

TEST(GatewayConfigErrorTest, BadPrefixNamesRuleKey) {
  const std::string head = "[[classify.rule]]\nname = \"r\"\nclass = \"migration\"\n";
  EXPECT_THAT(Error(head + "dst = \"192.0.2.300/24\"\n"),
              AllOf(HasSubstr("cfg.toml:4: classify.rule[0].dst:"),
                    HasSubstr("is not an IPv4 or IPv6 address")));
  EXPECT_THAT(Error(head + "src = \"192.0.2.1/24\"\n"),
              AllOf(HasSubstr("cfg.toml:4: classify.rule[0].src:"),
                    HasSubstr("did you mean 192.0.2.0/24?")));
  EXPECT_THAT(
      Error(head + "src = \"192.0.2.0/24\"\ndst = \"2001:db8::/32\"\n"),
      AllOf(HasSubstr("cfg.toml:5: classify.rule[0].dst:"), HasSubstr("one address family")));
  EXPECT_THAT(Error(head + "dst = 3\n"),
              HasSubstr("cfg.toml:4: classify.rule[0].dst: expected a string, got an integer"));
}

TEST(GatewayConfigErrorTest, BadPortsNameRuleKey) {
  const std::string head = "[[classify.rule]]\nname = \"r\"\nclass = \"migration\"\n";
  EXPECT_THAT(
      Error(head + "dst_ports = \"9-1\"\n"),
      AllOf(HasSubstr("cfg.toml:4: classify.rule[0].dst_ports:"), HasSubstr("is empty: 9 > 1")));
  EXPECT_THAT(Error(head + "src_ports = 70000\n"),
              HasSubstr("cfg.toml:4: classify.rule[0].src_ports: port must be 0-65535, got 70000"));
  EXPECT_THAT(Error(head + "src_ports = \"http\"\n"),
              HasSubstr("classify.rule[0].src_ports: \"http\" is not a port"));
  EXPECT_THAT(Error(head + "protocol = \"icmp\"\ndst_ports = 1\n"),
              AllOf(HasSubstr("cfg.toml:5: classify.rule[0].dst_ports:"),
                    HasSubstr("ports only apply to tcp and udp")));
  EXPECT_THAT(Error(head + "protocol = 300\n"),
              HasSubstr("cfg.toml:4: classify.rule[0].protocol: protocol number must be 0-255"));
}

TEST(GatewayConfigErrorTest, BadOrMissingClass) {
  EXPECT_THAT(Error("[[classify.rule]]\nname = \"r\"\nclass = \"migrate\"\n"),
              AllOf(HasSubstr("cfg.toml:3: classify.rule[0].class:"),
                    HasSubstr("unknown class \"migrate\"")));
  EXPECT_THAT(Error("[[classify.rule]]\nname = \"r\"\n"),
              HasSubstr("classify.rule[0].class: missing"));
  EXPECT_THAT(Error("[[classify.rule]]\nclass = \"chaff\"\n"),
              HasSubstr("classify.rule[0].name: missing"));
  EXPECT_THAT(Error("[[classify.signature]]\nname = \"s\"\npattern = \"^a\"\nclass = \"fast\"\n"),
              HasSubstr("cfg.toml:4: classify.signature[0].class: unknown class"));
  EXPECT_THAT(
      Error("[dataplane]\nmode = \"router\"\n"),
      HasSubstr("cfg.toml:2: dataplane.mode: must be \"gateway\" or \"tap\", got \"router\""));
}

TEST(GatewayConfigErrorTest, SecondRuleIsIndexedAndDuplicatesCaught) {
  std::string text =
      "[[classify.rule]]\nname = \"a\"\nclass = \"migration\"\n"
      "[[classify.rule]]\nname = \"a\"\nclass = \"migration\"\ndst_ports = \"5-\"\n";
  std::string e = Error(text);
  EXPECT_THAT(e, HasSubstr("cfg.toml:7: classify.rule[1].dst_ports:"));
  std::string dup = Error(
      "[[classify.rule]]\nname = \"a\"\nclass = \"migration\"\n"
      "[[classify.rule]]\nname = \"a\"\nclass = \"chaff\"\n");
  EXPECT_THAT(dup, HasSubstr("cfg.toml:5: classify.rule[1].name: duplicate rule name \"a\" "
                             "(also classify.rule[0])"));
}

TEST(GatewayConfigErrorTest, RuleGivenAsPlainTable) {
  EXPECT_THAT(Error("[classify.rule]\nname = \"a\"\n"),
              HasSubstr("classify.rule: expected an array of tables ([[classify.rule]]), got a "
                        "table"));
}

TEST(GatewayConfigErrorTest, BadSignaturePatternNamesKeyLineAndHyperscanMessage) {
  std::string e = Error(
      "[classify]\n"
      "[[classify.signature]]\n"
      "name = \"broken\"\n"
      "pattern = \"^(QEVM\"\n"
      "class = \"migration\"\n");
  EXPECT_THAT(e, HasSubstr("cfg.toml:4: classify.signature[0].pattern: signature \"broken\": "
                           "Hyperscan: Missing close parenthesis"));
  EXPECT_THAT(Error("[[classify.signature]]\nname = \"all\"\npattern = \"x*\"\n"
                    "class = \"migration\"\n"),
              HasSubstr("classify.signature[0].pattern: signature \"all\": pattern matches an "
                        "empty payload"));
  // A pattern longer than what is scanned could never match.
  EXPECT_THAT(Error("[classify]\nsignature_scan_bytes = 16\nbuiltin_signatures = false\n"
                    "[[classify.signature]]\nname = \"long\"\npattern = \"^.{20}X\"\n"
                    "class = \"migration\"\n"),
              HasSubstr("classify.signature[0].pattern: signature \"long\" needs at least 21 "
                        "payload bytes"));
  EXPECT_THAT(Error("[classify]\nsignature_scan_bytes = 4\n"),
              HasSubstr("cfg.toml:2: classify.signature_scan_bytes: the built-in signature "
                        "\"qemu-migration-stream\" needs 8 bytes"));
}

TEST(GatewayConfigErrorTest, MinRateAboveMaxRate) {
  std::string e = Error(
      "[rate_variation]\nmin_rate_mbyte_s = 20\nmax_rate_mbyte_s = 10\n"
      "start_rate_mbyte_s = 15\n");
  EXPECT_THAT(e, HasSubstr("cfg.toml:2: rate_variation.min_rate_mbyte_s: must be <= "
                           "rate_variation.max_rate_mbyte_s (10), got 20"));
}

TEST(GatewayConfigTest, SessionSpreadKeysReachTheCore) {
  absl::StatusOr<GatewayConfig> c = Parse(
      "[rate_variation]\nsession_spread = true\nsession_gap_ms = 1500\n"
      "bursty_min_rate_mbyte_s = 0.02\nbursty_window = 8\nbursty_pause_share = 0.3\n"
      "min_pause_share = 0.1\npause_mean_ms = 50\npause_max_ms = 150\n");
  ASSERT_TRUE(c.ok()) << c.status();
  const RateVariationConfig core = ToRateVariationConfig(c->rate_variation);
  EXPECT_TRUE(core.session_spread);
  EXPECT_EQ(core.session_gap_ns, 1'500'000'000u);
  EXPECT_DOUBLE_EQ(core.bursty_min_rate, 20'000);
  EXPECT_EQ(core.bursty_window, 8u);
  EXPECT_DOUBLE_EQ(core.bursty_pause_share, 0.3);
  EXPECT_DOUBLE_EQ(core.min_pause_share, 0.1);
  EXPECT_EQ(core.pause_mean_ns, 50'000'000u);
  EXPECT_EQ(core.pause_max_ns, 150'000'000u);
  // Off unless asked for: the paper's walk, one minR and win.
  absl::StatusOr<GatewayConfig> plain = Parse("");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(ToRateVariationConfig(plain->rate_variation).session_spread);
}

TEST(GatewayConfigErrorTest, SessionSpreadChecks) {
  EXPECT_THAT(Error("[rate_variation]\nsession_gap_ms = 0\n"),
              HasSubstr("cfg.toml:2: rate_variation.session_gap_ms: must be between 1 and "
                        "3600000, got 0"));
  EXPECT_THAT(Error("[rate_variation]\nbursty_window = 1\n"),
              HasSubstr("rate_variation.bursty_window: must be between 2 and 65536, got 1"));
  EXPECT_THAT(Error("[rate_variation]\nbursty_min_rate_mbyte_s = -1\n"),
              HasSubstr("rate_variation.bursty_min_rate_mbyte_s: must be > 0"));
  EXPECT_THAT(Error("[rate_variation]\nsession_spread = true\nbursty_min_rate_mbyte_s = 6\n"),
              HasSubstr("rate_variation.bursty_min_rate_mbyte_s: must be <= "
                        "rate_variation.start_rate_mbyte_s (4), got 6"));
  EXPECT_THAT(Error("[rate_variation]\nbursty_pause_share = 0.95\n"),
              HasSubstr("rate_variation.bursty_pause_share: must be between 0 and 0.9, got 0.95"));
  EXPECT_THAT(Error("[rate_variation]\nmin_pause_share = -0.1\n"),
              HasSubstr("rate_variation.min_pause_share: must be between 0 and 0.9, got -0.1"));
  EXPECT_THAT(Error("[rate_variation]\nbursty_pause_share = 0.3\nmin_pause_share = 0.5\n"),
              HasSubstr("rate_variation.min_pause_share: must be <= rate_variation.bursty_pause_share "
                        "(0.3), got 0.5"));
  EXPECT_THAT(Error("[rate_variation]\npause_mean_ms = 100\npause_max_ms = 50\n"),
              HasSubstr("rate_variation.pause_max_ms: must be >= rate_variation.pause_mean_ms "
                        "(100), got 50"));
  EXPECT_THAT(Error("[rate_variation]\nsession_spread = \"yes\"\n"),
              HasSubstr("cfg.toml:2: rate_variation.session_spread: expected a boolean"));
}

TEST(GatewayConfigErrorTest, CrossSectionChecks) {
  EXPECT_THAT(Error("[rate_variation]\nstart_rate_mbyte_s = 20\n"),
              HasSubstr("cfg.toml:2: rate_variation.start_rate_mbyte_s: must be within "
                        "[min_rate_mbyte_s, max_rate_mbyte_s] = [0.25, 8], got 20"));
  EXPECT_THAT(Error("[rate_variation]\nlower_cov = 1.0\n"),
              HasSubstr("rate_variation.lower_cov: must be < rate_variation.upper_cov (1), got 1"));
  // The megabit mistake: a 6 MB/s link cannot carry the default 8 MB/s maxR.
  EXPECT_THAT(Error("[shaper]\nlink_rate_mbyte_s = 6\n"),
              AllOf(HasSubstr("rate_variation.max_rate_mbyte_s: must not exceed "
                              "shaper.link_rate_mbyte_s (6 MB/s), got 8"),
                    HasSubstr("not megabits")));
  EXPECT_THAT(
      Error("[shaper]\nchaff_rate_mbyte_s = 500\n"),
      HasSubstr("cfg.toml:2: shaper.chaff_rate_mbyte_s: must not exceed shaper.link_rate_mbyte_s"));
  EXPECT_THAT(Error("[dataplane]\nmempool_mbufs = 1000\n"),
              HasSubstr("cfg.toml:2: dataplane.mempool_mbufs: must be at least 12288"));
  // Tap mode has one port and no shaper queues.
  EXPECT_TRUE(Parse("[dataplane]\nmode = \"tap\"\nmempool_mbufs = 2048\n").ok());
}

TEST(GatewayConfigErrorTest, MalformedTomlNamesTheLine) {
  std::string e = Error("[dataplane]\nrx_queues = 1\nburst_size = 32 64\n");
  EXPECT_THAT(e, HasSubstr("cfg.toml:3: invalid TOML:"));
  EXPECT_THAT(e, Not(HasSubstr("[error]")));
  EXPECT_THAT(Error("[shaper]\nlink_rate_mbyte_s = 1\n[shaper]\n"),
              HasSubstr("cfg.toml:3: invalid TOML: table (\"shaper\") already exists"));
  EXPECT_THAT(Error("[flows]\nmax_flows = 1\nmax_flows = 2\n"), HasSubstr("invalid TOML"));
  EXPECT_THAT(Error("name = \"unterminated\n"), HasSubstr("cfg.toml:1: invalid TOML"));
}

TEST(GatewayConfigErrorTest, ReportsAllProblemsAtOnce) {
  std::string e = Error(
      "[dataplane]\nrx_queues = 0\n[flows]\nidle_timeout_ms = 0\nbogus = 1\n"
      "[shaper]\nqueue_packets = \"many\"\n");
  EXPECT_THAT(e, HasSubstr("cfg.toml:2: dataplane.rx_queues: must be between 1 and 128"));
  EXPECT_THAT(e, HasSubstr("cfg.toml:4: flows.idle_timeout_ms: must be between 1 and"));
  EXPECT_THAT(e, HasSubstr("cfg.toml:5: flows.bogus: unknown key"));
  EXPECT_THAT(e, HasSubstr("cfg.toml:7: shaper.queue_packets: expected an integer"));
  // One line per problem; the key that failed to read kept its default and
  // adds nothing else.
  EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 3) << e;

  // Problems come in file order, whichever check found them, and a bad
  // section elsewhere does not hide a cross-check.
  std::string ordered = Error(
      "[shaper]\nlink_rate_mbp = 100\n"
      "[rate_variation]\nmin_rate_mbyte_s = 20\nmax_rate_mbyte_s = 10\nstart_rate_mbyte_s = 15\n"
      "[[classify.rule]]\nname = \"x\"\nclass = \"migration\"\ndst_ports = \"9-1\"\n"
      "dst = \"10.0.0.1/8\"\n");
  size_t typo = ordered.find("cfg.toml:2: shaper.link_rate_mbp");
  size_t rate = ordered.find("cfg.toml:4: rate_variation.min_rate_mbyte_s: must be <=");
  size_t ports = ordered.find("cfg.toml:10: classify.rule[0].dst_ports");
  size_t prefix = ordered.find("cfg.toml:11: classify.rule[0].dst:");
  ASSERT_NE(typo, std::string::npos) << ordered;
  ASSERT_NE(rate, std::string::npos) << ordered;
  ASSERT_NE(ports, std::string::npos) << ordered;
  ASSERT_NE(prefix, std::string::npos) << ordered;
  EXPECT_LT(typo, rate);
  EXPECT_LT(rate, ports);
  EXPECT_LT(ports, prefix);
}

TEST(GatewayConfigErrorTest, ValidateNamesKeysWithoutAFile) {
  GatewayConfig c;
  c.rate_variation.window = 1;
  absl::Status s = ValidateGatewayConfig(c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(std::string(s.message()), "rate_variation.window: must be between 2 and 65536, got 1");
}

TEST(GatewayConfigLoadTest, MissingFile) {
  absl::StatusOr<GatewayConfig> c = LoadGatewayConfig("/nonexistent/shroud.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/nonexistent/shroud.toml"));
}

TEST(GatewayConfigLoadTest, ErrorsCarryTheFileName) {
  std::string path = testing::MakeTempDir() + "/gw.toml";
  {
    std::ofstream out(path);
    out << "# comment\n[rate_variation]\ninterval_ms = 0\n";
  }
  absl::StatusOr<GatewayConfig> c = LoadGatewayConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(
      std::string(c.status().message()),
      HasSubstr(path + ":3: rate_variation.interval_ms: must be between 1 and 60000, got 0"));
}

// A file the user did not mean: a directory, an emptied file, /dev/zero,
// a huge file. Each must be an error naming the path, never defaults.
TEST(GatewayConfigLoadTest, NotARegularFileEmptyOrHugeIsAnError) {
  const std::string dir = testing::MakeTempDir();
  absl::StatusOr<GatewayConfig> c = LoadGatewayConfig(dir);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(dir + ": is a directory"));

  c = LoadGatewayConfig("/dev/zero");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/dev/zero: not a regular file"));

  for (const char* text : {"", "  \n\t\n"}) {
    const std::string path = dir + "/empty.toml";
    std::ofstream(path) << text;
    c = LoadGatewayConfig(path);
    ASSERT_FALSE(c.ok()) << "'" << text << "'";
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(path + ": the config is empty"));
  }
  // A comment says "all defaults" on purpose.
  const std::string comment = dir + "/comment.toml";
  std::ofstream(comment) << "# all defaults\n";
  EXPECT_TRUE(LoadGatewayConfig(comment).ok());

  const std::string huge = dir + "/huge.toml";
  {
    std::ofstream out(huge);
    const std::string line = "# " + std::string(1000, 'x') + "\n";
    for (int i = 0; i < 1100; ++i) out << line;  // > 1 MiB of comments
  }
  c = LoadGatewayConfig(huge);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(huge + ": too large"));
}

// toml11 recurses per nesting level; thousands of levels used to overflow the
// stack (SIGSEGV, also on a running gateway's reload).
TEST(GatewayConfigParseTest, DeepNestingIsAnErrorNotACrash) {
  const std::string deep = "x = " + std::string(100000, '[') + std::string(100000, ']') + "\n";
  absl::StatusOr<GatewayConfig> c = ParseGatewayConfig(deep, "deep.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("deep.toml:1: invalid TOML: arrays or inline tables nested deeper than 32"));
  // Brackets inside strings and comments are not nesting.
  const std::string quoted = "# " + std::string(100, '[') + "\n[dataplane]\nmode = \"" +
                             std::string(100, '{') + "\\\"" + std::string(100, '[') + "\"\n";
  c = ParseGatewayConfig(quoted, "quoted.toml");
  ASSERT_FALSE(c.ok());  // not a mode, but read: the error is about the value
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("dataplane.mode"));
  EXPECT_THAT(std::string(c.status().message()), Not(HasSubstr("nested deeper")));
  // Ordinary nesting still parses.
  c = ParseGatewayConfig("[rate_variation]\nup_range = [1.0, 1.4] # ]]]\n", "ranges.toml");
  EXPECT_TRUE(c.ok()) << c.status();
}

// toml11 saturates integer literals beyond int64; the reader must not take
// the saturated value as what the user wrote.
TEST(GatewayConfigParseTest, IntegersBeyondInt64AreOutOfRange) {
  absl::StatusOr<GatewayConfig> c =
      ParseGatewayConfig("[rate_variation]\nseed = 99999999999999999999\n", "big.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("rate_variation.seed: out of range"));
  c = ParseGatewayConfig("[rate_variation]\nseed = -99999999999999999999\n", "neg.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("rate_variation.seed: must not be negative"));
  c = ParseGatewayConfig("[rate_variation]\nseed = 9223372036854775806\n", "max.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rate_variation.seed, 9223372036854775806u);
}

}  // namespace
}  // namespace shroud

namespace shroud {
namespace {

// The config's Algorithm 3 defaults are the core's, in the config's units, and
// map back onto the core's struct unchanged.
TEST(GatewayConfigRateVariationTest, DefaultsMapOntoTheCoreConfig) {
  const RateVariationConfig core;
  const RateVariationConfig mapped = ToRateVariationConfig(RateVariationSection{});
  EXPECT_DOUBLE_EQ(mapped.min_rate, core.min_rate);
  EXPECT_DOUBLE_EQ(mapped.max_rate, core.max_rate);
  EXPECT_DOUBLE_EQ(mapped.start_rate, core.start_rate);
  EXPECT_EQ(mapped.interval_ns, core.interval_ns);
  EXPECT_EQ(mapped.window, core.window);
  EXPECT_DOUBLE_EQ(mapped.d, core.d);
  EXPECT_DOUBLE_EQ(mapped.c_percent, core.c_percent);
  EXPECT_DOUBLE_EQ(mapped.lower_cov, core.lower_cov);
  EXPECT_DOUBLE_EQ(mapped.upper_cov, core.upper_cov);
  for (size_t i = 0; i < core.ranges.size(); ++i) {
    EXPECT_DOUBLE_EQ(mapped.ranges[i].lo, core.ranges[i].lo) << i;
    EXPECT_DOUBLE_EQ(mapped.ranges[i].hi, core.ranges[i].hi) << i;
  }
  EXPECT_TRUE(mapped.Validate().ok());
}

TEST(GatewayConfigRateVariationTest, ValuesConvertToBytesAndNanoseconds) {
  RateVariationSection section;
  section.min_rate_mbyte_s = 2;
  section.max_rate_mbyte_s = 6;
  section.start_rate_mbyte_s = 3;
  section.interval_ms = 20;
  section.down_fast_range = {0.2, 0.7};
  const RateVariationConfig mapped = ToRateVariationConfig(section);
  EXPECT_DOUBLE_EQ(mapped.min_rate, 2e6);
  EXPECT_DOUBLE_EQ(mapped.max_rate, 6e6);
  EXPECT_DOUBLE_EQ(mapped.start_rate, 3e6);
  EXPECT_EQ(mapped.interval_ns, 20'000'000u);
  EXPECT_DOUBLE_EQ(mapped.ranges[3].lo, 0.2);
  EXPECT_DOUBLE_EQ(mapped.ranges[3].hi, 0.7);
}


// --- the shaper hierarchy the config describes ---------------------------------

TEST(GatewayConfigTest, ShaperMappingUsesRateVariationBoundsAndQueueDepths) {
  absl::StatusOr<GatewayConfig> c = Parse(R"(
[shaper]
link_rate_mbyte_s = 125
migration_queue_ms = 80
chaff_queue_ms = 30
queue_packets = 2000
chaff_rate_mbyte_s = 2.5
migration_borrows_chaff = true
migration_waits_for_root = false
train_max_frames = 9
flow_lanes = 4
flow_lane_quantum_bytes = 30000

[rate_variation]
min_rate_mbyte_s = 1
max_rate_mbyte_s = 6
start_rate_mbyte_s = 3
)");
  ASSERT_TRUE(c.ok()) << c.status();
  const ShaperConfig s = ToShaperConfig(*c);
  EXPECT_EQ(s.link_rate_bytes_per_sec, 125'000'000u);
  EXPECT_EQ(s.migration.rate_bytes_per_sec, 3'000'000u);
  EXPECT_EQ(s.migration.ceil_bytes_per_sec, 6'000'000u);  // maxR
  EXPECT_EQ(s.migration.queue_depth_ms, 80u);
  EXPECT_EQ(s.migration.queue_bytes(), 480'000u);  // 80 ms at maxR
  EXPECT_EQ(s.migration.queue_packets, 2000u);
  EXPECT_EQ(s.migration.train_max_frames, 9u);
  EXPECT_EQ(s.chaff.train_max_frames, 9u);
  EXPECT_EQ(s.migration.flow_lanes, 4u);
  EXPECT_EQ(s.migration.lane_quantum_bytes, 30'000u);
  EXPECT_FALSE(s.migration.waits_for_root);
  EXPECT_TRUE(s.chaff.waits_for_root);  // chaff always yields to the link
  EXPECT_EQ(s.chaff.flow_lanes, 1u);  // chaff connections are the generator's, paced as one
  EXPECT_EQ(s.chaff.rate_bytes_per_sec, 2'500'000u);
  EXPECT_EQ(s.chaff.ceil_bytes_per_sec, 6'000'000u);  // the migration envelope
  EXPECT_EQ(s.chaff.queue_depth_ms, 30u);
  EXPECT_TRUE(s.chaff_borrows_from_migration);
  EXPECT_TRUE(s.migration_borrows_from_chaff);
  EXPECT_TRUE(s.Validate().ok()) << s.Validate();
}

TEST(GatewayConfigTest, ShaperMappingWithoutRateVariationCapsAtTheStartRate) {
  GatewayConfig c;
  c.rate_variation.enabled = false;
  c.rate_variation.start_rate_mbyte_s = 2;
  const ShaperConfig s = ToShaperConfig(c);
  EXPECT_EQ(s.migration.rate_bytes_per_sec, 2'000'000u);
  EXPECT_EQ(s.migration.ceil_bytes_per_sec, 2'000'000u);
  EXPECT_FALSE(s.migration_borrows_from_chaff);
  EXPECT_TRUE(ValidateGatewayConfig(c).ok());
}

TEST(GatewayConfigTest, ShaperProblemsOfTheMappedHierarchyAreReported) {
  // 1 ms of queue at 1 MB/s is 1000 bytes: no room for one 9018-byte frame.
  std::string e = Error(R"(
[shaper]
migration_queue_ms = 1
[rate_variation]
min_rate_mbyte_s = 1
max_rate_mbyte_s = 1
start_rate_mbyte_s = 1
)");
  EXPECT_THAT(e, HasSubstr("shaper: "));
  EXPECT_THAT(e, HasSubstr("queue"));
}

TEST(GatewayConfigTest, GatewayModeRunsOneQueue) {
  EXPECT_THAT(Error("[dataplane]\nmode = \"gateway\"\nrx_queues = 2\nmempool_mbufs = 100000\n"),
              HasSubstr("cfg.toml:3: dataplane.rx_queues: must be 1 in gateway mode"));
}

// --- [chaff] ------------------------------------------------------------------

constexpr char kKeyHex[] = "8f1c2a9b3e4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

std::string PairPath(char side) {
  return testing::SourceRoot() + "/conf/gateway-pair-" + side + ".toml";
}

bool InTestNet(const IpPrefix& p) {
  for (const char* net : {"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"}) {
    const IpPrefix n = *ParseIpPrefix(net);
    if (p.version == 4 && p.length >= n.length && n.Contains(p.addr, 4)) return true;
  }
  return false;
}

TEST(GatewayConfigChaffTest, OffByDefaultAndInTheShippedExample) {
  absl::StatusOr<GatewayConfig> empty = Parse("");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_FALSE(empty->chaff.enabled());
  EXPECT_EQ(empty->chaff.policy, ChaffPolicyKind::kOff);
  EXPECT_TRUE(ToChaffConfig(*empty).Validate().ok());
  // The defaults are the core's.
  const ChaffConfig mapped = ToChaffConfig(*empty);
  const ChaffConfig core;
  EXPECT_EQ(mapped.policy.constant_rate_bytes_per_sec, core.policy.constant_rate_bytes_per_sec);
  EXPECT_EQ(mapped.policy.envelope_bytes_per_sec, core.policy.envelope_bytes_per_sec);
  EXPECT_EQ(mapped.policy.low_load_threshold_bytes_per_sec,
            core.policy.low_load_threshold_bytes_per_sec);
  EXPECT_EQ(mapped.policy.background_time_constant_ns, core.policy.background_time_constant_ns);
  EXPECT_EQ(mapped.rotation.mean_ns, core.rotation.mean_ns);
  EXPECT_EQ(mapped.pools.client_ports.first, core.pools.client_ports.first);
  EXPECT_EQ(mapped.tcp.src_mac, core.tcp.src_mac);
  EXPECT_EQ(mapped.tcp.wait_for_syn_ack, core.tcp.wait_for_syn_ack);
  EXPECT_EQ(mapped.respond, core.respond);

  absl::StatusOr<GatewayConfig> example = LoadGatewayConfig(ExamplePath());
  ASSERT_TRUE(example.ok()) << example.status();
  EXPECT_FALSE(example->chaff.enabled());
  EXPECT_EQ(example->chaff.policy, ChaffPolicyKind::kOff);
}

TEST(GatewayConfigChaffTest, TheCommentedExampleSectionParsesWhenUncommented) {
  std::ifstream in(ExamplePath());
  std::string line, text;
  bool in_chaff = false;
  while (std::getline(in, line)) {
    if (line == "# [chaff]") in_chaff = true;
    if (in_chaff && line.starts_with("# ")) {
      std::string uncommented = line.substr(2);
      if (uncommented.starts_with("key_file")) uncommented = std::string("key = \"") + kKeyHex + "\"";
      text += uncommented + "\n";
    }
  }
  ASSERT_THAT(text, HasSubstr("[chaff]"));
  absl::StatusOr<GatewayConfig> c = Parse(text);
  ASSERT_TRUE(c.ok()) << c.status() << "\n" << text;
  EXPECT_EQ(c->chaff.policy, ChaffPolicyKind::kFillToEnvelope);
}

TEST(GatewayConfigChaffTest, ThePairConfigsLoadAndMirrorEachOther) {
  absl::StatusOr<GatewayConfig> a = LoadGatewayConfig(PairPath('a'));
  absl::StatusOr<GatewayConfig> b = LoadGatewayConfig(PairPath('b'));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  for (const GatewayConfig* c : {&*a, &*b}) {
    EXPECT_TRUE(c->chaff.enabled());
    EXPECT_EQ(c->chaff.policy, ChaffPolicyKind::kFillToEnvelope);
    EXPECT_TRUE(c->chaff.respond);
    EXPECT_TRUE(c->chaff.peer_responds);
    EXPECT_EQ(c->chaff.connections, 3u);
    EXPECT_TRUE(ToChaffConfig(*c).Validate().ok());
    EXPECT_TRUE(ToShaperConfig(*c).Validate().ok());
    // TEST-NET only.
    for (const auto* pool : {&c->chaff.local_prefixes, &c->chaff.remote_prefixes}) {
      for (const IpPrefix& p : *pool) EXPECT_TRUE(InTestNet(p)) << p.ToString();
    }
    for (const ClassRule& r : c->classify.rules) {
      if (r.dst.version != 0) {
        EXPECT_TRUE(InTestNet(r.dst)) << r.name;
      }
      if (r.src.version != 0) {
        EXPECT_TRUE(InTestNet(r.src)) << r.name;
      }
      EXPECT_EQ(r.traffic_class, TrafficClass::kMigration);
    }
  }
  EXPECT_EQ(a->chaff.key->bytes, b->chaff.key->bytes);
  EXPECT_EQ(ChaffKeyId(*a->chaff.key), ChaffKeyId(*b->chaff.key));
  EXPECT_EQ(ChaffKeyId(*a->chaff.key), kShippedPairKeyId) << "the dataplane warns about this key";
  EXPECT_NE(ChaffKeyId(*ParseChaffKeyHex(kKeyHex)), kShippedPairKeyId);
  const auto prefixes = [](const std::vector<IpPrefix>& v) {
    std::vector<std::string> out;
    for (const IpPrefix& p : v) out.push_back(p.ToString());
    return out;
  };
  EXPECT_EQ(prefixes(a->chaff.local_prefixes), prefixes(b->chaff.remote_prefixes));
  EXPECT_EQ(prefixes(a->chaff.remote_prefixes), prefixes(b->chaff.local_prefixes));
  EXPECT_EQ(a->chaff.client_ports.ToString(), b->chaff.client_ports.ToString());
  EXPECT_EQ(a->chaff.server_ports.ToString(), b->chaff.server_ports.ToString());
  EXPECT_EQ(a->chaff.src_mac, b->chaff.dst_mac);
  EXPECT_EQ(a->chaff.dst_mac, b->chaff.src_mac);
  // Each side's migration rules point at the other side's hosts, never at a
  // chaff pool.
  for (const GatewayConfig* c : {&*a, &*b}) {
    const ChaffPools pools(ToChaffConfig(*c).pools);
    for (const ClassRule& r : c->classify.rules) {
      const uint32_t network = uint32_t{r.dst.addr[0]} << 24 | uint32_t{r.dst.addr[1]} << 16 |
                               uint32_t{r.dst.addr[2]} << 8 | r.dst.addr[3];
      const uint32_t last = network | (r.dst.length >= 32 ? 0 : 0xFFFFFFFFu >> r.dst.length);
      EXPECT_FALSE(pools.InRemote(network) || pools.InRemote(last)) << r.name;
      EXPECT_FALSE(pools.InLocal(network) || pools.InLocal(last)) << r.name;
    }
  }

  // The pair works as shipped: every frame of a connection A's generator
  // opens verifies at B as the peer's chaff, and B's answers verify at A.
  const ChaffKeys keys(*a->chaff.key);
  absl::StatusOr<ChaffGenerator> gen_a = ChaffGenerator::Create(ToChaffConfig(*a), keys);
  ASSERT_TRUE(gen_a.ok()) << gen_a.status();
  const ChaffVerifier at_b(ChaffKeys(*b->chaff.key), ToChaffConfig(*b).pools);
  const ChaffVerifier at_a(keys, ToChaffConfig(*a).pools);
  const ChaffResponder responder_b(ToChaffConfig(*b).tcp);
  std::mt19937_64 rng(3);
  std::vector<uint8_t> frame(2048), reply(2048), next(2048);
  size_t n = gen_a->NextFrame(0, rng, frame);
  ASSERT_GT(n, 0u);
  std::optional<ChaffSegment> syn = at_b.Verify({frame.data(), n});
  ASSERT_TRUE(syn.has_value());
  EXPECT_EQ(syn->direction, ChaffDirection::kClientToServer);
  const size_t r = responder_b.Respond(*syn, {frame.data(), n}, 1'000'000, reply);
  ASSERT_GT(r, 0u);
  std::optional<ChaffSegment> synack = at_a.Verify({reply.data(), r});
  ASSERT_TRUE(synack.has_value());
  EXPECT_EQ(synack->direction, ChaffDirection::kServerToClient);
  const size_t d = gen_a->OnServerSegment(*synack, 2'000'000, next);
  ASSERT_GT(d, 0u);
  std::optional<ChaffSegment> data = at_b.Verify({next.data(), d});
  ASSERT_TRUE(data.has_value());
  EXPECT_GT(data->payload_length, 1000u);
}

TEST(GatewayConfigChaffTest, ParsesEveryKeyAndConvertsUnits) {
  absl::StatusOr<GatewayConfig> c = Parse(absl::StrCat(R"([chaff]
key = ")", kKeyHex, R"("
policy = "low_load"
constant_rate_mbyte_s = 2.5
envelope_rate_multiple = 0
envelope_mbyte_s = 6
low_load_threshold_mbyte_s = 3
low_load_hysteresis = 0.3
low_load_fills_envelope = false
background_time_constant_ms = 500
local_prefixes = ["203.0.113.0/26", "192.0.2.64/26"]
remote_prefixes = ["198.51.100.0/24"]
client_ports = "40000-40999"
server_ports = "8443-8444"
connections = 4
rotation = "pareto"
rotation_mean_ms = 12000
rotation_uniform_spread = 0.5
rotation_lognormal_sigma = 0.7
rotation_pareto_shape = 3
respond = false
peer_responds = false
src_mac = "02:00:5e:10:00:01"
dst_mac = "02-00-5E-10-00-02"
mtu = 1400
ttl = 60
)"));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->chaff.key.has_value());
  EXPECT_EQ(c->chaff.key->bytes, ParseChaffKeyHex(kKeyHex)->bytes);
  const ChaffConfig m = ToChaffConfig(*c);
  EXPECT_EQ(m.policy.kind, ChaffPolicyKind::kLowLoad);
  EXPECT_EQ(m.policy.constant_rate_bytes_per_sec, 2'500'000u);
  EXPECT_EQ(m.policy.envelope_rate_multiple, 0.0);
  EXPECT_EQ(m.policy.envelope_bytes_per_sec, 6'000'000u);
  EXPECT_EQ(m.policy.low_load_threshold_bytes_per_sec, 3'000'000u);
  EXPECT_DOUBLE_EQ(m.policy.low_load_hysteresis, 0.3);
  EXPECT_FALSE(m.policy.low_load_fills_envelope);
  EXPECT_TRUE(m.policy.chaff_borrows_from_migration);
  EXPECT_EQ(m.policy.background_time_constant_ns, 500'000'000u);
  ASSERT_EQ(m.pools.local_prefixes.size(), 2u);
  EXPECT_EQ(m.pools.local_prefixes[1].ToString(), "192.0.2.64/26");
  EXPECT_EQ(m.pools.remote_prefixes[0].ToString(), "198.51.100.0/24");
  EXPECT_EQ(m.pools.client_ports.first, 40000);
  EXPECT_EQ(m.pools.client_ports.last, 40999);
  EXPECT_EQ(m.pools.server_ports.first, 8443);
  EXPECT_EQ(m.pools.server_ports.last, 8444);
  EXPECT_EQ(c->chaff.connections, 4u);
  EXPECT_EQ(m.rotation.distribution, RotationDistribution::kPareto);
  EXPECT_EQ(m.rotation.mean_ns, 12'000'000'000u);
  EXPECT_DOUBLE_EQ(m.rotation.uniform_spread, 0.5);
  EXPECT_DOUBLE_EQ(m.rotation.lognormal_sigma, 0.7);
  EXPECT_DOUBLE_EQ(m.rotation.pareto_shape, 3.0);
  EXPECT_FALSE(m.respond);
  EXPECT_FALSE(m.tcp.wait_for_syn_ack);
  EXPECT_EQ(m.tcp.src_mac, (MacAddress{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}));
  EXPECT_EQ(m.tcp.dst_mac, (MacAddress{0x02, 0x00, 0x5e, 0x10, 0x00, 0x02}));
  EXPECT_EQ(m.tcp.mtu, 1400);
  EXPECT_EQ(m.tcp.ttl, 60);
  EXPECT_TRUE(m.Validate().ok()) << m.Validate();
}

TEST(GatewayConfigChaffTest, TheChaffClassCeilLetsThePolicyReachItsTopRate) {
  GatewayConfig c;
  c.chaff.key = *ParseChaffKeyHex(kKeyHex);
  c.chaff.policy = ChaffPolicyKind::kFillToEnvelope;
  c.chaff.envelope_rate_multiple = 2.0;
  ASSERT_TRUE(ValidateGatewayConfig(c).ok()) << ValidateGatewayConfig(c);
  EXPECT_EQ(ToShaperConfig(c).chaff.ceil_bytes_per_sec, 16'000'000u);  // 2 x maxR
  EXPECT_EQ(ToShaperConfig(c).chaff.rate_bytes_per_sec, 0u);  // the policy sets it
  c.chaff.policy = ChaffPolicyKind::kConstant;
  c.chaff.constant_rate_mbyte_s = 10;
  EXPECT_EQ(ToShaperConfig(c).chaff.ceil_bytes_per_sec, 18'000'000u);  // own + borrowed maxR
  c.chaff.policy = ChaffPolicyKind::kOff;
  EXPECT_EQ(ToShaperConfig(c).chaff.ceil_bytes_per_sec, 8'000'000u);  // as before chaff
}

TEST(GatewayConfigChaffErrorTest, APolicyNeedsTheKey) {
  EXPECT_THAT(Error("[chaff]\npolicy = \"constant\"\n"),
              HasSubstr("cfg.toml:2: chaff.policy: \"constant\" needs the pair's key"));
  EXPECT_THAT(Error("[chaff]\npolicy = \"sometimes\"\n"),
              HasSubstr("cfg.toml:2: chaff.policy: must be \"off\" or \"constant\" or "
                        "\"fill_to_envelope\" or \"low_load\", got \"sometimes\""));
}

TEST(GatewayConfigChaffErrorTest, BadKeysNameTheKeyButNeverShowIt) {
  const std::string short_key = "8f1c2a9b3e4d5f60";
  std::string message = Error("[chaff]\nkey = \"" + short_key + "\"\n");
  EXPECT_THAT(message, HasSubstr("cfg.toml:2: chaff.key: chaff key must be 64 hex digits, got 16"));
  EXPECT_THAT(message, Not(HasSubstr(short_key)));
  std::string not_hex(kKeyHex);
  not_hex[10] = 'x';
  message = Error("[chaff]\nkey = \"" + not_hex + "\"\n");
  EXPECT_THAT(message, HasSubstr("chaff.key: chaff key must be hex digits only"));
  EXPECT_THAT(message, Not(HasSubstr(not_hex)));
  EXPECT_THAT(Error("[chaff]\nkey = \"" + std::string(64, '0') + "\"\n"),
              HasSubstr("chaff.key: chaff key is all zeros"));
  EXPECT_THAT(Error("[chaff]\nkey = 12\n"), HasSubstr("chaff.key: expected a string, got an integer"));
  EXPECT_THAT(Error(absl::StrCat("[chaff]\nkey = \"", kKeyHex, "\"\nkey_file = \"/k\"\n")),
              HasSubstr("cfg.toml:3: chaff.key_file: give either key or key_file, not both"));
}

TEST(GatewayConfigChaffErrorTest, KeyFileMustBeAbsolutePrivateAndHoldAKey) {
  const std::string dir = testing::MakeTempDir();
  const std::string path = dir + "/pair.key";
  {
    std::ofstream out(path);
    out << kKeyHex << "\n";
  }
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  std::string message = Error("[chaff]\nkey_file = \"" + path + "\"\n");
  EXPECT_THAT(message, HasSubstr("cfg.toml:2: chaff.key_file: " + path +
                                 ": group or others may access it (mode 0644); `chmod 600"));
  EXPECT_THAT(message, Not(HasSubstr(kKeyHex)));
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  absl::StatusOr<GatewayConfig> c =
      Parse("[chaff]\nkey_file = \"" + path + "\"\npolicy = \"constant\"\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->chaff.key->bytes, ParseChaffKeyHex(kKeyHex)->bytes);
  EXPECT_EQ(c->chaff.key_file, path);

  EXPECT_THAT(Error("[chaff]\nkey_file = \"pair.key\"\n"),
              HasSubstr("chaff.key_file: must be an absolute path"));
  EXPECT_THAT(Error("[chaff]\nkey_file = \"" + dir + "/missing.key\"\n"),
              HasSubstr("chaff.key_file: " + dir + "/missing.key: No such file"));
  {
    std::ofstream out(path, std::ios::trunc);
    out << "not a key\n";
  }
  EXPECT_THAT(Error("[chaff]\nkey_file = \"" + path + "\"\n"),
              HasSubstr("chaff.key_file: " + path + ": chaff key must be 64 hex digits"));
}

TEST(GatewayConfigChaffErrorTest, PoolsAndPortsNameTheKeyAndLine) {
  const std::string key = absl::StrCat("[chaff]\nkey = \"", kKeyHex, "\"\n");
  EXPECT_THAT(Error(key + "local_prefixes = [\"192.0.2.0/25\",\n  \"192.0.2.300/25\"]\n"),
              HasSubstr("cfg.toml:4: chaff.local_prefixes[1]: "));
  EXPECT_THAT(Error(key + "local_prefixes = \"192.0.2.0/25\"\n"),
              HasSubstr("cfg.toml:3: chaff.local_prefixes: expected an array of prefixes"));
  EXPECT_THAT(Error(key + "local_prefixes = [\"2001:db8::/32\"]\n"),
              HasSubstr("cfg.toml:3: chaff.local_prefixes[0]: must be an IPv4 prefix"));
  EXPECT_THAT(Error(key + "remote_prefixes = [\"192.0.2.0/28\"]\n"),
              HasSubstr("cfg.toml:3: chaff.remote_prefixes[0]: 192.0.2.0/28 overlaps "
                        "chaff.local_prefixes[0]"));
  EXPECT_THAT(Error(key + "client_ports = \"400-500\"\nserver_ports = 443\n"),
              HasSubstr("cfg.toml:4: chaff.server_ports: 443 overlaps chaff.client_ports 400-500"));
  EXPECT_THAT(Error(key + "client_ports = \"70000\"\n"), HasSubstr("chaff.client_ports: "));
}

TEST(GatewayConfigChaffErrorTest, RangesTypesAndUnknownKeys) {
  const std::string key = absl::StrCat("[chaff]\nkey = \"", kKeyHex, "\"\n");
  EXPECT_THAT(Error(key + "envelope_rate_multiple = 0.5\n"),
              HasSubstr("cfg.toml:3: chaff.envelope_rate_multiple: must be 0"));
  EXPECT_THAT(Error(key + "constant_rate_mbyte_s = 0\n"),
              HasSubstr("cfg.toml:3: chaff.constant_rate_mbyte_s: must be > 0"));
  EXPECT_THAT(Error(key + "low_load_hysteresis = 1\n"),
              HasSubstr("cfg.toml:3: chaff.low_load_hysteresis: must be in [0, 1)"));
  EXPECT_THAT(Error(key + "rotation = \"weibull\"\n"),
              HasSubstr("cfg.toml:3: chaff.rotation: must be \"exponential\""));
  EXPECT_THAT(Error(key + "connections = 0\n"),
              HasSubstr("cfg.toml:3: chaff.connections: must be between 1 and 16, got 0"));
  EXPECT_THAT(Error(key + "connections = 17\n"),
              HasSubstr("cfg.toml:3: chaff.connections: must be between 1 and 16, got 17"));
  EXPECT_THAT(Error(key + "rotation_mean_ms = 0\n"),
              HasSubstr("cfg.toml:3: chaff.rotation_mean_ms: must be between 1 and"));
  EXPECT_THAT(Error(key + "rotation_pareto_shape = 1\n"),
              HasSubstr("cfg.toml:3: chaff.rotation_pareto_shape: must be in (1, 100]"));
  EXPECT_THAT(Error(key + "mtu = 9000\n"), HasSubstr("cfg.toml:3: chaff.mtu: must be between 576 and 1500"));
  EXPECT_THAT(Error(key + "dst_mac = \"02:00:00:00:00\"\n"),
              HasSubstr("cfg.toml:3: chaff.dst_mac: expected a MAC address"));
  EXPECT_THAT(Error(key + "dst_mac = \"ff:ff:ff:ff:ff:ff\"\n"),
              HasSubstr("chaff.dst_mac: \"ff:ff:ff:ff:ff:ff\" is a multicast/broadcast address"));
  EXPECT_THAT(Error(key + "respond = \"yes\"\n"),
              HasSubstr("cfg.toml:3: chaff.respond: expected a boolean"));
  EXPECT_THAT(Error(key + "polcy = \"off\"\n"),
              HasSubstr("cfg.toml:3: chaff.polcy: unknown key; known keys here: "));
  EXPECT_THAT(Error(key + "policy = \"constant\"\n[shaper]\nchaff_rate_mbyte_s = 2\n"),
              HasSubstr("cfg.toml:5: shaper.chaff_rate_mbyte_s: must be 0 with chaff.policy"));
}

}  // namespace
}  // namespace shroud
