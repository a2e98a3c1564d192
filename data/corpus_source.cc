#include "data/corpus_source.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/checksum.h"
#include "data/state_codec.h"

namespace openmoe {
namespace {

constexpr char kStateName[] = "data iterator state";

uint64_t Fingerprint(const JobSpec& spec) {
  DataConfig d = spec.data();
  d.clear_skip_bad_records();  // may change on resume
  return Xxh64(absl::StrCat(d.SerializeAsString(), "/seq_len=", spec.train().seq_len(),
                            "/vocab=", spec.model().vocab_size()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CorpusBatchSource>> CorpusBatchSource::Create(const JobSpec& spec,
                                                                             int64_t shard,
                                                                             int64_t num_shards) {
  const DataConfig& data = spec.data();
  std::unique_ptr<CorpusBatchSource> c(new CorpusBatchSource());
  c->shard_ = shard;
  c->num_shards_ = num_shards;
  c->seq_len_ = spec.train().seq_len();
  c->fingerprint_ = Fingerprint(spec);
  auto tokenizer = Tokenizer::LoadShared(data.tokenizer().model(), data.tokenizer().extra_ids());
  if (!tokenizer.ok()) return tokenizer.status();
  c->tokenizer_ = *tokenizer;
  if (c->tokenizer_->vocab_size() > spec.model().vocab_size())
    return absl::InvalidArgumentError(absl::StrFormat(
        "data.tokenizer: %s has %d ids (%d pieces + data.tokenizer.extra_ids=%d) but "
        "model.vocab_size=%d",
        data.tokenizer().model(), c->tokenizer_->vocab_size(), c->tokenizer_->pieces(),
        c->tokenizer_->extra_ids(), spec.model().vocab_size()));
  auto objective = MakeObjective(data, *c->tokenizer_, c->seq_len_);
  if (!objective.ok()) return objective.status();
  c->objective_ = std::move(*objective);

  double total = 0;
  for (int i = 0; i < data.sources_size(); ++i) {
    auto resolved = ResolveSource(data.sources(i), i);
    if (!resolved.ok()) return resolved.status();
    auto stream = OpenDocumentStream(*resolved, c->tokenizer_, shard, num_shards,
                                     data.skip_bad_records(), data.max_record_bytes());
    if (!stream.ok()) return stream.status();
    Source s;
    s.resolved = std::move(*resolved);
    s.stream = std::move(*stream);
    s.keys = CounterRng(data.seed(), StreamId(absl::StrCat("data.objective/", i, "/", shard)));
    c->sources_.push_back(std::move(s));
    total += data.sources(i).weight();
    c->cumulative_.push_back(total);
  }
  for (double& w : c->cumulative_) w /= total;
  c->cumulative_.back() = 1.0;
  c->mixture_ = CounterRng(data.seed(), StreamId(absl::StrCat("data.mixture/", shard)));
  return c;
}

absl::Status CorpusBatchSource::NextExample(Example* out) {
  const double u = mixture_.Uniform(drawn_++);
  size_t i = std::upper_bound(cumulative_.begin(), cumulative_.end(), u) - cumulative_.begin();
  // cumulative_[i - 1] <= u < cumulative_[i]: source i has a positive weight.
  i = std::min(i, sources_.size() - 1);
  Source& s = sources_[i];
  last_source_ = i;
  while (!s.has_doc || objective_->Exhausted(s.doc, s.offset)) {
    if (auto st = s.stream->Next(&s.doc, &s.doc_pos); !st.ok()) return st;
    s.has_doc = true;
    s.offset = 0;
  }
  objective_->Next(s.doc, &s.offset, s.keys.Bits(s.examples++), out);
  return absl::OkStatus();
}

absl::Status CorpusBatchSource::Next(int64_t rows, int64_t seq_len, Batch* out) {
  if (seq_len != seq_len_)
    return absl::InvalidArgumentError(absl::StrCat(
        "data: asked for rows of ", seq_len, " tokens, the job has train.seq_len=", seq_len_));
  out->Resize(rows, seq_len);
  const Packer::Pull pull = [this](Example* e) { return NextExample(e); };
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t padding = packer_.padding_tokens();
    if (auto s = packer_.FillRow(pull, out, r); !s.ok()) return s;
    // A row is padded only when the example pulled last did not fit: that source caused it.
    sources_[last_source_].padding_tokens += packer_.padding_tokens() - padding;
  }
  rows_ += rows;
  return absl::OkStatus();
}

std::string CorpusBatchSource::SaveState() const {
  StateWriter w;
  w.Int("corpus", 1);
  w.Uint("fingerprint", fingerprint_);
  w.Int("shard", shard_);
  w.Int("num_shards", num_shards_);
  w.Uint("drawn", drawn_);
  for (size_t i = 0; i < sources_.size(); ++i) {
    const Source& s = sources_[i];
    const std::string p = absl::StrCat("source", i, ".");
    w.Int(p + "has_doc", s.has_doc ? 1 : 0);
    w.Int(p + "epoch", s.doc_pos.epoch);
    w.Int(p + "record", s.doc_pos.record);
    w.Int(p + "offset", s.offset);
    w.Uint(p + "examples", s.examples);
  }
  w.Int("pending", packer_.has_pending() ? 1 : 0);
  if (packer_.has_pending()) {
    w.Ints("pending.tokens", packer_.pending().tokens);
    w.Ints("pending.targets", packer_.pending().targets);
    w.Floats("pending.weights", packer_.pending().weights);
  }
  return w.str();
}

absl::Status CorpusBatchSource::RestoreState(const std::string& state) {
  auto r = StateReader::Parse(state, kStateName);
  if (!r.ok()) return r.status();
  if (!r->Int("corpus").ok())
    return absl::FailedPreconditionError(absl::StrCat(kStateName, " is not for a corpus source"));
  auto fingerprint = r->Uint("fingerprint");
  auto shard = r->Int("shard");
  auto num = r->Int("num_shards");
  auto drawn = r->Uint("drawn");
  for (const absl::Status& s : {fingerprint.status(), shard.status(), num.status(), drawn.status()})
    if (!s.ok()) return s;
  if (*shard != shard_ || *num != num_shards_)
    return absl::FailedPreconditionError(
        absl::StrFormat("%s was saved for data shard %d of %d, not %d of %d", kStateName, *shard,
                        *num, shard_, num_shards_));
  if (*fingerprint != fingerprint_)
    return absl::FailedPreconditionError(absl::StrCat(
        kStateName,
        " was saved for another data config (data.*, train.seq_len or model.vocab_size changed)"));
  for (size_t i = 0; i < sources_.size(); ++i) {
    Source& s = sources_[i];
    const std::string p = absl::StrCat("source", i, ".");
    auto has_doc = r->Int(p + "has_doc");
    auto epoch = r->Int(p + "epoch");
    auto record = r->Int(p + "record");
    auto offset = r->Int(p + "offset");
    auto examples = r->Uint(p + "examples");
    for (const absl::Status& st :
         {has_doc.status(), epoch.status(), record.status(), offset.status(), examples.status()})
      if (!st.ok()) return st;
    s.examples = *examples;
    s.offset = *offset;
    s.has_doc = false;
    s.doc_pos = {*epoch, *record};
    if (auto st = s.stream->Seek(s.doc_pos); !st.ok()) return st;
    if (*has_doc) {
      StreamPosition at;
      if (auto st = s.stream->Next(&s.doc, &at); !st.ok()) return st;
      if (at.epoch != *epoch || at.record != *record ||
          s.offset > static_cast<int64_t>(s.doc.size()) + 1)
        return absl::FailedPreconditionError(
            absl::StrCat(kStateName, ": source '", s.resolved.name, "' record ", *record,
                         " is not where the state expects it (the data files changed since the "
                         "state was saved)"));
      s.has_doc = true;
    }
  }
  drawn_ = *drawn;
  auto pending = r->Int("pending");
  if (!pending.ok()) return pending.status();
  packer_.ClearPending();
  if (*pending) {
    Example e;
    auto tokens = r->Ints("pending.tokens");
    auto targets = r->Ints("pending.targets");
    auto weights = r->Floats("pending.weights");
    for (const absl::Status& st : {tokens.status(), targets.status(), weights.status()})
      if (!st.ok()) return st;
    e.tokens = *tokens;
    e.targets = *targets;
    e.weights = *weights;
    if (e.tokens.size() != e.targets.size() || e.tokens.size() != e.weights.size() ||
        e.size() > seq_len_ || e.size() < 1)
      return absl::InvalidArgumentError(
          absl::StrCat(kStateName, ": the pending example is malformed"));
    packer_.SetPending(std::move(e));
  }
  return absl::OkStatus();
}

std::vector<std::pair<std::string, int64_t>> CorpusBatchSource::Counters() const {
  CounterList out;
  for (const Source& s : sources_)
    s.stream->AddCounters(absl::StrCat("data.", s.resolved.name, "."), &out);
  for (size_t i = 0; i < sources_.size(); ++i) {
    const std::string p = absl::StrCat("data.", sources_[i].resolved.name, ".");
    out.push_back({p + "examples", static_cast<int64_t>(sources_[i].examples)});
    out.push_back({p + "padding_tokens", sources_[i].padding_tokens});
  }
  out.push_back({"data.rows", rows_});
  out.push_back({"data.examples", packer_.examples()});
  out.push_back({"data.padding_tokens", packer_.padding_tokens()});
  out.push_back({"data.loss_tokens", packer_.loss_tokens()});
  return out;
}

}  // namespace openmoe
