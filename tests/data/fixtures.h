// Test fixtures for the data tests, all generated at test time into a fresh temporary directory:
// pseudo-English documents, jsonl / jsonl.zst / text-tree corpora, a tiny sentencepiece model
// trained on the generated text, and job specs pointing at them.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/rng.h"
#include "core/io/file.h"
#include "core/io/json.h"
#include "data/tokenizer.h"
#include "core/io/zstd.h"
#include "gtest/gtest.h"
#include "proto/job.pb.h"

namespace openmoe::testing {

// A directory removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "openmoe_data_XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return JoinPath(path_, name); }

 private:
  std::string path_;
};

// Document i of a deterministic pseudo-English corpus: `sentences` sentences of 4-12 words.
inline std::string GeneratedDocument(uint64_t seed, int64_t i, int64_t sentences) {
  static const char* kWords[] = {
      "the",     "model",   "routes",   "each",      "token",    "to",       "two",      "experts",
      "and",     "drops",   "what",     "overflows", "a",        "router",   "learns",   "which",
      "expert",  "fits",    "best",     "data",      "flows",    "through",  "shards",   "in",
      "order",   "while",   "training", "continues", "on",       "many",     "chips",    "with",
      "small",   "batches", "of",       "text",      "code",     "loss",     "falls",    "slowly",
      "over",    "time",    "when",     "rates",     "are",      "right",    "capacity", "is",
      "limited", "groups",  "never",    "span",      "machines", "sentinel", "marks",    "spans",
      "that",    "were",    "removed",  "from",      "inputs",   "targets",  "follow",   "after",
      "mode",    "tokens",  "begin",
  };
  constexpr int64_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);
  const CounterRng rng(seed, static_cast<uint64_t>(i));
  std::string out;
  uint64_t c = 0;
  for (int64_t s = 0; s < sentences; ++s) {
    const int64_t n = 4 + static_cast<int64_t>(rng.UniformInt(c++, 9));
    for (int64_t w = 0; w < n; ++w) {
      std::string word = kWords[rng.UniformInt(c++, kNumWords)];
      if (w == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
      absl::StrAppend(&out, w == 0 ? "" : " ", word);
    }
    out += s % 3 == 2 ? ".\n" : ". ";
  }
  return out;
}

inline std::vector<std::string> GeneratedDocuments(uint64_t seed, int64_t count) {
  std::vector<std::string> docs;
  for (int64_t i = 0; i < count; ++i) docs.push_back(GeneratedDocument(seed, i, 1 + i % 7));
  return docs;
}

inline std::string JsonlOf(const std::vector<std::string>& docs,
                           const std::string& field = "text") {
  std::string out;
  for (size_t i = 0; i < docs.size(); ++i)
    absl::StrAppend(&out, "{\"id\": ", i, ", ", JsonQuote(field), ": ", JsonQuote(docs[i]),
                    ", \"meta\": {\"n\": [1, 2.5e3, null]}}\n");
  return out;
}

inline void WriteOrDie(const std::string& path, const std::string& bytes) {
  ASSERT_TRUE(WriteFileAtomically(path, bytes).ok()) << path;
}

// A sentencepiece model trained on generated text (once per test binary), with 100 extra ids.
inline std::string TinyTokenizerPath() {
  static TempDir* dir = new TempDir();  // lives until exit
  static std::string path;
  if (path.empty()) {
    TokenizerTrainingOptions options;
    options.vocab_size = 400;
    options.threads = 1;
    auto model = TrainTokenizer(GeneratedDocuments(99, 400), options);
    if (!model.ok()) {
      ADD_FAILURE() << model.status();
      return "";
    }
    path = *dir / "tiny.model";
    WriteOrDie(path, *model);
  }
  return path;
}

// A DATA_CORPUS job over `paths` with the tiny tokenizer.
inline JobSpec CorpusJob(const std::vector<std::string>& paths, int64_t seq_len,
                         DataObjective objective) {
  JobSpec spec;
  spec.mutable_model()->set_vocab_size(512);
  spec.mutable_train()->set_seq_len(seq_len);
  DataConfig* d = spec.mutable_data();
  d->set_source(DATA_CORPUS);
  d->set_objective(objective);
  d->mutable_tokenizer()->set_model(TinyTokenizerPath());
  d->mutable_tokenizer()->set_extra_ids(100);
  SourceConfig* s = d->add_sources();
  s->set_name("text");
  for (const std::string& p : paths) s->add_paths(p);
  return spec;
}

}  // namespace openmoe::testing
