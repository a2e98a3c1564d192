// The tiny decoder the model tests run by hand: 2 layers (layer 1 MoE), d_model 8, 2 heads x 4,
// d_ff 12, experts of d_ff 6, vocabulary 29 padded to 32, routing groups of 8 tokens; `experts`
// routed experts, `shared` shared experts, FFN form `form`. Router and loss settings are the
// caller's.
#pragma once

#include <cstdint>

#include "proto/job.pb.h"

namespace openmoe::testing {

inline JobSpec TinyDecoderSpec(FfnForm form, int64_t experts, int64_t shared) {
  JobSpec spec;
  ModelConfig* m = spec.mutable_model();
  m->set_vocab_size(29);  // padded to 32
  m->set_vocab_pad_multiple(8);
  m->set_num_layers(2);
  m->set_d_model(8);
  m->set_num_heads(2);
  m->set_head_dim(4);
  m->set_d_ff(12);
  m->set_expert_d_ff(6);
  m->set_num_experts(experts);
  m->set_moe_interval(2);
  m->set_ffn_form(form);
  m->set_num_shared_experts(shared);
  spec.mutable_router()->set_group_size(8);
  return spec;
}

}  // namespace openmoe::testing
