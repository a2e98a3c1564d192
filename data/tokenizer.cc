#include "data/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/rng.h"
#include "core/io/checksum.h"
#include "core/io/file.h"
#include "data/spm_api.h"

#ifndef OPENMOE_SPM_MODULE_PATH
#define OPENMOE_SPM_MODULE_PATH ""
#endif

namespace openmoe {
namespace {

std::string SelfDirectory() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string path(buf, static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

// Loads the sentencepiece module once per process.
absl::StatusOr<const spm::Api*> Module() {
  static std::once_flag once;
  static const spm::Api* api = nullptr;
  static std::string error;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("OPENMOE_SPM_MODULE"); env != nullptr && *env != '\0')
      candidates.push_back(env);
    if (std::string(OPENMOE_SPM_MODULE_PATH).size() > 0)
      candidates.push_back(OPENMOE_SPM_MODULE_PATH);
    const std::string self = SelfDirectory();
    if (!self.empty()) {
      candidates.push_back(self + "/libopenmoe_spm.so");
      candidates.push_back(self + "/../data/libopenmoe_spm.so");
      candidates.push_back(self + "/../lib/libopenmoe_spm.so");
    }
    std::string tried;
    for (const std::string& path : candidates) {
      if (access(path.c_str(), R_OK) != 0) {
        absl::StrAppend(&tried, tried.empty() ? "" : ", ", path, " (missing)");
        continue;
      }
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle == nullptr) {
        absl::StrAppend(&tried, tried.empty() ? "" : ", ", path, " (", dlerror(), ")");
        continue;
      }
      auto fn = reinterpret_cast<const spm::Api* (*)()>(dlsym(handle, "openmoe_spm_api"));
      if (fn == nullptr || fn()->version != spm::kApiVersion) {
        absl::StrAppend(&tried, tried.empty() ? "" : ", ", path, " (wrong module version)");
        continue;
      }
      api = fn();
      return;
    }
    error = absl::StrCat(
        "cannot load the sentencepiece module libopenmoe_spm.so (set OPENMOE_SPM_MODULE to its "
        "path); tried: ",
        tried.empty() ? "nothing" : tried);
  });
  if (api == nullptr) return absl::FailedPreconditionError(error);
  return api;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Tokenizer>> Tokenizer::Load(const std::string& model_path,
                                                                 int64_t extra_ids) {
  if (model_path.empty())
    return absl::InvalidArgumentError("data.tokenizer.model is empty (a sentencepiece .model)");
  auto bytes = ReadFile(model_path);
  if (!bytes.ok()) return bytes.status();
  return FromSerialized(*bytes, extra_ids, model_path);
}

absl::StatusOr<std::shared_ptr<const Tokenizer>> Tokenizer::FromSerialized(
    const std::string& serialized, int64_t extra_ids, const std::string& name) {
  auto api = Module();
  if (!api.ok()) return api.status();
  if (extra_ids < 0)
    return absl::InvalidArgumentError(absl::StrCat("data.tokenizer.extra_ids=", extra_ids, " < 0"));
  std::string error;
  void* processor = (*api)->load(serialized, &error);
  if (processor == nullptr)
    return absl::DataLossError(absl::StrCat(name, ": not a sentencepiece model (", error, ")"));
  std::shared_ptr<Tokenizer> t(new Tokenizer());
  t->processor_ = processor;
  t->name_ = name;
  t->pieces_ = (*api)->piece_size(processor);
  t->extra_ids_ = extra_ids;
  t->eos_id_ = (*api)->eos_id(processor);
  t->model_checksum_ = Xxh64(serialized);
  if (t->eos_id_ < 0)
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": the model has no EOS piece (eos_id < 0)"));
  return std::shared_ptr<const Tokenizer>(std::move(t));
}

absl::StatusOr<std::shared_ptr<const Tokenizer>> Tokenizer::LoadShared(
    const std::string& model_path, int64_t extra_ids) {
  static std::mutex mu;
  static std::map<std::pair<std::string, int64_t>, std::weak_ptr<const Tokenizer>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{model_path, extra_ids}];
  if (auto existing = slot.lock()) return existing;
  auto loaded = Load(model_path, extra_ids);
  if (loaded.ok()) slot = *loaded;
  return loaded;
}

Tokenizer::~Tokenizer() {
  if (processor_ != nullptr) {
    auto api = Module();
    if (api.ok()) (*api)->release(processor_);
  }
}

