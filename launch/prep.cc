#include "launch/prep.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/io/file.h"
#include "data/prep.h"
#include "launch/score.h"
#include "launch/source_rows.h"

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

// `prep --npy`: the rows, written atomically (temporary file, then rename).
absl::Status WriteHeldOutRows(const CommandLine& cl, const PrepOptions& o, std::ostream& out) {
  const std::string path = cl.Get("npy");
  if (!o.out_dir.empty() || !o.train_tokenizer.empty())
    return absl::InvalidArgumentError(
        "prep --npy: give it with --tokenizer MODEL only (not with --out or --train_tokenizer)");
  if (!cl.Has("rows") || !cl.Has("seq_len"))
    return absl::InvalidArgumentError("prep --npy: needs --rows R and --seq_len S");
  TokenArray t;
  for (const absl::Status& s :
       {IntFlag(cl, "rows", 1, &t.rows), IntFlag(cl, "seq_len", 2, &t.seq_len)})
    if (!s.ok()) return s;
  if (PathExists(path) && !cl.GetBool("force"))
    return absl::AlreadyExistsError(
        absl::StrCat(path, ": exists; not overwritten (give --force to replace it)"));
  const std::string form_name = cl.Get("form", "causal_lm");
  absl::StatusOr<RowForm> form = ParseRowForm(form_name);
  if (!form.ok()) return form.status();
  if (cl.Has("mode") && *form != RowForm::kPrefixLm)
    return absl::InvalidArgumentError("prep --npy: --mode goes with --form prefix_lm");
  // OpenMoE's prefix-LM mode token (DefaultUl2Denoisers).
  auto rows = HeldOutRows(o, t.rows, t.seq_len, *form, cl.Get("mode", "[S2S]"));
  if (!rows.ok()) return rows.status();
  t.tokens = std::move(*rows);
  const std::string tmp = absl::StrCat(path, ".tmp", getpid());
  if (auto s = WriteNpyTokens(tmp, t); !s.ok()) {
    std::remove(tmp.c_str());
    return s;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    return absl::DataLossError(absl::StrCat(path, ": rename failed (", why, ")"));
  }
  out << "prep: wrote " << path << " (" << t.rows << " rows x " << t.seq_len << " tokens, int32, "
      << RowFormName(*form) << " form)\n";
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
  if (cl.Has("npy")) return WriteHeldOutRows(cl, o, out);
  auto result = RunPrep(o, &out);
  return result.status();
}

}  // namespace openmoe
