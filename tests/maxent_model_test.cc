#include "control/analysis/maxent_model.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace shroud {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr std::array<uint32_t, kMaxEntFeatures> kWindows = {100, 500, 1000};

struct Dataset {
  std::vector<CovTriple> x;
  std::vector<bool> label;
};

// Migrations have steady throughput (CoV 0.001-0.15), background flows bursty
// ones (0.3-1.5), as in the paper's Tables II/IV; migrations are the rare
// class. A fixed seed and a hand-rolled uniform keep the data identical on
// every standard library.
Dataset Separable() {
  std::mt19937_64 rng(42);
  auto uniform = [&](double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(rng() >> 11) * 0x1.0p-53;
  };
  Dataset d;
  for (int i = 0; i < 40; ++i) {
    d.x.push_back({uniform(0.001, 0.15), uniform(0.001, 0.15), uniform(0.001, 0.15)});
    d.label.push_back(true);
  }
  for (int i = 0; i < 400; ++i) {
    d.x.push_back({uniform(0.3, 1.5), uniform(0.3, 1.5), uniform(0.3, 1.5)});
    d.label.push_back(false);
  }
  return d;
}

MaxEntModel TrainedModel() {
  const Dataset d = Separable();
  absl::StatusOr<MaxEntModel> m = TrainMaxEnt(d.x, d.label, kWindows);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : MaxEntModel{};
}

std::string WriteFile(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// ---- training and prediction ----

TEST(MaxEntTrainTest, SeparatesMigrationsFromBackground) {
  const Dataset d = Separable();
  absl::StatusOr<MaxEntModel> m = TrainMaxEnt(d.x, d.label, kWindows);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT(m->comment, HasSubstr("converged"));
  EXPECT_THAT(m->comment, ::testing::Not(HasSubstr("NOT converged")));
  EXPECT_EQ(m->trained_migration, 40u);
  EXPECT_EQ(m->trained_background, 400u);
  EXPECT_EQ(m->windows, kWindows);
  for (size_t i = 0; i < d.x.size(); ++i) {
    const double p = m->Predict(d.x[i]);
    if (d.label[i]) {
      EXPECT_GT(p, 0.5) << "row " << i;
    } else {
      EXPECT_LT(p, 0.5) << "row " << i;
    }
  }
  // Held-out points well inside each class, including the paper's Table IV rows.
  EXPECT_GT(m->Predict({0.074, 0.037, 0.025}), 0.5);  // native migration
  EXPECT_LT(m->Predict({0.752, 0.870, 0.870}), 0.5);  // TCP
  EXPECT_LT(m->Predict({0.634, 0.655, 0.639}), 0.5);  // stealth migration
}

TEST(MaxEntTrainTest, ProbabilityFallsAsVariabilityRises) {
  const MaxEntModel m = TrainedModel();
  double previous = 1.0;
  for (double cov = 0.0; cov <= 3.0; cov += 0.01) {
    const double p = m.Predict({cov, cov, cov});
    EXPECT_LE(p, previous) << "cov " << cov;
    previous = p;
  }
  EXPECT_GT(m.Predict({0, 0, 0}), 0.99);
  EXPECT_LT(m.Predict({3, 3, 3}), 0.01);
}

TEST(MaxEntTrainTest, IdentityTransformAlsoSeparates) {
  const Dataset d = Separable();
  MaxEntTrainingOptions options;
  options.transform = FeatureTransform::kIdentity;
  absl::StatusOr<MaxEntModel> m = TrainMaxEnt(d.x, d.label, kWindows, options);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->transform, FeatureTransform::kIdentity);
  EXPECT_GT(m->Predict({0.05, 0.05, 0.05}), 0.5);
  EXPECT_LT(m->Predict({1.0, 1.0, 1.0}), 0.5);
}

TEST(MaxEntTrainTest, Deterministic) {
  const MaxEntModel a = TrainedModel();
  const MaxEntModel b = TrainedModel();
  EXPECT_EQ(a.bias, b.bias);
  EXPECT_EQ(a.weights, b.weights);
  EXPECT_EQ(a.mean, b.mean);
  EXPECT_EQ(a.scale, b.scale);
}

TEST(MaxEntTrainTest, RespectsMaxIterations) {
  const Dataset d = Separable();
  MaxEntTrainingOptions options;
  options.max_iterations = 1;
  absl::StatusOr<MaxEntModel> m = TrainMaxEnt(d.x, d.label, kWindows, options);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT(m->comment, HasSubstr("NOT converged after 1 "));
}

