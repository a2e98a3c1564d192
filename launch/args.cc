#include "launch/args.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace openmoe {
namespace {

struct FlagSpec {
  const char* name;
  const char* value_name;  // shown in usage; nullptr for booleans
  bool repeats;
  bool required;
  const char* help;
};

struct SubcommandSpec {
  const char* name;
  const char* summary;
  std::vector<FlagSpec> flags;
};

constexpr FlagSpec kJobFlag = {"job", "FILE", true, true,
                               "job spec (protobuf text); repeat to merge, later files win"};
constexpr FlagSpec kSetFlag = {"set", "field.path=value", true, false,
                               "override one job field after the files; repeatable"};
constexpr FlagSpec kAllowDefaultsFlag = {
    "allow_defaults", nullptr, false, false,
    "accept a job file that sets no field (else an error: it would run the defaults)"};

const std::vector<SubcommandSpec>& Subcommands() {
  static const std::vector<SubcommandSpec> kSubcommands = {
      {"train",
       "train a model (standalone or under mpirun)",
       {kJobFlag,
        kSetFlag,
        kAllowDefaultsFlag,
        {"resume", "auto|never|DIR", false, false,
         "auto: continue from the newest checkpoint in checkpoint.dir if any (default); never: "
         "start fresh; DIR: resume from that checkpoint directory"}}},
      {"plan",
       "print mesh, parameter counts, FLOPs per token and memory per chip without running",
       {kJobFlag,
        kSetFlag,
        kAllowDefaultsFlag,
        {"json", nullptr, false, false, "print JSON instead of text"},
        {"search", nullptr, false, false,
         "predict every valid (data, expert, model) layout of the topology, ranked by step time"}}},
      {"prep",
       "make token shards from corpora (and/or train a sentencepiece tokenizer)",
       {{"input", "FILE|DIR", true, true,
         "a corpus: .jsonl, .jsonl.zst, or a directory tree of text/code files; one source each"},
        {"text_field", "NAME", true, false,
         "JSON field holding the text (default text); once for all inputs or once per input"},
        {"format", "auto|jsonl|jsonl_zst|text_tree", false, false, "input format (default auto)"},
        {"extensions", "EXT", true, false, "text trees: only files ending in EXT (e.g. .py)"},
        {"tokenizer", "MODEL", false, false, "sentencepiece .model to tokenize with"},
        {"train_tokenizer", "MODEL", false, false,
         "train a unigram sentencepiece model on the inputs, write it here, then use it"},
        {"vocab_size", "N", false, false, "pieces of the trained tokenizer (default 8000)"},
        {"max_sentences", "N", false, false,
         "lines sampled for tokenizer training (default 300000)"},
        {"extra_ids", "N", false, false,
         "extra ids (sentinels) above the pieces, as data.tokenizer.extra_ids (default 100)"},
        {"out", "DIR", false, false, "write token shards (and index.txt) here"},
        {"shard_tokens", "N", false, false, "tokens per shard file (default 4194304)"},
        {"threads", "N", false, false, "tokenizer threads (default 2)"},
        {"skip_bad_records", nullptr, false, false,
         "skip (and count) malformed records instead of stopping"},
        {"npy", "OUT.npy", false, false,
         "write the first --rows rows of --seq_len held-out tokens (int32) for `openmoe score`"},
        {"form", "causal_lm|prefix_lm", false, false,
         "--npy: causal LM stream (default), or one prefix-LM row per chunk (EOS mode prefix EOS "
         "continuation), the form a UL2-trained model is scored in"},
        {"mode", "TEXT", false, false, "--npy --form prefix_lm: the mode token (default [S2S])"},
        {"rows", "R", false, false, "--npy: rows to write"},
        {"seq_len", "S", false, false, "--npy: tokens per row"},
        {"force", nullptr, false, false, "--npy: overwrite an existing OUT.npy"}}},
      {"score",
       "losses of a checkpoint (or safetensors weights) on int32 tokens [rows, seq_len] (.npy)",
       {{"checkpoint", "DIR|FILE.safetensors", false, true,
         "a checkpoint directory (step_N), or a safetensors file from `openmoe export`"},
        {"tokens", "FILE.npy", false, true,
         "int32 (or int64) array [rows, seq_len], from `openmoe prep --npy`"},
        {"form", "causal_lm|prefix_lm", false, false,
         "causal_lm (default): every position predicts the next; prefix_lm: rows from `prep --npy "
         "--form prefix_lm`, loss on the continuation only (for a UL2-trained model)"},
        {"job", "FILE", true, false,
         "job spec of the model (default: the one stored in the checkpoint or the file)"},
        kSetFlag,
        {"json", nullptr, false, false, "print JSON instead of text"}}},
      {"analyze",
       "what the routers do: token-id and domain specialisation, drops by position, agreement "
       "between checkpoints (analysis.json, CSVs, PNGs)",
       {{"checkpoint", "DIR|FILE.safetensors", true, true,
         "a checkpoint directory (step_N) or safetensors file; repeat, oldest first: the last is "
         "the reference"},
        {"job", "FILE", true, true,
         "job spec naming the model, the tokenizer and the sources (data.sources, eval.sources)"},
        kSetFlag,
        {"out", "DIR", false, false, "output directory (default analysis)"},
        {"rows", "N", false, false, "rows of train.seq_len tokens per source (default 64)"},
        {"min_count", "K", false, false,
         "token ids seen fewer times are left out of specialisation (default 8)"},
        {"no_plots", nullptr, false, false, "skip the gnuplot PNGs"}}},
      {"export",
       "write a checkpoint's parameters as a safetensors file",
       {{"checkpoint", "DIR", false, true, "a checkpoint directory (step_N)"},
        {"out", "FILE.safetensors", false, true, "the file to write"},
        {"allow_nonfinite", nullptr, false, false,
         "export tensors holding NaN or inf (else an error naming the tensor and index)"}}},
      {"help", "print this help, or `openmoe help SUBCOMMAND` for one subcommand", {}},
  };
  return kSubcommands;
}

const SubcommandSpec* FindSubcommand(const std::string& name) {
  for (const SubcommandSpec& s : Subcommands())
    if (name == s.name) return &s;
  return nullptr;
}

const FlagSpec* FindFlag(const SubcommandSpec& sub, const std::string& name) {
  for (const FlagSpec& f : sub.flags)
    if (name == f.name) return &f;
  return nullptr;
}

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

}  // namespace

