// shroud eval: the paper's evaluation tables on labelled captures.
#include <gflags/gflags.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "control/analysis/evaluation.h"
#include "control/cli/cli_common.h"
#include "control/cli/commands.h"

DECLARE_bool(json);
DECLARE_string(model);
DECLARE_string(migration_filter);
DECLARE_string(windows);
DEFINE_int32(folds, 5, "eval: cross-validation folds for the maxent attack (5 = 80/20 splits)");
DEFINE_uint64(seed, 1, "eval: seed of the cross-validation shuffle");
DEFINE_uint32(ks_window, 1000, "eval: the KS test compares the groups' per-flow CoV at this window");
DEFINE_double(alpha, 0.05, "eval: significance level for the distinguishable/indistinguishable verdict");
DEFINE_string(csv_dir, "", "eval: also write table2.csv, table3.csv and detection.csv here");

namespace shroud::cli {
namespace {

std::string CsvNumber(double v) { return std::isnan(v) ? "" : absl::StrFormat("%.6g", v); }

struct Results {
  std::vector<LabelledFlow> flows;
  absl::StatusOr<GroupComparison> comparison = absl::UnknownError("not run");
  std::vector<std::pair<std::string, DetectionRate>> rates;  // label -> rate
};

absl::Status WriteCsv(const std::string& dir, const Results& r, const FeatureConfig& config) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--csv_dir ", dir, ": ", ec.message()));
  std::ofstream t2(dir + "/table2.csv");
  t2 << "label,capture,flow,packets,bytes";
  for (size_t w = 0; w < config.byte_window_count; ++w) t2 << ",cov" << config.byte_windows[w];
  t2 << "\n";
  for (const LabelledFlow& f : r.flows) {
    t2 << (f.is_migration ? "migration" : "background") << "," << f.capture << ","
       << FormatFlowKey(f.key) << "," << f.features.packets << "," << f.features.bytes;
    for (size_t w = 0; w < config.byte_window_count; ++w) {
      t2 << "," << CsvNumber(ByteWindowCov(f.features, config, w, f.stream_packets));
    }
    t2 << "\n";
  }
  std::ofstream t3(dir + "/table3.csv");
  t3 << "group_a,group_b,n_a,n_b,chi2,df,chi2_p,ks_window,ks_d,ks_p\n";
  if (r.comparison.ok()) {
    const GroupComparison& c = *r.comparison;
    t3 << "migration,background," << c.n_a << "," << c.n_b << "," << CsvNumber(c.chi_square.statistic)
       << "," << c.chi_square.degrees_of_freedom << "," << CsvNumber(c.chi_square.p_value) << ","
       << c.ks_window << "," << CsvNumber(c.ks.statistic) << "," << CsvNumber(c.ks.p_value) << "\n";
  }
  std::ofstream det(dir + "/detection.csv");
  det << "detector,tp,fn,fp,tn,tpr,fpr\n";
  for (const auto& [label, d] : r.rates) {
    det << label << "," << d.true_positives << "," << d.false_negatives << "," << d.false_positives
        << "," << d.true_negatives << "," << CsvNumber(d.tpr()) << "," << CsvNumber(d.fpr()) << "\n";
  }
  if (!t2 || !t3 || !det) return absl::DataLossError(absl::StrCat("writing CSV files in ", dir, " failed"));
  return absl::OkStatus();
}

void PrintText(const Results& r, const FeatureConfig& config, size_t n_mig, size_t n_bg) {
  std::cout << "Table II: coefficient of variation of each flow's bytes per window of W packets\n";
  std::cout << absl::StrFormat("%-10s %-46s %9s", "LABEL", "FLOW", "PACKETS");
  for (size_t w = 0; w < config.byte_window_count; ++w) {
    std::cout << absl::StrFormat(" %7d", config.byte_windows[w]);
  }
  std::cout << "  CAPTURE\n";
  for (bool migration : {true, false}) {
    for (const LabelledFlow& f : r.flows) {
      if (f.is_migration != migration) continue;
      std::cout << absl::StrFormat("%-10s %-46s %9d", migration ? "migration" : "background",
                                   FormatFlowKey(f.key), f.features.packets);
      for (size_t w = 0; w < config.byte_window_count; ++w) {
        std::cout << absl::StrFormat(" %7s", FormatCov(ByteWindowCov(f.features, config, w, f.stream_packets)));
      }
      std::cout << "  " << std::filesystem::path(f.capture).filename().string() << "\n";
    }
  }
  std::cout << absl::StrFormat("\nTable III: migration flows (n=%d) against background flows (n=%d)\n",
                               n_mig, n_bg);
  if (!r.comparison.ok()) {
    std::cout << "  not computed: " << r.comparison.status().message() << "\n";
  } else {
    const GroupComparison& c = *r.comparison;
    std::cout << absl::StrFormat(
        "  chi-square, %d most common 1 us inter-packet-time categories: X2 = %.3f, df = %d, "
        "p = %.4g -> %s at alpha = %.2f\n",
        c.chi_square.categories.size(), c.chi_square.statistic, c.chi_square.degrees_of_freedom,
        c.chi_square.p_value, c.chi_square.p_value > FLAGS_alpha ? "indistinguishable" : "distinguishable",
        FLAGS_alpha);
    std::cout << absl::StrFormat(
        "  two-sample KS on per-flow CoV at W=%d: D = %.3f, p = %.4g -> %s\n", c.ks_window,
        c.ks.statistic, c.ks.p_value,
        c.ks.p_value > FLAGS_alpha ? "indistinguishable" : "distinguishable");
  }
  std::cout << absl::StrFormat("\nDetection (%d migration flows, %d background flows)\n", n_mig, n_bg);
  std::cout << absl::StrFormat("%-34s %5s %5s %5s %5s %7s %7s\n", "DETECTOR", "TP", "FN", "FP", "TN",
                               "TPR", "FPR");
  for (const auto& [label, d] : r.rates) {
    std::cout << absl::StrFormat("%-34s %5d %5d %5d %5d %7.3f %7.3f\n", label, d.true_positives,
                                 d.false_negatives, d.false_positives, d.true_negatives, d.tpr(),
                                 d.fpr());
  }
}

void PrintJson(const Results& r, const FeatureConfig& config) {
  nlohmann::json doc;
  doc["table2"] = nlohmann::json::array();
  for (const LabelledFlow& f : r.flows) {
    nlohmann::json row{{"label", f.is_migration ? "migration" : "background"},
                       {"capture", f.capture},
                       {"flow", FormatFlowKey(f.key)},
                       {"packets", f.features.packets},
                       {"bytes", f.features.bytes}};
    nlohmann::json cov = nlohmann::json::object();
    for (size_t w = 0; w < config.byte_window_count; ++w) {
      cov[std::to_string(config.byte_windows[w])] =
          NumberOrNull(ByteWindowCov(f.features, config, w, f.stream_packets));
    }
    row["cov"] = cov;
    doc["table2"].push_back(row);
  }
  if (r.comparison.ok()) {
    const GroupComparison& c = *r.comparison;
    doc["table3"] = {{"n_migration", c.n_a},
                     {"n_background", c.n_b},
                     {"chi2", c.chi_square.statistic},
                     {"df", c.chi_square.degrees_of_freedom},
                     {"chi2_p", c.chi_square.p_value},
                     {"categories_us", c.chi_square.categories},
                     {"ks_window", c.ks_window},
                     {"ks_d", c.ks.statistic},
                     {"ks_p", c.ks.p_value}};
  } else {
    doc["table3"] = {{"error", std::string(r.comparison.status().message())}};
  }
  doc["detection"] = nlohmann::json::array();
  for (const auto& [label, d] : r.rates) {
    doc["detection"].push_back({{"detector", label},
                                {"tp", d.true_positives},
                                {"fn", d.false_negatives},
                                {"fp", d.false_positives},
                                {"tn", d.true_negatives},
                                {"tpr", d.tpr()},
                                {"fpr", d.fpr()}});
  }
  std::cout << doc.dump(1) << "\n";
}

}  // namespace

