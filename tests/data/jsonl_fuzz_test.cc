// A byte-level fuzzer of the jsonl readers: a small valid jsonl (and a .zst of it) mutated
// (bit flips, inserted and deleted bytes, truncation, huge runs, NUL, invalid UTF-8, deep
// nesting, long escape runs, damaged compressed bytes) with a fixed seed, each read through the
// real path: DocumentReader with skip_bad_records off and on, and every few inputs the trainer's
// BatchSource. It must not crash or hang, and the error contract must hold: with skipping on a
// plain jsonl never fails; any error is one line naming the file.
//
// The inputs run in one forked child under a HangGuard (tests/testing/hang_guard.h: a CPU-time
// budget, no CPU progress = a hang, a generous wall backstop), so a crash or hang is reported (with
// the mutation that caused it) instead of taking the test binary down, and a busy machine only
// slows it.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/rng.h"
#include "data/batch_source.h"
#include "data/document_reader.h"
#include "gtest/gtest.h"
#include "tests/data/fixtures.h"
#include "tests/testing/hang_guard.h"

namespace openmoe {
namespace {

using testing::TempDir;

constexpr int kMutants = 520;

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed, StreamId("jsonl_fuzz")) {}
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : rng_.UniformInt(counter_++, n); }

  // Applies 1-3 random mutations to `s`; `what` says which (for a failure message).
  void Mutate(std::string* s, std::string* what) {
    const int n = 1 + static_cast<int>(Below(3));
    for (int k = 0; k < n; ++k) {
      const size_t pos = static_cast<size_t>(Below(s->size() + 1));
      const int kind = static_cast<int>(Below(11));
      absl::StrAppend(what, what->empty() ? "" : ", ", Name(kind), "@", pos);
      switch (kind) {
        case 0:  // flip one bit
          if (!s->empty()) (*s)[pos % s->size()] ^= static_cast<char>(1 << Below(8));
          break;
        case 1:  // insert random bytes
          for (uint64_t i = 0, m = 1 + Below(8); i < m; ++i)
            s->insert(s->begin() + static_cast<std::ptrdiff_t>(pos), static_cast<char>(Below(256)));
          break;
        case 2:  // delete a range
          s->erase(pos, static_cast<size_t>(1 + Below(64)));
          break;
        case 3:  // truncate
          s->resize(pos);
          break;
        case 4: {  // a huge run of one byte
          static const char kRun[] = {'a', '"', '\\', '[', '{', ' ', '\n', '\x80', '0', ','};
          s->insert(pos, static_cast<size_t>(1000 + Below(80000)), kRun[Below(sizeof(kRun))]);
          break;
        }
        case 5:  // NUL bytes
          s->insert(pos, static_cast<size_t>(1 + Below(4)), '\0');
          break;
        case 6: {  // invalid UTF-8
          static const char* kBad[] = {
              "\xff",         "\xc3",     "\xed\xa0\x80",        "\xc0\xaf",
              "\xf4\x90\x80", "\xe2\x82", "\xf8\x88\x80\x80\x80"};
          s->insert(pos, kBad[Below(7)]);
          break;
        }
        case 7: {  // deep nesting, as a whole line or spliced in
          const size_t depth = static_cast<size_t>(100 + Below(5000));
          const std::string open(depth, Below(2) ? '[' : '{');
          s->insert(pos, Below(2) ? "{\"text\": \"x\", \"a\": " + open + "\n" : open);
          break;
        }
        case 8: {  // long escape runs
          static const char* kEscapes[] = {"\\u",     "\\ud800",        "\\udc00", "\\\\",
                                           "\\u00e9", "\\ud83d\\ude00", "\\"};
          const std::string e = kEscapes[Below(7)];
          std::string run;
          for (uint64_t i = 0, m = 1 + Below(5000); i < m; ++i) run += e;
          s->insert(pos, run);
          break;
        }
        case 9:  // duplicate a line-sized chunk (repeated keys, doubled records)
          s->insert(pos, s->substr(pos / 2, static_cast<size_t>(Below(200))));
          break;
        default:  // swap a quote or brace for another structural byte
          if (!s->empty()) (*s)[pos % s->size()] = "\"{}[]:,\\"[Below(8)];
          break;
      }
    }
  }

 private:
  static const char* Name(int kind) {
    static const char* kNames[] = {"flip", "insert", "delete", "truncate", "run",   "nul",
                                   "utf8", "nest",   "escape", "dup",      "struct"};
    return kNames[kind];
  }
  CounterRng rng_;
  uint64_t counter_ = 0;
};

