// Expert-parallel dispatch + combine bandwidth: ExpertParallelRunner::Forward against raw
// MPI_Alltoallv of the same bytes per rank pair, in the same run, over a sweep of layouts and
// shapes, each point with its median and spread.
//
//   mpirun --allow-run-as-root -np 2 build/bench/expert_exchange_bench [--csv=OUT.csv] [--reps=N]
//       [--ep=2,4,8] [--tokens_per_chip=256,1024,4096] [--capacity_factor=1.25,2]
//       [--d_model=256,512] [--dtype=fp32,bf16] [--chips=N]
//
// The sweep is the full grid of the lists given (defaults above: 72 points, ~2 minutes on 2 ranks
// of this busy 2-core machine). Each point is launch/configs/bench_small.pbtxt's MoE layer (8
// experts top-2, validated as `openmoe train` would) with mesh.expert_parallel = ep, router.capacity_factor, model.d_model,
// topology.num_chips = --chips or max(ep, ranks) (so the expert group spans ranks and rows cross),
// train.batch_rows for the tokens per chip (a multiple of seq_len 256), router.group_size =
// min(1024, tokens per chip). Each rank routes its chips' tokens with ComputeRouting on random
// N(0, 1) inputs and an N(0, 0.02) router (the initialisation's spread): near-uniform load, and
// capacity_factor x group / 8 slots per expert per group keep ~62% of the top-2 assignments at
// 1.25 (as at the start of training) and ~97% at 2. A point whose expert groups lie inside one
// rank has no exchange and is reported as such.
//
// Per point, three timings, interleaved (runner, ffn, raw, runner, ...: a change of load on a
// shared machine hits all three alike), each over R repetitions (after 3 warm-ups; R = --reps
// (default 15) cut to what fits ~0.4 s each, at least 5) of the slowest rank's time, ranks started
// together by MPI_Barrier; median, quartiles, min and max of the R:
//   runner   ExpertParallelRunner::Forward: plan, counts all-to-all, token-row map
//            all-to-all-v, gather, dispatch all-to-all-v, copies into the experts' blocks, the
//            local experts' FFN, the combine all-to-all-v back;
//   ffn      the same FFN calls alone on the rows the runner received (experts with d_ff 1, so
//            this is small; its median is subtracted from the runner's to give the exchange);
//   raw      two MPI_Alltoallv (dispatch, then combine) of the runner's own per-rank-pair row
//            counts (token rows out, assignment rows back), from and to contiguous buffers.
// bytes = what a rank sends in dispatch + combine ((token rows + kept rows) x d_model x 4: the
// dispatch sends a token once per other rank (rows for the rank itself skip the all-to-all-v),
// the combine a row per kept assignment, intra-rank pairs included; averaged over ranks; bf16:
// x 2 bytes); the line also gives the remote
// dispatch's token rows per remote assignment (what deduplication leaves of the dispatch's rows);
// GB/s = bytes / time; ratio = exchange / raw per repetition (paired), its median and quartiles.
// dtype bf16 is train.compute_dtype BF16's exchange: rows travel as bf16 (half the bytes, packed
// and unpacked by the runner, MoeDims::precision), and raw moves the same bf16 bytes.
// rank 0 prints one line per point and, with --csv, writes the rows for
// bench/expert_exchange_plot.gp (bench/expert_exchange_sweep.sh runs both).
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/blas_kernels.h"
#include "core/check.h"
#include "core/gemm.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "launch/job_loader.h"
#include "model/config.h"
#include "model/ffn.h"
#include "model/moe.h"
#include "model/router.h"
#include "parallel/communicator.h"
#include "parallel/expert_parallel.h"
#include "parallel/mesh.h"

