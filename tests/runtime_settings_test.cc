#include "dataplane/core/runtime_settings.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace shroud {
namespace {

using json = nlohmann::json;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kKeyA[] = "80de616231f975628529505d571ed32a41eb09ea80d7ff28ba99efafa51f99af";
constexpr char kKeyB[] = "1111111111111111111111111111111111111111111111111111111111111111";

GatewayConfig Parse(const std::string& toml) {
  absl::StatusOr<GatewayConfig> c = ParseGatewayConfig(toml, "test.toml");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : GatewayConfig{};
}

constexpr char kRules[] = R"(
[[classify.rule]]
name = "qemu"
class = "migration"
protocol = "tcp"
dst_ports = "49152-49215"
)";

std::string WithChaff(const std::string& key = kKeyA) {
  return std::string(kRules) + "[chaff]\nkey = \"" + key + "\"\npolicy = \"fill_to_envelope\"\n";
}

// The error message of ApplySettings, "" when it succeeded.
std::string Error(const GatewayConfig& running, const json& values) {
  absl::StatusOr<GatewayConfig> r = ApplySettings(running, values);
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(r.status().message());
}

TEST(ApplySettingsTest, NotAnObject) {
  const GatewayConfig c;
  EXPECT_THAT(Error(c, json::array({1, 2})),
              AllOf(StartsWith("settings: "), HasSubstr("expected a JSON object"),
                    HasSubstr("got an array")));
  EXPECT_THAT(Error(c, json("rate_variation.window=3")), HasSubstr("got a string"));
  EXPECT_THAT(Error(c, json(nullptr)), HasSubstr("got null"));
  EXPECT_THAT(Error(c, json::object()), HasSubstr("nothing to set"));
}

TEST(ApplySettingsTest, TooManyKeys) {
  json values = json::object();
  for (int i = 0; i < 65; ++i) values["k" + std::to_string(i)] = i;
  EXPECT_THAT(Error(GatewayConfig{}, values),
              AllOf(HasSubstr("at most 64 keys"), HasSubstr("got 65")));
}

TEST(ApplySettingsTest, UnknownKeySuggestsTheClosest) {
  const GatewayConfig c;
  EXPECT_EQ(Error(c, {{"rate_variation.windw", 10}}),
            "rate_variation.windw: unknown key; did you mean rate_variation.window?");
  EXPECT_THAT(Error(c, {{"window", 10}}), HasSubstr("did you mean rate_variation.window?"));
  EXPECT_THAT(Error(c, {{"rate_variation.max_rate", 10}}),
              HasSubstr("did you mean rate_variation.max_rate_mbyte_s?"));
  EXPECT_THAT(Error(c, {{"chaff.polcy", "off"}}), HasSubstr("did you mean chaff.policy?"));
  EXPECT_THAT(Error(c, {{"zzz", 1}}),
              AllOf(StartsWith("zzz: unknown key"), Not(HasSubstr("did you mean")),
                    HasSubstr("shroud ctl get")));
  // Not settable at run time, though config keys.
  EXPECT_THAT(Error(c, {{"flows.max_flows", 10}}), StartsWith("flows.max_flows: unknown key"));
  EXPECT_THAT(Error(c, {{"rate_variation.seed", 10}}),
              StartsWith("rate_variation.seed: unknown key"));
  // A huge key is not echoed whole.
  EXPECT_LT(Error(c, {{std::string(60000, 'x'), 1}}).size(), 200u);
}

TEST(ApplySettingsTest, WrongTypes) {
  const GatewayConfig c;
  EXPECT_EQ(Error(c, {{"rate_variation.d", "x"}}),
            "rate_variation.d: expected a number, got a string");
  EXPECT_EQ(Error(c, {{"rate_variation.window", "100"}}),
            "rate_variation.window: expected an integer, got a string");
  EXPECT_EQ(Error(c, {{"rate_variation.window", 2.5}}),
            "rate_variation.window: expected an integer, got 2.5");
  EXPECT_EQ(Error(c, {{"rate_variation.interval_ms", -1}}),
            "rate_variation.interval_ms: must not be negative, got -1");
  EXPECT_EQ(Error(c, {{"rate_variation.interval_ms", -1.5}}),
            "rate_variation.interval_ms: must not be negative, got -1.5");
  EXPECT_THAT(Error(c, {{"rate_variation.window", uint64_t{1} << 40}}),
              StartsWith("rate_variation.window: too large: 1099511627776"));
  EXPECT_EQ(Error(c, {{"rate_variation.enabled", 1}}),
            "rate_variation.enabled: expected a boolean (true or false), got a number");
  EXPECT_THAT(Error(c, {{"rate_variation.up_range", 1.2}}),
              StartsWith("rate_variation.up_range: expected an array of two numbers"));
  EXPECT_THAT(Error(c, {{"rate_variation.up_range", {1.0, 1.2, 1.4}}}),
              HasSubstr("got an array of 3"));
  EXPECT_THAT(Error(c, {{"rate_variation.up_range", {1.0, "x"}}}),
              HasSubstr("element 1 is a string"));
  EXPECT_THAT(Error(c, {{"rate_variation.min_rate_mbyte_s", nullptr}}),
              HasSubstr("expected a number, got null"));

  const GatewayConfig chaff = Parse(WithChaff());
  EXPECT_EQ(Error(chaff, {{"chaff.policy", "sometimes"}}),
            "chaff.policy: must be \"off\" or \"constant\" or \"fill_to_envelope\" or "
            "\"low_load\", got \"sometimes\"");
  EXPECT_THAT(Error(chaff, {{"chaff.policy", 1}}),
              AllOf(StartsWith("chaff.policy: expected a string"), HasSubstr("got a number")));
  EXPECT_THAT(Error(chaff, {{"chaff.low_load_fills_envelope", "yes"}}),
              HasSubstr("expected a boolean"));
  EXPECT_THAT(Error(chaff, {{"chaff.background_time_constant_ms", -5}}),
              HasSubstr("must not be negative, got -5"));
}