// One pass of the reader; "" when the contract held, else what broke.
std::string CheckReader(const std::string& path, bool skip, int64_t max_record_bytes, bool plain) {
  SourceConfig c;
  c.add_paths(path);
  auto src = ResolveSource(c, 0);
  if (!src.ok()) return absl::StrCat("resolve: ", src.status().ToString());
  auto reader = DocumentReader::Open(*src, 0, 1, skip, max_record_bytes);
  if (!reader.ok()) return absl::StrCat("open: ", reader.status().ToString());
  Document d;
  for (int64_t docs = 0;; ++docs) {
    auto more = (*reader)->Next(&d);
    if (!more.ok()) {
      const std::string m(more.status().message());
      if (skip && plain) return absl::StrCat("skipping, a plain jsonl failed: ", m);
      if (m.find('\n') != std::string::npos) return absl::StrCat("error of several lines: ", m);
      if (m.find(path) == std::string::npos) return absl::StrCat("error without the file: ", m);
      return "";
    }
    if (!*more) return "";
    if (static_cast<int64_t>(d.text.size()) > max_record_bytes)
      return absl::StrCat("a document of ", d.text.size(), " bytes passed max_record_bytes");
  }
}

// The trainer's path: a few rows from a BatchSource (errors are fine, crashes are not).
void RunBatchSource(const std::string& path, bool skip, int64_t max_record_bytes) {
  JobSpec spec = testing::CorpusJob({path}, 32, OBJECTIVE_CAUSAL_LM);
  spec.mutable_data()->set_skip_bad_records(skip);
  spec.mutable_data()->set_max_record_bytes(max_record_bytes);
  auto source = MakeBatchSource(spec, 0, 1);
  if (!source.ok()) return;
  Batch b;
  for (int i = 0; i < 3; ++i)
    if (!(*source)->Next(4, 32, &b).ok()) return;
}

// Runs every mutant; writes the current one to `progress` first, so a crash names it.
int RunAll(const TempDir& dir, const std::string& progress) {
  const std::string base = testing::JsonlOf(testing::GeneratedDocuments(11, 6));
  const std::string base_zst = CompressZstd(base);
  Mutator m(20261201);
  for (int i = 0; i < kMutants; ++i) {
    const bool zst = i % 4 == 3;
    const bool damage_compressed = zst && i % 8 == 7;
    std::string bytes = damage_compressed ? base_zst : base, what;
    m.Mutate(&bytes, &what);
    if (zst && !damage_compressed) bytes = CompressZstd(bytes);
    const std::string path = dir / (zst ? "m.jsonl.zst" : "m.jsonl");
    const int64_t max_record = i % 2 ? 64 << 10 : DataConfig::default_instance().max_record_bytes();
    {
      std::ofstream p(progress, std::ios::trunc);
      p << "mutant " << i << (zst ? " (.zst" : " (.jsonl")
        << (damage_compressed ? ", compressed bytes mutated): " : "): ") << what;
    }
    if (!WriteFileAtomically(path, bytes).ok()) return 3;
    for (const bool skip : {false, true}) {
      const std::string broke = CheckReader(path, skip, max_record, !zst);
      if (!broke.empty()) {
        std::ofstream p(progress, std::ios::app);
        p << " (skip_bad_records=" << skip << "): " << broke;
        return 2;
      }
    }
    if (i % 20 == 0) RunBatchSource(path, i % 40 == 0, max_record);
  }
  return 0;
}

TEST(JsonlFuzzTest, MutatedJsonlNeverCrashesOrHangsAndKeepsTheErrorContract) {
  TempDir dir;
  const std::string progress = dir / "progress.txt";
  ASSERT_FALSE(testing::TinyTokenizerPath().empty());  // trained here, not in the child
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    setpgid(0, 0);
    _exit(RunAll(dir, progress));
  }
  setpgid(child, child);
  // All mutants take ~0.6 s of CPU here: a wide margin, and no limit on what load does to wall time.
  testing::HangGuard guard(child, {.cpu_seconds = 30, .stall_seconds = 20, .wall_seconds = 600});
  int status = 0;
  testing::GuardVerdict stopped = testing::GuardVerdict::kRunning;
  while (waitpid(child, &status, WNOHANG) != child) {
    if (stopped = guard.Check(); stopped != testing::GuardVerdict::kRunning) {
      guard.Kill();
      waitpid(child, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::stringstream last;
  last << std::ifstream(progress).rdbuf();
  ASSERT_EQ(stopped, testing::GuardVerdict::kRunning)
      << testing::VerdictName(stopped) << " after " << guard.cpu_seconds() << " s of CPU at "
      << last.str();
  ASSERT_TRUE(WIFEXITED(status)) << "crash (signal " << WTERMSIG(status) << ") at " << last.str();
  EXPECT_EQ(WEXITSTATUS(status), 0) << last.str();
}

}  // namespace
}  // namespace openmoe
