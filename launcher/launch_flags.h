// ddprun's command line: every flag declared once, with the variable it falls back to when
// it is not given (torchrun's argparse_util.env: PET_<FLAG>), its default and its help.
// The parser, --help and the split between ddprun's flags and the program all derive from
// that one table.
//
// Where a value comes from, first found wins:
//   1. the flag on the command line;
//   2. its variable. The node's place (--nnodes, --node-rank, --nproc-per-node, --master-*)
//      is read by env::resolveNodeEnv() with its cross-checks (Note [Environment
//      precedence]) and the log level by log::resolveLevel(); the others' are read here;
//   3. the default.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "launcher/launch_plan.h"
#include "launcher/output_router.h"
#include "runtime/env/cluster_env.h"

namespace ddp::launcher {

struct FlagSpec {
  std::string name;       // "nproc-per-node"; "nproc_per_node" is accepted too, as in torchrun
  std::string valueName;  // shown in --help ("N"); empty for a switch
  std::string variable;   // the fallback variable; empty for none
  // The variable is read elsewhere, with its cross-checks: by env::resolveNodeEnv() (the
  // node's place) or log::resolveLevel() (Note [Log level precedence]).
  bool variableReadElsewhere = false;
  std::string defaultText;  // shown in --help; what an unset flag means
  std::string help;
  char shortName = 0;
};

const std::vector<FlagSpec>& launchFlagSpecs();

// Whether `arg` ("--nnodes", "--master_port", "-r") is a ddprun flag that takes a value:
// ddprun's flags end at the first word that is neither a flag nor a flag's value.
bool flagTakesValue(std::string_view arg);

// The flags as given on the command line: canonical name -> text ("" for a switch).
using GivenFlags = std::map<std::string, std::string>;

// Everything the command line and the environment say about this launch.
struct LaunchCommand {
  LaunchFlags plan;  // the node's place; resolveLaunchPlan() adds the environment's view
  int rendezvousTimeoutSeconds = 0;
  std::string backend;
  int gracePeriodSeconds = 30;
  std::string logDir;  // "": none, unless --redirects or --tee need one (main.cpp)
  StreamSelection redirects;
  StreamSelection tee;
  std::set<int> localRanksFilter;       // empty: every local rank
  std::string linePrefixTemplate;       // "": "[rank${rank}]: "
  std::string errorFile;                // "": <run log dir>/error.json with a log directory
  std::optional<std::string> logLevel;  // the flag; log::resolveLevel() adds the variable
  bool dryRun = false;
  // Flag name -> where its value came from ("--max-restarts", "PET_MAX_RESTARTS").
  std::map<std::string, std::string> origins;
};

// Applies the table's fallbacks and parses every value. Throws LaunchError (a flag or a
// fallback variable that is malformed); the message names the flag or variable.
LaunchCommand readLaunchCommand(const GivenFlags& given, const env::EnvMap& env);

}  // namespace ddp::launcher
