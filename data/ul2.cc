#include "data/ul2.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace openmoe {

std::vector<Ul2Denoiser> DefaultUl2Denoisers() {
  auto make = [](double rate, bool prefix, double mu, double r, const char* mode) {
    Ul2Denoiser d;
    d.set_rate(rate);
    d.set_prefix_lm(prefix);
    d.set_mean_span_length(mu);
    d.set_noise_density(r);
    d.set_mode(mode);
    return d;
  };
  return {make(0.5, true, 0, 0, "[S2S]"),     make(0.1, false, 3, 0.15, "[NLU]"),
          make(0.1, false, 8, 0.15, "[NLU]"), make(0.1, false, 3, 0.5, "[NLG]"),
          make(0.1, false, 8, 0.5, "[NLG]"),  make(0.1, false, 64, 0.5, "[NLG]")};
}

void Ul2Objective::SpanCounts(int64_t length, double noise_density, double mean_span_length,
                              int64_t* noise, int64_t* spans) {
  if (length < 2) {
    *noise = length;
    *spans = length;
    return;
  }
  *noise = static_cast<int64_t>(std::nearbyint(static_cast<double>(length) * noise_density));
  *noise = std::clamp<int64_t>(*noise, 1, length - 1);
  *spans = static_cast<int64_t>(std::nearbyint(static_cast<double>(*noise) / mean_span_length));
  *spans = std::clamp<int64_t>(*spans, 1, std::min(*noise, length - *noise));
}

std::vector<int64_t> Ul2Objective::RandomSegmentation(int64_t n, int64_t k, const CounterRng& rng,
                                                      uint64_t stream) {
  OPENMOE_CHECK(k >= 1 && k <= std::max<int64_t>(n, 1));
  if (k == 1) return {n};
  // k - 1 distinct cut points drawn from {1, ..., n - 1} by a partial Fisher-Yates shuffle.
  std::vector<int64_t> points(static_cast<size_t>(n - 1));
  for (int64_t i = 0; i < n - 1; ++i) points[i] = i + 1;
  for (int64_t i = 0; i < k - 1; ++i) {
    const int64_t j = i + static_cast<int64_t>(rng.UniformInt(stream + static_cast<uint64_t>(i),
                                                              static_cast<uint64_t>(n - 1 - i)));
    std::swap(points[i], points[j]);
  }
  points.resize(static_cast<size_t>(k - 1));
  std::sort(points.begin(), points.end());
  std::vector<int64_t> lengths;
  int64_t prev = 0;
  for (int64_t p : points) {
    lengths.push_back(p - prev);
    prev = p;
  }
  lengths.push_back(n - prev);
  return lengths;
}

absl::StatusOr<std::unique_ptr<Ul2Objective>> Ul2Objective::Create(
    std::vector<Ul2DenoiserSpec> denoisers, int32_t eos_id, int32_t top_sentinel,
    int64_t max_sentinels, int64_t seq_len) {
  std::unique_ptr<Ul2Objective> o(new Ul2Objective());
  o->eos_ = eos_id;
  o->top_sentinel_ = top_sentinel;
  o->max_sentinels_ = max_sentinels;
  o->seq_len_ = seq_len;
  double total = 0;
  for (size_t i = 0; i < denoisers.size(); ++i) {
    Ul2DenoiserSpec& d = denoisers[i];
    const std::string where = absl::StrCat("data.ul2.denoisers[", i, "]");
    if (!(d.rate >= 0) || !std::isfinite(d.rate))
      return absl::InvalidArgumentError(absl::StrCat(where, ".rate=", d.rate, " must be >= 0"));
    if (!d.prefix_lm) {
      if (!(d.noise_density > 0 && d.noise_density < 1))
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".noise_density=", d.noise_density, " must be in (0, 1)"));
      if (!(d.mean_span_length >= 1))
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".mean_span_length=", d.mean_span_length, " must be >= 1"));
      if (max_sentinels < 1)
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": span corruption needs sentinels (data.tokenizer.extra_ids >= 1)"));
    }
    const int64_t fixed =
        static_cast<int64_t>(d.mode.size()) + 2;  // mode, EOS after inputs and targets
    d.max_chunk = 0;
    for (int64_t len = seq_len - fixed; len >= 1; --len) {
      int64_t noise = 0, spans = 0;
      if (!d.prefix_lm) SpanCounts(len, d.noise_density, d.mean_span_length, &noise, &spans);
      if (fixed + len + 2 * spans <= seq_len && spans <= max_sentinels) {
        d.max_chunk = len;
        break;
      }
    }
    if (d.max_chunk < 1)
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": no example fits train.seq_len=", seq_len));
    total += d.rate;
    o->cumulative_.push_back(total);
  }
  if (denoisers.empty() || !(total > 0))
    return absl::InvalidArgumentError("data.ul2.denoisers: the rates sum to 0");
  for (double& c : o->cumulative_) c /= total;
  o->cumulative_.back() = 1.0;
  o->denoisers_ = std::move(denoisers);
  return o;
}

