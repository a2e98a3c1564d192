#include "parallel/cost/hbm_traffic.h"

namespace openmoe {

TokenTraffic TrafficPerToken(const ModelDims& dims, int64_t seq_len, double expert_rows_per_token) {
  const double d = static_cast<double>(dims.d_model);
  const double a = static_cast<double>(dims.AttentionWidth());
  const double hs = static_cast<double>(dims.num_heads) * static_cast<double>(seq_len);
  const double e = static_cast<double>(dims.num_experts);
  const double v = static_cast<double>(dims.padded_vocab_size);
  const double r = expert_rows_per_token;
  const bool openmoe = dims.ffn_form == FFN_OPENMOE;
  auto gate = [openmoe](double f) { return (openmoe ? 11.0 : 8.0) * f; };
  auto saved_gate = [openmoe](double f) { return (openmoe ? 4.0 : 3.0) * f; };
  auto gate_forward = saved_gate;  // the forward reads the inputs the backward keeps, writes one
  const double f = static_cast<double>(dims.d_ff);
  const double fe = static_cast<double>(dims.expert_d_ff);
  const double fs = static_cast<double>(dims.SharedDff());

  TokenTraffic t;
  for (int64_t layer = 0; layer < dims.num_layers; ++layer) {
    t.elementwise_elements += 11 * d + 8 * a;
    t.attention_forward_elements += 4 * a;
    t.layer_forward_elements += 5 * d + 4 * a;
    t.saved_elements += 2 * d + 4 * a + hs;
    t.attention_internal_elements += 4 * a + hs;
    t.layer_input_elements += d;
    t.attention_probability_elements += hs;
    const bool moe = dims.IsMoeLayer(layer);
    if (moe) {
      t.elementwise_elements += 14 * d + 5 * e + 5 * r * d + r * gate(fe);
      t.saved_elements += 2 * d + e + 2 * r * d + r * saved_gate(fe);
      t.layer_forward_elements += 6 * d + 2 * e + 3 * r * d + r * gate_forward(fe);
      if (fs > 0) {  // shared experts: their gate on every token, and the add to the routed output
        t.elementwise_elements += 6 * d + gate(fs);
        t.saved_elements += saved_gate(fs);
        t.layer_forward_elements += 3 * d + gate_forward(fs);
      }
    }
    if (!moe || dims.extra_dense_ffn) {
      t.elementwise_elements += 11 * d + gate(f);
      t.saved_elements += 2 * d + saved_gate(f);
      t.layer_forward_elements += 5 * d + gate_forward(f);
    }
  }
  t.elementwise_elements += 9 * d + 3 * v;
  t.saved_elements += 2 * d + v;
  return t;
}

}  // namespace openmoe
