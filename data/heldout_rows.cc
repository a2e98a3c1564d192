#include "data/heldout_rows.h"

#include <algorithm>
#include <utility>

#include "core/check.h"

namespace openmoe {

HeldOutRowMaker::HeldOutRowMaker(RowForm form, int32_t eos, std::vector<int32_t> mode,
                                 int64_t seq_len)
    : form_(form), eos_(eos), mode_(std::move(mode)), seq_len_(seq_len) {
  if (form_ == RowForm::kCausalLm) mode_.clear();
  OPENMOE_CHECK(seq_len_ > static_cast<int64_t>(mode_.size()) + 3);
}

void HeldOutRowMaker::Add(const std::vector<int32_t>& doc, std::vector<int32_t>* out) const {
  if (form_ == RowForm::kCausalLm) {
    out->push_back(eos_);
    out->insert(out->end(), doc.begin(), doc.end());
    return;
  }
  const int64_t max_chunk = seq_len_ - static_cast<int64_t>(mode_.size()) - 2;
  const int64_t n = static_cast<int64_t>(doc.size());
  for (int64_t a = 0; a + 2 <= n; a += max_chunk) {
    const int64_t l = std::min(max_chunk, n - a), u = l / 2;
    const size_t row_start = out->size();
    out->push_back(eos_);
    out->insert(out->end(), mode_.begin(), mode_.end());
    out->insert(out->end(), doc.begin() + a, doc.begin() + a + u);
    out->push_back(eos_);
    out->insert(out->end(), doc.begin() + a + u, doc.begin() + a + l);
    out->resize(row_start + static_cast<size_t>(seq_len_), eos_);
  }
}

bool PrefixLmLossSpan(const int32_t* row, int64_t seq_len, int64_t* begin, int64_t* end) {
  const int32_t* b = std::find(row + 1, row + seq_len, row[0]);
  if (b - row < 2 || b - row > seq_len - 2) return false;
  const int32_t* e = std::find(b + 1, row + seq_len, row[0]);
  *begin = b - row;
  *end = e - row - 1;  // the last continuation token predicts nothing that counts
  return *end > *begin;
}

}  // namespace openmoe