namespace openmoe {
namespace {

constexpr int64_t kExpertDff = 1;  // expert hidden size: the FFN is there, but nearly free
constexpr int kWarmup = 3;
constexpr int kMinReps = 5;
constexpr double kSecondsPerTiming = 0.4;  // the repetitions of one timing aim at this much
constexpr int64_t kSeqLen = 256;           // bench_small's
constexpr int64_t kMaxGroup = 1024;        // bench_small's router.group_size

// Order statistics of one timing's repetitions, seconds.
struct Spread {
  double median = 0, q1 = 0, q3 = 0, min = 0, max = 0;
  int reps = 0;
};

double Quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

// The slowest rank's seconds for one call of `op`, ranks started together. Collective.
double TimeOnce(const std::function<void()>& op) {
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = MPI_Wtime();
  op();
  double t = MPI_Wtime() - t0;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return t;
}

Spread SpreadOf(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return Spread{.median = Quantile(v, 0.5),
                .q1 = Quantile(v, 0.25),
                .q3 = Quantile(v, 0.75),
                .min = v.front(),
                .max = v.back(),
                .reps = static_cast<int>(v.size())};
}

// Warm-up, then repetitions of every op in turn (interleaved, so a change of load on a shared
// machine hits all of them alike); up to max_reps, fewer when one round takes long (every rank
// sees the same slowest-rank times, so they agree on the count). times[op][rep]. Collective.
std::vector<std::vector<double>> TimeInterleaved(int max_reps,
                                                 const std::vector<std::function<void()>>& ops) {
  double round = 0;
  for (int i = 0; i < kWarmup; ++i) {
    round = 0;
    for (const auto& op : ops) round += TimeOnce(op);
  }
  const int reps = std::clamp(
      static_cast<int>(kSecondsPerTiming * static_cast<double>(ops.size()) / std::max(round, 1e-9)),
      std::min(kMinReps, max_reps), max_reps);
  std::vector<std::vector<double>> times(ops.size());
  for (int r = 0; r < reps; ++r)
    for (size_t i = 0; i < ops.size(); ++i) times[i].push_back(TimeOnce(ops[i]));
  return times;
}

void FillNormal(uint64_t seed, const char* name, float scale, Tensor* t) {
  const CounterRng rng(seed, StreamId(name));
  for (int64_t i = 0; i < t->size(); ++i) (*t)[i] = scale * static_cast<float>(rng.Normal(i));
}

struct Args {
  int reps = 15;
  std::vector<int64_t> eps = {2, 4, 8};
  std::vector<int64_t> tokens_per_chip = {256, 1024, 4096};
  std::vector<double> capacity_factors = {1.25, 2.0};
  std::vector<int64_t> d_models = {256, 512};
  std::vector<std::string> dtypes = {"fp32", "bf16"};
  int64_t chips = 0;  // 0: max(ep, ranks)
  std::string csv;
};

template <typename T>
bool ParseList(absl::string_view text, std::vector<T>* out) {
  out->clear();
  for (absl::string_view v : absl::StrSplit(text, ',')) {
    T x{};
    if constexpr (std::is_same_v<T, double>) {
      if (!absl::SimpleAtod(v, &x) || !(x > 0)) return false;
    } else {
      if (!absl::SimpleAtoi(v, &x) || x <= 0) return false;
    }
    out->push_back(x);
  }
  return !out->empty();
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    const size_t eq = s.find('=');
    const std::string key = s.substr(0, eq), value = eq == std::string::npos ? "" : s.substr(eq + 1);
    bool ok = eq != std::string::npos;
    if (key == "--reps") {
      ok = ok && absl::SimpleAtoi(value, &a.reps) && a.reps > 0;
    } else if (key == "--ep") {
      ok = ok && ParseList(value, &a.eps);
    } else if (key == "--tokens_per_chip") {
      ok = ok && ParseList(value, &a.tokens_per_chip);
      for (int64_t t : a.tokens_per_chip) ok = ok && t % kSeqLen == 0;
    } else if (key == "--capacity_factor") {
      ok = ok && ParseList(value, &a.capacity_factors);
    } else if (key == "--d_model") {
      ok = ok && ParseList(value, &a.d_models);
    } else if (key == "--dtype") {
      a.dtypes.clear();
      for (absl::string_view v : absl::StrSplit(value, ',')) {
        ok = ok && (v == "fp32" || v == "bf16");
        a.dtypes.emplace_back(v);
      }
    } else if (key == "--chips") {
      ok = ok && absl::SimpleAtoi(value, &a.chips) && a.chips > 0;
    } else if (key == "--csv") {
      a.csv = value;
      ok = ok && !value.empty();
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "usage: expert_exchange_bench [--csv=OUT] [--reps=N] [--ep=A,B,..] "
                   "[--tokens_per_chip=T,..(multiples of %ld)] [--capacity_factor=F,..] "
                   "[--d_model=D,..] [--dtype=fp32,bf16] [--chips=N]; bad: %s\n",
                   static_cast<long>(kSeqLen), s.c_str());
      std::exit(2);
    }
  }
  return a;
}

