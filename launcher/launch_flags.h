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
//
// Note [torchrun's flags]
// ~~~~~~~~~~~~~~~~~~~~~~~
// Every flag of the pinned torchrun (torch/distributed/run.py in the wheel, get_args_parser)
// has a row, with torchrun's name and, where torchrun has one, its PET_<NAME> variable, and
// says what ddprun does with it:
//   kSupported  does what torchrun's does; a difference is in its help;
//   kIgnored    accepted and validated, then unused, for the reason in torchrunNote (shown in
//               --help); a value other than torchrun's default is logged as ignored;
//   kRefused    a value other than torchrun's default is a LaunchError naming the flag and
//               the reason, before any worker starts.
// ddprun's own flags are kNotTorchrun. tests/launcher/torchrun_flags_test.py compares the
// rows (`ddprun --flags-json`) with the wheel's own parser and with README's table, so a
// flag a new torch adds fails a test until it has a row.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "launcher/launch_plan.h"
#include "launcher/node_rendezvous.h"
#include "launcher/output_router.h"
#include "launcher/worker_program.h"
#include "runtime/env/cluster_env.h"
#include "runtime/metrics/node_monitor.h"

namespace ddp::launcher {

enum class TorchrunStatus { kNotTorchrun, kSupported, kIgnored, kRefused };

// "not-torchrun", "supported", "ignored", "refused" (--flags-json, README's table).
std::string torchrunStatusName(TorchrunStatus status);

struct FlagSpec {
  std::string name;  // "nproc-per-node"; "nproc_per_node" is accepted too, as in torchrun
  char shortName = 0;
  std::string valueName;  // shown in --help ("N"); empty for a switch
  std::string variable;   // the fallback variable; empty for none
  // The variable is read elsewhere, with its cross-checks: by env::resolveNodeEnv() (the
  // node's place) or log::resolveLevel() (Note [Log level precedence]).
  bool variableReadElsewhere = false;
  std::string defaultText;  // shown in --help; what an unset flag means
  std::string help;
  TorchrunStatus torchrun = TorchrunStatus::kNotTorchrun;
  std::string torchrunNote;  // why it is ignored or refused (Note [torchrun's flags])
};

const std::vector<FlagSpec>& launchFlagSpecs();

// Every spelling of a flag: "--nproc-per-node", "--nproc_per_node", "-r".
std::vector<std::string> flagSpellings(const FlagSpec& spec);

// The table as JSON (`ddprun --flags-json`): one object per flag with its spellings,
// variable, default, help and torchrun status.
std::string flagTableJson();

// Whether `arg` ("--nnodes", "--master_port", "-r") is a ddprun flag that takes a value:
// ddprun's flags end at the first word that is neither a flag nor a flag's value.
bool flagTakesValue(std::string_view arg);

// The flags as given on the command line: canonical name -> text ("" for a switch).
using GivenFlags = std::map<std::string, std::string>;

// Everything the command line and the environment say about this launch.
struct LaunchCommand {
  LaunchFlags plan;  // the node's place; resolveLaunchPlan() adds the environment's view
  int rendezvousTimeoutSeconds = 0;
  int hangTimeoutSeconds = 0;
  int metricsPort = metrics::kDefaultMetricsPort;  // 0: no endpoint
  std::string metricsHost = "0.0.0.0";
  bool progress = true;  // --no-progress: false
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
  // --rdzv-backend c10d: the endpoint, id and --rdzv-conf (min/max nodes and the local
  // workers are filled in from the plan).
  std::optional<RendezvousConfig> rendezvous;
  std::chrono::milliseconds monitorInterval{100};
  ProgramOptions program;         // -m, --no-python, --run-path, --python
  std::string role = "default";   // --role: ROLE_NAME
  bool virtualLocalRank = false;  // --virtual-local-rank
  // --signals-to-handle: what the launcher forwards to the workers before it stops them.
  std::vector<int> signalsToHandle;
  // "--start-method=fork: accepted and ignored: ..." for each ignored flag given a value
  // other than torchrun's default, and each ignored --rdzv-conf key; the caller logs them
  // once logging is set up.
  std::vector<std::string> ignoredFlags;
  // Flag name -> where its value came from ("--max-restarts", "PET_MAX_RESTARTS").
  std::map<std::string, std::string> origins;
};

// Applies the table's fallbacks and parses every value. Throws LaunchError (a flag or a
// fallback variable that is malformed); the message names the flag or variable.
LaunchCommand readLaunchCommand(const GivenFlags& given, const env::EnvMap& env);

}  // namespace ddp::launcher
