// Fixtures shared by the tests of the detectors' consumers (flow store,
// control API and daemon, dashboard, judge): the shipped maxent model and a
// mirror record made from a labelled flow.
#ifndef SHROUD_TESTS_CONTROL_FIXTURES_H_
#define SHROUD_TESTS_CONTROL_FIXTURES_H_

#include <gtest/gtest.h>

#include "control/analysis/evaluation.h"
#include "control/analysis/maxent_model.h"
#include "shroud/mirror.h"
#include "tests/test_util.h"

namespace shroud::testing {

// conf/maxent-default.json, the model compiled into the binaries.
inline MaxEntModel ShippedMaxEntModel() {
  absl::StatusOr<MaxEntModel> m = MaxEntModel::Load(SourceRoot() + "/conf/maxent-default.json");
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : MaxEntModel{};
}

// The record a dataplane worker would mirror for `f`.
inline MirrorRecord MirrorRecordOf(const LabelledFlow& f,
                                   MirrorRecordType type = MirrorRecordType::kUpdate,
                                   uint8_t worker = 0) {
  MirrorRecord r{};
  r.type = type;
  r.flow_class = f.is_migration ? MirrorFlowClass::kMigration : MirrorFlowClass::kDefault;
  r.worker = worker;
  r.stream_packets = f.stream_packets;
  r.time_ns = f.features.last_ns;
  r.key = f.key;
  r.features = f.features;
  return r;
}

}  // namespace shroud::testing

#endif  // SHROUD_TESTS_CONTROL_FIXTURES_H_