struct Point {
  int64_t ep, chips, tokens_per_chip, d_model;
  double capacity_factor;
  bool bf16;
};

// bench_small with the point's settings, validated as `openmoe train` would. The torus is the
// squarest power-of-two split of the chips (it only matters to the cost model, not measured here).
absl::StatusOr<JobSpec> PointJob(const Point& p) {
  const std::string job = std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/bench_small.pbtxt";
  int64_t torus_x = 1;
  while (4 * torus_x * torus_x <= p.chips && p.chips % (2 * torus_x) == 0) torus_x *= 2;
  return LoadJob({job}, {
                            absl::StrCat("mesh.expert_parallel=", p.ep),
                            absl::StrCat("topology.num_chips=", p.chips),
                            absl::StrCat("topology.torus_x=", torus_x),
                            absl::StrCat("topology.torus_y=", p.chips / torus_x),
                            absl::StrCat("train.seq_len=", kSeqLen),
                            absl::StrCat("train.batch_rows=", p.tokens_per_chip * p.chips / kSeqLen),
                            absl::StrCat("router.group_size=", std::min(kMaxGroup, p.tokens_per_chip)),
                            absl::StrCat("router.capacity_factor=", p.capacity_factor),
                            absl::StrCat("model.d_model=", p.d_model),
                        });
}

constexpr char kCsvHeader[] =
    "ep,chips,ranks,tokens_per_chip,capacity_factor,d_model,dtype,kept_fraction,remote_fraction,"
    "mb_per_rank,reps,runner_ms_median,runner_ms_q1,runner_ms_q3,runner_ms_min,runner_ms_max,"
    "ffn_ms_median,exchange_ms_median,raw_ms_median,raw_ms_q1,raw_ms_q3,raw_ms_min,raw_ms_max,"
    "exchange_gbps,exchange_gbps_q1,exchange_gbps_q3,raw_gbps,raw_gbps_q1,raw_gbps_q3,ratio_median,"
    "ratio_q1,ratio_q3,dispatch_token_rows_per_assignment";