namespace {

// Sentencepiece's encoder builds a lattice of about 200 bytes per input byte, so a huge document
// is encoded in chunks of at most this many bytes.
constexpr size_t kEncodeChunkBytes = size_t{1} << 16;

// Where the chunk of `text` starting at `start` ends, and where the next one starts. Preferred
// cut: a single space between two non-spaces, which is dropped, because the next chunk's dummy
// prefix (the "▁" sentencepiece puts before every input) stands for it exactly, and no piece
// spans a word boundary: the ids are those of encoding the whole text. Else after a newline,
// else at a UTF-8 character boundary (there the ids can differ slightly from a whole encoding).
std::pair<size_t, size_t> NextCut(std::string_view text, size_t start) {
  if (text.size() - start <= kEncodeChunkBytes) return {text.size(), text.size()};
  const size_t limit = start + kEncodeChunkBytes;
  const size_t floor = start + kEncodeChunkBytes / 2;
  for (size_t i = limit - 1; i > floor; --i)
    if (text[i] == ' ' && text[i - 1] != ' ' && text[i - 1] != '\n' && text[i + 1] != ' ' &&
        text[i + 1] != '\n')
      return {i, i + 1};
  for (size_t i = limit - 1; i > floor; --i)
    if (text[i] == '\n') return {i + 1, i + 1};
  size_t cut = limit;
  while (cut > start + 1 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return {cut, cut};
}

}  // namespace

absl::Status Tokenizer::Encode(std::string_view text, std::vector<int32_t>* ids) const {
  const spm::Api* api = *Module();  // loaded: processor_ exists
  std::vector<int> out;
  std::string error;
  ids->clear();
  size_t start = 0;
  do {
    const auto [end, next] = NextCut(text, start);
    if (!api->encode(processor_, text.data() + start, end - start, &out, &error))
      return absl::InternalError(absl::StrCat(name_, ": sentencepiece encode failed: ", error));
    ids->insert(ids->end(), out.begin(), out.end());
    start = next;
  } while (start < text.size());
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  const spm::Api* api = *Module();
  std::string text, error;
  std::vector<int> run;
  auto flush = [&]() -> absl::Status {
    if (run.empty()) return absl::OkStatus();
    std::string part;
    if (!api->decode(processor_, run, &part, &error))
      return absl::InvalidArgumentError(absl::StrCat(name_, ": sentencepiece decode: ", error));
    text += part;
    run.clear();
    return absl::OkStatus();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size())
      return absl::OutOfRangeError(
          absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab_size(), ")"));
    if (id >= pieces_) {
      if (auto s = flush(); !s.ok()) return s;
      text += IdToPiece(id);
    } else {
      run.push_back(id);
    }
  }
  if (auto s = flush(); !s.ok()) return s;
  return text;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::ModeTokens(const std::string& mode) const {
  if (mode.empty()) return std::vector<int32_t>{};
  const int id = (*Module())->piece_to_id(processor_, mode);
  if (id >= 0) return std::vector<int32_t>{id};
  std::vector<int32_t> ids;
  if (auto s = Encode(mode, &ids); !s.ok()) return s;
  return ids;
}

std::string Tokenizer::IdToPiece(int32_t id) const {
  if (id >= pieces_) return absl::StrCat("<extra_id_", vocab_size() - 1 - id, ">");
  return (*Module())->id_to_piece(processor_, id);
}

std::vector<std::string> TrainingSentences(const std::vector<std::string>& documents,
                                           const TokenizerTrainingOptions& options) {
  std::vector<std::string> lines;
  for (const std::string& doc : documents) {
    size_t start = 0;
    while (start <= doc.size()) {
      size_t end = doc.find('\n', start);
      if (end == std::string::npos) end = doc.size();
      std::string_view line(doc.data() + start, end - start);
      if (line.find_first_not_of(" \t\r") != std::string_view::npos) {
        size_t n = std::min<size_t>(line.size(), static_cast<size_t>(options.max_sentence_bytes));
        while (n < line.size() && n > 0 && (static_cast<unsigned char>(line[n]) & 0xC0) == 0x80)
          --n;
        lines.emplace_back(line.substr(0, n));
      }
      start = end + 1;
    }
  }
  const size_t keep = static_cast<size_t>(std::max<int64_t>(0, options.max_sentences));
  if (lines.size() <= keep) return lines;
  // Deterministic sample without replacement: the `keep` lines with the smallest random keys.
  const CounterRng rng(options.seed, StreamId("tokenizer.sentences"));
  std::vector<std::pair<uint64_t, size_t>> keys(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) keys[i] = {rng.Bits(i), i};
  std::nth_element(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(keep), keys.end());
  std::vector<size_t> picked;
  picked.reserve(keep);
  for (size_t i = 0; i < keep; ++i) picked.push_back(keys[i].second);
  std::sort(picked.begin(), picked.end());
  std::vector<std::string> out;
  out.reserve(keep);
  for (size_t i : picked) out.push_back(std::move(lines[i]));
  return out;
}

absl::StatusOr<std::string> TrainTokenizer(const std::vector<std::string>& documents,
                                           const TokenizerTrainingOptions& options) {
  auto api = Module();
  if (!api.ok()) return api.status();
  const std::vector<std::string> sentences = TrainingSentences(documents, options);
  if (sentences.empty())
    return absl::InvalidArgumentError("tokenizer training: the corpus has no non-blank lines");
  std::string symbols;
  for (const std::string& s : options.user_symbols)
    absl::StrAppend(&symbols, symbols.empty() ? "" : ",", s);
  std::vector<std::pair<std::string, std::string>> flags = {
      {"model_type", options.model_type},
      {"vocab_size", absl::StrCat(options.vocab_size)},
      {"character_coverage", absl::StrCat(options.character_coverage)},
      {"num_threads", absl::StrCat(std::max<int64_t>(1, options.threads))},
      {"max_sentence_length", absl::StrCat(options.max_sentence_bytes + 16)},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      // Code: keep runs of spaces (indentation) and let pieces be whitespace only.
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_digits", "true"},
      // Any character (even outside the coverage) is representable as bytes.
      {"byte_fallback", "true"},
      {"minloglevel", "2"},
      // T5 ids: pad 0 (also the packing pad), EOS 1, UNK 2, no BOS.
      {"pad_id", "0"},
      {"eos_id", "1"},
      {"unk_id", "2"},
      {"bos_id", "-1"},
  };
  if (!symbols.empty()) flags.push_back({"user_defined_symbols", symbols});
  std::string model, error;
  if (!(*api)->train(flags, sentences, &model, &error))
    return absl::InvalidArgumentError(absl::StrCat("sentencepiece training failed: ", error));
  return model;
}

}  // namespace openmoe
