#include "control/analysis/evaluation.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace shroud {
namespace {

absl::Status AddCapture(const std::string& path, const std::string& filter, bool labelled,
                        const CaptureOptions& base, uint64_t min_packets, bool exact_ipt,
                        std::vector<LabelledFlow>* out) {
  CaptureOptions options = base;
  options.selector = labelled ? filter : "";
  // Exact gaps per flow, measured as FlowFeatures::Observe does (a gap that
  // goes backwards counts as zero).
  struct Gaps {
    uint64_t last_ns = 0;
    bool seen = false;
    absl::flat_hash_map<uint32_t, uint32_t> counts;
  };
  absl::flat_hash_map<FlowKey, Gaps> gaps;
  if (exact_ipt) options.on_packet = [&gaps](const ParsedPacket& p, uint64_t t) {
    Gaps& g = gaps[p.key];
    if (g.seen) {
      const uint64_t us = (t > g.last_ns ? t - g.last_ns : 0) / 1000;
      ++g.counts[us > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(us)];
    }
    g.seen = true;
    g.last_ns = std::max(g.last_ns, t);
  };
  absl::StatusOr<CaptureAnalysis> analysis = AnalyzeCapture(path, options);
  if (!analysis.ok()) return analysis.status();
  const FlowTable& table = *analysis->table;
  // The reverse direction of a migration (its ACKs) is neither a migration
  // flow as the paper defines it (source -> destination) nor background, so
  // it is left out of both groups rather than counted as a false positive.
  absl::flat_hash_set<FlowKey> migration_reverse;
  for (const FlowRecord& flow : table.flows()) {
    if (labelled && flow.selected) migration_reverse.insert(flow.key.Reversed());
  }
  for (const FlowRecord& flow : table.flows()) {
    if (flow.features.packets < min_packets) continue;
    if (!flow.selected && migration_reverse.contains(flow.key)) continue;
    out->push_back(LabelledFlow{path, flow.key, flow.features, table.stream_packets(),
                                labelled && flow.selected, {}});
    for (const auto& [us, n] : gaps[flow.key].counts) out->back().exact_ipt[us] = n;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<LabelledFlow>> CollectLabelledFlows(const LabelledCaptures& captures,
                                                               const CaptureOptions& options) {
  std::vector<LabelledFlow> flows;
  for (const std::string& path : captures.migration) {
    if (absl::Status s = AddCapture(path, captures.migration_filter, true, options,
                                    captures.min_packets, captures.exact_ipt, &flows);
        !s.ok()) {
      return s;
    }
  }
  for (const std::string& path : captures.background) {
    if (absl::Status s = AddCapture(path, "", false, options, captures.min_packets,
                                    captures.exact_ipt, &flows);
        !s.ok()) {
      return s;
    }
  }
  return flows;
}

std::map<uint32_t, double> IptHistogram(const FlowFeatures& features) {
  std::map<uint32_t, double> h;
  for (const IptCategoryCount& e : features.ipt) {
    if (e.count != 0) h[e.category_us] += e.count;
  }
  return h;
}

std::map<uint32_t, double> IptHistogram(const LabelledFlow& flow) {
  return flow.exact_ipt.empty() ? IptHistogram(flow.features) : flow.exact_ipt;
}

absl::StatusOr<GroupComparison> CompareGroups(const std::vector<const LabelledFlow*>& a,
                                              const std::vector<const LabelledFlow*>& b,
                                              const FeatureConfig& config, uint32_t ks_window) {
  if (a.empty() || b.empty()) {
    return absl::InvalidArgumentError("both groups need at least one flow to compare");
  }
  int slot = config.WindowSlot(ks_window);
  if (slot < 0) {
    return absl::InvalidArgumentError(absl::StrCat("KS window ", ks_window,
                                                   " is not in the window set ",
                                                   config.WindowsToString()));
  }
  GroupComparison result;
  result.n_a = a.size();
  result.n_b = b.size();
  result.ks_window = ks_window;
  std::vector<std::map<uint32_t, double>> ha, hb;
  std::vector<double> cov_a, cov_b;
  for (const LabelledFlow* f : a) {
    ha.push_back(IptHistogram(*f));
    cov_a.push_back(ByteWindowCov(f->features, config, slot, f->stream_packets));
  }
  for (const LabelledFlow* f : b) {
    hb.push_back(IptHistogram(*f));
    cov_b.push_back(ByteWindowCov(f->features, config, slot, f->stream_packets));
  }
  absl::StatusOr<ChiSquareResult> chi = PaperChiSquare(ha, hb);
  if (!chi.ok()) return chi.status();
  result.chi_square = *std::move(chi);
  absl::StatusOr<KsResult> ks = KolmogorovSmirnovTwoSample(cov_a, cov_b);
  if (!ks.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("KS test on the CoV at window ", ks_window,
                                                   ": ", ks.status().message()));
  }
  result.ks = *ks;
  return result;
}

DetectionRate MeasureDetector(const Detector& detector, const std::vector<LabelledFlow>& flows,
                              const FeatureConfig& config) {
  DetectionRate rate;
  rate.detector = std::string(detector.name());
  for (const LabelledFlow& f : flows) {
    rate.Count(f.is_migration, detector.Evaluate(f.view(config)).flagged);
  }
  return rate;
}

absl::StatusOr<MaxEntModel> TrainOnFlows(const std::vector<LabelledFlow>& flows,
                                         const FeatureConfig& config,
                                         const std::array<uint32_t, kMaxEntFeatures>& windows,
                                         const MaxEntTrainingOptions& options) {
  std::vector<CovTriple> x;
  std::vector<bool> y;
  for (const LabelledFlow& f : flows) {
    absl::StatusOr<CovTriple> triple = CovFeatures(f.view(config), windows);
    if (!triple.ok()) return triple.status();
    x.push_back(*triple);
    y.push_back(f.is_migration);
  }
  return TrainMaxEnt(x, y, windows, options);
}

absl::StatusOr<DetectionRate> CrossValidateMaxEnt(const std::vector<LabelledFlow>& flows,
                                                  const FeatureConfig& config,
                                                  const CrossValidationOptions& options) {
  if (options.folds < 2) return absl::InvalidArgumentError("cross-validation needs >= 2 folds");
  // Stratified assignment: shuffle each class, deal it round-robin into folds.
  std::vector<size_t> migration, background;
  for (size_t i = 0; i < flows.size(); ++i) {
    (flows[i].is_migration ? migration : background).push_back(i);
  }
  const size_t folds = static_cast<size_t>(options.folds);
  if (migration.size() < folds || background.size() < folds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cross-validation with ", folds, " folds needs at least ", folds,
        " flows of each class; have ", migration.size(), " migration and ", background.size(),
        " background flows"));
  }
  std::mt19937_64 rng(options.seed);
  std::vector<size_t> fold_of(flows.size());
  for (std::vector<size_t>* cls : {&migration, &background}) {
    std::shuffle(cls->begin(), cls->end(), rng);
    for (size_t j = 0; j < cls->size(); ++j) fold_of[(*cls)[j]] = j % folds;
  }
  DetectionRate rate;
  rate.detector = "maxent";
  for (size_t fold = 0; fold < folds; ++fold) {
    std::vector<LabelledFlow> train;
    for (size_t i = 0; i < flows.size(); ++i) {
      if (fold_of[i] != fold) train.push_back(flows[i]);
    }
    absl::StatusOr<MaxEntModel> model = TrainOnFlows(train, config, options.windows, options.training);
    if (!model.ok()) return model.status();
    absl::StatusOr<std::unique_ptr<MaxEntAttack>> attack = MaxEntAttack::Create(*model, config);
    if (!attack.ok()) return attack.status();
    for (size_t i = 0; i < flows.size(); ++i) {
      if (fold_of[i] != fold) continue;
      rate.Count(flows[i].is_migration, (*attack)->Evaluate(flows[i].view(config)).flagged);
    }
  }
  return rate;
}

}  // namespace shroud
