// shroud train: fits the maximum-entropy attack's model on labelled captures.
#include <gflags/gflags.h>

#include <iostream>

#include "absl/strings/str_format.h"
#include "control/analysis/evaluation.h"
#include "control/cli/cli_common.h"
#include "control/cli/commands.h"

DEFINE_string(o, "", "train: where to write the model (JSON)");
DEFINE_string(comment, "", "train: free text stored in the model file");

namespace shroud::cli {

void PrintTrainHelp() {
  PrintCommandHelp(
      "usage: shroud train --migration CAPTURE... [--background CAPTURE...] -o MODEL [options]\n\n"
      "Trains the maximum-entropy attack (Algorithm 2) on labelled flows and writes a\n"
      "versioned JSON model. In --migration captures, flows matching --migration_filter\n"
      "are labelled migration and all other flows background; every flow of a\n"
      "--background capture is background. Flows shorter than --min_packets are skipped.",
      {"train_command.cc"});
}

int RunTrain(const CommandArgs& args) {
  const std::vector<std::string>& migration = args.migration;
  const std::vector<std::string>& background = args.background;
  if (!args.positional.empty()) {
    std::cerr << "shroud train: unexpected argument '" << args.positional[0]
              << "' (captures go after --migration or --background)\n";
    return 2;
  }
  if (migration.empty() || FLAGS_o.empty()) {
    std::cerr << "shroud train: need --migration CAPTURE... and -o MODEL (see shroud train --help)\n";
    return 2;
  }
  absl::StatusOr<MaxEntFlags> flags = MaxEntFlagsFromFlags();
  if (!flags.ok()) {
    std::cerr << "shroud train: " << flags.status().message() << "\n";
    return 2;
  }
  auto flows = CollectFromArgs(migration, background, flags->capture, /*exact_ipt=*/false);
  const FeatureConfig* config = &flags->capture.features;
  if (!flows.ok()) {
    std::cerr << "shroud train: " << flows.status().message() << "\n";
    return 1;
  }
  auto model = TrainOnFlows(*flows, *config, flags->windows, flags->training);
  if (!model.ok()) {
    std::cerr << "shroud train: " << model.status().message() << "\n";
    return 1;
  }
  model->comment = FLAGS_comment;
  if (absl::Status s = model->Save(FLAGS_o); !s.ok()) {
    std::cerr << "shroud train: " << s.message() << "\n";
    return 1;
  }
  auto attack = MaxEntAttack::Create(*model, *config);
  DetectionRate fit = MeasureDetector(**attack, *flows, *config);
  std::cout << absl::StrFormat(
      "wrote %s: windows %d,%d,%d, trained on %d migration and %d background flows; "
      "on its own training set TPR %.3f FPR %.3f (use `shroud eval` for held-out rates)\n",
      FLAGS_o, flags->windows[0], flags->windows[1], flags->windows[2], model->trained_migration,
      model->trained_background, fit.tpr(), fit.fpr());
  return 0;
}

}  // namespace shroud::cli
