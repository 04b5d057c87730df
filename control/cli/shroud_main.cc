// shroud: the offline command-line tool (no DPDK needed at run time).
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <cstring>
#include <iostream>
#include <string>

#include "control/cli/cli_common.h"
#include "control/cli/commands.h"

namespace {

constexpr char kUsage[] =
    "usage: shroud COMMAND [options] [args]\n\n"
    "Commands:\n"
    "  analyze   per-flow features and the adversary's verdicts for pcap/pcapng captures\n"
    "  train     train the maximum-entropy attack's model on labelled captures\n"
    "  eval      the paper's evaluation: CoV table, chi-square/KS, detection rates\n"
    "  judge     every run of scripts/evaluate judged by every detector (ours included)\n"
    "  ctl       read and change a running shroud-dataplane's parameters\n"
    "  rttmon    ping a VM and watch its round-trip times for live migrations\n"
    "  ratewalk  simulate a gateway config's Algorithm 3 walk, to calibrate its ranges\n\n"
    "`shroud COMMAND --help` explains a command and its options.";

bool WantsHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0 ||
        std::strcmp(argv[i], "-help") == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(kUsage);
  gflags::SetVersionString("0.1.0");
  std::string command = argc > 1 ? argv[1] : "";
  if (WantsHelp(argc, argv) || command.empty()) {
    if (command == "analyze") {
      shroud::cli::PrintAnalyzeHelp();
    } else if (command == "train") {
      shroud::cli::PrintTrainHelp();
    } else if (command == "eval") {
      shroud::cli::PrintEvalHelp();
    } else if (command == "judge") {
      shroud::cli::PrintJudgeHelp();
    } else if (command == "ctl") {
      shroud::cli::PrintCtlHelp();
    } else if (command == "rttmon") {
      shroud::cli::PrintRttmonHelp();
    } else if (command == "ratewalk") {
      shroud::cli::PrintRatewalkHelp();
    } else {
      std::cout << kUsage << "\n";
    }
    return command.empty() && !WantsHelp(argc, argv) ? 2 : 0;
  }
  int (*run)(const shroud::cli::CommandArgs&) = nullptr;
  if (command == "analyze") {
    run = shroud::cli::RunAnalyze;
  } else if (command == "train") {
    run = shroud::cli::RunTrain;
  } else if (command == "eval") {
    run = shroud::cli::RunEval;
  } else if (command == "judge") {
    run = shroud::cli::RunJudge;
  } else if (command == "ctl") {
    run = shroud::cli::RunCtl;
  } else if (command == "rttmon") {
    run = shroud::cli::RunRttmon;
  } else if (command == "ratewalk") {
    run = shroud::cli::RunRatewalk;
  } else {
    std::cerr << "shroud: unknown command '" << command << "'\n\n" << kUsage << "\n";
    return 2;
  }
  shroud::cli::CommandArgs args;
  // gflags has no list flags: take `--migration A B ...` out before it parses.
  args.migration = shroud::cli::TakeListFlag("migration", &argc, argv);
  args.background = shroud::cli::TakeListFlag("background", &argc, argv);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  gflags::ParseCommandLineFlags(&argc, &argv, /*remove_flags=*/true);
  if (absl::Status s = shroud::cli::CheckFlagsApply(command); !s.ok()) {
    std::cerr << "shroud " << command << ": " << s.message() << "\n";
    return 2;
  }
  for (int i = 2; i < argc; ++i) args.positional.emplace_back(argv[i]);
  return run(args);
}
