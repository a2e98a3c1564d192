// CorpusBatchSource: the DATA_CORPUS BatchSource (see batch_source.h for the contract).
//
// Per example, the mixture draws a source with probability weight / sum (a pure function of
// (data.seed, shard, example number)); that source's next chunk becomes an example by the
// objective (keys from (data.seed, source, shard, the source's example number)); the packer puts
// examples into rows. The state is: the mixture's example count, per source the position of the
// document being cut (epoch, record), the offset in it and its example count, and the example
// waiting for the next row. Restoring re-reads only the documents being cut.
//
// Counters(), per source "data.<source>.": documents, tokens, bad_records (skipped under
// data.skip_bad_records), skipped_files, blank_lines, empty_documents, epoch, examples and
// padding_tokens (a row's end padding is charged to the source whose example did not fit in it
// and so started the next row); then the totals data.rows, data.examples, data.padding_tokens,
// data.loss_tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/batch_source.h"
#include "data/document_stream.h"
#include "data/objective.h"
#include "data/packer.h"
#include "data/tokenizer.h"

namespace openmoe {

class CorpusBatchSource : public BatchSource {
 public:
  static absl::StatusOr<std::unique_ptr<CorpusBatchSource>> Create(const JobSpec& spec,
                                                                   int64_t shard,
                                                                   int64_t num_shards);
  absl::Status Next(int64_t rows, int64_t seq_len, Batch* out) override;
  std::string SaveState() const override;
  absl::Status RestoreState(const std::string& state) override;
  std::vector<std::pair<std::string, int64_t>> Counters() const override;

  const Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  struct Source {
    ResolvedSource resolved;
    std::unique_ptr<DocumentStream> stream;
    CounterRng keys{0, 0};
    std::vector<int32_t> doc;
    bool has_doc = false;
    StreamPosition doc_pos;
    int64_t offset = 0;
    uint64_t examples = 0;
    int64_t padding_tokens = 0;  // counter only (not state)
  };
  CorpusBatchSource() = default;
  absl::Status NextExample(Example* out);

  int64_t shard_ = 0, num_shards_ = 1, seq_len_ = 0;
  uint64_t fingerprint_ = 0;
  std::shared_ptr<const Tokenizer> tokenizer_;
  std::unique_ptr<Objective> objective_;
  std::vector<Source> sources_;
  std::vector<double> cumulative_;
  CounterRng mixture_{0, 0};
  uint64_t drawn_ = 0;
  Packer packer_;
  int64_t rows_ = 0;
  size_t last_source_ = 0;  // the source of the example pulled last
};

}  // namespace openmoe