std::string CommandLine::Get(const std::string& name, const std::string& fallback) const {
  auto it = flags.find(name);
  return it == flags.end() || it->second.empty() ? fallback : it->second.back();
}

std::vector<std::string> CommandLine::GetAll(const std::string& name) const {
  auto it = flags.find(name);
  return it == flags.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return ParseCommandLine(args);
}

absl::StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args) {
  CommandLine cl;
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      cl.subcommand = "help";
      if (!args.empty() && FindSubcommand(args[0]) != nullptr && args[0] != "help")
        cl.help_topic = args[0];
      return cl;
    }
  }
  if (args.empty()) return Invalid("no subcommand given");
  const SubcommandSpec* sub = FindSubcommand(args[0]);
  if (sub == nullptr) {
    if (absl::StartsWith(args[0], "-"))
      return Invalid(absl::StrCat("expected a subcommand before ", args[0]));
    return Invalid(absl::StrCat("unknown subcommand '", args[0], "'"));
  }
  cl.subcommand = sub->name;
  if (cl.subcommand == "help") {
    if (args.size() > 2) return Invalid(absl::StrCat("unexpected argument '", args[2], "'"));
    if (args.size() == 2) {
      if (FindSubcommand(args[1]) == nullptr)
        return Invalid(absl::StrCat("unknown subcommand '", args[1], "'"));
      cl.help_topic = args[1];
    }
    return cl;
  }
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!absl::StartsWith(a, "--") || a.size() == 2) {
      return Invalid(absl::StrCat("unexpected argument '", a, "' for 'openmoe ", sub->name,
                                  "' (flags start with --)"));
    }
    std::string name = a.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const FlagSpec* flag = FindFlag(*sub, name);
    if (flag == nullptr)
      return Invalid(absl::StrCat("unknown flag --", name, " for 'openmoe ", sub->name, "'"));
    if (flag->value_name == nullptr) {  // boolean
      if (!has_value) {
        value = "true";
      } else if (value != "true" && value != "false") {
        return Invalid(
            absl::StrCat("flag --", name, " takes no value or true|false, got '", value, "'"));
      }
    } else if (!has_value) {
      if (i + 1 >= args.size() || absl::StartsWith(args[i + 1], "--"))
        return Invalid(absl::StrCat("flag --", name, " needs a value (", flag->value_name, ")"));
      value = args[++i];
    }
    if (flag->value_name != nullptr && value.empty())
      return Invalid(
          absl::StrCat("flag --", name, " needs a non-empty value (", flag->value_name, ")"));
    std::vector<std::string>& values = cl.flags[name];
    if (!values.empty() && !flag->repeats)
      return Invalid(absl::StrCat("flag --", name, " given more than once"));
    values.push_back(value);
  }
  for (const FlagSpec& f : sub->flags) {
    if (f.required && !cl.Has(f.name))
      return Invalid(absl::StrCat("'openmoe ", sub->name, "' needs --", f.name, " ",
                                  f.value_name != nullptr ? f.value_name : ""));
  }
  return cl;
}

std::string Usage(const std::string& subcommand) {
  std::string out;
  const SubcommandSpec* only = FindSubcommand(subcommand);
  if (only == nullptr || subcommand == "help") {
    out = "usage: openmoe <subcommand> [flags]\n\nsubcommands:\n";
    for (const SubcommandSpec& s : Subcommands())
      absl::StrAppendFormat(&out, "  %-8s %s\n", s.name, s.summary);
    out +=
        "\nflags take `--flag value` or `--flag=value`; run `openmoe help SUBCOMMAND` for its "
        "flags.\n";
    return out;
  }
  absl::StrAppend(&out, "usage: openmoe ", only->name);
  for (const FlagSpec& f : only->flags) {
    std::string one = f.value_name != nullptr ? absl::StrCat("--", f.name, " ", f.value_name)
                                              : absl::StrCat("--", f.name);
    if (f.repeats) one += " ...";
    absl::StrAppend(&out, " ", f.required ? one : absl::StrCat("[", one, "]"));
  }
  absl::StrAppend(&out, "\n  ", only->summary, "\n\nflags:\n");
  for (const FlagSpec& f : only->flags) {
    std::string left = f.value_name != nullptr ? absl::StrCat("--", f.name, " ", f.value_name)
                                               : absl::StrCat("--", f.name);
    absl::StrAppendFormat(&out, "  %-24s %s%s\n", left, f.help, f.repeats ? " (repeatable)" : "");
  }
  return out;
}

}  // namespace openmoe
