// The `shroud` subcommands. Each runs after gflags has parsed the flags and
// returns the process exit code.
#ifndef SHROUD_CONTROL_CLI_COMMANDS_H_
#define SHROUD_CONTROL_CLI_COMMANDS_H_

#include <string>
#include <vector>

namespace shroud::cli {

struct CommandArgs {
  std::vector<std::string> positional;  // arguments after the subcommand
  std::vector<std::string> migration;   // --migration CAPTURE...
  std::vector<std::string> background;  // --background CAPTURE...
};

int RunAnalyze(const CommandArgs& args);
int RunTrain(const CommandArgs& args);
int RunEval(const CommandArgs& args);
int RunJudge(const CommandArgs& args);
int RunCtl(const CommandArgs& args);
int RunRttmon(const CommandArgs& args);
int RunRatewalk(const CommandArgs& args);

void PrintAnalyzeHelp();
void PrintTrainHelp();
void PrintEvalHelp();
void PrintJudgeHelp();
void PrintCtlHelp();
void PrintRttmonHelp();
void PrintRatewalkHelp();

}  // namespace shroud::cli

#endif  // SHROUD_CONTROL_CLI_COMMANDS_H_
