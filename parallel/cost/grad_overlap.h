// The gradient all-reduce overlapped with the backward (train.overlap_grad_reduce, in buckets of
// train.grad_bucket_mb MiB), as the v3 cost model predicts it: how much of the reduction the
// backward's compute hides and how much is exposed after it.
//
// The backward makes the gradient final piece by piece (GradPartsInBackwardOrder): the logits'
// weight gradient before it starts (accumulated in the forward), the final norm's with the logits'
// backward, then layer L-1 down to layer 0, each when its backward ends, and the embedding's only
// at the very end (its lookup's gradient needs every layer's). The backward's time is shared out
// in proportion to training FLOPs per token: the logits 6 d V, layer l 6 (its activated matmul
// parameters) + 12 H hd S. Bytes are fp32 (cost_model.gradient_bytes) of the chip's piece:
// non-expert parameters reduce over all_reduce_shared's group, expert pieces (/ expert_parallel)
// over all_reduce_experts'.
//
// ScheduleGradReduce cuts that byte stream, in that order, into buckets of bucket_bytes (a bucket
// edge may fall inside a tensor; the last bucket is what remains). A bucket is ready when its last
// byte is final; buckets reduce one at a time in order (they share the links):
//   start_i = max(ready_i, end_{i-1}),  end_i = start_i + seconds(bucket i),
//   exposed = max(0, end_last - window)
// with window the backward's compute time (the cost model: the last microbatch's backward, since
// earlier microbatches' gradients are not final). The last bucket holds the embedding, ready only
// at the window's end, so at least its reduction is exposed.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/params.h"

namespace openmoe {

struct GradPart {
  double final_fraction = 0;  // of the backward window, when this part's gradient is final
  double shared_bytes = 0;    // reduced over the shared group
  double expert_bytes = 0;    // reduced over each expert's replicas
};

// The chip's piece (model-split parameters / mp; experts / expert_parallel) in backward order, as
// above. Fractions are non-decreasing and end at 1 (the embedding).
//
// tokens_per_step > 0: the embedding's bucket sends only the rows the step's tokens looked up
// (parallel/grad_reducer.h), expected V (1 - exp(-N / V)) of its V rows for N tokens drawn
// uniformly; text, whose tokens repeat more, touches fewer (bench_small: 33% measured, 39% by
// this). 0: every row.
std::vector<GradPart> GradPartsInBackwardOrder(const ParamLayout& piece, int64_t seq_len,
                                               int64_t expert_parallel, double gradient_bytes,
                                               int64_t tokens_per_step = 0);

struct GradOverlap {
  int64_t buckets = 0;
  double reduce_seconds = 0;   // every bucket's reduction, one after another
  double finish_seconds = 0;   // when the last bucket is reduced, from the backward's start
  double exposed_seconds = 0;  // max(0, finish - window)
};

// `bucket_seconds(shared_bytes, expert_bytes)`: one bucket's reduction time. bucket_bytes > 0.
GradOverlap ScheduleGradReduce(const std::vector<GradPart>& parts, double bucket_bytes,
                               double window_seconds,
                               const std::function<double(double, double)>& bucket_seconds);

}  // namespace openmoe
