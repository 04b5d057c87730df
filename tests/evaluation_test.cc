#include "control/analysis/evaluation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "tests/synthetic_flows.h"
#include "tests/test_util.h"

namespace shroud {
namespace {

using testing::MakeSyntheticStream;

std::vector<LabelledFlow> SyntheticCorpus(const FeatureConfig& config, int streams) {
  std::vector<LabelledFlow> all;
  for (int s = 0; s < streams; ++s) {
    for (auto& f : MakeSyntheticStream(100 + s, 4, config, 12.0, 150 + 40 * (s % 8))) {
      if (f.features.packets >= 1000) all.push_back(f);
    }
  }
  return all;
}

TEST(EvaluationTest, IptHistogramCopiesTheSketch) {
  FlowFeatures f;
  f.ipt[0] = {5, 10};
  f.ipt[3] = {7, 2};
  auto h = IptHistogram(f);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[5], 10);
  EXPECT_EQ(h[7], 2);
}

TEST(EvaluationTest, PacedMigrationsAreDistinguishableFromIrregularFlows) {
  FeatureConfig config;
  auto flows = SyntheticCorpus(config, 10);
  std::vector<const LabelledFlow*> mig, bg;
  for (const auto& f : flows) (f.is_migration ? mig : bg).push_back(&f);
  ASSERT_GE(mig.size(), 10u);
  ASSERT_GE(bg.size(), 10u);
  auto cmp = CompareGroups(mig, bg, config, 1000);
  ASSERT_TRUE(cmp.ok()) << cmp.status();
  EXPECT_EQ(cmp->n_a, mig.size());
  EXPECT_LT(cmp->ks.p_value, 0.05);
  EXPECT_GT(cmp->ks.statistic, 0.5);
  // A group against itself is indistinguishable.
  auto same = CompareGroups(bg, bg, config, 1000);
  ASSERT_TRUE(same.ok());
  EXPECT_DOUBLE_EQ(same->ks.statistic, 0.0);
  EXPECT_GT(same->chi_square.p_value, 0.99);
}

TEST(EvaluationTest, CompareGroupsErrors) {
  FeatureConfig config;
  auto flows = SyntheticCorpus(config, 2);
  std::vector<const LabelledFlow*> some = {&flows[0]};
  EXPECT_FALSE(CompareGroups({}, some, config, 1000).ok());
  auto bad = CompareGroups(some, some, config, 999);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("999"), std::string::npos);
}

TEST(EvaluationTest, MeasureDetectorCountsConfusionMatrix) {
  FeatureConfig config;
  auto flows = SyntheticCorpus(config, 6);
  DetectionRate r = MeasureDetector(PatternAttack(), flows, config);
  size_t mig = 0;
  for (const auto& f : flows) mig += f.is_migration;
  EXPECT_EQ(r.true_positives + r.false_negatives, mig);
  EXPECT_EQ(r.false_positives + r.true_negatives, flows.size() - mig);
  EXPECT_EQ(r.tpr(), 1.0);
  EXPECT_EQ(r.fpr(), 0.0);
}

TEST(EvaluationTest, CrossValidationTestsEveryFlowOnce) {
  FeatureConfig config;
  auto flows = SyntheticCorpus(config, 12);
  CrossValidationOptions cv;
  cv.folds = 5;
  auto rate = CrossValidateMaxEnt(flows, config, cv);
  ASSERT_TRUE(rate.ok()) << rate.status();
  EXPECT_EQ(rate->true_positives + rate->false_negatives + rate->false_positives +
                rate->true_negatives,
            flows.size());
  EXPECT_GE(rate->tpr(), 0.9);
  EXPECT_LE(rate->fpr(), 0.1);
  // Same seed, same answer.
  auto again = CrossValidateMaxEnt(flows, config, cv);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->true_positives, rate->true_positives);
  EXPECT_EQ(again->false_positives, rate->false_positives);
}

TEST(EvaluationTest, CrossValidationNeedsEnoughFlowsPerClass) {
  FeatureConfig config;
  auto flows = SyntheticCorpus(config, 2);
  CrossValidationOptions cv;
  cv.folds = 5;
  auto rate = CrossValidateMaxEnt(flows, config, cv);
  ASSERT_FALSE(rate.ok());
  EXPECT_NE(rate.status().message().find("at least 5"), std::string::npos) << rate.status();
}

TEST(EvaluationTest, CollectLabelledFlowsFromRealCaptures) {
  std::string mig = testing::TestDataPath("migration-r8-light.pcap");
  if (!std::filesystem::exists(mig)) GTEST_SKIP() << mig << " not present";
  LabelledCaptures captures;
  captures.migration = {mig};
  captures.min_packets = 1000;
  CaptureOptions options;
  auto flows = CollectLabelledFlows(captures, options);
  ASSERT_TRUE(flows.ok()) << flows.status();
  size_t migrations = 0;
  FlowKey migration_key;
  for (const auto& f : *flows) {
    EXPECT_GE(f.features.packets, 1000u);
    if (f.is_migration) {
      ++migrations;
      migration_key = f.key;
      EXPECT_GE(f.key.dst_port, 49152);
      EXPECT_LE(f.key.dst_port, 49215);
    }
  }
  ASSERT_EQ(migrations, 1u);
  // Every flow read from a capture has its exact gap histogram (one gap per
  // packet after the first), and Table III uses it rather than the sketch.
  for (const auto& f : *flows) {
    double gaps = 0;
    for (const auto& [us, n] : f.exact_ipt) gaps += n;
    EXPECT_EQ(gaps, static_cast<double>(f.features.packets - 1)) << FormatFlowKey(f.key);
    EXPECT_EQ(IptHistogram(f), f.exact_ipt);
  }
  LabelledFlow live = flows->front();
  live.exact_ipt.clear();  // a live flow (shroud-control) has only the sketch
  EXPECT_EQ(IptHistogram(live), IptHistogram(live.features));
  // Training needs no exact histograms, and does not pay for them.
  captures.exact_ipt = false;
  auto untimed = CollectLabelledFlows(captures, options);
  ASSERT_TRUE(untimed.ok()) << untimed.status();
  ASSERT_EQ(untimed->size(), flows->size());
  for (const auto& f : *untimed) EXPECT_TRUE(f.exact_ipt.empty());
  // The migration's ACK direction is in neither group, even with min_packets 1.
  captures.min_packets = 1;
  auto all = CollectLabelledFlows(captures, options);
  ASSERT_TRUE(all.ok()) << all.status();
  bool background_seen = false;
  for (const auto& f : *all) {
    EXPECT_NE(f.key, migration_key.Reversed()) << "ACK flow of the migration was labelled";
    background_seen |= !f.is_migration;
  }
  EXPECT_TRUE(background_seen);
}

TEST(EvaluationTest, CollectLabelledFlowsNamesTheBadFile) {
  LabelledCaptures captures;
  captures.background = {"/nonexistent/x.pcap"};
  auto flows = CollectLabelledFlows(captures, CaptureOptions{});
  ASSERT_FALSE(flows.ok());
  EXPECT_NE(flows.status().message().find("/nonexistent/x.pcap"), std::string::npos);
}

}  // namespace
}  // namespace shroud