TEST(ApplySettingsTest, IntegralFloatsAreIntegers) {
  absl::StatusOr<GatewayConfig> r = ApplySettings(GatewayConfig{}, {{"rate_variation.window", 50.0}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rate_variation.window, 50u);
}

TEST(ApplySettingsTest, OutOfRangeIsTheValidatorsMessage) {
  const GatewayConfig c;
  EXPECT_EQ(Error(c, {{"rate_variation.window", 1}}),
            "rate_variation.window: must be between 2 and 65536, got 1");
  EXPECT_THAT(Error(c, {{"rate_variation.c_percent", 101}}),
              StartsWith("rate_variation.c_percent: must be between 0 and 100"));
  // A check on another key says which key set caused it.
  EXPECT_THAT(
      Error(c, {{"rate_variation.max_rate_mbyte_s", 0.2}}),
      StartsWith("rate_variation.max_rate_mbyte_s: conflicts with rate_variation.min_rate_mbyte_s: "
                 "must be <= rate_variation.max_rate_mbyte_s (0.2)"));
  EXPECT_THAT(Error(c, {{"rate_variation.max_rate_mbyte_s", 200}}),
              AllOf(StartsWith("rate_variation.max_rate_mbyte_s: must not exceed "
                               "shaper.link_rate_mbyte_s"),
                    HasSubstr("not megabits")));
  const GatewayConfig chaff = Parse(WithChaff());
  EXPECT_THAT(Error(chaff, {{"chaff.low_load_hysteresis", 1.0}}),
              StartsWith("chaff.low_load_hysteresis: must be in [0, 1), got 1"));
}

TEST(ApplySettingsTest, ChaffNeedsAChaffKeyAtStart) {
  const GatewayConfig c = Parse(kRules);
  ASSERT_FALSE(c.chaff.enabled());
  EXPECT_THAT(Error(c, {{"chaff.policy", "constant"}}),
              AllOf(StartsWith("chaff.policy: chaff is not configured"),
                    HasSubstr("restart the dataplane with a [chaff] key")));
  EXPECT_THAT(Error(c, {{"chaff.envelope_mbyte_s", 4}}), StartsWith("chaff.envelope_mbyte_s: chaff is not configured"));
}

TEST(ApplySettingsTest, AllOrNothingAndEveryProblemAtOnce) {
  const GatewayConfig c;
  const std::string e = Error(c, {{"rate_variation.window", 50},
                                  {"rate_variation.d", "x"},
                                  {"nope", 1},
                                  {"rate_variation.interval_ms", -1}});
  EXPECT_THAT(e, HasSubstr("rate_variation.d: expected a number"));
  EXPECT_THAT(e, HasSubstr("nope: unknown key"));
  EXPECT_THAT(e, HasSubstr("rate_variation.interval_ms: must not be negative"));
  EXPECT_THAT(e, Not(HasSubstr("rate_variation.window")));
  // Valid values with one the validator refuses: none applies.
  EXPECT_THAT(Error(c, {{"rate_variation.window", 50}, {"rate_variation.c_percent", 400}}),
              HasSubstr("rate_variation.c_percent: must be between 0 and 100"));
}

TEST(ApplySettingsTest, ChangesExactlyTheNamedFields) {
  const GatewayConfig running = Parse(WithChaff());
  const json values = {{"rate_variation.window", 77},
                       {"rate_variation.max_rate_mbyte_s", 10},
                       {"rate_variation.up_range", {1.0, 1.2}},
                       {"rate_variation.enabled", false},
                       {"chaff.policy", "constant"},
                       {"chaff.constant_rate_mbyte_s", 2.5}};
  absl::StatusOr<GatewayConfig> next = ApplySettings(running, values);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->rate_variation.window, 77u);
  EXPECT_EQ(next->rate_variation.max_rate_mbyte_s, 10.0);
  EXPECT_EQ(next->rate_variation.up_range, (std::array<double, 2>{1.0, 1.2}));
  EXPECT_FALSE(next->rate_variation.enabled);
  EXPECT_EQ(next->chaff.policy, ChaffPolicyKind::kConstant);
  EXPECT_EQ(ToChaffConfig(*next).policy.constant_rate_bytes_per_sec, 2'500'000u);

  // Every other settable value as it was...
  json before = SettableValues(running);
  json after = SettableValues(*next);
  for (const auto& [key, value] : values.items()) {
    EXPECT_NE(before[key], after[key]) << key;
    before.erase(key);
    after.erase(key);
  }
  EXPECT_EQ(before, after);
  EXPECT_EQ(SettingChanges(running, *next), values);
  // ...and nothing that is not settable.
  EXPECT_THAT(RestartOnlyChanges(running, *next), IsEmpty());
  EXPECT_EQ(next->classify.rules.size(), running.classify.rules.size());
  EXPECT_EQ(next->rate_variation.seed, running.rate_variation.seed);
}

