#include "control/analysis/detectors.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/synthetic_flows.h"

namespace shroud {
namespace {

using testing::MakeSyntheticStream;

const LabelledFlow& Find(const std::vector<LabelledFlow>& flows, bool migration) {
  for (const auto& f : flows) {
    if (f.is_migration == migration) return f;
  }
  ADD_FAILURE() << "no flow with is_migration=" << migration;
  return flows.front();
}

TEST(PatternAttackTest, FlagsPacedBurstsAndNotIrregularFlows) {
  FeatureConfig config;
  auto flows = MakeSyntheticStream(7, 6, config);
  PatternAttack attack;
  for (const auto& f : flows) {
    if (f.features.packets < 1000) continue;
    DetectorResult r = attack.Evaluate(f.view(config));
    EXPECT_EQ(r.flagged, f.is_migration) << FormatFlowKey(f.key) << " counter " << r.score;
  }
  DetectorResult mig = attack.Evaluate(Find(flows, true).view(config));
  EXPECT_TRUE(mig.decided);
  EXPECT_GT(mig.score, config.pattern_count_threshold);
}

TEST(PatternAttackTest, RespectsPctThreshold) {
  FeatureConfig config;
  auto flows = MakeSyntheticStream(7, 0, config, /*seconds=*/20.0);
  const LabelledFlow& mig = Find(flows, true);
  uint32_t counter = mig.features.a1_pattern_counter;
  ASSERT_GT(counter, 1u);
  config.pattern_count_threshold = counter;  // "more than PCt" is now false
  EXPECT_FALSE(PatternAttack().Evaluate(mig.view(config)).flagged);
  config.pattern_count_threshold = counter - 1;
  EXPECT_TRUE(PatternAttack().Evaluate(mig.view(config)).flagged);
}

MaxEntModel LowCovModel() {
  // P(migration) high when all three CoVs are small (log transform, weights < 0).
  MaxEntModel m;
  m.windows = {100, 500, 1000};
  m.transform = FeatureTransform::kLog;
  m.mean = {0, 0, 0};
  m.scale = {1, 1, 1};
  m.bias = -6;
  m.weights = {-1, -1, -1};
  return m;
}

TEST(MaxEntAttackTest, RejectsModelWindowsMissingFromConfig) {
  FeatureConfig config;
  config.byte_windows = {100, 200, 300, 0, 0, 0, 0, 0};
  config.byte_window_count = 3;
  auto attack = MaxEntAttack::Create(LowCovModel(), config);
  ASSERT_FALSE(attack.ok());
  EXPECT_NE(attack.status().message().find("500"), std::string::npos) << attack.status();
}

TEST(MaxEntAttackTest, RejectsBadThreshold) {
  EXPECT_FALSE(MaxEntAttack::Create(LowCovModel(), FeatureConfig{}, 1.5).ok());
  EXPECT_FALSE(MaxEntAttack::Create(LowCovModel(), FeatureConfig{}, 0.0).ok());
}

TEST(MaxEntAttackTest, FeaturesAreTheByteWindowCovs) {
  FeatureConfig config;
  auto flows = MakeSyntheticStream(3, 4, config);
  auto attack = MaxEntAttack::Create(LowCovModel(), config);
  ASSERT_TRUE(attack.ok()) << attack.status();
  const LabelledFlow& mig = Find(flows, true);
  CovTriple x = (*attack)->Features(mig.view(config));
  EXPECT_DOUBLE_EQ(x[0], ByteWindowCov(mig.features, config, config.WindowSlot(100), mig.stream_packets));
  EXPECT_DOUBLE_EQ(x[2], ByteWindowCov(mig.features, config, config.WindowSlot(1000), mig.stream_packets));
  auto direct = CovFeatures(mig.view(config), {100, 500, 1000});
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(*direct, x);
  EXPECT_FALSE(CovFeatures(mig.view(config), {100, 500, 999}).ok());
}

TEST(MaxEntAttackTest, UndecidedWhenFlowTooShort) {
  FeatureConfig config;
  FlowFeatures f;
  StreamPosition stream(config);
  stream.Advance();
  f.Observe({1000, 1500}, stream, config);
  FlowKey key;
  auto attack = MaxEntAttack::Create(LowCovModel(), config);
  ASSERT_TRUE(attack.ok());
  DetectorResult r = (*attack)->Evaluate(FlowView{key, f, 1, config});
  EXPECT_FALSE(r.decided);
  EXPECT_FALSE(r.flagged);
  EXPECT_TRUE(std::isnan(r.score));
}

TEST(PaperDetectorsTest, CombinedVerdictIsEitherAttack) {
  FeatureConfig config;
  auto flows = MakeSyntheticStream(11, 5, config);
  auto detectors = PaperDetectors::Create(LowCovModel(), config);
  ASSERT_TRUE(detectors.ok()) << detectors.status();
  for (const auto& f : flows) {
    FlowVerdict v = detectors->Evaluate(f.view(config));
    EXPECT_EQ(v.migration, v.pattern.flagged || v.maxent.flagged);
  }
  FlowVerdict mig = detectors->Evaluate(Find(flows, true).view(config));
  EXPECT_TRUE(mig.migration);
  EXPECT_TRUE(mig.pattern.flagged);
}

}  // namespace
}  // namespace shroud
