#include "data/prep.h"

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/file.h"
#include "data/document_reader.h"
#include "data/heldout_rows.h"

namespace openmoe {
namespace {

// Calls fn(doc) for every document of every input, in order; fn returning Cancelled stops early
// (with OK).
template <typename Fn>
absl::Status ForEachDocument(const PrepOptions& options, int64_t* bad_records, Fn fn) {
  for (size_t i = 0; i < options.inputs.size(); ++i) {
    auto resolved = ResolveSource(options.inputs[i], static_cast<int64_t>(i));
    if (!resolved.ok()) return resolved.status();
    if (resolved->format == FORMAT_TOKEN_SHARDS)
      return absl::InvalidArgumentError(
          absl::StrCat(options.inputs[i].paths(0), ": already token shards"));
    auto reader =
        DocumentReader::Open(*resolved, 0, 1, options.skip_bad_records, options.max_record_bytes);
    if (!reader.ok()) return reader.status();
    Document doc;
    while (true) {
      auto more = (*reader)->Next(&doc);
      if (!more.ok()) return more.status();
      if (!*more) break;
      if (auto s = fn(std::move(doc)); !s.ok()) {
        if (absl::IsCancelled(s)) return absl::OkStatus();  // fn has what it needs
        return s;
      }
    }
    CounterList counters;
    (*reader)->AddCounters("", &counters);
    for (auto& [name, value] : counters)
      if (name == "bad_records") *bad_records += value;
  }
  return absl::OkStatus();
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

absl::StatusOr<PrepResult> RunPrep(const PrepOptions& options, std::ostream* log) {
  const auto start = std::chrono::steady_clock::now();
  PrepResult result;
  if (options.inputs.empty()) return absl::InvalidArgumentError("prep: no --input given");
  if (options.tokenizer_model.empty() == options.train_tokenizer.empty())
    return absl::InvalidArgumentError(
        "prep: give exactly one of --tokenizer MODEL or --train_tokenizer MODEL");
  if (options.out_dir.empty() && options.train_tokenizer.empty())
    return absl::InvalidArgumentError(
        "prep: nothing to do (give --out DIR, --train_tokenizer MODEL, or both)");

  for (size_t i = 0; i < options.inputs.size(); ++i) {  // missing inputs fail before any work
    auto resolved = ResolveSource(options.inputs[i], static_cast<int64_t>(i));
    if (!resolved.ok()) return resolved.status();
  }
  std::string model_path = options.tokenizer_model;
  if (!options.train_tokenizer.empty()) {
    std::vector<std::string> texts;
    int64_t bad = 0;
    auto s = ForEachDocument(options, &bad, [&](Document doc) {
      texts.push_back(std::move(doc.text));
      return absl::OkStatus();
    });
    if (!s.ok()) return s;
    if (log)
      *log << absl::StrFormat(
          "prep: training a %s tokenizer (%d pieces + %d extra ids) on %d documents\n",
          options.training.model_type, options.training.vocab_size, options.extra_ids,
          texts.size());
    auto model = TrainTokenizer(texts, options.training);
    if (!model.ok()) return model.status();
    if (auto w = WriteFileAtomically(options.train_tokenizer, *model); !w.ok()) return w;
    model_path = options.train_tokenizer;
    if (log) *log << absl::StrFormat("prep: wrote %s (%.1f s)\n", model_path, Seconds(start));
  }
  if (options.out_dir.empty()) {
    result.seconds = Seconds(start);
    return result;
  }

  auto tokenizer = Tokenizer::Load(model_path, options.extra_ids);
  if (!tokenizer.ok()) return tokenizer.status();
  if (auto s = MakeDirectories(options.out_dir); !s.ok()) return s;
  TokenShardWriter writer(options.out_dir, options.shard_tokens, (*tokenizer)->vocab_size(),
                          (*tokenizer)->pieces(), (*tokenizer)->model_checksum());
  const auto tokenize_start = std::chrono::steady_clock::now();

  // Blocks of documents are tokenized by `threads` workers (contiguous slices), then written in
  // order.
  std::vector<std::string> block;
  int64_t block_bytes = 0;
  const int64_t threads = std::max<int64_t>(1, options.threads);
  auto flush = [&]() -> absl::Status {
    std::vector<std::vector<int32_t>> ids(block.size());
    std::vector<absl::Status> status(static_cast<size_t>(threads));
    std::vector<std::thread> workers;
    const size_t per = (block.size() + threads - 1) / threads;
    for (int64_t t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (size_t i = t * per; i < std::min(block.size(), (t + 1) * per); ++i) {
          status[t] = (*tokenizer)->Encode(block[i], &ids[i]);
          if (!status[t].ok()) return;
        }
      });
    }
    for (auto& w : workers) w.join();
    for (auto& s : status)
      if (!s.ok()) return s;
    for (auto& doc : ids) {
      result.tokens += static_cast<int64_t>(doc.size());
      if (auto s = writer.Add(doc); !s.ok()) return s;
    }
    block.clear();
    block_bytes = 0;
    return absl::OkStatus();
  };
  auto s = ForEachDocument(options, &result.bad_records, [&](Document doc) -> absl::Status {
    result.documents += 1;
    result.text_bytes += static_cast<int64_t>(doc.text.size());
    block_bytes += static_cast<int64_t>(doc.text.size());
    block.push_back(std::move(doc.text));
    if (block_bytes >= (int64_t{4} << 20)) return flush();
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  if (auto f = flush(); !f.ok()) return f;
  auto index = writer.Finish();
  if (!index.ok()) return index.status();
  result.shards = static_cast<int64_t>(index->shards.size());
  result.seconds = Seconds(start);
  if (log) {
    const double t = Seconds(tokenize_start);
    *log << absl::StrFormat(
        "prep: %s: %d documents, %.1f MB of text -> %d tokens in %d shards (%d bad records "
        "skipped), "
        "%.1f s, %.2f MB/s\n",
        options.out_dir, result.documents, result.text_bytes / 1e6, result.tokens, result.shards,
        result.bad_records, t, t > 0 ? result.text_bytes / 1e6 / t : 0.0);
  }
  return result;
}

absl::StatusOr<std::vector<int32_t>> HeldOutRows(const PrepOptions& options, int64_t rows,
                                                 int64_t seq_len, RowForm form,
                                                 const std::string& mode) {
  if (options.inputs.empty()) return absl::InvalidArgumentError("prep: no --input given");
  if (options.tokenizer_model.empty())
    return absl::InvalidArgumentError("prep --npy: needs --tokenizer MODEL");
  if (rows < 1 || seq_len < 2)
    return absl::InvalidArgumentError(absl::StrCat(
        "prep --npy: needs --rows >= 1 and --seq_len >= 2 (got ", rows, " and ", seq_len, ")"));
  auto tokenizer = Tokenizer::Load(options.tokenizer_model, options.extra_ids);
  if (!tokenizer.ok()) return tokenizer.status();
  std::vector<int32_t> mode_ids;
  if (form == RowForm::kPrefixLm) {
    auto ids = (*tokenizer)->ModeTokens(mode);
    if (!ids.ok()) return ids.status();
    mode_ids = *ids;
    if (seq_len <= static_cast<int64_t>(mode_ids.size()) + 3)
      return absl::InvalidArgumentError(
          absl::StrCat("prep --npy: --seq_len ", seq_len, " is too short for prefix-LM rows"));
  }
  const HeldOutRowMaker maker(form, (*tokenizer)->eos_id(), mode_ids, seq_len);
  const int64_t wanted = rows * seq_len;
  std::vector<int32_t> stream, doc;
  int64_t documents = 0, bad = 0;
  auto s = ForEachDocument(options, &bad, [&](Document d) -> absl::Status {
    if (auto e = (*tokenizer)->Encode(d.text, &doc); !e.ok())
      return absl::InternalError(absl::StrCat(d.where, ": ", e.message()));
    if (doc.empty()) return absl::OkStatus();
    ++documents;
    maker.Add(doc, &stream);
    if (static_cast<int64_t>(stream.size()) >= wanted) return absl::CancelledError();
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  if (static_cast<int64_t>(stream.size()) < wanted) {
    std::string names;
    for (const SourceConfig& in : options.inputs)
      absl::StrAppend(&names, names.empty() ? "" : ", ", in.paths(0));
    return absl::FailedPreconditionError(absl::StrCat(
        "prep --npy: ", names, " make only ", static_cast<int64_t>(stream.size()) / seq_len,
        " full rows of ", seq_len, " tokens (", documents, " documents, ", stream.size(),
        " tokens); --rows ", rows, " asked"));
  }
  stream.resize(static_cast<size_t>(wanted));
  return stream;
}

}  // namespace openmoe
