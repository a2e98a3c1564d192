// Batch: the token arrays one model call consumes, all (rows, seq_len) row-major.
//
// targets[r][s] is the token to predict after tokens[r][s]; loss_weights are 0 where there is no
// target (padding, UL2 inputs). segment_ids separate packed examples (0 = padding).
#pragma once

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

namespace openmoe {

struct Batch {
  int64_t rows = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> tokens;        // (rows, seq_len)
  std::vector<int32_t> targets;       // (rows, seq_len)
  std::vector<float> loss_weights;    // (rows, seq_len)
  std::vector<int32_t> segment_ids;   // (rows, seq_len)
  // Where the rows sit in the training stream (keys router jitter): the step whose global batch
  // they belong to, and each row's index in that global batch; empty: 0..rows-1.
  int64_t step = 0;
  std::vector<int64_t> row_ids;       // (rows) or empty

  int64_t num_tokens() const { return rows * seq_len; }
  void Resize(int64_t new_rows, int64_t new_seq_len) {
    rows = new_rows;
    seq_len = new_seq_len;
    const size_t n = static_cast<size_t>(new_rows * new_seq_len);
    tokens.assign(n, 0);
    targets.assign(n, 0);
    loss_weights.assign(n, 0.0f);
    segment_ids.assign(n, 0);
    row_ids.clear();
  }
  // These rows are global rows [first_row, first_row + rows) of step `at_step`'s batch.
  void SetOrigin(int64_t at_step, int64_t first_row) {
    step = at_step;
    row_ids.resize(static_cast<size_t>(rows));
    std::iota(row_ids.begin(), row_ids.end(), first_row);
  }
  // Appends other's rows (same seq_len) after this batch's.
  void Append(const Batch& other) {
    if (rows == 0) {
      seq_len = other.seq_len;
      step = other.step;
    }
    // Row ids survive only when both sides carry them.
    if (static_cast<int64_t>(row_ids.size()) == rows &&
        static_cast<int64_t>(other.row_ids.size()) == other.rows) {
      row_ids.insert(row_ids.end(), other.row_ids.begin(), other.row_ids.end());
    } else {
      row_ids.clear();
    }
    rows += other.rows;
    tokens.insert(tokens.end(), other.tokens.begin(), other.tokens.end());
    targets.insert(targets.end(), other.targets.begin(), other.targets.end());
    loss_weights.insert(loss_weights.end(), other.loss_weights.begin(), other.loss_weights.end());
    segment_ids.insert(segment_ids.end(), other.segment_ids.begin(), other.segment_ids.end());
  }
  // Rows [begin, begin + count) as a new batch (a microbatch).
  Batch Slice(int64_t begin, int64_t count) const {
    Batch b;
    const auto lo = static_cast<std::ptrdiff_t>(begin * seq_len);
    const auto hi = static_cast<std::ptrdiff_t>((begin + count) * seq_len);
    b.rows = count;
    b.seq_len = seq_len;
    b.tokens.assign(tokens.begin() + lo, tokens.begin() + hi);
    b.targets.assign(targets.begin() + lo, targets.begin() + hi);
    b.loss_weights.assign(loss_weights.begin() + lo, loss_weights.begin() + hi);
    b.segment_ids.assign(segment_ids.begin() + lo, segment_ids.begin() + hi);
    b.step = step;
    if (!row_ids.empty()) b.row_ids.assign(row_ids.begin() + begin, row_ids.begin() + begin + count);
    return b;
  }
};

}  // namespace openmoe