TEST(MaxEntTrainTest, UnusableRowsAreSkipped) {
  Dataset d = Separable();
  d.x.push_back({kNaN, 0.01, 0.01});
  d.label.push_back(true);
  d.x.push_back({0.5, -0.2, 0.5});  // negative CoV: outside log's domain
  d.label.push_back(false);
  absl::StatusOr<MaxEntModel> m = TrainMaxEnt(d.x, d.label, kWindows);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->trained_migration, 40u);
  EXPECT_EQ(m->trained_background, 400u);
}

TEST(MaxEntTrainTest, ConstantFeatureGetsUnitScale) {
  Dataset d = Separable();
  for (auto& row : d.x) row[2] = 0.5;
  absl::StatusOr<MaxEntModel> m = TrainMaxEnt(d.x, d.label, kWindows);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->scale[2], 1.0);
  EXPECT_GT(m->Predict({0.05, 0.05, 0.5}), 0.5);
}

TEST(MaxEntTrainTest, Errors) {
  const Dataset d = Separable();
  std::vector<CovTriple> migrations_only(d.x.begin(), d.x.begin() + 40);
  EXPECT_THAT(TrainMaxEnt(migrations_only, std::vector<bool>(40, true), kWindows)
                  .status()
                  .message(),
              HasSubstr("0 background"));
  EXPECT_THAT(TrainMaxEnt({{kNaN, 0, 0}, {0.5, 0.5, 0.5}}, {true, false}, kWindows)
                  .status()
                  .message(),
              HasSubstr("0 migration"));
  EXPECT_FALSE(TrainMaxEnt(d.x, std::vector<bool>(3, true), kWindows).ok());
  EXPECT_THAT(TrainMaxEnt(d.x, d.label, {100, 100, 1000}).status().message(),
              HasSubstr("strictly ascending"));
  MaxEntTrainingOptions bad;
  bad.l2 = -1;
  EXPECT_FALSE(TrainMaxEnt(d.x, d.label, kWindows, bad).ok());
}

TEST(MaxEntPredictTest, InvalidInputGivesNaN) {
  const MaxEntModel m = TrainedModel();
  EXPECT_TRUE(std::isnan(m.Predict({kNaN, 0.1, 0.1})));
  EXPECT_TRUE(std::isnan(m.Predict({0.1, 0.1, kNaN})));
  EXPECT_TRUE(std::isnan(m.Predict({0.1, -0.1, 0.1})));
  EXPECT_TRUE(std::isnan(m.Predict({0.1, std::numeric_limits<double>::infinity(), 0.1})));
}

// ---- file format ----

TEST(MaxEntFileTest, RoundTripPredictsIdentically) {
  MaxEntModel m = TrainedModel();
  m.comment = "round trip \"test\"";
  const std::string path = testing::MakeTempDir() + "/model.json";
  ASSERT_TRUE(m.Save(path).ok());
  absl::StatusOr<MaxEntModel> loaded = MaxEntModel::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->windows, m.windows);
  EXPECT_EQ(loaded->transform, m.transform);
  EXPECT_EQ(loaded->mean, m.mean);
  EXPECT_EQ(loaded->scale, m.scale);
  EXPECT_EQ(loaded->bias, m.bias);
  EXPECT_EQ(loaded->weights, m.weights);
  EXPECT_EQ(loaded->trained_migration, m.trained_migration);
  EXPECT_EQ(loaded->trained_background, m.trained_background);
  EXPECT_EQ(loaded->comment, m.comment);
  for (double cov = 0.0; cov < 2.0; cov += 0.0137) {
    const CovTriple x = {cov, cov * 0.9 + 0.001, cov * 1.1};
    EXPECT_EQ(loaded->Predict(x), m.Predict(x)) << cov;
  }
}

TEST(MaxEntFileTest, WritesTheDocumentedFormat) {
  const MaxEntModel m = TrainedModel();
  const nlohmann::json j = nlohmann::json::parse(m.ToJson());
  EXPECT_EQ(j["format"], "shroud-maxent");
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["windows"], nlohmann::json::array({100, 500, 1000}));
  EXPECT_EQ(j["transform"], "log");
  EXPECT_EQ(j["standardize"]["scale"].size(), 3u);
  EXPECT_EQ(j["trained"]["migration"], 40);
}

