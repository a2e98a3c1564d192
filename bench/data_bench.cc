// Data pipeline throughput: `openmoe prep` (MB of text per second, by tokenizer threads) and the
// loader (tokens per second a BatchSource delivers, at bench_small's row shape: 4 chips x 4 rows x
// 256 tokens = 4096 tokens per step), from token shards and from text tokenized on the fly.
//
//   build/bench/data_bench [benchmark flags]
//   build/bench/data_bench --huge_record_mb=50   (peak RSS of one 50 MB jsonl line, then exits)
//   build/bench/data_bench --corpus_dir=DIR      (another corpus; a missing DIR: as a fresh clone)
//
// Uses the embedded corpus (data/corpus/, made by data/gather_corpus.sh) when it is there: the
// first 8 MB of its prose with its tokenizer. Otherwise (a fresh clone) it generates 8 MB of
// pseudo-English and trains a 2000-piece tokenizer on it first, which takes about a minute (the
// numbers are then only indicative).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/check.h"
#include "core/rng.h"
#include "data/batch_source.h"
#include "data/document_reader.h"
#include "core/io/file.h"
#include "core/io/json.h"
#include "data/prep.h"
#include "core/io/zstd.h"

namespace openmoe {
namespace {

constexpr int64_t kTextBytes = 8 << 20;
constexpr int64_t kChips = 4, kRowsPerChip = 4, kSeqLen = 256;  // bench_small

std::string g_corpus_dir = std::string(OPENMOE_SOURCE_DIR) + "/data/corpus";

struct Fixture {
  std::string dir;
  std::string text_jsonl;  // ~8 MB of documents
  std::string tokenizer;
  std::string shards;
  int64_t text_bytes = 0;
  bool real = false;
};

// Pseudo-English for a fresh clone (no gathered corpus): words of one to three syllables from a
// fixed lexicon of kLexiconWords, drawn with Zipf frequencies (rank r with weight 1 / (r + 1)), in
// sentences of 6 to 17 words. Enough distinct substrings for a kGeneratedPieces-piece unigram
// tokenizer (a 23-word vocabulary supported only ~337 pieces, and sentencepiece refuses a
// vocabulary larger than its text supports).
constexpr int64_t kLexiconWords = 6000;
constexpr int64_t kGeneratedPieces = 2000;

const std::vector<std::string>& Lexicon() {
  static const std::vector<std::string>* words = [] {
    static const char* kOnsets[] = {"",   "b",  "c",  "d",  "f",  "g",  "h",  "l",
                                    "m",  "n",  "p",  "r",  "s",  "t",  "v",  "w",
                                    "st", "tr", "pl", "ch", "sh", "th", "gr", "br"};
    static const char* kVowels[] = {"a", "e", "i", "o", "u", "ai", "ea", "ou", "y", "ie"};
    static const char* kCodas[] = {"", "n", "r", "s", "t", "l", "nd", "st", "ck", "m"};
    const CounterRng rng(2, StreamId("bench/lexicon"));
    auto* out = new std::vector<std::string>();
    for (int64_t w = 0; w < kLexiconWords; ++w) {
      const uint64_t base = static_cast<uint64_t>(w) * 8;
      const int64_t syllables = 1 + static_cast<int64_t>(rng.UniformInt(base, 3));
      std::string word;
      for (int64_t k = 0; k < syllables; ++k) {
        word += kOnsets[rng.UniformInt(base + 1 + 3 * k, 24)];
        word += kVowels[rng.UniformInt(base + 2 + 3 * k, 10)];
        word += kCodas[rng.UniformInt(base + 3 + 3 * k, 10)];
      }
      out->push_back(std::move(word));
    }
    return out;
  }();
  return *words;
}

// Index of the Zipf-distributed word for uniform u in [0, 1).
int64_t ZipfWord(double u) {
  static const std::vector<double>* cdf = [] {
    auto* c = new std::vector<double>(kLexiconWords);
    double sum = 0;
    for (int64_t r = 0; r < kLexiconWords; ++r) (*c)[r] = sum += 1.0 / static_cast<double>(r + 1);
    for (double& v : *c) v /= sum;
    return c;
  }();
  const auto it = std::upper_bound(cdf->begin(), cdf->end(), u);
  return std::min<int64_t>(it - cdf->begin(), kLexiconWords - 1);
}

std::string GeneratedDocument(int64_t i) {
  const std::vector<std::string>& lexicon = Lexicon();
  const CounterRng rng(1, static_cast<uint64_t>(i));
  std::string out;
  uint64_t counter = 0;
  for (int64_t words = 0; words < 300;) {
    const int64_t length = 6 + static_cast<int64_t>(rng.UniformInt(counter++, 12));
    for (int64_t w = 0; w < length; ++w, ++words) {
      std::string word = lexicon[ZipfWord(rng.Uniform(counter++))];
      if (w == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
      out += word;
      out += w + 1 < length ? " " : ".\n";
    }
  }
  return out;
}

const Fixture& GetFixture() {
  static Fixture* f = [] {
    auto* f = new Fixture();
    f->dir = (std::filesystem::temp_directory_path() / "openmoe_data_bench").string();
    OPENMOE_CHECK(MakeDirectories(f->dir).ok());
    const std::string& corpus = g_corpus_dir;
    std::vector<std::string> docs;
    if (PathExists(corpus + "/text.jsonl.zst") && PathExists(corpus + "/tokenizer.model")) {
      f->real = true;
      f->tokenizer = corpus + "/tokenizer.model";
      SourceConfig c;
      c.add_paths(corpus + "/text.jsonl.zst");
      auto src = ResolveSource(c, 0);
      OPENMOE_CHECK(src.ok());
      auto reader = DocumentReader::Open(*src, 0, 1, false);
      OPENMOE_CHECK(reader.ok());
      Document d;
      while (f->text_bytes < kTextBytes && *(*reader)->Next(&d)) {
        f->text_bytes += static_cast<int64_t>(d.text.size());
        docs.push_back(d.text);
      }
    } else {
      for (int64_t i = 0; f->text_bytes < kTextBytes; ++i) {
        docs.push_back(GeneratedDocument(i));
        f->text_bytes += static_cast<int64_t>(docs.back().size());
      }
      TokenizerTrainingOptions o;
      o.vocab_size = kGeneratedPieces;
      o.max_sentences = 20000;
      auto model = TrainTokenizer(docs, o);
      OPENMOE_CHECK(model.ok());
      f->tokenizer = f->dir + "/bench.model";
      OPENMOE_CHECK(WriteFileAtomically(f->tokenizer, *model).ok());
    }
    std::string jsonl;
    for (const std::string& d : docs) jsonl += "{\"text\": " + JsonQuote(d) + "}\n";
    f->text_jsonl = f->dir + "/text.jsonl.zst";
    OPENMOE_CHECK(WriteFileAtomically(f->text_jsonl, CompressZstd(jsonl)).ok());
    f->shards = f->dir + "/shards";
    PrepOptions o;
    SourceConfig in;
    in.add_paths(f->text_jsonl);
    o.inputs = {in};
    o.tokenizer_model = f->tokenizer;
    o.out_dir = f->shards;
    OPENMOE_CHECK(RunPrep(o, nullptr).ok());
    return f;
  }();
  return *f;
}

void BM_PrepText(benchmark::State& state) {
  const Fixture& f = GetFixture();
  state.SetLabel(f.real ? "embedded corpus prose" : "generated text");
  PrepOptions o;
  SourceConfig in;
  in.add_paths(f.text_jsonl);
  o.inputs = {in};
  o.tokenizer_model = f.tokenizer;
  o.out_dir = f.dir + "/prep_out";
  o.threads = state.range(0);
  int64_t tokens = 0;
  for (auto _ : state) {
    auto r = RunPrep(o, nullptr);
    OPENMOE_CHECK(r.ok());
    tokens += r->tokens;
  }
  state.SetBytesProcessed(state.iterations() * f.text_bytes);
  state.counters["tokens_per_s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PrepText)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);

// One training step's worth of rows for bench_small: every chip's shard asked for its rows.
void LoaderBench(benchmark::State& state, bool shards, DataObjective objective) {
  const Fixture& f = GetFixture();
  JobSpec spec;
  spec.mutable_model()->set_vocab_size(8192);
  spec.mutable_train()->set_seq_len(kSeqLen);
  DataConfig* d = spec.mutable_data();
  d->set_source(DATA_CORPUS);
  d->set_objective(objective);
  d->mutable_tokenizer()->set_model(f.tokenizer);
  d->add_sources()->add_paths(shards ? f.shards : f.text_jsonl);
  std::vector<std::unique_ptr<BatchSource>> chips;
  for (int64_t c = 0; c < kChips; ++c) {
    auto s = MakeBatchSource(spec, c, kChips);
    OPENMOE_CHECK(s.ok());
    chips.push_back(std::move(*s));
  }
  Batch b;
  int64_t tokens = 0;
  for (auto _ : state) {
    for (auto& c : chips) {
      OPENMOE_CHECK(c->Next(kRowsPerChip, kSeqLen, &b).ok());
      tokens += b.num_tokens();
    }
  }
  state.SetItemsProcessed(tokens);
  state.counters["steps_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_LoaderShardsUl2(benchmark::State& s) { LoaderBench(s, true, OBJECTIVE_UL2); }
void BM_LoaderShardsCausal(benchmark::State& s) { LoaderBench(s, true, OBJECTIVE_CAUSAL_LM); }
void BM_LoaderTextUl2(benchmark::State& s) { LoaderBench(s, false, OBJECTIVE_UL2); }
BENCHMARK(BM_LoaderShardsUl2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LoaderShardsCausal)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LoaderTextUl2)->Unit(benchmark::kMillisecond);

int64_t PeakRssBytes() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

// Peak resident memory of reading one jsonl record of `mb` MB through the trainer's path (a
// DATA_CORPUS BatchSource, causal LM, one batch: the whole record is read, parsed and tokenized).
// The tokenizer and the file are made in a child process so their memory is not in the peak.
int HugeRecordRss(int64_t mb) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / "openmoe_data_bench_rss").string();
  OPENMOE_CHECK(MakeDirectories(dir).ok());
  const std::string model = dir + "/bench.model", jsonl = dir + "/huge.jsonl";
  const pid_t child = fork();
  if (child == 0) {
    std::vector<std::string> docs;
    for (int64_t i = 0; i < 400; ++i) docs.push_back(GeneratedDocument(i));
    TokenizerTrainingOptions o;
    o.vocab_size = 512;  // byte fallback's 256 + specials + ~45 characters, and some words
    o.threads = 1;
    auto trained = TrainTokenizer(docs, o);
    OPENMOE_CHECK_MSG(trained.ok(), "%s", std::string(trained.status().message()).c_str());
    OPENMOE_CHECK(WriteFileAtomically(model, *trained).ok());
    std::FILE* f = std::fopen(jsonl.c_str(), "wb");
    OPENMOE_CHECK(f != nullptr);
    std::fputs("{\"text\": \"", f);
    for (int64_t i = 0, written = 0; written < mb * 1000000; ++i) {
      const std::string quoted = JsonQuote(GeneratedDocument(i));
      std::fwrite(quoted.data() + 1, 1, quoted.size() - 2, f);
      written += static_cast<int64_t>(quoted.size() - 2);
    }
    std::fputs("\"}\n", f);
    std::fclose(f);
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  OPENMOE_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const int64_t file_bytes = static_cast<int64_t>(std::filesystem::file_size(jsonl));
  JobSpec spec;
  spec.mutable_model()->set_vocab_size(8192);
  spec.mutable_train()->set_seq_len(kSeqLen);
  DataConfig* d = spec.mutable_data();
  d->set_source(DATA_CORPUS);
  d->set_objective(OBJECTIVE_CAUSAL_LM);
  d->mutable_tokenizer()->set_model(model);
  d->set_max_record_bytes(2 * file_bytes);
  d->add_sources()->add_paths(jsonl);
  auto source = MakeBatchSource(spec, 0, 1);
  OPENMOE_CHECK(source.ok());
  const int64_t baseline = PeakRssBytes();
  Batch b;
  const absl::Status s = (*source)->Next(kRowsPerChip, kSeqLen, &b);
  OPENMOE_CHECK(s.ok());
  const int64_t peak = PeakRssBytes();
  std::printf(
      "huge record: %.1f MB jsonl line; peak RSS %.1f MB before reading, %.1f MB after: "
      "%.1f MB above the baseline, %.2f bytes per input byte\n",
      file_bytes / 1e6, baseline / 1e6, peak / 1e6, (peak - baseline) / 1e6,
      static_cast<double>(peak - baseline) / static_cast<double>(file_bytes));
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace openmoe

int main(int argc, char** argv) {
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--huge_record_mb=", 17) == 0)
      return openmoe::HugeRecordRss(std::atoll(argv[i] + 17));
    if (std::strncmp(argv[i], "--corpus_dir=", 13) == 0) {
      openmoe::g_corpus_dir = argv[i] + 13;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