int64_t Ul2Objective::ChooseDenoiser(uint64_t key) const {
  const double u = CounterRng(key, 0).Uniform(0);
  const auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), u);
  return std::min<int64_t>(it - cumulative_.begin(), static_cast<int64_t>(cumulative_.size()) - 1);
}

bool Ul2Objective::Exhausted(const std::vector<int32_t>& doc, int64_t offset) const {
  return offset >= static_cast<int64_t>(doc.size());
}

void Ul2Objective::Next(const std::vector<int32_t>& doc, int64_t* offset, uint64_t key,
                        Example* out) const {
  const Ul2DenoiserSpec& d = denoisers_[ChooseDenoiser(key)];
  const int64_t len = std::min<int64_t>(d.max_chunk, static_cast<int64_t>(doc.size()) - *offset);
  OPENMOE_CHECK(len >= 1);
  const int32_t* c = doc.data() + *offset;
  *offset += len;
  const CounterRng rng(key, 1);

  std::vector<int32_t> inputs(d.mode.begin(), d.mode.end());
  std::vector<int32_t> targets;
  if (d.prefix_lm) {
    const int64_t split =
        len >= 2 ? 1 + static_cast<int64_t>(rng.UniformInt(0, static_cast<uint64_t>(len - 1))) : 0;
    inputs.insert(inputs.end(), c, c + split);
    targets.insert(targets.end(), c + split, c + len);
  } else {
    int64_t noise = 0, spans = 0;
    SpanCounts(len, d.noise_density, d.mean_span_length, &noise, &spans);
    const std::vector<int64_t> noise_lengths = RandomSegmentation(noise, spans, rng, 1);
    const std::vector<int64_t> plain_lengths =
        len - noise >= spans ? RandomSegmentation(len - noise, spans, rng, uint64_t{1} << 32)
                             : std::vector<int64_t>(static_cast<size_t>(spans), 0);
    int64_t pos = 0;
    for (int64_t i = 0; i < spans; ++i) {
      const int32_t sentinel = top_sentinel_ - static_cast<int32_t>(i);
      inputs.insert(inputs.end(), c + pos, c + pos + plain_lengths[i]);
      pos += plain_lengths[i];
      inputs.push_back(sentinel);
      targets.push_back(sentinel);
      targets.insert(targets.end(), c + pos, c + pos + noise_lengths[i]);
      pos += noise_lengths[i];
    }
    OPENMOE_CHECK(pos == len);
  }
  inputs.push_back(eos_);
  targets.push_back(eos_);

  const size_t n = inputs.size() + targets.size();
  OPENMOE_CHECK(static_cast<int64_t>(n) <= seq_len_);
  out->tokens.resize(n);
  out->targets.resize(n);
  out->weights.resize(n);
  out->tokens[0] = eos_;
  for (size_t i = 0; i < n; ++i) {
    const int32_t z = i < inputs.size() ? inputs[i] : targets[i - inputs.size()];
    out->targets[i] = z;
    if (i + 1 < n) out->tokens[i + 1] = z;
    out->weights[i] = i < inputs.size() ? 0.0f : 1.0f;
  }
}

}  // namespace openmoe
