// A fixed-seed fuzzer of job specs: mutations of launch/configs/tiny.pbtxt (a numeric field set
// to a boundary value, a field deleted, an enum flipped, a boundary value for a field tiny does
// not set, bytes flipped / inserted / deleted, the text truncated) are each run through
// `openmoe plan`, and those plan accepts through `openmoe train --set train.steps=1`, in a child
// with RLIMIT_AS and a HangGuard (a CPU-time budget, no CPU progress = a hang, a wall backstop). Every run must end by exit 0, or by
// exit 1 with one stderr line "openmoe: ..."; never by a signal or the guard. Accepted runs stay
// small because the memory check in `openmoe train` counts RLIMIT_AS as this machine's memory.
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/launch/bounded_run.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

using testing::RunLimits;
using testing::RunResult;
using testing::RunBounded;
using testing::ScratchDir;

constexpr uint64_t kSeed = 0x5eed2026;
constexpr int kMutations = 240;
// Train runs are the slow ones (one step each); plan-accepted specs beyond this many are only
// planned.
constexpr size_t kMaxTrainRuns = 80;

const char* const kBoundaryValues[] = {"0",          "-1",  "1",   "2147483648", "9223372036854775807",
                                       "1e308",      "inf", "nan", "-inf",       "2147483647",
                                       "-9223372036854775808", "0.5", "1e-300"};

const char* const kEnumValues[] = {"FFN_SWIGLU",  "FFN_OPENMOE", "DATA_CORPUS", "DATA_SYNTHETIC_MARKOV",
                                   "OPTIMIZER_ADAMW", "SCHEDULE_WARMUP_COSINE", "7", "-1",
                                   "NOT_AN_ENUM"};

// Fields tiny.pbtxt leaves at their defaults, as "message { field: %s }" overlays.
const char* const kExtraFields[] = {
    "cost_model { hbm_bandwidth: %s }",       "cost_model { peak_flops_per_chip: %s }",
    "cost_model { hop_latency: %s }",         "cost_model { activation_bytes: %s }",
    "cost_model { matmul_efficiency: %s }",   "router { jitter_noise: %s }",
    "router { aux_loss_weight: %s }",         "router { z_loss_weight: %s }",
    "optimizer { decay_exponent: %s }",       "optimizer { epsilon1: %s }",
    "optimizer { clipping_threshold: %s }",   "optimizer { global_norm_clip: %s }",
    "optimizer { min_dim_size_to_factor: %s }", "adamw { beta1: %s }",
    "adamw { beta2: %s }",                    "adamw { epsilon: %s }",
    "adamw { weight_decay: %s }",             "schedule { final_learning_rate_fraction: %s }",
    "schedule { decay_steps: %s }",           "train { threads: %s }",
    "train { max_skipped_steps: %s }",        "loss { output_z_loss_weight: %s }",
    "logging { position_buckets: %s }",       "logging { throughput_window: %s }",
    "checkpoint { keep_last: %s }",           "data { max_record_bytes: %s }",
    "model { rms_norm_eps: %s }",             "model { rope_base: %s }",
    "model { expert_d_ff: %s }",              "router { eval_capacity_factor: %s }",
    "topology { chips_per_host: %s }",        "mesh { model_parallel: %s }",
};

struct Span {
  size_t begin = 0, end = 0;
};

// Positions of the values of `field: value` pairs whose value matches `value_pattern`.
std::vector<Span> ValueSpans(const std::string& text, const std::string& value_pattern) {
  std::vector<Span> spans;
  const std::regex re("([a-z_]+): (" + value_pattern + ")");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator();
       ++it) {
    const size_t begin = static_cast<size_t>(it->position(2));
    spans.push_back({begin, begin + static_cast<size_t>(it->length(2))});
  }
  return spans;
}

struct Mutation {
  std::string what;  // for failure messages
  std::string text;
};

class Mutator {
 public:
  explicit Mutator(std::string base) : base_(std::move(base)), rng_(kSeed) {
    numbers_ = ValueSpans(base_, "-?[0-9][0-9.eE+-]*");
    enums_ = ValueSpans(base_, "[A-Z][A-Z0-9_]+");
    std::istringstream in(base_);
    for (std::string line; std::getline(in, line);) lines_.push_back(line);
  }