// Runs one point; on rank 0 prints its line and returns its CSV row ("" when there is none).
std::string RunPoint(const Point& p, int max_reps, Communicator& world) {
  const int rank = world.rank(), ranks = world.size();
  const std::string name =
      absl::StrFormat("ep=%d tpc=%d cf=%.2f d=%d %s chips=%d", p.ep, p.tokens_per_chip,
                      p.capacity_factor, p.d_model, p.bf16 ? "bf16" : "fp32", p.chips);
  absl::StatusOr<JobSpec> loaded = PointJob(p);
  absl::StatusOr<Mesh> made =
      loaded.ok() ? MakeMesh(*loaded, ranks, rank) : absl::StatusOr<Mesh>(loaded.status());
  if (!made.ok()) {
    if (rank == 0) std::printf("%s  skipped: %s\n", name.c_str(), std::string(made.status().message()).c_str());
    return "";
  }
  const JobSpec& spec = *loaded;
  const Mesh& mesh = *made;
  if (mesh.chips_per_rank >= mesh.expert_parallel) {
    if (rank == 0) std::printf("%s  every expert group lies inside one rank: no exchange\n", name.c_str());
    return "";
  }
  const int64_t tokens = p.tokens_per_chip * mesh.chips_per_rank;  // this rank's
  const int64_t d = p.d_model, num_experts = spec.model().num_experts();

  // Routing of this rank's tokens: random inputs, router at its initial spread.
  Tensor x({tokens, d}), w_router({d, num_experts});
  FillNormal(1000 + rank, "bench/x", 1.0f, &x);
  FillNormal(7, "bench/router", 0.02f, &w_router);
  MoeCache cache;
  ComputeRouting(RoutingFromSpec(spec, /*eval=*/false), x.data(), w_router.data(), tokens, d,
                 &cache.routing);
  const int64_t kept = cache.routing.NumKept();
  cache.dispatched.ResizeUninitialized({kept, d});
  cache.expert_out.ResizeUninitialized({kept, d});
  for (int64_t a = 0; a < kept; ++a)
    std::memcpy(cache.dispatched.data() + a * d, x.data() + cache.routing.kept_token[a] * d,
                d * sizeof(float));

  // The local experts, d_ff 1.
  const MoeDims dims{.tokens = tokens,
                     .d_model = d,
                     .expert_d_ff = kExpertDff,
                     .form = spec.model().ffn_form(),
                     .num_experts = num_experts,
                     .precision = p.bf16 ? GemmPrecision::kBf16 : GemmPrecision::kFp32};
  const int64_t local = mesh.num_local_experts;
  const int64_t wi0_width = ExpertFfnDims(dims, 0).Wi0Width();
  Tensor wi_0({local, d, wi0_width}), wi_1({local, d, kExpertDff}), wo({local, kExpertDff, d});
  FillNormal(11, "bench/wi_0", 0.05f, &wi_0);
  FillNormal(12, "bench/wi_1", 0.05f, &wi_1);
  FillNormal(13, "bench/wo", 0.05f, &wo);
  const MoeWeights w{
      .router = w_router.data(), .wi_0 = wi_0.data(), .wi_1 = wi_1.data(), .wo = wo.data()};

  ExpertParallelRunner runner(mesh, &world);
  const auto run_forward = [&] { runner.Forward(/*layer=*/0, dims, w, &cache); };
  run_forward();  // sizes the exchange state the other two timings read
  // As a training step does between steps: the arena's block grows to what Forward takes, so the
  // timed calls allocate nothing (else each Take beyond the block is a fresh, page-faulting one).
  cache.own_scratch.Reset();

  // The FFN part of Forward alone, on the rows Forward receives (the same every call).
  const ExpertExchangeState& s = *runner.exchange_state(/*layer=*/0);
  const int64_t received = s.recv.dim(0);
  Tensor ffn_out({std::max<int64_t>(received, 1), d});
  std::vector<FfnCache> ffn_cache(s.blocks.size());
  ScratchArena ffn_scratch;  // as the runner's: allocated once, reused
  const auto run_ffn = [&] {
    for (size_t i = 0; i < s.blocks.size(); ++i) {
      const ExpertBlock& b = s.blocks[i];
      FfnForward(ExpertFfnDims(dims, b.rows), ExpertFfnWeights(dims, w, b.local_expert),
                 s.recv.data() + b.begin * d, &ffn_cache[i], ffn_out.data() + b.begin * d,
                 /*accumulate=*/false, &ffn_scratch);
    }
  };

  // Raw MPI_Alltoallv of the same rows per rank pair: dispatch out (token rows: a token once per
  // destination rank), combine back (one row per assignment). A row is d floats, or in bf16
  // ceil(d / 2) words, as the runner sends it.
  const int64_t row_words = p.bf16 ? (d + 1) / 2 : d;
  std::vector<int64_t> token_rows_sent(ranks, 0), token_rows_got(ranks, 0);
  for (size_t k = 0; k < s.tokens.sent.size(); ++k) {
    for (int q = 0; q < ranks; ++q) {
      token_rows_sent[q] += s.tokens.sent[k][q];
      token_rows_got[q] += s.tokens.received[k][q];
    }
  }
  // Counts and displacements in words of `rows` per rank.
  auto layout = [&](const std::vector<int64_t>& rows, std::vector<int>* counts,
                    std::vector<int>* displs) {
    counts->resize(ranks);
    displs->resize(ranks);
    int64_t at = 0;
    for (int q = 0; q < ranks; ++q) {
      (*counts)[q] = static_cast<int>(rows[q] * row_words);
      (*displs)[q] = static_cast<int>(at * row_words);
      at += rows[q];
    }
    return at;
  };
  std::vector<int> out_send, out_send_at, out_recv, out_recv_at, back_send, back_send_at, back_recv,
      back_recv_at;
  const int64_t tokens_sent = layout(token_rows_sent, &out_send, &out_send_at);
  const int64_t tokens_got = layout(token_rows_got, &out_recv, &out_recv_at);
  const int64_t got = layout(s.recv_rows, &back_send, &back_send_at);
  const int64_t sent = layout(s.send_rows, &back_recv, &back_recv_at);
  int64_t remote = 0, tokens_remote = 0;
  for (int q = 0; q < ranks; ++q) {
    if (q == rank) continue;
    remote += s.send_rows[q];
    tokens_remote += token_rows_sent[q];
  }
  OPENMOE_CHECK(sent == kept && got == received);
  Tensor out_buf({std::max<int64_t>(tokens_sent, 1), d}), in_buf({std::max<int64_t>(tokens_got, 1), d});
  Tensor res_buf({std::max<int64_t>(got, 1), d}), back_buf({std::max<int64_t>(sent, 1), d});
  const auto run_raw = [&] {
    MPI_Alltoallv(out_buf.data(), out_send.data(), out_send_at.data(), MPI_FLOAT, in_buf.data(),
                  out_recv.data(), out_recv_at.data(), MPI_FLOAT, MPI_COMM_WORLD);
    MPI_Alltoallv(res_buf.data(), back_send.data(), back_send_at.data(), MPI_FLOAT,
                  back_buf.data(), back_recv.data(), back_recv_at.data(), MPI_FLOAT,
                  MPI_COMM_WORLD);
  };
  const std::vector<std::vector<double>> times =
      TimeInterleaved(max_reps, {run_forward, run_ffn, run_raw});
  const Spread t_runner = SpreadOf(times[0]), t_ffn = SpreadOf(times[1]), t_raw = SpreadOf(times[2]);
  // The exchange is the runner minus the FFN's median, so its spread is the runner's shifted.
  const double ffn = t_ffn.median;
  auto exchange = [&](double runner_seconds) { return std::max(runner_seconds - ffn, 1e-9); };
  // Paired per repetition (the three ran back to back): less sensitive to load than the medians'.
  std::vector<double> ratios;
  for (size_t r = 0; r < times[0].size(); ++r)
    ratios.push_back(std::max(times[0][r] - times[1][r], 1e-9) / times[2][r]);
  const Spread ratio = SpreadOf(ratios);

  int64_t totals[5] = {kept, remote, tokens * cache.routing.top_k, tokens_sent, tokens_remote};
  world.AllReduceSum(totals, 5);
  if (rank != 0) return "";
  // Bytes a rank sends in dispatch + combine, averaged over ranks.
  const double bytes =
      static_cast<double>(totals[3] + totals[0]) * row_words * sizeof(float) / ranks;
  // Remote dispatch rows: token rows per remote assignment (1: no token shares a rank).
  const double dispatch_dedup =
      static_cast<double>(totals[4]) / static_cast<double>(std::max<int64_t>(totals[1], 1));
  const double kept_fraction = static_cast<double>(totals[0]) / static_cast<double>(totals[2]);
  const double remote_fraction =
      static_cast<double>(totals[1]) / static_cast<double>(std::max<int64_t>(totals[0], 1));
  const double gbps = bytes / exchange(t_runner.median) / 1e9;
  const double raw_gbps = bytes / t_raw.median / 1e9;
  std::printf(
      "%s  %.2f MB/rank, kept %.1f%%, %.1f%% of rows cross ranks, remote dispatch %.3f token rows "
      "per assignment | exchange %7.3f ms [%.3f-%.3f] "
      "%6.2f GB/s | raw %7.3f ms [%.3f-%.3f] %6.2f GB/s | ratio %.2fx [%.2f-%.2f] | reps %d\n",
      name.c_str(), bytes / 1e6, 100 * kept_fraction, 100 * remote_fraction, dispatch_dedup,
      exchange(t_runner.median) * 1e3, exchange(t_runner.min) * 1e3, exchange(t_runner.max) * 1e3,
      gbps, t_raw.median * 1e3, t_raw.min * 1e3, t_raw.max * 1e3, raw_gbps,
      ratio.median, ratio.q1, ratio.q3, t_runner.reps);
  std::fflush(stdout);
  const double ms = 1e3;
  return absl::StrFormat(
      "%d,%d,%d,%d,%g,%d,%s,%.4f,%.4f,%.4f,%d,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,"
      "%.4f,%.4f,%.4f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.4f",
      p.ep, p.chips, ranks, p.tokens_per_chip, p.capacity_factor, p.d_model,
      p.bf16 ? "bf16" : "fp32", kept_fraction,
      remote_fraction, bytes / 1e6, t_runner.reps, t_runner.median * ms, t_runner.q1 * ms,
      t_runner.q3 * ms, t_runner.min * ms, t_runner.max * ms, ffn * ms,
      exchange(t_runner.median) * ms, t_raw.median * ms, t_raw.q1 * ms, t_raw.q3 * ms,
      t_raw.min * ms, t_raw.max * ms, gbps, bytes / exchange(t_runner.q3) / 1e9,
      bytes / exchange(t_runner.q1) / 1e9, raw_gbps, bytes / t_raw.q3 / 1e9,
      bytes / t_raw.q1 / 1e9, ratio.median, ratio.q1, ratio.q3, dispatch_dedup);
}

}  // namespace
}  // namespace openmoe

