#include "parallel/cost/grad_overlap.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/numbers.h"
#include "core/check.h"

namespace openmoe {
namespace {

// "layers.12.attn.wq" -> 12; -1 for the parameters outside the layers.
int64_t LayerOf(const std::string& name) {
  constexpr char kPrefix[] = "layers.";
  if (name.rfind(kPrefix, 0) != 0) return -1;
  const size_t begin = sizeof(kPrefix) - 1;
  const size_t end = name.find('.', begin);
  int64_t layer = -1;
  OPENMOE_CHECK(end != std::string::npos &&
                absl::SimpleAtoi(name.substr(begin, end - begin), &layer));
  return layer;
}

}  // namespace

std::vector<GradPart> GradPartsInBackwardOrder(const ParamLayout& piece, int64_t seq_len,
                                               int64_t expert_parallel, double gradient_bytes,
                                               int64_t tokens_per_step) {
  OPENMOE_CHECK(expert_parallel >= 1);
  const ModelDims& whole = piece.dims();
  const ModelDims local = piece.local_dims();
  const int64_t layers = local.num_layers;
  // Index 0: logits and final norm; 1 + l: layer l; layers + 1: the embedding.
  std::vector<GradPart> by_index(static_cast<size_t>(layers + 2));
  std::vector<double> flops(static_cast<size_t>(layers + 2), 0.0);
  GradPart logits_weight;  // final before the backward starts
  const double attention_per_layer = 12.0 * static_cast<double>(local.num_heads) *
                                     static_cast<double>(local.head_dim) *
                                     static_cast<double>(seq_len);
  for (int64_t l = 0; l < layers; ++l) flops[static_cast<size_t>(1 + l)] = attention_per_layer;
  for (const ParamInfo& p : piece.params()) {
    const int64_t layer = LayerOf(p.name);
    size_t index = layer >= 0 ? static_cast<size_t>(1 + layer) : 0;
    if (p.component == Component::kEmbedding) index = static_cast<size_t>(layers + 1);
    const double size = static_cast<double>(p.size);
    GradPart& part = p.component == Component::kLogits ? logits_weight : by_index[index];
    if (p.is_expert) {
      part.expert_bytes += size / static_cast<double>(expert_parallel) * gradient_bytes;
    } else {
      part.shared_bytes += size * gradient_bytes;
    }
    if (p.component == Component::kEmbedding || p.component == Component::kNorm) continue;
    // Training FLOPs per token: experts count top_k of their E.
    const double activated =
        p.is_expert ? size / static_cast<double>(p.shape[0]) * static_cast<double>(whole.top_k)
                    : size;
    flops[index] += 6 * activated;
  }
  double total = 0;
  for (double f : flops) total += f;
  std::vector<GradPart> parts;
  parts.push_back(logits_weight);  // final_fraction 0
  double done = 0;
  // Logits' backward, then layers last to first; the embedding at the end.
  std::vector<size_t> order = {0};
  for (int64_t l = layers - 1; l >= 0; --l) order.push_back(static_cast<size_t>(1 + l));
  for (size_t index : order) {
    done += total > 0 ? flops[index] / total : 0;
    GradPart part = by_index[index];
    part.final_fraction = std::min(1.0, done);
    parts.push_back(part);
  }
  GradPart embedding = by_index[static_cast<size_t>(layers + 1)];
  embedding.final_fraction = 1;
  if (tokens_per_step > 0) {
    const double vocab = static_cast<double>(whole.padded_vocab_size);
    embedding.shared_bytes *= -std::expm1(-static_cast<double>(tokens_per_step) / vocab);
  }
  parts.push_back(embedding);
  return parts;
}

GradOverlap ScheduleGradReduce(const std::vector<GradPart>& parts, double bucket_bytes,
                               double window_seconds,
                               const std::function<double(double, double)>& bucket_seconds) {
  OPENMOE_CHECK(bucket_bytes > 0);
  // Whole bytes, so that a bucket fills exactly (1e18 bytes: one bucket for anything real).
  const int64_t capacity = std::max<int64_t>(1, std::llround(std::min(bucket_bytes, 1e18)));
  GradOverlap o;
  int64_t shared = 0, expert = 0;
  double ready = 0, end = 0;
  auto flush = [&] {
    const double seconds = bucket_seconds(static_cast<double>(shared), static_cast<double>(expert));
    end = std::max(ready, end) + seconds;
    o.reduce_seconds += seconds;
    ++o.buckets;
    shared = expert = 0;
  };
  for (const GradPart& part : parts) {
    int64_t s = std::llround(part.shared_bytes), e = std::llround(part.expert_bytes);
    while (s + e > 0) {
      // Fill the open bucket from this part, shared bytes first.
      const int64_t room = capacity - shared - expert;
      const int64_t take_s = std::min(s, room);
      const int64_t take_e = std::min(e, room - take_s);
      shared += take_s;
      expert += take_e;
      s -= take_s;
      e -= take_e;
      ready = part.final_fraction * window_seconds;
      if (shared + expert == capacity) flush();
    }
  }
  if (shared + expert > 0) flush();
  o.finish_seconds = end;
  o.exposed_seconds = std::max(0.0, end - window_seconds);
  return o;
}

}  // namespace openmoe
