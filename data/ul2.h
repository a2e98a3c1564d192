// The UL2 objective as OpenMoE trained with it, decoder-only.
//
// Each example draws one denoiser (by rate). Given a chunk c of L document tokens:
//  - span corruption (mean span length mu, noise density r), T5's random_spans_noise_mask:
//    noise = clamp(round(L r), 1, L - 1) tokens in spans = clamp(round(noise / mu), 1, ...)
//    spans; both the noise and the non-noise tokens are cut into `spans` segments uniformly at
//    random, interleaved non-noise first.
//      inputs  = mode  n_0 S_0 n_1 S_1 ... n_{k-1} S_{k-1}  EOS
//      targets = S_0 s_0 S_1 s_1 ... S_{k-1} s_{k-1}  EOS
//    where n_i / s_i are the non-noise / noise segments and S_i is sentinel i (the top extra id
//    counting down).
//  - prefix LM: a split point u uniform in [1, L - 1]: inputs = mode c[0:u] EOS,
//    targets = c[u:L] EOS.
// Then z = inputs ++ targets, and the example is tokens = EOS z[0:-1], targets = z, weight 0 on
// the |inputs| positions that predict inputs and 1 on the rest (loss on targets only).
// Attention stays fully causal (the decoder-only form OpenMoE used).
//
// The chunk length L is the largest whose example fits seq_len (and whose span count fits the
// extra ids), so long documents fill rows; shorter documents make shorter examples.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "data/objective.h"

namespace openmoe {

struct Ul2DenoiserSpec {
  double rate = 1.0;
  bool prefix_lm = false;
  double mean_span_length = 3.0;
  double noise_density = 0.15;
  std::vector<int32_t> mode;  // mode token ids (may be empty)
  int64_t max_chunk = 0;      // largest chunk whose example fits seq_len (set by Ul2Objective)
};

// OpenMoE's mixture (DESIGN section 6) as Ul2Denoiser messages.
std::vector<Ul2Denoiser> DefaultUl2Denoisers();

class Ul2Objective : public Objective {
 public:
  // Fails (naming data.ul2.denoisers[i]) when a denoiser cannot fit seq_len.
  static absl::StatusOr<std::unique_ptr<Ul2Objective>> Create(
      std::vector<Ul2DenoiserSpec> denoisers, int32_t eos_id, int32_t top_sentinel,
      int64_t max_sentinels, int64_t seq_len);
  bool Exhausted(const std::vector<int32_t>& doc, int64_t offset) const override;
  void Next(const std::vector<int32_t>& doc, int64_t* offset, uint64_t key,
            Example* out) const override;

  // Which denoiser `key` draws.
  int64_t ChooseDenoiser(uint64_t key) const;
  const std::vector<Ul2DenoiserSpec>& denoisers() const { return denoisers_; }

  // Spans and noise tokens for a chunk of L tokens (T5's formulas above).
  static void SpanCounts(int64_t length, double noise_density, double mean_span_length,
                         int64_t* noise, int64_t* spans);
  // A uniformly random composition of n into k positive parts (k <= n); k = 1 gives {n}.
  static std::vector<int64_t> RandomSegmentation(int64_t n, int64_t k, const CounterRng& rng,
                                                 uint64_t stream);

 private:
  Ul2Objective() = default;
  std::vector<Ul2DenoiserSpec> denoisers_;
  std::vector<double> cumulative_;
  int32_t eos_ = 1;
  int32_t top_sentinel_ = 0;
  int64_t max_sentinels_ = 0;
  int64_t seq_len_ = 0;
};

}  // namespace openmoe
