// Objectives: how a document becomes training examples (token, target, loss-weight triples).
//
// An Example is one packed segment of at most seq_len positions: tokens[i] is the input at
// position i, targets[i] the token to predict there, weights[i] 1 where the loss counts and 0
// elsewhere. Every example starts with EOS as its first input (the "beginning" marker), so in a
// stream EOS separates documents.
//
// A long document yields several examples (consecutive chunks); Next() takes the next chunk at
// *offset and advances it. Random choices (UL2's denoiser, spans, split points) are a pure
// function of `key`, which the caller derives from (data.seed, source, shard, example number).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "data/tokenizer.h"
#include "proto/job.pb.h"

namespace openmoe {

struct Example {
  std::vector<int32_t> tokens;
  std::vector<int32_t> targets;
  std::vector<float> weights;
  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
  void Clear() {
    tokens.clear();
    targets.clear();
    weights.clear();
  }
};

class Objective {
 public:
  virtual ~Objective() = default;
  // True when nothing of `doc` is left at `offset`.
  virtual bool Exhausted(const std::vector<int32_t>& doc, int64_t offset) const = 0;
  // Overwrites *out with the example for the chunk of `doc` at *offset (requires
  // !Exhausted(doc, *offset)) and advances *offset past it. out->size() <= seq_len.
  virtual void Next(const std::vector<int32_t>& doc, int64_t* offset, uint64_t key,
                    Example* out) const = 0;
};

// Causal LM: the document d becomes x = EOS d EOS; position i has input x[i] and target x[i+1]
// (weight 1). A document longer than seq_len - 1 tokens is cut into chunks of seq_len positions.
class CausalLmObjective : public Objective {
 public:
  CausalLmObjective(int32_t eos_id, int64_t seq_len) : eos_(eos_id), seq_len_(seq_len) {}
  bool Exhausted(const std::vector<int32_t>& doc, int64_t offset) const override;
  void Next(const std::vector<int32_t>& doc, int64_t* offset, uint64_t key,
            Example* out) const override;

 private:
  int32_t eos_;
  int64_t seq_len_;
};

// The objective of a DATA_CORPUS job (data.objective, data.ul2) for rows of seq_len. Errors name
// the field at fault (a UL2 denoiser whose example cannot fit seq_len, a negative rate, ...).
absl::StatusOr<std::unique_ptr<Objective>> MakeObjective(const DataConfig& data,
                                                         const Tokenizer& tokenizer,
                                                         int64_t seq_len);

}  // namespace openmoe
