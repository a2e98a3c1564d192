// Packer: examples into rows of seq_len with segment ids (T5-style greedy packing, in order).
//
// A row takes examples in stream order while they fit; the first example that does not fit in
// what is left of the row starts the next row (it is held as `pending` until then), and the rest
// of the row is padding: token 0, target 0, weight 0, segment id 0. Examples in a row get segment
// ids 1, 2, 3, ...; attention must not cross them. No token is dropped or repeated: the rows, with
// padding removed, are exactly the example stream.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "core/batch.h"
#include "data/objective.h"

namespace openmoe {

class Packer {
 public:
  using Pull = std::function<absl::Status(Example*)>;
  // Fills row `row` of *batch (already sized; examples must be <= batch->seq_len long).
  absl::Status FillRow(const Pull& pull, Batch* batch, int64_t row);

  // The example waiting for the next row (part of the iterator state).
  bool has_pending() const { return has_pending_; }
  const Example& pending() const { return pending_; }
  void SetPending(Example e) {
    pending_ = std::move(e);
    has_pending_ = true;
  }
  void ClearPending() { has_pending_ = false; }

  int64_t examples() const { return examples_; }
  int64_t padding_tokens() const { return padding_; }
  int64_t loss_tokens() const { return loss_tokens_; }

 private:
  Example pending_;
  bool has_pending_ = false;
  int64_t examples_ = 0, padding_ = 0, loss_tokens_ = 0;
};

}  // namespace openmoe
