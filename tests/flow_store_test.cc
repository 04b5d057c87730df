#include "control/daemon/flow_store.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/control_fixtures.h"
#include "tests/synthetic_flows.h"
#include "tests/test_util.h"

namespace shroud {
namespace {

using testing::MakeSyntheticStream;

// A record of a flow with its own 5-tuple and no packets of consequence.
MirrorRecord SmallRecord(uint16_t port, MirrorRecordType type = MirrorRecordType::kUpdate) {
  MirrorRecord r{};
  r.type = type;
  r.key.ip_version = 4;
  r.key.protocol = kProtoUdp;
  r.key.src_addr = {192, 0, 2, 7};
  r.key.dst_addr = {198, 51, 100, 7};
  r.key.src_port = port;
  r.key.dst_port = 53;
  r.features.packets = 3;
  r.features.bytes = 300;
  r.stream_packets = 10;
  return r;
}

void ExpectSameResult(const DetectorResult& got, const DetectorResult& want, const std::string& what) {
  EXPECT_EQ(got.flagged, want.flagged) << what;
  EXPECT_EQ(got.decided, want.decided) << what;
  if (std::isnan(want.score)) {
    EXPECT_TRUE(std::isnan(got.score)) << what;
  } else {
    EXPECT_EQ(got.score, want.score) << what;  // the same computation: bit for bit
  }
}

const LabelledFlow& Find(const std::vector<LabelledFlow>& flows, bool migration) {
  for (const auto& f : flows) {
    if (f.is_migration == migration && f.features.packets >= 1000) return f;
  }
  ADD_FAILURE() << "no flow with is_migration=" << migration;
  return flows.front();
}

constexpr uint64_t kRun1 = 0x1111, kRun2 = 0x2222;

TEST(FlowStoreTest, VerdictsAreThoseOfPaperDetectorsOnTheSameFeatures) {
  const FeatureConfig config;
  const std::vector<LabelledFlow> flows = MakeSyntheticStream(11, 6, config);
  absl::StatusOr<PaperDetectors> detectors = PaperDetectors::Create(testing::ShippedMaxEntModel(), config);
  ASSERT_TRUE(detectors.ok()) << detectors.status();

  FlowStore store(testing::ShippedMaxEntModel(), {});
  ASSERT_TRUE(store.BeginRun(kRun1, config, 1).ok());
  ASSERT_TRUE(store.current_run()->detectors.has_value()) << store.current_run()->detector_error;
  bool any_flagged = false, any_clean = false;
  for (const LabelledFlow& f : flows) store.Apply(testing::MirrorRecordOf(f), 5);
  ASSERT_EQ(store.live_flows(), flows.size());
  for (const LabelledFlow& f : flows) {
    const StoredFlow* stored = store.Find({kRun1, 0, f.key});
    ASSERT_NE(stored, nullptr) << FormatFlowKey(f.key);
    const FlowVerdict want = detectors->Evaluate(f.view(config));
    const std::string what = FormatFlowKey(f.key);
    ExpectSameResult(stored->verdict.pattern, want.pattern, what + " pattern");
    ExpectSameResult(stored->verdict.maxent, want.maxent, what + " maxent");
    EXPECT_EQ(stored->verdict.migration, want.migration) << what;
    EXPECT_FALSE(stored->ended);
    EXPECT_EQ(stored->first_update_ns, 5u);
    (want.migration ? any_flagged : any_clean) = true;
  }
  // Both outcomes occur, so the comparison above means something.
  EXPECT_TRUE(any_flagged);
  EXPECT_TRUE(any_clean);
  EXPECT_EQ(store.counters().records, flows.size());
}

TEST(FlowStoreTest, TransitionsAreReportedOncePerChange) {
  const FeatureConfig config;
  // The same migration flow early (a few bursts: nothing to see yet) and late.
  const LabelledFlow early = Find(MakeSyntheticStream(5, 2, config, /*seconds=*/0.5), true);
  const std::vector<LabelledFlow> full = MakeSyntheticStream(5, 2, config, /*seconds=*/20.0);
  const LabelledFlow& late = Find(full, true);
  const LabelledFlow& background = Find(full, false);
  ASSERT_EQ(early.key, late.key);

  FlowStore store(testing::ShippedMaxEntModel(), {});
  ASSERT_TRUE(store.BeginRun(kRun1, config, 0).ok());
  EXPECT_FALSE(store.Apply(testing::MirrorRecordOf(early), 1).has_value());
  ASSERT_FALSE(store.Find({kRun1, 0, early.key})->verdict.migration);

  std::optional<VerdictTransition> t = store.Apply(testing::MirrorRecordOf(late), 2);
  ASSERT_TRUE(t.has_value());
  EXPECT_TRUE(t->newly_flagged());
  EXPECT_FALSE(t->cleared());
  EXPECT_EQ(t->id.key, late.key);
  EXPECT_EQ(t->flow_class, MirrorFlowClass::kMigration);
  EXPECT_EQ(t->packets, late.features.packets);
  const std::string line = FormatTransition(*t);
  EXPECT_EQ(line.rfind("DETECTION flow=" + FormatFlowKey(late.key), 0), 0u) << line;
  EXPECT_NE(line.find("pattern=yes("), std::string::npos) << line;
  EXPECT_NE(line.find("maxent="), std::string::npos) << line;
  EXPECT_EQ(store.counters().detections_any, 1u);
  EXPECT_EQ(store.counters().detections_pattern, 1u);
  EXPECT_EQ(store.flagged_flows(), 1u);

  // Still flagged: no new transition, no new count.
  EXPECT_FALSE(store.Apply(testing::MirrorRecordOf(late), 3).has_value());
  EXPECT_EQ(store.counters().detections_any, 1u);

  // The same flow's features turning unremarkable clears it, once.
  MirrorRecord unremarkable = testing::MirrorRecordOf(background);
  unremarkable.key = late.key;
  t = store.Apply(unremarkable, 4);
  ASSERT_TRUE(t.has_value());
  EXPECT_TRUE(t->cleared());
  EXPECT_EQ(FormatTransition(*t).rfind("CLEARED flow=", 0), 0u);
  EXPECT_FALSE(store.Apply(unremarkable, 5).has_value());
  EXPECT_EQ(store.counters().cleared_any, 1u);
  EXPECT_EQ(store.flagged_flows(), 0u);

  // A flow first seen already flagged is one transition too.
  MirrorRecord other = testing::MirrorRecordOf(late, MirrorRecordType::kUpdate, /*worker=*/1);
  t = store.Apply(other, 6);
  ASSERT_TRUE(t.has_value());
  EXPECT_TRUE(t->newly_flagged());
  EXPECT_EQ(t->id.worker, 1);
  EXPECT_EQ(store.counters().detections_any, 2u);
}

TEST(FlowStoreTest, ShortFlowsRaiseNoDetectionButKeepTheirVerdict) {
  const FeatureConfig config;
  const LabelledFlow mig = Find(MakeSyntheticStream(5, 0, config), true);
  FlowStoreOptions options;
  options.detection_min_packets = mig.features.packets + 1;
  FlowStore store(testing::ShippedMaxEntModel(), options);
  ASSERT_TRUE(store.BeginRun(kRun1, config, 0).ok());
  EXPECT_FALSE(store.Apply(testing::MirrorRecordOf(mig), 1).has_value());
  const StoredFlow* stored = store.Find({kRun1, 0, mig.key});
  ASSERT_NE(stored, nullptr);
  EXPECT_TRUE(stored->verdict.migration);  // what `shroud analyze --min_packets=0` says
  EXPECT_EQ(store.flagged_flows(), 0u);
  EXPECT_EQ(store.counters().detections_any, 0u);
  EXPECT_EQ(store.counters().detections_pattern, 0u);

  // Long enough now: detected, once.
  MirrorRecord longer = testing::MirrorRecordOf(mig);
  longer.features.packets = options.detection_min_packets;
  std::optional<VerdictTransition> t = store.Apply(longer, 2);
  ASSERT_TRUE(t.has_value());
  EXPECT_TRUE(t->newly_flagged());
  EXPECT_EQ(store.flagged_flows(), 1u);
  EXPECT_EQ(store.counters().detections_any, 1u);
}

TEST(FlowStoreTest, SameKeyOnAnotherWorkerOrRunIsAnotherFlow) {
  FlowStore store(testing::ShippedMaxEntModel(), {});
  ASSERT_TRUE(store.BeginRun(kRun1, FeatureConfig{}, 0).ok());
  MirrorRecord r = SmallRecord(1000);
  store.Apply(r, 1);
  r.worker = 1;
  store.Apply(r, 1);
  EXPECT_EQ(store.live_flows(), 2u);
  ASSERT_NE(store.Find({kRun1, 0, r.key}), nullptr);
  ASSERT_NE(store.Find({kRun1, 1, r.key}), nullptr);

  // A dataplane restart: the old run's flows stay, ended; the same key in
  // the new run is a new live flow.
  ASSERT_TRUE(store.BeginRun(kRun2, FeatureConfig{}, 10).ok());
  EXPECT_EQ(store.live_flows(), 0u);
  EXPECT_EQ(store.ended_flows(), 2u);
  EXPECT_TRUE(store.Find({kRun1, 0, r.key})->ended);
  EXPECT_EQ(store.Find({kRun1, 0, r.key})->ended_ns, 10u);
  r.worker = 0;
  store.Apply(r, 11);
  EXPECT_EQ(store.live_flows(), 1u);
  const StoredFlow* fresh = store.Find({kRun2, 0, r.key});
  ASSERT_NE(fresh, nullptr);
  EXPECT_FALSE(fresh->ended);
  EXPECT_EQ(fresh->run_id(), kRun2);

  // Attaching to the same run again changes nothing.
  ASSERT_TRUE(store.BeginRun(kRun2, FeatureConfig{}, 12).ok());
  EXPECT_EQ(store.live_flows(), 1u);
}

TEST(FlowStoreTest, EndRecordsEndFlowsAndRetentionEvictsTheEarliestEnded) {
  FlowStoreOptions options;
  options.max_ended_flows = 3;
  FlowStore store(testing::ShippedMaxEntModel(), options);
  ASSERT_TRUE(store.BeginRun(kRun1, FeatureConfig{}, 0).ok());
  const MirrorRecordType ends[] = {MirrorRecordType::kEndIdle, MirrorRecordType::kEndStop,
                                   MirrorRecordType::kEndReplaced, MirrorRecordType::kEndIdle,
                                   MirrorRecordType::kEndIdle};
  for (uint16_t i = 0; i < 5; ++i) store.Apply(SmallRecord(2000 + i), 100 + i);
  EXPECT_EQ(store.live_flows(), 5u);
  for (uint16_t i = 0; i < 5; ++i) {
    store.Apply(SmallRecord(2000 + i, ends[i]), 200 + i);
  }
  EXPECT_EQ(store.live_flows(), 0u);
  EXPECT_EQ(store.ended_flows(), 3u);
  EXPECT_EQ(store.counters().evicted_ended, 2u);
  const FlowKey first = SmallRecord(2000).key, second = SmallRecord(2001).key;
  EXPECT_EQ(store.Find({kRun1, 0, first}), nullptr);
  EXPECT_EQ(store.Find({kRun1, 0, second}), nullptr);
  for (uint16_t i = 2; i < 5; ++i) {
    const StoredFlow* f = store.Find({kRun1, 0, SmallRecord(2000 + i).key});
    ASSERT_NE(f, nullptr) << i;
    EXPECT_TRUE(f->ended);
    EXPECT_EQ(f->ended_ns, 200u + i);
    EXPECT_EQ(f->first_update_ns, 100u + i);
    EXPECT_EQ(f->record.type, ends[i]);
  }

  // A record after the end is a new flow of the same 5-tuple: live again,
  // with its own first update, and no longer in the retention queue.
  const FlowKey third = SmallRecord(2002).key;
  store.Apply(SmallRecord(2002), 300);
  const StoredFlow* revived = store.Find({kRun1, 0, third});
  ASSERT_NE(revived, nullptr);
  EXPECT_FALSE(revived->ended);
  EXPECT_EQ(revived->first_update_ns, 300u);
  EXPECT_EQ(store.live_flows(), 1u);
  EXPECT_EQ(store.ended_flows(), 2u);
  // More ended flows evict the other ended ones, never the revived live one.
  for (uint16_t i = 0; i < 4; ++i) store.Apply(SmallRecord(3000 + i, MirrorRecordType::kEndIdle), 400);
  EXPECT_EQ(store.ended_flows(), 3u);
  ASSERT_NE(store.Find({kRun1, 0, third}), nullptr);
  EXPECT_FALSE(store.Find({kRun1, 0, third})->ended);
}

TEST(FlowStoreTest, LiveFlowLimitDropsNewFlowsOnly) {
  FlowStoreOptions options;
  options.max_live_flows = 2;
  FlowStore store(testing::ShippedMaxEntModel(), options);
  ASSERT_TRUE(store.BeginRun(kRun1, FeatureConfig{}, 0).ok());
  store.Apply(SmallRecord(1), 1);
  store.Apply(SmallRecord(2), 1);
  store.Apply(SmallRecord(3), 1);  // a third live flow: refused
  EXPECT_EQ(store.live_flows(), 2u);
  EXPECT_EQ(store.counters().dropped_flows, 1u);
  EXPECT_EQ(store.Find({kRun1, 0, SmallRecord(3).key}), nullptr);
  // Known flows still update.
  MirrorRecord update = SmallRecord(1);
  update.features.packets = 99;
  store.Apply(update, 2);
  EXPECT_EQ(store.Find({kRun1, 0, update.key})->record.features.packets, 99u);
  EXPECT_EQ(store.counters().dropped_flows, 1u);
  // An end record of an unknown flow takes no live slot: kept as ended.
  store.Apply(SmallRecord(4, MirrorRecordType::kEndIdle), 3);
  ASSERT_NE(store.Find({kRun1, 0, SmallRecord(4).key}), nullptr);
  EXPECT_TRUE(store.Find({kRun1, 0, SmallRecord(4).key})->ended);
  // Ending a live flow frees its slot.
  store.Apply(SmallRecord(2, MirrorRecordType::kEndIdle), 4);
  store.Apply(SmallRecord(5), 5);
  EXPECT_NE(store.Find({kRun1, 0, SmallRecord(5).key}), nullptr);
  EXPECT_EQ(store.live_flows(), 2u);
  EXPECT_EQ(store.counters().records, 7u);
}

TEST(FlowStoreTest, EndRunEndsOnlyThatRunsLiveFlows) {
  FlowStore store(testing::ShippedMaxEntModel(), {});
  ASSERT_TRUE(store.BeginRun(kRun1, FeatureConfig{}, 0).ok());
  store.Apply(SmallRecord(1), 1);
  store.EndRun(kRun2, 2);  // not ours: nothing happens
  EXPECT_EQ(store.live_flows(), 1u);
  store.EndRun(kRun1, 3);
  EXPECT_EQ(store.live_flows(), 0u);
  EXPECT_TRUE(store.Find({kRun1, 0, SmallRecord(1).key})->ended);
}

TEST(FlowStoreTest, RecordsBeforeAnyRunAreRefused) {
  FlowStore store(testing::ShippedMaxEntModel(), {});
  EXPECT_FALSE(store.Apply(SmallRecord(1), 1).has_value());
  EXPECT_EQ(store.counters().unknown_run, 1u);
  EXPECT_EQ(store.live_flows(), 0u);
}

TEST(FlowStoreTest, InvalidConfigurationIsRefused) {
  FlowStore store(testing::ShippedMaxEntModel(), {});
  FeatureConfig bad;
  bad.byte_window_count = 0;
  absl::Status s = store.BeginRun(kRun1, bad, 0);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(store.current_run(), nullptr);
}

TEST(FlowStoreTest, ANewConfigurationOfTheSameRunReEvaluatesItsFlows) {
  FeatureConfig config;
  const std::vector<LabelledFlow> flows = MakeSyntheticStream(5, 0, config);
  const LabelledFlow& mig = Find(flows, true);
  FlowStore store(testing::ShippedMaxEntModel(), {});
  ASSERT_TRUE(store.BeginRun(kRun1, config, 0).ok());
  store.Apply(testing::MirrorRecordOf(mig), 1);
  const StoredFlow* stored = store.Find({kRun1, 0, mig.key});
  ASSERT_TRUE(stored->verdict.pattern.flagged);

  // PCt raised beyond the flow's counter: the pattern attack no longer flags.
  FeatureConfig stricter = config;
  stricter.pattern_count_threshold = mig.features.a1_pattern_counter;
  std::vector<VerdictTransition> transitions;
  ASSERT_TRUE(store.BeginRun(kRun1, stricter, 2, &transitions).ok());
  stored = store.Find({kRun1, 0, mig.key});
  ASSERT_NE(stored, nullptr);
  EXPECT_FALSE(stored->ended);
  EXPECT_FALSE(stored->verdict.pattern.flagged);
  EXPECT_EQ(stored->config().pattern_count_threshold, stricter.pattern_count_threshold);
  absl::StatusOr<PaperDetectors> want = PaperDetectors::Create(testing::ShippedMaxEntModel(), stricter);
  ASSERT_TRUE(want.ok());
  FlowVerdict v = want->Evaluate(mig.view(stricter));
  EXPECT_EQ(stored->verdict.migration, v.migration);
  EXPECT_EQ(transitions.size(), v.migration ? 0u : 1u);
}

TEST(FlowStoreTest, ModelThatDoesNotFitTheWindowsLeavesMaxEntUndecided) {
  FeatureConfig config;
  config.byte_windows = {100, 200, 300, 0, 0, 0, 0, 0};  // the default model needs 500 and 1000
  config.byte_window_count = 3;
  const std::vector<LabelledFlow> flows = MakeSyntheticStream(5, 0, config);
  const LabelledFlow& mig = Find(flows, true);
  FlowStore store(testing::ShippedMaxEntModel(), {});
  ASSERT_TRUE(store.BeginRun(kRun1, config, 0).ok());
  EXPECT_FALSE(store.current_run()->detectors.has_value());
  EXPECT_NE(store.current_run()->detector_error.find("500"), std::string::npos)
      << store.current_run()->detector_error;
  std::optional<VerdictTransition> t = store.Apply(testing::MirrorRecordOf(mig), 1);
  const StoredFlow* stored = store.Find({kRun1, 0, mig.key});
  EXPECT_TRUE(std::isnan(stored->verdict.maxent.score));
  EXPECT_FALSE(stored->verdict.maxent.flagged);
  EXPECT_EQ(stored->verdict.pattern.flagged, PatternAttack().Evaluate(mig.view(config)).flagged);
  EXPECT_TRUE(stored->verdict.pattern.flagged);
  EXPECT_TRUE(stored->verdict.migration);
  EXPECT_TRUE(t.has_value());
}

TEST(FlowStoreTest, ClassNames) {
  EXPECT_EQ(FlowClassName(MirrorFlowClass::kMigration), "migration");
  EXPECT_EQ(FlowClassName(MirrorFlowClass::kDefault), "default");
  EXPECT_EQ(FlowClassName(MirrorFlowClass::kChaff), "chaff");
  EXPECT_EQ(FlowClassName(MirrorFlowClass::kUnclassified), "unclassified");
  EXPECT_TRUE(IsEndRecord(MirrorRecordType::kEndReplaced));
  EXPECT_FALSE(IsEndRecord(MirrorRecordType::kUpdate));
}

}  // namespace
}  // namespace shroud