  Mutation Next() {
    switch (Pick(7)) {
      case 0:
      case 1:
        return ReplaceNumber(base_);
      case 2:
        return DeleteLine();
      case 3:
        return FlipEnum();
      case 4:
        return Bytes();
      case 5: {
        Mutation first = ReplaceNumber(base_);
        // Spans refer to the base text; a second replacement on the mutated text uses fresh ones.
        Mutator again(first.text);
        again.rng_.seed(rng_());
        Mutation second = again.ReplaceNumber(first.text);
        return {first.what + " and " + second.what, second.text};
      }
      default:
        return ExtraField();
    }
  }

 private:
  size_t Pick(size_t n) { return static_cast<size_t>(rng_() % n); }

  Mutation ReplaceNumber(const std::string& text) {
    const std::vector<Span> spans = ValueSpans(text, "-?[0-9][0-9.eE+-]*");
    const Span s = spans[Pick(spans.size())];
    const std::string value = kBoundaryValues[Pick(std::size(kBoundaryValues))];
    const size_t line_start = text.rfind('\n', s.begin) + 1;
    const std::string field = text.substr(line_start, s.begin - line_start);
    std::string out = text;
    out.replace(s.begin, s.end - s.begin, value);
    return {absl::StrCat("set [", absl::StripAsciiWhitespace(field), "] to ", value), out};
  }

  Mutation DeleteLine() {
    std::vector<size_t> fields;
    for (size_t i = 0; i < lines_.size(); ++i)
      if (absl::StrContains(lines_[i], ":") && !absl::StrContains(lines_[i], "#"))
        fields.push_back(i);
    const size_t drop = fields[Pick(fields.size())];
    std::vector<std::string> kept;
    for (size_t i = 0; i < lines_.size(); ++i)
      if (i != drop) kept.push_back(lines_[i]);
    return {absl::StrCat("delete line [", lines_[drop], "]"), absl::StrJoin(kept, "\n") + "\n"};
  }

  Mutation FlipEnum() {
    const Span s = enums_[Pick(enums_.size())];
    const std::string value = kEnumValues[Pick(std::size(kEnumValues))];
    std::string out = base_;
    out.replace(s.begin, s.end - s.begin, value);
    return {absl::StrCat("enum ", base_.substr(s.begin, s.end - s.begin), " -> ", value), out};
  }

  Mutation ExtraField() {
    const std::string tmpl = kExtraFields[Pick(std::size(kExtraFields))];
    const std::string value = kBoundaryValues[Pick(std::size(kBoundaryValues))];
    const std::string line = absl::StrReplaceAll(tmpl, {{"%s", value}});
    return {absl::StrCat("append [", line, "]"), base_ + line + "\n"};
  }

  Mutation Bytes() {
    std::string out = base_;
    const int edits = 1 + static_cast<int>(Pick(4));
    std::vector<std::string> what;
    for (int e = 0; e < edits && !out.empty(); ++e) {
      const size_t at = Pick(out.size());
      switch (Pick(4)) {
        case 0:
          out[at] = static_cast<char>(out[at] ^ (1 << Pick(8)));
          what.push_back(absl::StrCat("flip@", at));
          break;
        case 1:
          out.insert(at, 1, static_cast<char>(Pick(256)));
          what.push_back(absl::StrCat("insert@", at));
          break;
        case 2:
          out.erase(at, 1);
          what.push_back(absl::StrCat("erase@", at));
          break;
        default:
          out.resize(at);
          what.push_back(absl::StrCat("truncate@", at));
          break;
      }
    }
    return {absl::StrCat("bytes ", absl::StrJoin(what, ",")), out};
  }

  std::string base_;
  std::mt19937_64 rng_;
  std::vector<Span> numbers_, enums_;
  std::vector<std::string> lines_;
};

// "" when `r` ended as a run must (exit 0, or exit 1 with one line "openmoe: ..."), else why not.
std::string Verdict(const RunResult& r) {
  if (r.timed_out) return absl::StrCat("stopped: ", testing::VerdictName(r.stopped));
  if (r.signal != 0) return absl::StrCat("killed by signal ", r.signal);
  if (!r.exited) return "did not exit";
  if (r.exit_code == 0) return "";
  if (r.exit_code != 1) return absl::StrCat("exit code ", r.exit_code);
  const std::vector<std::string> lines = r.ErrLines();
  if (lines.size() != 1 || !absl::StartsWith(lines[0], "openmoe:"))
    return absl::StrCat("stderr is not one \"openmoe:\" line: ", r.err);
  return "";
}

