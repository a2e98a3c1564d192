#include "parallel/cost/encoder_decoder.h"

#include "core/check.h"

namespace openmoe {

EncoderDecoderDelta EncoderDecoderPerToken(const ModelDims& dims, int64_t seq_len,
                                           const EncoderDecoderShape& shape) {
  OPENMOE_CHECK(shape.encoder_layers > 0 && shape.encoder_layers < dims.num_layers);
  OPENMOE_CHECK(shape.target_length > 0 && shape.target_length <= seq_len);
  const double layers = static_cast<double>(dims.num_layers);
  const double l_e = static_cast<double>(shape.encoder_layers);
  const double l_d = layers - l_e;
  const double s = static_cast<double>(seq_len);
  const double t = static_cast<double>(shape.target_length);
  const double n = (l_e * s + l_d * t) / layers;  // stand-in tokens per example
  const double d = static_cast<double>(dims.d_model);
  const double a = static_cast<double>(dims.AttentionWidth());
  const double h = static_cast<double>(dims.num_heads);
  const double v = static_cast<double>(dims.padded_vocab_size);

  EncoderDecoderDelta e;
  e.projection_flops = l_d * 6 * 2 * d * a * (t + s);
  e.matmul_flops = e.projection_flops + 6 * d * v * (t - n);
  e.attention_flops = l_d * t * 12 * a * s + l_d * t * 12 * a * (t - s);
  e.self_score_elements = l_d * t * h * (t - s);
  e.cross_score_elements = l_d * t * h * s;
  e.elementwise_elements = l_d * t * 11 * d + 3 * v * (t - n);
  for (double* x : {&e.matmul_flops, &e.projection_flops, &e.attention_flops,
                    &e.self_score_elements, &e.cross_score_elements, &e.elementwise_elements}) {
    *x /= n;
  }
  return e;
}

double EncoderDecoderScoreBytes(const EncoderDecoderDelta& delta, const ScoreBytes& self,
                                const ScoreBytes& cross, double recomputed) {
  auto bytes = [recomputed](const ScoreBytes& b) {
    return b.elementwise_forward * (1 + recomputed) + b.elementwise_backward;
  };
  return delta.self_score_elements * bytes(self) + delta.cross_score_elements * bytes(cross);
}

double EncoderDecoderOperandBytes(const EncoderDecoderDelta& delta, const ScoreBytes& self,
                                  const ScoreBytes& cross, double recomputed) {
  auto bytes = [recomputed](const ScoreBytes& b) {
    return b.operand_forward * (1 + recomputed) + b.operand_backward;
  };
  return delta.self_score_elements * bytes(self) + delta.cross_score_elements * bytes(cross);
}

}  // namespace openmoe
