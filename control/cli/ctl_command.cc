// shroud ctl: reads and changes a running shroud-dataplane's parameters over
// its control socket (include/shroud/ctl_protocol.h).
#include <gflags/gflags.h>

#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "control/cli/commands.h"
#include "control/ctl/ctl_client.h"
#include "shroud/ctl_protocol.h"
#include "shroud/runtime_paths.h"

// The dataplane instance and runtime directory; shroud-control takes the same
// two flags, so both find the same dataplane.
DEFINE_string(instance, "",
              "ctl: the dataplane instance to talk to (shroud-dataplane --instance); default "
              "\"default\"");
DEFINE_string(runtime_dir, "",
              "ctl: root of the instances' runtime directories; default $SHROUD_RUNTIME_DIR, "
              "else /run/shroud as root, $XDG_RUNTIME_DIR/shroud or /tmp/shroud-UID");
// Defined by `shroud analyze` (analyze_command.cc): one flag, two commands.
DECLARE_bool(json);

namespace shroud::cli {
namespace {

using json = nlohmann::json;

// Exit codes (also in the help text).
constexpr int kExitOk = 0;
constexpr int kExitRefused = 1;      // the dataplane answered an error
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;  // no answer from a dataplane

constexpr char kUsage[] =
    "usage: shroud ctl [--instance=NAME] [--runtime_dir=DIR] [--json] COMMAND\n\n"
    "Reads and changes a running shroud-dataplane's parameters over its control\n"
    "socket (<runtime_dir>/<instance>/ctl.sock; run as the dataplane's user or root).\n\n"
    "Commands:\n"
    "  status                 what the dataplane is and does\n"
    "  get                    every run-time setting and its value (KEY=VALUE lines)\n"
    "  set KEY=VALUE...       change run-time settings, all or none, e.g.\n"
    "                           shroud ctl set rate_variation.max_rate_mbyte_s=12 \\\n"
    "                             rate_variation.up_range=[1.0,1.3] chaff.policy=constant\n"
    "                         VALUE is JSON when it parses as JSON (numbers, true/false,\n"
    "                         [a,b]), a string otherwise. Keys: rate_variation.* and the\n"
    "                         chaff policy keys, in the config file's names and units\n"
    "                         (MB/s = 10^6 bytes/s, ms); `get` lists them.\n"
    "  reload                 re-read the dataplane's config file ([classify] rules too);\n"
    "                         refused when it changes what only a restart applies\n"
    "  ping                   is the dataplane there?\n\n"
    "--json prints the dataplane's raw response line instead of text.\n"
    "Exit status: 0 done, 1 the dataplane refused (message on stderr), 2 bad usage,\n"
    "3 no dataplane could be reached.";

// "12" -> 12, "true" -> true, "[1,2]" -> [1,2], "constant" -> "constant".
json ParseValue(const std::string& text) {
  try {
    json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!value.is_discarded()) return value;
  } catch (const std::exception&) {
    // Whatever does not parse is meant as a string.
  }
  return text;
}

std::string Compact(const json& v) {
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

// As `set` takes it back: strings bare (chaff.policy=constant), the rest JSON.
std::string ValueText(const json& v) {
  return v.is_string() ? v.get<std::string>() : Compact(v);
}

std::string KeyValues(const json& values) {
  std::string out;
  for (const auto& [key, value] : values.items()) {
    absl::StrAppend(&out, out.empty() ? "" : " ", key, "=", ValueText(value));
  }
  return out;
}

void PrintHuman(const std::string& verb, const json& response, const json& request) {
  if (verb == kCtlCmdPing) {
    std::cout << "pong";
    if (auto pid = response.find("pid"); pid != response.end()) std::cout << " (pid " << *pid << ")";
    std::cout << "\n";
  } else if (verb == kCtlCmdStatus) {
    json body = response.contains("status") ? response["status"] : response;
    if (body.is_object()) {
      body.erase("ok");
      body.erase("version");
    }
    std::cout << body.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  } else if (verb == kCtlCmdGet) {
    const json values = response.value("values", json::object());
    for (const auto& [key, value] : values.items()) std::cout << key << "=" << ValueText(value) << "\n";
  } else if (verb == kCtlCmdSet) {
    const json applied = response.contains("applied") ? response["applied"] : request["values"];
    if (applied.is_object() && applied.empty()) {
      std::cout << "applied: nothing changed (those values were in effect already)\n";
    } else {
      std::cout << "applied: " << KeyValues(applied) << "\n";
    }
  } else if (verb == kCtlCmdReload) {
    std::cout << "reloaded";
    if (auto config = response.find("config"); config != response.end() && config->is_string()) {
      std::cout << " " << config->get<std::string>();
    }
    const json applied = response.value("applied", json::object());
    if (applied.is_object() && !applied.empty()) {
      std::cout << "; applied: " << KeyValues(applied);
    } else {
      std::cout << "; no run-time setting changed";
    }
    std::cout << "\n";
  }
}

}  // namespace

// Not PrintCommandHelp: the feature and detector flags it adds mean nothing
// to ctl.
void PrintCtlHelp() {
  std::cout << kUsage << "\n\nOptions:\n";
  std::vector<gflags::CommandLineFlagInfo> flags;
  gflags::GetAllFlags(&flags);
  for (const auto& f : flags) {
    if (f.filename.find("ctl_command.cc") == std::string::npos) continue;
    std::cout << absl::StrFormat("  --%-16s %s\n", f.name, f.description);
  }
  std::cout << absl::StrFormat("  --%-16s %s\n", "json",
                               "print the dataplane's raw response (one JSON line)");
}

int RunCtl(const CommandArgs& args) {
  if (args.positional.empty()) {
    std::cerr << "shroud ctl: need a command: status, get, set KEY=VALUE..., reload or ping "
                 "(see shroud ctl --help)\n";
    return kExitUsage;
  }
  const std::string& verb = args.positional[0];
  json request = {{"cmd", verb}};
  if (verb == kCtlCmdSet) {
    if (args.positional.size() < 2) {
      std::cerr << "shroud ctl set: need KEY=VALUE... (`shroud ctl get` lists the keys)\n";
      return kExitUsage;
    }
    json values = json::object();
    for (size_t i = 1; i < args.positional.size(); ++i) {
      const std::string& arg = args.positional[i];
      const size_t eq = arg.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::cerr << "shroud ctl set: expected KEY=VALUE, got '" << arg << "'\n";
        return kExitUsage;
      }
      const std::string key = arg.substr(0, eq);
      if (values.contains(key)) {
        std::cerr << "shroud ctl set: " << key << " given twice\n";
        return kExitUsage;
      }
      values[key] = ParseValue(arg.substr(eq + 1));
    }
    if (values.size() > kCtlMaxSetValues) {
      std::cerr << "shroud ctl set: at most " << kCtlMaxSetValues << " keys at once\n";
      return kExitUsage;
    }
    request["values"] = std::move(values);
  } else if (verb == kCtlCmdStatus || verb == kCtlCmdGet || verb == kCtlCmdReload ||
             verb == kCtlCmdPing) {
    if (args.positional.size() > 1) {
      std::cerr << "shroud ctl " << verb << ": unexpected argument '" << args.positional[1]
                << "'\n";
      return kExitUsage;
    }
  } else {
    std::cerr << "shroud ctl: unknown command '" << verb
              << "'; one of status, get, set, reload, ping\n";
    return kExitUsage;
  }

  absl::StatusOr<RuntimePaths> paths = ResolveRuntimePaths(FLAGS_runtime_dir, FLAGS_instance);
  if (!paths.ok()) {
    std::cerr << "shroud ctl: " << paths.status().message() << "\n";
    return kExitUsage;
  }
  absl::StatusOr<json> response = CtlCall(paths->ctl_socket, request);
  if (!response.ok()) {
    std::cerr << "shroud ctl: " << response.status().message();
    if (absl::IsUnavailable(response.status())) std::cerr << " (instance " << paths->instance << ")";
    std::cerr << "\n";
    return absl::IsInvalidArgument(response.status()) ? kExitUsage : kExitUnreachable;
  }
  const bool ok = (*response)["ok"].get<bool>();
  if (FLAGS_json) {
    std::cout << Compact(*response) << "\n";
  } else if (ok) {
    PrintHuman(verb, *response, request);
  }
  if (!ok) {
    const json error = response->value("error", json("unknown error"));
    std::cerr << "shroud ctl " << verb << ": "
              << (error.is_string() ? error.get<std::string>() : Compact(error)) << "\n";
    return kExitRefused;
  }
  return kExitOk;
}

}  // namespace shroud::cli