TEST(JobSpecFuzz, NoMutationEndsBySignalOrHang) {
  ScratchDir dir;
  std::ifstream in(std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt");
  const std::string base((std::istreambuf_iterator<char>(in)), {});
  ASSERT_FALSE(base.empty());
  Mutator mutator(base);
  RunLimits limits;
  // The costliest run takes ~0.1 s of CPU (printed below; 0.4 s when a run alone still started
  // MPI): the budget has a wide margin, and what a busy machine stretches is wall time, which
  // only the backstop bounds. No CPU progress for 20 s is a hang: a run alone starts no MPI
  // daemon whose handshake could wait that long.
  limits.guard = {.cpu_seconds = 30, .stall_seconds = 20, .wall_seconds = 300};
  limits.address_space_bytes = int64_t{3} << 30;
  limits.cwd = dir.path();

  std::vector<Mutation> mutations;
  std::vector<std::string> jobs;
  std::vector<std::vector<std::string>> plans;
  for (int i = 0; i < kMutations; ++i) {
    mutations.push_back(mutator.Next());
    jobs.push_back(dir.Sub(absl::StrCat("job", i, ".pbtxt")));
    std::ofstream(jobs.back(), std::ios::binary | std::ios::trunc) << mutations.back().text;
    plans.push_back({"plan", "--job", jobs.back()});
  }
  const std::vector<RunResult> planned = testing::RunBoundedAll(plans, limits);

  int plan_accepted = 0, plan_rejected = 0;
  std::vector<std::string> failures;
  std::vector<size_t> to_train;
  for (size_t i = 0; i < planned.size(); ++i) {
    if (const std::string v = Verdict(planned[i]); !v.empty()) {
      failures.push_back(absl::StrCat("#", i, " plan, ", mutations[i].what, ": ", v));
    } else if (planned[i].exit_code != 0) {
      ++plan_rejected;
    } else {
      ++plan_accepted;
      if (to_train.size() < kMaxTrainRuns) to_train.push_back(i);
    }
  }
  std::vector<std::vector<std::string>> trains;
  for (size_t i : to_train) trains.push_back({"train", "--job", jobs[i], "--set", "train.steps=1"});
  const std::vector<RunResult> trained = testing::RunBoundedAll(trains, limits);
  int train_accepted = 0, train_rejected = 0;
  for (size_t t = 0; t < trained.size(); ++t) {
    const size_t i = to_train[t];
    if (const std::string v = Verdict(trained[t]); !v.empty()) {
      failures.push_back(absl::StrCat("#", i, " train, ", mutations[i].what, ": ", v));
    } else {
      ++(trained[t].exit_code == 0 ? train_accepted : train_rejected);
    }
  }
  double most_cpu = 0, most_wall = 0;
  for (const std::vector<RunResult>* runs : {&planned, &trained}) {
    for (const RunResult& r : *runs) {
      most_cpu = std::max(most_cpu, r.cpu_seconds);
      most_wall = std::max(most_wall, r.seconds);
    }
  }
  std::printf(
      "job spec fuzz: %d mutations; plan accepted %d, rejected %d; train (the first %zu "
      "plan-accepted) accepted %d, rejected %d; %zu failures; the longest run %.1f s CPU, "
      "%.1f s wall\n",
      kMutations, plan_accepted, plan_rejected, to_train.size(), train_accepted, train_rejected,
      failures.size(), most_cpu, most_wall);
  // OPENMOE_FUZZ_VERBOSE=1 lists every mutation with its outcome.
  if (std::getenv("OPENMOE_FUZZ_VERBOSE") != nullptr) {
    for (size_t i = 0; i < mutations.size(); ++i) {
      const std::vector<std::string> lines = planned[i].ErrLines();
      std::printf("#%zu %s: plan rc %d %s\n", i, mutations[i].what.c_str(), planned[i].exit_code,
                  lines.empty() ? "" : lines[0].substr(0, 160).c_str());
    }
  }
  for (const std::string& f : failures) ADD_FAILURE() << f;
  // The fuzzer must reach both outcomes, or it tests nothing.
  EXPECT_GT(plan_rejected, kMutations / 4);
  EXPECT_GT(train_accepted, 5);
}

}  // namespace
}  // namespace openmoe
