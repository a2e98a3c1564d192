#include "parallel/cost/attention_scores.h"

#include "core/check.h"

namespace openmoe {

ScoreBytes AttentionScoreBytes(int64_t logits_bytes, int64_t probability_bytes,
                               bool position_bias) {
  OPENMOE_CHECK(logits_bytes >= 1 && probability_bytes >= 1);
  const double l = static_cast<double>(logits_bytes);
  const double p = static_cast<double>(probability_bytes);
  ScoreBytes b;
  b.operand_forward = l + p;
  b.operand_backward = 2 * p + 2 * l;
  b.elementwise_forward = 2 * l;
  b.elementwise_backward = 3 * l;
  if (logits_bytes != probability_bytes) {
    b.elementwise_forward += l + p;
    b.elementwise_backward += p + l;
    b.qk_cast = 4 * (l + p);
  }
  if (position_bias) {
    b.elementwise_forward += 3 * l;
    b.elementwise_backward += l;
  }
  return b;
}

}  // namespace openmoe
