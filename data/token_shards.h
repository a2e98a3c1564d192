// Token shards: what `openmoe prep` writes and training reads, so that training reads integers,
// not text.
//
// A shard set is a directory:
//   index.txt          the index (text, one fact per line; written last, atomically):
//                        openmoe-token-shards 2  the format (2: XXH64 checksums; format 1 and
//                                                unversioned indexes are refused: re-run prep)
//                        vocab_size V            tokenizer ids, extra ids included
//                        pieces P                sentencepiece pieces
//                        tokenizer_checksum H    XXH64 of the .model bytes (core/io/checksum.h)
//                        documents D
//                        tokens T
//                        shard <file> documents d tokens t bytes b checksum h   (one per shard)
//   shard-00000.zst    zstd of: "OMTOKSH1", uint64 d, uint64 t, uint64 offsets[d + 1],
//   shard-00001.zst    int32 tokens[t] (little-endian); document j is tokens[offsets[j],
//   ...                offsets[j+1]); h is the XXH64 of the compressed file.
// Documents are numbered 0 .. D-1 across the shards in order; the output is a pure function of
// the inputs, the tokenizer and shard_tokens (not of the thread count).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace openmoe {

struct ShardFileInfo {
  std::string file;  // name inside the directory
  int64_t documents = 0;
  int64_t tokens = 0;
  int64_t bytes = 0;
  uint64_t checksum = 0;
};

struct ShardIndex {
  std::string dir;
  int64_t vocab_size = 0;
  int64_t pieces = 0;
  uint64_t tokenizer_checksum = 0;
  int64_t documents = 0;
  int64_t tokens = 0;
  std::vector<ShardFileInfo> shards;
  // first_document[i]: number of the first document of shard i (size shards + 1).
  std::vector<int64_t> first_document;
};

// Reads and checks <dir>/index.txt. Errors name the file and line.
absl::StatusOr<ShardIndex> ReadShardIndex(const std::string& dir);

struct TokenShard {
  std::vector<uint64_t> offsets;  // (documents + 1)
  std::vector<int32_t> tokens;
};

// Reads shard i, checking its size and checksum against the index and its contents against
// itself. DataLoss naming the file on any mismatch.
absl::StatusOr<TokenShard> LoadTokenShard(const ShardIndex& index, int64_t i);

// LoadTokenShard through a process-wide cache: while any holder keeps a shard, loading it again
// (by another chip's stream on this rank, reading the same file at its own documents) shares
// it, so a rank's memory does not grow with the chips it hosts. Thread-safe.
absl::StatusOr<std::shared_ptr<const TokenShard>> LoadSharedTokenShard(const ShardIndex& index,
                                                                       int64_t i);

// Writes a shard set. Documents go to the current shard until it holds >= shard_tokens tokens.
class TokenShardWriter {
 public:
  TokenShardWriter(std::string dir, int64_t shard_tokens, int64_t vocab_size, int64_t pieces,
                   uint64_t tokenizer_checksum);
  absl::Status Add(const std::vector<int32_t>& document);
  // Writes the last shard and index.txt.
  absl::StatusOr<ShardIndex> Finish();

 private:
  absl::Status Flush();
  ShardIndex index_;
  int64_t shard_tokens_;
  std::vector<uint64_t> offsets_{0};
  std::vector<int32_t> tokens_;
};

}  // namespace openmoe
