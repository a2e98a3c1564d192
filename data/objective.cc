#include "data/objective.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "data/ul2.h"

namespace openmoe {

bool CausalLmObjective::Exhausted(const std::vector<int32_t>& doc, int64_t offset) const {
  return offset >= static_cast<int64_t>(doc.size()) + 1;
}

void CausalLmObjective::Next(const std::vector<int32_t>& doc, int64_t* offset, uint64_t key,
                             Example* out) const {
  // Positions a .. b-1 of x = EOS d EOS: input x[i], target x[i + 1].
  const int64_t m = static_cast<int64_t>(doc.size());
  const int64_t a = *offset;
  const int64_t b = std::min(a + seq_len_, m + 1);
  OPENMOE_CHECK(b > a);
  auto x = [&](int64_t i) { return i == 0 || i == m + 1 ? eos_ : doc[static_cast<size_t>(i - 1)]; };
  const size_t n = static_cast<size_t>(b - a);
  out->tokens.resize(n);
  out->targets.resize(n);
  out->weights.assign(n, 1.0f);
  for (size_t i = 0; i < n; ++i) {
    out->tokens[i] = x(a + static_cast<int64_t>(i));
    out->targets[i] = x(a + static_cast<int64_t>(i) + 1);
  }
  *offset = b;
}

absl::StatusOr<std::unique_ptr<Objective>> MakeObjective(const DataConfig& data,
                                                         const Tokenizer& tokenizer,
                                                         int64_t seq_len) {
  if (seq_len < 2)
    return absl::InvalidArgumentError(
        absl::StrCat("train.seq_len=", seq_len, " is too short for real data"));
  if (data.objective() == OBJECTIVE_CAUSAL_LM)
    return std::unique_ptr<Objective>(new CausalLmObjective(tokenizer.eos_id(), seq_len));
  std::vector<Ul2Denoiser> configs(data.ul2().denoisers().begin(), data.ul2().denoisers().end());
  if (configs.empty()) configs = DefaultUl2Denoisers();
  std::vector<Ul2DenoiserSpec> specs;
  for (size_t i = 0; i < configs.size(); ++i) {
    const Ul2Denoiser& c = configs[i];
    Ul2DenoiserSpec s;
    s.rate = c.rate();
    s.prefix_lm = c.prefix_lm();
    s.mean_span_length = c.mean_span_length();
    s.noise_density = c.noise_density();
    auto mode = tokenizer.ModeTokens(c.mode());
    if (!mode.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("data.ul2.denoisers[", i, "].mode: ", mode.status().message()));
    s.mode = *mode;
    specs.push_back(std::move(s));
  }
  auto ul2 = Ul2Objective::Create(std::move(specs), tokenizer.eos_id(), tokenizer.Sentinel(0),
                                  tokenizer.extra_ids(), seq_len);
  if (!ul2.ok()) return ul2.status();
  return std::unique_ptr<Objective>(std::move(*ul2));
}

}  // namespace openmoe
