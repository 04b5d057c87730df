// shroud judge's core: flow labelling, the timing attack, leave-one-run-out
// training, exact IPT histograms.
#include "control/analysis/judge.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "control/analysis/timing_attack.h"
#include "tests/control_fixtures.h"
#include "tests/synthetic_flows.h"
#include "tests/test_util.h"

namespace shroud {
namespace {

using ::testing::HasSubstr;

JudgeOptions Options(const FeatureConfig& config) {
  JudgeOptions o;
  o.config = config;
  o.shipped = testing::ShippedMaxEntModel();
  return o;
}

FlowLabelRules Rules() {
  FlowLabelRules r;
  r.chaff_nets = *ParseIpv4Nets("192.0.2.128/25,198.51.100.128/25");
  r.min_packets = 1000;
  return r;
}

LabelledFlow FlowWith(std::array<uint8_t, 4> src, uint16_t sport, uint16_t dport, uint64_t packets,
                      bool migration) {
  LabelledFlow f;
  f.key.ip_version = 4;
  f.key.protocol = kProtoTcp;
  std::copy(src.begin(), src.end(), f.key.src_addr.begin());
  f.key.dst_addr = {198, 51, 100, 10};
  f.key.src_port = sport;
  f.key.dst_port = dport;
  f.features.packets = packets;
  f.is_migration = migration;
  return f;
}

TEST(JudgeTest, ParseIpv4Nets) {
  auto nets = ParseIpv4Nets("192.0.2.128/25, 10.0.0.1");
  ASSERT_TRUE(nets.ok()) << nets.status();
  ASSERT_EQ(nets->size(), 2u);
  EXPECT_TRUE((*nets)[0].Contains({192, 0, 2, 200}));
  EXPECT_FALSE((*nets)[0].Contains({192, 0, 2, 127}));
  EXPECT_TRUE((*nets)[1].Contains({10, 0, 0, 1}));
  EXPECT_FALSE((*nets)[1].Contains({10, 0, 0, 2}));
  for (const char* bad : {"192.0.2/24", "192.0.2.300/24", "192.0.2.0/33", "x", "1.2.3.4/8/9"}) {
    auto r = ParseIpv4Nets(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("is not an IPv4 network")) << bad;
  }
  EXPECT_TRUE(ParseIpv4Nets("").ok());
}

TEST(JudgeTest, LabelsChaffBeforeMigrationAndMarksBulk) {
  std::vector<LabelledFlow> flows = {
      FlowWith({192, 0, 2, 10}, 40000, 49152, 5000, true),    // migration
      FlowWith({192, 0, 2, 150}, 40001, 49153, 5000, true),   // chaff on a migration port
      FlowWith({192, 0, 2, 11}, 40002, 5203, 3000, false),    // iperf3: bulk background
      FlowWith({192, 0, 2, 11}, 40003, 8080, 3000, false),    // http: background
      FlowWith({192, 0, 2, 11}, 40004, 8080, 999, false),     // too short
  };
  RunFlows run = LabelFlows({"r", "stealth", "x.pcap"}, flows, 100000, Rules());
  ASSERT_EQ(run.flows.size(), 4u);
  EXPECT_EQ(run.flows[0].label, FlowLabel::kMigration);
  EXPECT_TRUE(run.flows[0].flow.is_migration);
  EXPECT_EQ(run.flows[1].label, FlowLabel::kChaff);
  EXPECT_FALSE(run.flows[1].flow.is_migration);
  EXPECT_EQ(run.flows[2].label, FlowLabel::kBackground);
  EXPECT_TRUE(run.flows[2].bulk);
  EXPECT_FALSE(run.flows[3].bulk);
  EXPECT_STREQ(FlowLabelName(run.flows[1].label), "chaff");
}

TEST(JudgeTest, MarksTheAckDirectionOfAConnection) {
  auto with_bytes = [](LabelledFlow f, uint64_t bytes) {
    f.features.bytes = bytes;
    return f;
  };
  auto reversed = [](LabelledFlow f) {
    f.key = f.key.Reversed();
    return f;
  };
  const LabelledFlow download = FlowWith({192, 0, 2, 11}, 40002, 5203, 3000, false);
  const LabelledFlow chat = FlowWith({192, 0, 2, 11}, 40003, 8080, 3000, false);
  const LabelledFlow chaff = FlowWith({192, 0, 2, 150}, 40004, 443, 3000, false);
  std::vector<LabelledFlow> flows = {
      with_bytes(download, 4'000'000), with_bytes(reversed(download), 200'000),  // 20x: ACKs
      with_bytes(chat, 1'000'000), with_bytes(reversed(chat), 200'000),          // 5x: both data
      with_bytes(chaff, 4'000'000), with_bytes(reversed(chaff), 100'000),        // chaff's ACKs
      with_bytes(FlowWith({192, 0, 2, 11}, 40005, 8080, 3000, false), 50'000),    // reverse unjudged
  };
  flows.push_back(with_bytes(reversed(flows.back()), 10'000'000));
  flows.back().features.packets = 999;  // too short to be judged: the flow above is not marked
  RunFlows run = LabelFlows({"r", "stealth", "x.pcap"}, flows, 100000, Rules());
  ASSERT_EQ(run.flows.size(), 7u);
  std::vector<bool> ack;
  for (const JudgedFlow& f : run.flows) ack.push_back(f.ack_direction);
  EXPECT_THAT(ack, ::testing::ElementsAre(false, true, false, false, false, true, false));
  EXPECT_EQ(run.flows[4].label, FlowLabel::kChaff);
}

TEST(JudgeTest, TimingModelLearnsSeparableData) {
  std::vector<std::vector<double>> x;
  std::vector<bool> y;
  std::vector<std::string> names = {"a", "b"};
  for (int i = 0; i < 50; ++i) {
    x.push_back({1.0 + 0.01 * i, 5.0});
    y.push_back(true);
    x.push_back({-1.0 - 0.01 * i, 5.0 + (i % 3)});
    y.push_back(false);
  }
  auto model = TrainTiming(x, y, names);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE(model->converged);
  EXPECT_GT(model->Predict({1.2, 5.0}), 0.9);
  EXPECT_LT(model->Predict({-1.2, 5.0}), 0.1);
  // A missing feature is imputed with the training mean, not NaN.
  EXPECT_FALSE(std::isnan(model->Predict({1.2, std::nan("")})));
  EXPECT_TRUE(std::isnan(model->Predict({1.0})));  // wrong size

  EXPECT_FALSE(TrainTiming(x, std::vector<bool>(x.size(), true), names).ok());
  EXPECT_FALSE(TrainTiming({{1.0}}, {true}, names).ok());
  TimingTrainingOptions bad;
  bad.l2 = 0;
  EXPECT_FALSE(TrainTiming(x, y, names, bad).ok());
}

TEST(JudgeTest, TimingFeaturesHaveOneValuePerName) {
  FeatureConfig config;
  auto flows = testing::MakeSyntheticStream(3, 4, config);
  for (const LabelledFlow& f : flows) {
    EXPECT_EQ(TimingFeatures(f.view(config)).size(), TimingFeatureNames(config).size());
  }
}

// A synthetic run: a paced migration and irregular background flows. A
// "stealth" run relabels one irregular flow as its migration: it looks like
// background, as shaping intends.
RunFlows SyntheticRun(const std::string& id, const std::string& mode, uint64_t seed,
                      const FeatureConfig& config) {
  std::vector<LabelledFlow> flows = testing::MakeSyntheticStream(seed, 6, config, 30.0);
  if (mode == "stealth") {
    std::vector<LabelledFlow> kept;
    for (const LabelledFlow& f : flows) {
      if (!f.is_migration) kept.push_back(f);  // the paced one is gone
    }
    // The shortest flow the attacks judge: an ordinary background flow.
    LabelledFlow* chosen = nullptr;
    for (LabelledFlow& f : kept) {
      if (f.features.packets >= 1000 && (chosen == nullptr || f.features.packets < chosen->features.packets)) {
        chosen = &f;
      }
    }
    chosen->is_migration = true;
    flows = kept;
  }
  FlowLabelRules rules = Rules();
  return LabelFlows({id, mode, id + ".pcap"}, flows, flows.front().stream_packets, rules);
}

TEST(JudgeTest, LeaveOneRunOutVerdicts) {
  FeatureConfig config;
  std::vector<RunFlows> runs;
  for (int i = 0; i < 4; ++i) runs.push_back(SyntheticRun("n" + std::to_string(i), "native", 10 + i, config));
  for (int i = 0; i < 3; ++i) runs.push_back(SyntheticRun("s" + std::to_string(i), "stealth", 20 + i, config));
  for (const RunFlows& r : runs) {
    size_t mig = 0;
    for (const JudgedFlow& f : r.flows) mig += f.label == FlowLabel::kMigration ? 1 : 0;
    ASSERT_EQ(mig, 1u) << r.spec.id;
  }
  JudgeOptions o = Options(config);
  auto result = JudgeRuns(runs, o);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->runs.size(), runs.size());
  std::map<std::string, int> native_flagged, stealth_flagged;
  for (const JudgedRun& jr : result->runs) {
    const bool native = jr.run->spec.mode == "native";
    // Leave-one-run-out: a native run's models saw the 3 other native runs.
    EXPECT_THAT(jr.models.at("maxent"), HasSubstr(native ? "other native runs (3 runs: 3 migration"
                                                         : "all native runs (4 runs: 4 migration"));
    EXPECT_THAT(jr.models.at("timing_adaptive"),
                native ? HasSubstr("not applicable") : HasSubstr("other stealth runs' migrations (2 runs"));
    for (size_t i = 0; i < jr.run->flows.size(); ++i) {
      const auto& v = jr.verdicts[i];
      ASSERT_EQ(v.size(), JudgeDetectorNames(o).size());
      EXPECT_EQ(v.at("timing_adaptive").has_value(), !native);
      ASSERT_TRUE(v.at("maxent").has_value());
      ASSERT_TRUE(v.at("timing").has_value());
      if (jr.run->flows[i].label != FlowLabel::kMigration) continue;
      for (const char* d : {"maxent", "timing"}) {
        (native ? native_flagged : stealth_flagged)[d] += v.at(d)->flagged ? 1 : 0;
      }
    }
  }
  // Paced native migrations are caught; irregular flows called migrations
  // mostly are not, by attacks that learnt native migrations (the generator's
  // background flows vary: one may look paced enough).
  for (const char* d : {"maxent", "timing"}) {
    EXPECT_EQ(native_flagged[d], 4) << d;
    EXPECT_LE(stealth_flagged[d], 1) << d;
  }
  // Table III: paced migrations differ from background.
  ASSERT_EQ(result->comparisons.size(), 5u);
  const NamedComparison& native_bg = result->comparisons[0];
  const NamedComparison& stealth_bg = result->comparisons[2];
  EXPECT_EQ(native_bg.a, "native migration");
  ASSERT_TRUE(native_bg.result.ok()) << native_bg.result.status();
  EXPECT_LT(native_bg.result->chi_square.p_value, 0.05);
  ASSERT_TRUE(stealth_bg.result.ok()) << stealth_bg.result.status();
  // The CoVs of ordinary flows called migrations sit closer to the
  // background's than the paced migrations' do.
  EXPECT_LT(stealth_bg.result->ks.statistic, native_bg.result->ks.statistic);
  // No bulk flows in the synthetic runs: said, not crashed on.
  EXPECT_FALSE(result->comparisons[1].result.ok());
}

// The paper tried four window triples: each more triple is one more detector
// that judges exactly as maxent trained on that triple would.
TEST(JudgeTest, MoreWindowTriplesJudgeAsMaxentOnThatTriple) {
  FeatureConfig config;
  std::vector<RunFlows> runs;
  for (int i = 0; i < 3; ++i) runs.push_back(SyntheticRun("n" + std::to_string(i), "native", 10 + i, config));
  for (int i = 0; i < 2; ++i) runs.push_back(SyntheticRun("s" + std::to_string(i), "stealth", 20 + i, config));
  JudgeOptions more = Options(config);
  more.more_maxent_windows = {{100, 200, 300}, {1000, 2000, 3000}};
  EXPECT_THAT(JudgeDetectorNames(more),
              ::testing::ElementsAre("pattern", "maxent", "maxent_shipped", "timing", "timing_adaptive",
                                     "maxent_w100_200_300", "maxent_w1000_2000_3000"));
  auto with_more = JudgeRuns(runs, more);
  ASSERT_TRUE(with_more.ok()) << with_more.status();
  for (const MaxEntWindows& w : more.more_maxent_windows) {
    JudgeOptions alone = Options(config);
    alone.maxent_windows = w;
    auto on_triple = JudgeRuns(runs, alone);
    ASSERT_TRUE(on_triple.ok()) << on_triple.status();
    const std::string name = MaxEntDetectorName(w);
    size_t scored = 0;
    for (size_t r = 0; r < runs.size(); ++r) {
      EXPECT_EQ(with_more->runs[r].models.at(name), on_triple->runs[r].models.at("maxent")) << name;
      for (size_t i = 0; i < runs[r].flows.size(); ++i) {
        const auto& got = with_more->runs[r].verdicts[i].at(name);
        const auto& want = on_triple->runs[r].verdicts[i].at("maxent");
        ASSERT_TRUE(got.has_value() && want.has_value()) << name << " run " << r << " flow " << i;
        EXPECT_EQ(got->score, want->score) << name << " run " << r << " flow " << i;
        EXPECT_EQ(got->flagged, want->flagged) << name << " run " << r << " flow " << i;
        ++scored;
      }
    }
    EXPECT_GT(scored, 0u);
    // Not the default triple's verdicts under another name.
    bool differs = false;
    for (size_t r = 0; r < runs.size(); ++r) {
      for (size_t i = 0; i < runs[r].flows.size(); ++i) {
        differs |= with_more->runs[r].verdicts[i].at(name)->score !=
                   with_more->runs[r].verdicts[i].at("maxent")->score;
      }
    }
    EXPECT_TRUE(differs) << name;
  }
  // No native run to train on: no verdict from any triple, and said why.
  auto lone = JudgeRuns({SyntheticRun("n0", "native", 1, config)}, more);
  ASSERT_TRUE(lone.ok()) << lone.status();
  EXPECT_THAT(lone->runs[0].models.at("maxent_w100_200_300"), HasSubstr("none: no other native run"));
  EXPECT_FALSE(lone->runs[0].verdicts[0].at("maxent_w100_200_300").has_value());
}

TEST(JudgeTest, RefusesMoreWindowTriplesItCannotJudge) {
  FeatureConfig config;
  config.byte_window_count = 3;
  config.byte_windows = {100, 500, 1000};
  const std::vector<RunFlows> runs = {SyntheticRun("n0", "native", 1, config)};
  const std::vector<std::pair<std::vector<MaxEntWindows>, std::string>> cases = {
      {{{100, 200, 300}}, "maxent window triple 100,200,300: 200 is not one of the feature windows"},
      {{{500, 100, 1000}}, "maxent window triple 500,100,1000: must be three ascending positive sizes"},
      {{{100, 500, 1000}}, "maxent window triple 100,500,1000 is given twice or is maxent's own"},
  };
  for (const auto& [triples, error] : cases) {
    JudgeOptions o = Options(config);
    o.more_maxent_windows = triples;
    EXPECT_THAT(std::string(JudgeOptionsError(o).message()), HasSubstr(error));
    auto r = JudgeRuns(runs, o);
    ASSERT_FALSE(r.ok()) << error;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(error));
  }
  JudgeOptions twice = Options(FeatureConfig{});
  twice.more_maxent_windows = {{100, 200, 300}, {100, 200, 300}};
  EXPECT_THAT(std::string(JudgeOptionsError(twice).message()), HasSubstr("100,200,300 is given twice"));
  twice.more_maxent_windows.pop_back();
  EXPECT_TRUE(JudgeOptionsError(twice).ok());
}

TEST(JudgeTest, TableThreeLeavesAckDirectionsOut) {
  FeatureConfig config;
  std::vector<RunFlows> runs;
  for (int i = 0; i < 2; ++i) runs.push_back(SyntheticRun("n" + std::to_string(i), "native", 10 + i, config));
  for (int i = 0; i < 2; ++i) runs.push_back(SyntheticRun("s" + std::to_string(i), "stealth", 20 + i, config));
  size_t native_bg = 0, stealth_bg = 0;
  for (RunFlows& r : runs) {
    bool marked = false;
    for (JudgedFlow& f : r.flows) {
      if (f.label != FlowLabel::kBackground) continue;
      if (!marked) {
        f.ack_direction = marked = true;
        continue;
      }
      (r.spec.mode == "native" ? native_bg : stealth_bg) += 1;
    }
    ASSERT_TRUE(marked) << r.spec.id;
  }
  auto result = JudgeRuns(runs, Options(config));
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_TRUE(result->comparisons[0].result.ok());
  EXPECT_EQ(result->comparisons[0].result->n_b, native_bg);
  ASSERT_TRUE(result->comparisons[2].result.ok());
  EXPECT_EQ(result->comparisons[2].result->n_b, stealth_bg);
}

TEST(JudgeTest, OneNativeRunLeavesNothingToTrainOn) {
  FeatureConfig config;
  std::vector<RunFlows> runs = {SyntheticRun("n0", "native", 1, config)};
  JudgeOptions o = Options(config);
  auto result = JudgeRuns(runs, o);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->runs[0].models.at("maxent"), HasSubstr("none: no other native run"));
  EXPECT_FALSE(result->runs[0].verdicts[0].at("maxent").has_value());
  EXPECT_TRUE(result->runs[0].verdicts[0].at("pattern").has_value());
  EXPECT_TRUE(result->runs[0].verdicts[0].at("maxent_shipped").has_value());
}

TEST(JudgeTest, RejectsBadModeAndDuplicateIds) {
  FeatureConfig config;
  JudgeOptions o = Options(config);
  std::vector<RunFlows> runs = {SyntheticRun("a", "native", 1, config)};
  runs[0].spec.mode = "Native";
  auto r = JudgeRuns(runs, o);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("mode must be"));
  runs = {SyntheticRun("a", "native", 1, config), SyntheticRun("a", "native", 2, config)};
  r = JudgeRuns(runs, o);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("appears twice"));
}

TEST(JudgeTest, LoadRunKeepsExactGapsOfARealCapture) {
  const std::string mig = testing::TestDataPath("migration-r8-light.pcap");
  if (!std::filesystem::exists(mig)) GTEST_SKIP() << mig << " not present";
  CaptureOptions options;
  auto run = LoadRun({"real", "native", mig}, Rules(), options);
  ASSERT_TRUE(run.ok()) << run.status();
  size_t migrations = 0;
  for (const JudgedFlow& f : run->flows) {
    double gaps = 0;
    for (const auto& [us, n] : f.flow.exact_ipt) gaps += n;
    EXPECT_EQ(gaps, static_cast<double>(f.flow.features.packets - 1)) << FormatFlowKey(f.flow.key);
    if (f.label != FlowLabel::kMigration) continue;
    ++migrations;
    // More distinct gaps than the sketch's k: the exact histogram is wider.
    EXPECT_GT(f.flow.exact_ipt.size(), kIptTopK);
  }
  EXPECT_EQ(migrations, 1u);
  auto missing = LoadRun({"gone", "native", "/nonexistent.pcap"}, Rules(), options);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("run gone"));
}

}  // namespace
}  // namespace shroud