void PrintEvalHelp() {
  PrintCommandHelp(
      "usage: shroud eval --migration CAPTURE... --background CAPTURE... [options]\n\n"
      "Reproduces the paper's evaluation on labelled captures (labels as in shroud train):\n"
      "  Table II  the CoV of every flow's bytes per window W (100..3000 packets)\n"
      "  Table III chi-square over the 10 most common 1 us inter-packet-time categories of\n"
      "            migration against background flows, with its p-value, and a two-sample\n"
      "            KS test on their per-flow CoV\n"
      "  detection TPR/FPR of the pattern attack, of the maxent attack under stratified\n"
      "            k-fold cross-validation (--folds 5: 80/20 train/test splits), and of the\n"
      "            --model (default: built-in) model as shipped.\n"
      "Text for people on stdout; --json for one JSON document; --csv_dir for CSV files.",
      {"eval_command.cc"});
}

int RunEval(const CommandArgs& args) {
  const std::vector<std::string>& migration = args.migration;
  const std::vector<std::string>& background = args.background;
  if (!args.positional.empty()) {
    std::cerr << "shroud eval: unexpected argument '" << args.positional[0]
              << "' (captures go after --migration or --background)\n";
    return 2;
  }
  if (migration.empty()) {
    std::cerr << "shroud eval: need --migration CAPTURE... (see shroud eval --help)\n";
    return 2;
  }
  absl::StatusOr<MaxEntFlags> flags = MaxEntFlagsFromFlags();
  if (!flags.ok()) {
    std::cerr << "shroud eval: " << flags.status().message() << "\n";
    return 2;
  }
  // Checked before any capture is read: each of these would otherwise only
  // leave its row out of the results, with exit 0.
  if (!(FLAGS_alpha > 0 && FLAGS_alpha < 1)) {
    std::cerr << "shroud eval: --alpha must be between 0 and 1 (exclusive), got " << FLAGS_alpha
              << "\n";
    return 2;
  }
  if (FLAGS_folds < 2) {
    std::cerr << "shroud eval: --folds must be at least 2, got " << FLAGS_folds << "\n";
    return 2;
  }
  if (flags->capture.features.WindowSlot(FLAGS_ks_window) < 0) {
    std::cerr << "shroud eval: --ks_window " << FLAGS_ks_window << " is not one of --windows ("
              << FLAGS_windows << ")\n";
    return 2;
  }
  std::string model_origin;
  absl::StatusOr<MaxEntModel> model = ModelFromFlags(&model_origin);
  if (!model.ok()) {
    std::cerr << "shroud eval: " << model.status().message() << "\n";
    return 2;
  }
  Results r;
  {
    auto flows = CollectFromArgs(migration, background, flags->capture, /*exact_ipt=*/true);
    if (!flows.ok()) {
      std::cerr << "shroud eval: " << flows.status().message() << "\n";
      return 1;
    }
    r.flows = *std::move(flows);
  }
  const FeatureConfig& config = flags->capture.features;
  std::vector<const LabelledFlow*> mig, bg;
  for (const LabelledFlow& f : r.flows) (f.is_migration ? mig : bg).push_back(&f);
  if (mig.empty()) {
    std::cerr << "shroud eval: no flow of >= " << MinPacketsFromFlags()
              << " packets matched --migration_filter '" << FLAGS_migration_filter
              << "' in the --migration captures\n";
    return 1;
  }
  r.comparison = CompareGroups(mig, bg, config, FLAGS_ks_window);
  r.rates.emplace_back("pattern (Algorithm 1)", MeasureDetector(PatternAttack(), r.flows, config));
  CrossValidationOptions cv;
  cv.folds = FLAGS_folds;
  cv.seed = FLAGS_seed;
  cv.windows = flags->windows;
  cv.training = flags->training;
  absl::StatusOr<DetectionRate> cv_rate = CrossValidateMaxEnt(r.flows, config, cv);
  if (cv_rate.ok()) {
    r.rates.emplace_back(absl::StrFormat("maxent (%d-fold CV)", FLAGS_folds), *cv_rate);
  } else {
    std::cerr << "shroud eval: maxent cross-validation skipped: " << cv_rate.status().message() << "\n";
  }
  auto shipped = MaxEntAttack::Create(*model, config);
  if (shipped.ok()) {
    r.rates.emplace_back(FLAGS_model.empty() ? "maxent (built-in model)" : "maxent (--model)",
                         MeasureDetector(**shipped, r.flows, config));
  } else {
    std::cerr << "shroud eval: " << shipped.status().message() << "\n";
  }
  if (FLAGS_json) {
    PrintJson(r, config);
  } else {
    PrintText(r, config, mig.size(), bg.size());
  }
  if (!FLAGS_csv_dir.empty()) {
    if (absl::Status s = WriteCsv(FLAGS_csv_dir, r, config); !s.ok()) {
      std::cerr << "shroud eval: " << s.message() << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace shroud::cli
