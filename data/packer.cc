#include "data/packer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace openmoe {

absl::Status Packer::FillRow(const Pull& pull, Batch* batch, int64_t row) {
  const int64_t seq_len = batch->seq_len;
  const int64_t base = row * seq_len;
  int64_t used = 0;
  int32_t segment = 0;
  while (true) {
    if (!has_pending_) {
      pending_.Clear();
      if (auto s = pull(&pending_); !s.ok()) return s;
      if (pending_.size() < 1 || pending_.size() > seq_len)
        return absl::InternalError(absl::StrCat("objective made an example of ", pending_.size(),
                                                " positions for rows of ", seq_len));
      has_pending_ = true;
    }
    const int64_t n = pending_.size();
    if (used + n > seq_len) break;
    ++segment;
    std::copy(pending_.tokens.begin(), pending_.tokens.end(), batch->tokens.begin() + base + used);
    std::copy(pending_.targets.begin(), pending_.targets.end(),
              batch->targets.begin() + base + used);
    std::copy(pending_.weights.begin(), pending_.weights.end(),
              batch->loss_weights.begin() + base + used);
    std::fill_n(batch->segment_ids.begin() + base + used, n, segment);
    for (float w : pending_.weights) loss_tokens_ += w != 0.0f;
    used += n;
    ++examples_;
    has_pending_ = false;
    if (used == seq_len) break;
  }
  for (int64_t i = used; i < seq_len; ++i) {
    batch->tokens[base + i] = 0;
    batch->targets[base + i] = 0;
    batch->loss_weights[base + i] = 0.0f;
    batch->segment_ids[base + i] = 0;
  }
  padding_ += seq_len - used;
  return absl::OkStatus();
}

}  // namespace openmoe
