#include "data/batch_source.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "data/corpus_source.h"
#include "data/state_codec.h"
#include "data/synthetic.h"

namespace openmoe {
namespace {

constexpr char kStateName[] = "data iterator state";

class SyntheticBatchSource : public BatchSource {
 public:
  SyntheticBatchSource(const JobSpec& spec, int64_t shard, int64_t num_shards)
      : markov_(spec.model().vocab_size(), spec.data().synthetic().branching(),
                spec.data().synthetic().seed()),
        seq_len_(spec.train().seq_len()),
        shard_(shard),
        num_shards_(num_shards) {}

  absl::Status Next(int64_t rows, int64_t seq_len, Batch* out) override {
    if (seq_len != seq_len_)
      return absl::InvalidArgumentError(absl::StrCat(
          "data: asked for rows of ", seq_len, " tokens, the job has train.seq_len=", seq_len_));
    markov_.FillRows(global_rows_ + shard_ * rows, rows, seq_len, out);
    global_rows_ += rows * num_shards_;
    return absl::OkStatus();
  }

  std::string SaveState() const override {
    StateWriter w;
    w.Int("synthetic_markov", 1);
    w.Int("shard", shard_);
    w.Int("num_shards", num_shards_);
    w.Int("global_rows", global_rows_);
    return w.str();
  }

  bool SeekToStep(int64_t step, int64_t batch_rows) override {
    global_rows_ = step * batch_rows;
    return true;
  }

  absl::Status RestoreState(const std::string& state) override {
    auto r = StateReader::Parse(state, kStateName);
    if (!r.ok()) return r.status();
    if (!r->Int("synthetic_markov").ok())
      return absl::FailedPreconditionError(
          absl::StrCat(kStateName, " is not for the synthetic Markov source"));
    auto shard = r->Int("shard");
    auto num = r->Int("num_shards");
    auto rows = r->Int("global_rows");
    if (!shard.ok()) return shard.status();
    if (!num.ok()) return num.status();
    if (!rows.ok()) return rows.status();
    if (*shard != shard_ || *num != num_shards_)
      return absl::FailedPreconditionError(
          absl::StrFormat("%s was saved for data shard %d of %d, not %d of %d", kStateName, *shard,
                          *num, shard_, num_shards_));
    global_rows_ = *rows;
    return absl::OkStatus();
  }

 private:
  SyntheticMarkovSource markov_;
  int64_t seq_len_, shard_, num_shards_;
  int64_t global_rows_ = 0;
};

}  // namespace

std::vector<std::string> DataConfigProblems(const JobSpec& spec) {
  std::vector<std::string> p;
  const DataConfig& d = spec.data();
  if (d.source() != DATA_CORPUS) return p;
  if (d.sources_size() == 0)
    p.push_back("data.sources is empty (DATA_CORPUS needs at least one source)");
  double total = 0;
  for (int i = 0; i < d.sources_size(); ++i) {
    const SourceConfig& s = d.sources(i);
    const std::string at = absl::StrCat("data.sources[", i, "]");
    if (s.paths_size() == 0) p.push_back(absl::StrCat(at, ".paths is empty"));
    if (!(s.weight() >= 0) || !std::isfinite(s.weight()))
      p.push_back(absl::StrCat(at, ".weight=", s.weight(), " must be >= 0"));
    total += s.weight();
    if (s.text_field().empty()) p.push_back(absl::StrCat(at, ".text_field is empty"));
    if (s.max_file_bytes() < 1)
      p.push_back(absl::StrCat(at, ".max_file_bytes=", s.max_file_bytes(), " must be >= 1"));
  }
  if (d.sources_size() > 0 && !(total > 0)) p.push_back("data.sources weights sum to 0");
  if (d.max_record_bytes() < 1)
    p.push_back(absl::StrCat("data.max_record_bytes=", d.max_record_bytes(), " must be >= 1"));
  if (d.tokenizer().model().empty())
    p.push_back("data.tokenizer.model is empty (DATA_CORPUS needs a sentencepiece .model)");
  if (d.tokenizer().extra_ids() < 0)
    p.push_back(
        absl::StrCat("data.tokenizer.extra_ids=", d.tokenizer().extra_ids(), " must be >= 0"));
  for (int i = 0; i < d.ul2().denoisers_size(); ++i) {
    const Ul2Denoiser& u = d.ul2().denoisers(i);
    const std::string at = absl::StrCat("data.ul2.denoisers[", i, "]");
    if (!(u.rate() >= 0)) p.push_back(absl::StrCat(at, ".rate=", u.rate(), " must be >= 0"));
    if (!u.prefix_lm() && !(u.noise_density() > 0 && u.noise_density() < 1))
      p.push_back(absl::StrCat(at, ".noise_density=", u.noise_density(), " must be in (0, 1)"));
    if (!u.prefix_lm() && !(u.mean_span_length() >= 1))
      p.push_back(absl::StrCat(at, ".mean_span_length=", u.mean_span_length(), " must be >= 1"));
  }
  return p;
}

absl::StatusOr<std::unique_ptr<BatchSource>> MakeBatchSource(const JobSpec& spec, int64_t shard,
                                                             int64_t num_shards) {
  if (num_shards < 1 || shard < 0 || shard >= num_shards)
    return absl::InvalidArgumentError(
        absl::StrCat("data shard ", shard, " of ", num_shards, " does not exist"));
  if (spec.data().source() == DATA_SYNTHETIC_MARKOV)
    return std::unique_ptr<BatchSource>(new SyntheticBatchSource(spec, shard, num_shards));
  if (spec.data().source() == DATA_CORPUS) {
    const std::vector<std::string> problems = DataConfigProblems(spec);
    if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
    auto corpus = CorpusBatchSource::Create(spec, shard, num_shards);
    if (!corpus.ok()) return corpus.status();
    return std::unique_ptr<BatchSource>(std::move(*corpus));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("data.source=", spec.data().source(), " is not supported"));
}

}  // namespace openmoe
