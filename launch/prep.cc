#include "launch/prep.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "data/prep.h"

namespace openmoe {
namespace {

absl::Status IntFlag(const CommandLine& cl, const std::string& name, int64_t minimum,
                     int64_t* value) {
  if (!cl.Has(name)) return absl::OkStatus();
  const std::string text = cl.Get(name);
  if (!absl::SimpleAtoi(text, value) || *value < minimum)
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, " needs an integer >= ", minimum, ", got '", text, "'"));
  return absl::OkStatus();
}

}  // namespace

absl::Status RunPrepCommand(const CommandLine& cl, std::ostream& out) {
  PrepOptions o;
  const std::vector<std::string> inputs = cl.GetAll("input");
  const std::vector<std::string> fields = cl.GetAll("text_field");
  if (fields.size() > 1 && fields.size() != inputs.size())
    return absl::InvalidArgumentError(absl::StrCat("--text_field is given ", fields.size(),
                                                   " times for ", inputs.size(),
                                                   " --input (give it once, or once per input)"));
  SourceFormat format = FORMAT_AUTO;
  const std::string f = cl.Get("format", "auto");
  if (f == "jsonl")
    format = FORMAT_JSONL;
  else if (f == "jsonl_zst")
    format = FORMAT_JSONL_ZST;
  else if (f == "text_tree")
    format = FORMAT_TEXT_TREE;
  else if (f != "auto")
    return absl::InvalidArgumentError(
        absl::StrCat("flag --format: '", f, "' is not auto, jsonl, jsonl_zst or text_tree"));
  for (size_t i = 0; i < inputs.size(); ++i) {
    SourceConfig s;
    s.set_name(inputs[i]);
    s.add_paths(inputs[i]);
    s.set_format(format);
    if (!fields.empty()) s.set_text_field(fields.size() == 1 ? fields[0] : fields[i]);
    for (const std::string& ext : cl.GetAll("extensions")) s.add_extensions(ext);
    o.inputs.push_back(s);
  }
  o.tokenizer_model = cl.Get("tokenizer");
  o.train_tokenizer = cl.Get("train_tokenizer");
  o.out_dir = cl.Get("out");
  o.skip_bad_records = cl.GetBool("skip_bad_records");
  for (const absl::Status& s :
       {IntFlag(cl, "vocab_size", 16, &o.training.vocab_size),
        IntFlag(cl, "max_sentences", 1, &o.training.max_sentences),
        IntFlag(cl, "extra_ids", 0, &o.extra_ids), IntFlag(cl, "shard_tokens", 1, &o.shard_tokens),
        IntFlag(cl, "threads", 1, &o.threads)}) {
    if (!s.ok()) return s;
  }
  o.training.threads = o.threads;
  auto result = RunPrep(o, &out);
  return result.status();
}

}  // namespace openmoe
