// Held-out rows: how documents become the [rows, seq_len] token rows that `openmoe score` and
// eval during training read, in one of two forms.
//
//  kCausalLm: the stream EOS d1 EOS d2 EOS ... (CausalLmObjective's inputs), cut into
//    consecutive rows by the caller; every position predicts the next token of its row.
//  kPrefixLm: the S-denoiser of UL2 (the prefix LM OpenMoE's mixture trains half its examples
//    on) with its mode token. Each document is cut into chunks c of at most
//    L = seq_len - |mode| - 2 tokens (the longest chunk a training example of that denoiser
//    holds); a chunk of l >= 2 tokens makes one row
//        EOS mode c[0:u] EOS c[u:l] [EOS ... up to seq_len]     u = l / 2
//    which is the training example of that chunk split at u (data/ul2.h) without its final EOS.
//    The loss counts only the continuation c[u:l]: PrefixLmLossSpan finds it from the row alone.
//
// A model trained on UL2 alone never gets a loss at a position whose context lacks the
// mode-token / inputs-EOS frame, so its causal-form loss on held-out text measures an untrained
// extrapolation (README "Eval during training": the quickstart's model predicts EOS there);
// the prefix-LM form measures the task it trained on.
#pragma once

#include <cstdint>
#include <vector>

namespace openmoe {

enum class RowForm { kCausalLm, kPrefixLm };

class HeldOutRowMaker {
 public:
  // mode: the prefix LM's mode tokens (ignored by kCausalLm). seq_len > |mode| + 3.
  HeldOutRowMaker(RowForm form, int32_t eos, std::vector<int32_t> mode, int64_t seq_len);
  // Appends what `doc` makes: kCausalLm EOS doc; kPrefixLm whole rows of seq_len tokens (none
  // for a document of fewer than 2 tokens).
  void Add(const std::vector<int32_t>& doc, std::vector<int32_t>* out) const;
  RowForm form() const { return form_; }

 private:
  RowForm form_;
  int32_t eos_;
  std::vector<int32_t> mode_;
  int64_t seq_len_;
};

// The positions of a prefix-LM row whose loss counts, [*begin, *end): from the row's first
// recurrence of row[0] (the EOS that ends the prefix, which predicts c[u]) to the position before
// the next one (or before the row's end); positions from *end + 1 on are padding. False when the
// row has no such span (row[0] does not recur at a position in [2, seq_len - 2]).
bool PrefixLmLossSpan(const int32_t* row, int64_t seq_len, int64_t* begin, int64_t* end);

}  // namespace openmoe