TEST(SettableValuesTest, ListsEveryKeyAndRoundTrips) {
  for (const GatewayConfig& config : {Parse(kRules), Parse(WithChaff())}) {
    const json values = SettableValues(config);
    ASSERT_TRUE(values.is_object());
    size_t expected = 0;
    for (std::string_view key : SettableKeys()) {
      if (key.starts_with("chaff.") && !config.chaff.enabled()) {
        EXPECT_FALSE(values.contains(std::string(key))) << key;
        continue;
      }
      ++expected;
      EXPECT_TRUE(values.contains(std::string(key))) << key;
    }
    EXPECT_EQ(values.size(), expected);
    // Through text, as `shroud ctl get` shows and `set` sends them.
    const json reparsed = json::parse(values.dump());
    absl::StatusOr<GatewayConfig> again = ApplySettings(config, reparsed);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(SettableValues(*again), values);
    EXPECT_THAT(RestartOnlyChanges(config, *again), IsEmpty());
    EXPECT_EQ(SettingChanges(config, *again), json::object());
  }
  EXPECT_EQ(SettableKeys().size(), 30u);
  const json chaff = SettableValues(Parse(WithChaff()));
  EXPECT_EQ(chaff["chaff.policy"], "fill_to_envelope");
  EXPECT_TRUE(chaff["rate_variation.up_range"].is_array());
  EXPECT_TRUE(chaff["rate_variation.window"].is_number_unsigned());
}

TEST(RestartOnlyChangesTest, LiveChangesNeedNoRestart) {
  const GatewayConfig base = Parse(WithChaff());
  // Rules only.
  const GatewayConfig rules = Parse(WithChaff() + R"(
[[classify.rule]]
name = "libvirt"
class = "migration"
protocol = "tcp"
dst_ports = 16514
)");
  EXPECT_THAT(RestartOnlyChanges(base, rules), IsEmpty());
  // [rate_variation] and the chaff policy.
  const GatewayConfig rates = Parse(WithChaff() + R"(
envelope_rate_multiple = 2.0
[rate_variation]
max_rate_mbyte_s = 12
window = 50
up_range = [1.0, 1.2]
)");
  EXPECT_THAT(RestartOnlyChanges(base, rates), IsEmpty());
  EXPECT_THAT(RestartOnlyChanges(base, base), IsEmpty());
}

TEST(RestartOnlyChangesTest, NamesWhatNeedsARestart) {
  const GatewayConfig base = Parse(WithChaff());
  EXPECT_THAT(RestartOnlyChanges(base, Parse(WithChaff() + "[flows]\nmax_flows = 1024\n")),
              ElementsAre("flows.max_flows"));
  EXPECT_THAT(RestartOnlyChanges(
                  base, Parse(WithChaff() + "[dataplane]\nrx_descriptors = 512\nburst_size = 64\n")),
              ElementsAre("dataplane.rx_descriptors", "dataplane.burst_size"));
  EXPECT_THAT(RestartOnlyChanges(base, Parse(WithChaff() + "[shaper]\nlink_rate_mbyte_s = 100\n")),
              ElementsAre("shaper.link_rate_mbyte_s"));
  EXPECT_THAT(RestartOnlyChanges(base, Parse(WithChaff() + "[features]\npattern_window = 500\n")),
              ElementsAre("features.pattern_window"));
  EXPECT_THAT(RestartOnlyChanges(base, Parse(WithChaff() + "[rate_variation]\nseed = 7\n")),
              ElementsAre("rate_variation.seed"));
  EXPECT_THAT(RestartOnlyChanges(base, Parse(WithChaff(kKeyB))), ElementsAre("chaff.key"));
  EXPECT_THAT(RestartOnlyChanges(base, Parse(WithChaff() + "connections = 3\nttl = 32\n")),
              ElementsAre("chaff.connections", "chaff.ttl"));
  // Turning chaff on or off is a key change.
  EXPECT_THAT(RestartOnlyChanges(Parse(kRules), base), ElementsAre("chaff.key"));
  EXPECT_THAT(RestartOnlyChanges(base, Parse(kRules)), ElementsAre("chaff.key"));
}

}  // namespace
}  // namespace shroud