int main(int argc, char** argv) {
  openmoe::EnsureBlasKernels(argv);
  openmoe::InitMpi(&argc, &argv);
  const openmoe::Args args = openmoe::ParseArgs(argc, argv);
  std::unique_ptr<openmoe::Communicator> world = openmoe::MakeWorldCommunicator();
  openmoe::SetGemmThreads(1);
  const int ranks = world->size();
  std::FILE* csv = nullptr;
  if (world->rank() == 0) {
    std::printf(
        "expert_exchange_bench: bench_small's MoE layer (8 experts top-2, expert d_ff %ld) on %d "
        "ranks, 1 OpenBLAS thread; per point the slowest rank's time, median [min-max] of the "
        "reps\n",
        static_cast<long>(openmoe::kExpertDff), ranks);
    if (!args.csv.empty()) {
      csv = std::fopen(args.csv.c_str(), "w");
      if (csv == nullptr) std::fprintf(stderr, "expert_exchange_bench: cannot write %s\n", args.csv.c_str());
      if (csv != nullptr) std::fprintf(csv, "%s\n", openmoe::kCsvHeader);
    }
  }
  int csv_ok = args.csv.empty() || csv != nullptr;
  MPI_Bcast(&csv_ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (!csv_ok) {
    world.reset();
    MPI_Finalize();
    return 1;
  }
  for (int64_t ep : args.eps)
    for (int64_t tpc : args.tokens_per_chip)
      for (double cf : args.capacity_factors)
        for (int64_t d : args.d_models)
          for (const std::string& dtype : args.dtypes) {
            const openmoe::Point p{
                .ep = ep,
                .chips = args.chips > 0 ? args.chips : std::max<int64_t>(ep, ranks),
                .tokens_per_chip = tpc,
                .d_model = d,
                .capacity_factor = cf,
                .bf16 = dtype == "bf16"};
            const std::string row = openmoe::RunPoint(p, args.reps, *world);
            if (csv != nullptr && !row.empty()) std::fprintf(csv, "%s\n", row.c_str());
          }
  if (csv != nullptr) std::fclose(csv);
  world.reset();
  MPI_Finalize();
  return 0;
}
