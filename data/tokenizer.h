// Tokenizer: a sentencepiece model plus extra ids (sentinels) appended above its pieces.
//
// Ids [0, pieces) are sentencepiece pieces; [pieces, pieces + extra_ids) are extra ids, and
// sentinel i (i = 0, 1, ...) is the id pieces + extra_ids - 1 - i, counting down from the top as
// T5 / umT5 do (umT5: 256000 pieces + 300 extra ids). vocab_size() = pieces + extra_ids.
// Any sentencepiece .model loads unchanged (umT5's included). Encode/Decode are thread-safe.
//
// Sentencepiece itself runs in a separately loaded module (see spm_api.h); the module is found at
// $OPENMOE_SPM_MODULE, else at the path the build recorded, else next to the running binary.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace openmoe {

class Tokenizer {
 public:
  // Loads a .model file. NotFound / DataLoss errors name the file.
  static absl::StatusOr<std::shared_ptr<const Tokenizer>> Load(const std::string& model_path,
                                                               int64_t extra_ids);
  // From the bytes of a .model file; `name` is used in messages.
  static absl::StatusOr<std::shared_ptr<const Tokenizer>> FromSerialized(
      const std::string& serialized, int64_t extra_ids, const std::string& name);
  // Process-wide cache over Load: one instance per (path, extra_ids).
  static absl::StatusOr<std::shared_ptr<const Tokenizer>> LoadShared(const std::string& model_path,
                                                                     int64_t extra_ids);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // A text of more than 64 KiB is encoded in chunks cut at single spaces (the ids are those of
  // the whole text), else after newlines: memory stays bounded for a document of any size.
  absl::Status Encode(std::string_view text, std::vector<int32_t>* ids) const;
  // Decodes pieces; extra ids are written as <extra_id_i> (i = sentinel number).
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const;

  int64_t pieces() const { return pieces_; }
  int64_t extra_ids() const { return extra_ids_; }
  int64_t vocab_size() const { return pieces_ + extra_ids_; }
  int32_t eos_id() const { return eos_id_; }
  // Sentinel i, counting down from the top id; requires 0 <= i < extra_ids().
  int32_t Sentinel(int64_t i) const { return static_cast<int32_t>(vocab_size() - 1 - i); }
  // The ids standing for a mode marker such as "[NLU]": its piece id when the model has that
  // piece, else its encoding.
  absl::StatusOr<std::vector<int32_t>> ModeTokens(const std::string& mode) const;
  // The piece of one id ("<extra_id_i>" for extra ids).
  std::string IdToPiece(int32_t id) const;
  // XXH64 (core/io/checksum.h) of the .model bytes: token shards record the tokenizer that made them.
  uint64_t model_checksum() const { return model_checksum_; }
  const std::string& name() const { return name_; }

 private:
  Tokenizer() = default;
  void* processor_ = nullptr;
  std::string name_;
  int64_t pieces_ = 0;
  int64_t extra_ids_ = 0;
  int32_t eos_id_ = -1;
  uint64_t model_checksum_ = 0;
};

// Training a sentencepiece model (unigram) whose vocabulary, together with `extra_ids`, is what
// the trainer's model.vocab_size must cover.
struct TokenizerTrainingOptions {
  int64_t vocab_size = 8000;  // sentencepiece pieces (extra ids come on top)
  std::string model_type = "unigram";
  // User-defined symbols (always single pieces, never normalized away): the UL2 mode markers,
  // so mode tokens are one id, and newline and tab, which sentencepiece's default normalization
  // would otherwise turn into spaces (code and prose keep their line structure).
  std::vector<std::string> user_symbols = {"[S2S]", "[NLU]", "[NLG]", "\n", "\t"};
  double character_coverage = 0.9995;
  // At most this many sentences (lines) are used, drawn deterministically from all lines.
  int64_t max_sentences = 300000;
  int64_t max_sentence_bytes = 4096;
  int64_t threads = 2;
  uint64_t seed = 0;
};

// Trains on lines of `documents` (each document is split at newlines; blank lines skipped) and
// returns the serialized model. Deterministic for the same inputs and options.
absl::StatusOr<std::string> TrainTokenizer(const std::vector<std::string>& documents,
                                           const TokenizerTrainingOptions& options);

// Picks the lines sentencepiece trains on: every non-blank line of every document, cut to
// max_sentence_bytes (at a UTF-8 boundary), then a deterministic uniform sample of at most
// max_sentences of them (in their original order).
std::vector<std::string> TrainingSentences(const std::vector<std::string>& documents,
                                           const TokenizerTrainingOptions& options);

}  // namespace openmoe
