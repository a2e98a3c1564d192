// The `openmoe` command line: `openmoe <subcommand> [flags]`.
//
// A small table-driven parser rather than abseil flags: abseil flags are process-global and cannot
// accumulate a repeated flag (`--job a --job b`, `--set x=1 --set y=2`), and each subcommand has
// its own flags. The table (args.cc) says, per subcommand, which flags exist, which repeat, which
// are booleans and which are required. Both `--flag value` and `--flag=value` are accepted; a
// boolean flag takes no value (`--json`) or an explicit `--json=true|false`.
//
// Adding a subcommand or a flag is one entry in the table; main.cc dispatches on `subcommand`.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace openmoe {

struct CommandLine {
  // "train", "plan", ... or "help" (also for `--help` / `-h` anywhere).
  std::string subcommand;
  // For `openmoe help <subcommand>`: the subcommand asked about, else empty.
  std::string help_topic;
  // Flag name (without dashes) -> values in command-line order. Booleans hold "true"/"false".
  std::map<std::string, std::vector<std::string>> flags;

  bool Has(const std::string& name) const { return flags.count(name) > 0; }
  // The last value of a flag, or `fallback` when absent.
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  // All values of a repeatable flag (empty when absent).
  std::vector<std::string> GetAll(const std::string& name) const;
  bool GetBool(const std::string& name) const { return Get(name, "false") == "true"; }
};

// Parses argv (argv[0] is the program). Errors (unknown subcommand or flag, missing value, a
// non-repeatable flag given twice, a stray positional argument, a missing required flag) are
// InvalidArgument with one line naming the offender.
absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv);
absl::StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args);

// Usage text: all subcommands when `subcommand` is empty or unknown, else that one's flags.
std::string Usage(const std::string& subcommand = "");

}  // namespace openmoe