TEST(MaxEntFileTest, SaveReplacesAtomicallyAndLeavesNoTemporaries) {
  const std::string dir = testing::MakeTempDir();
  const std::string path = dir + "/model.json";
  MaxEntModel m = TrainedModel();
  ASSERT_TRUE(m.Save(path).ok());
  m.comment = "second";
  ASSERT_TRUE(m.Save(path).ok());
  absl::StatusOr<MaxEntModel> loaded = MaxEntModel::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->comment, "second");
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST(MaxEntFileTest, SaveReportsErrors) {
  const MaxEntModel m = TrainedModel();
  const std::string missing_dir = testing::MakeTempDir() + "/no/such/dir/model.json";
  absl::Status s = m.Save(missing_dir);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(missing_dir));

  MaxEntModel bad = m;
  bad.bias = kNaN;
  const std::string path = testing::MakeTempDir() + "/bad.json";
  s = bad.Save(path);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("bias")));
}

TEST(MaxEntFileTest, LoadMissingFile) {
  const std::string path = testing::MakeTempDir() + "/absent.json";
  absl::StatusOr<MaxEntModel> m = MaxEntModel::Load(path);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), AllOf(HasSubstr(path), HasSubstr("cannot open")));
}

TEST(MaxEntFileTest, LoadNamesFileAndProblem) {
  const std::string dir = testing::MakeTempDir();
  const std::string good = TrainedModel().ToJson();
  // Replaces one member of the good model's JSON.
  auto with = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = nlohmann::json::parse(good);
    j[key] = value;
    return j.dump();
  };
  auto without = [&](const std::string& key) {
    nlohmann::json j = nlohmann::json::parse(good);
    j.erase(key);
    return j.dump();
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"format\": ", "not valid JSON at byte"},
      {"not json", "not valid JSON at byte 2"},
      {"[1, 2]", "not a JSON object"},
      {with("format", "other-format"), "format is not shroud-maxent"},
      {without("format"), "format is not shroud-maxent"},
      {with("version", 7), "version 7 is not supported (this build reads version 1)"},
      {with("version", "1"), "field 'version' must be an integer"},
      {with("weights", {1, 2}), "field 'weights' must be an array of 3"},
      {with("weights", {1, "x", 2}), "field 'weights' must be an array of 3"},
      {without("weights"), "field 'weights' is missing"},
      {with("weights", {1, nullptr, 2}), "field 'weights' must be an array of 3"},
      {with("bias", nullptr), "field 'bias' must be a finite number"},
      {with("windows", {500, 100, 1000}), "field 'windows'"},
      {with("windows", {0, 100, 1000}), "strictly ascending"},
      {with("windows", {100, 100, 1000}), "strictly ascending"},
      {with("windows", {100, 500, 5000000000}), "field 'windows'"},
      {with("transform", "sqrt"), "field 'transform' must be \"log\" or \"identity\""},
      {with("standardize", {{"mean", {0, 0, 0}}, {"scale", {1, 0, 1}}}),
       "field 'standardize.scale' must hold numbers > 0"},
      {with("standardize", {{"mean", {0, 0, 0}}, {"scale", {1, -2, 1}}}),
       "field 'standardize.scale' must hold numbers > 0"},
      {with("standardize", {{"scale", {1, 1, 1}}}), "field 'standardize.mean' is missing"},
      {with("trained", {{"migration", -3}}), "field 'migration' must be a non-negative integer"},
      {with("comment", 5), "field 'comment' must be a string"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = WriteFile(dir, "case" + std::to_string(i) + ".json", cases[i].first);
    absl::StatusOr<MaxEntModel> m = MaxEntModel::Load(path);
    ASSERT_FALSE(m.ok()) << "case " << i << ": " << cases[i].first;
    EXPECT_THAT(m.status().message(), AllOf(HasSubstr(path), HasSubstr(cases[i].second)))
        << "case " << i;
  }
}

TEST(MaxEntFileTest, NonFiniteNumbersInTextAreRejected) {
  // JSON has no NaN/Infinity; an overflowing literal is the only way to spell one.
  std::string text = TrainedModel().ToJson();
  nlohmann::json j = nlohmann::json::parse(text);
  std::string dumped = j.dump();
  const std::string bias_key = "\"bias\":";
  const size_t at = dumped.find(bias_key);
  ASSERT_NE(at, std::string::npos);
  const size_t end = dumped.find(',', at);
  dumped.replace(at, end - at, bias_key + "1e999");
  absl::StatusOr<MaxEntModel> m = MaxEntModel::FromJson(dumped, "inline-model");
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), AllOf(HasSubstr("inline-model"), HasSubstr("non-finite")));
}

TEST(MaxEntFileTest, UnknownMembersAreIgnored) {
  nlohmann::json j = nlohmann::json::parse(TrainedModel().ToJson());
  j["future_provenance"] = {{"host", "x"}};
  absl::StatusOr<MaxEntModel> m = MaxEntModel::FromJson(j.dump(), "inline");
  EXPECT_TRUE(m.ok()) << m.status();
}

}  // namespace
}  // namespace shroud
