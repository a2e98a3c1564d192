// Expert-parallel dispatch + combine bandwidth: ExpertParallelRunner::Forward against raw
// MPI_Alltoallv of the same bytes per rank pair, in the same run.
//
//   mpirun --allow-run-as-root -np 2 build/bench/expert_exchange_bench [--reps=N] [--ep=2,4]
//
// Shapes: launch/configs/bench_small.pbtxt's MoE layer (4096 tokens per step over 4 simulated
// chips, d_model 512, 8 experts top-2, routing groups of 1024, capacity factor 1.25), with
// mesh.expert_parallel set by --ep. Each rank routes its chips' tokens with ComputeRouting on
// random N(0, 1) inputs and an N(0, 0.02) router (the initialisation's spread): near-uniform
// load, and since capacity is 1.25 x 1024 / 8 = 160 per expert per group (no factor k), 62.5% of
// the top-2 assignments are kept, as at the start of training. With 2 ranks x 2 chips,
// expert_parallel 4 sends half of the rows to the other rank; expert_parallel 2 keeps every expert
// group on one rank, so all of its traffic is intra-rank copies.
//
// Per expert_parallel size, one line per measurement on rank 0, each the median over --reps
// repetitions (after warm-up) of the slowest rank's time, with the ranks started together by
// MPI_Barrier:
//   runner_forward  ExpertParallelRunner::Forward: plan, counts all-to-all, gather, dispatch
//                   all-to-all-v, scatter, the local experts' FFN, the mirror back, scatter;
//   expert_ffn      the same FFN calls alone on the same rows (experts with d_ff 1, so this is
//                   small; it is subtracted to give the exchange);
//   runner_exchange runner_forward - expert_ffn;
//   raw_alltoallv   two MPI_Alltoallv (dispatch, then combine with the counts mirrored) of the
//                   runner's own per-rank-pair row counts, from and to contiguous buffers;
//   row_copies      the runner's four row permutations alone (into send order, to expert-major
//                   and back), for reading the gap: runner_exchange ~ raw_alltoallv + row_copies.
// GB/s = bytes this rank sends in dispatch + combine (2 x kept rows x d_model x 4, intra-rank
// pairs included, averaged over ranks) / time. ratio = runner_exchange / raw_alltoallv time;
// the target is <= 1.5. The first line per size also gives the kept and cross-rank fractions and
// how many rows the runner's send order moves (0: its send-side gather is a plain copy).
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
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

// Median over repetitions of the slowest rank's seconds for `op`. Collective.
double TimeCollective(int reps, const std::function<void()>& op) {
  for (int i = 0; i < kWarmup; ++i) op();
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    op();
    double t = MPI_Wtime() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    times.push_back(t);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void FillNormal(uint64_t seed, const char* name, float scale, Tensor* t) {
  const CounterRng rng(seed, StreamId(name));
  for (int64_t i = 0; i < t->size(); ++i) (*t)[i] = scale * static_cast<float>(rng.Normal(i));
}

struct Args {
  int reps = 20;
  std::vector<int64_t> eps = {2, 4};
};

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    bool ok = true;
    if (s.rfind("--reps=", 0) == 0) {
      ok = absl::SimpleAtoi(s.substr(7), &a.reps) && a.reps > 0;
    } else if (s.rfind("--ep=", 0) == 0) {
      a.eps.clear();
      for (absl::string_view v : absl::StrSplit(s.substr(5), ',')) {
        int64_t ep = 0;
        ok = ok && absl::SimpleAtoi(v, &ep) && ep > 0;
        a.eps.push_back(ep);
      }
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "usage: expert_exchange_bench [--reps=N] [--ep=A,B,...]; bad: %s\n",
                   s.c_str());
      std::exit(2);
    }
  }
  return a;
}

// The bench_small job with mesh.expert_parallel = ep, validated as `openmoe train` would.
absl::StatusOr<JobSpec> BenchJob(int64_t ep) {
  const std::string job = std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/bench_small.pbtxt";
  return LoadJob({job}, {"mesh.expert_parallel=" + std::to_string(ep)});
}

void RunOne(int64_t ep, int reps, Communicator& world) {
  const int rank = world.rank(), ranks = world.size();
  absl::StatusOr<JobSpec> loaded = BenchJob(ep);
  absl::StatusOr<Mesh> made =
      loaded.ok() ? MakeMesh(*loaded, ranks, rank) : absl::StatusOr<Mesh>(loaded.status());
  if (!made.ok()) {
    if (rank == 0) {
      std::printf("ep=%ld  skipped: %s\n", static_cast<long>(ep),
                  std::string(made.status().message()).c_str());
    }
    return;
  }
  const JobSpec& spec = *loaded;
  const Mesh& mesh = *made;
  const int64_t tokens = spec.train().batch_rows() * spec.train().seq_len() / ranks;  // this rank's
  const int64_t d = spec.model().d_model(), num_experts = spec.model().num_experts();

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
                     .num_experts = num_experts};
  const int64_t local = mesh.num_local_experts;
  const int64_t wi0_width = ExpertFfnDims(dims, 0).Wi0Width();
  Tensor wi_0({local, d, wi0_width}), wi_1({local, d, kExpertDff}), wo({local, kExpertDff, d});
  FillNormal(11, "bench/wi_0", 0.05f, &wi_0);
  FillNormal(12, "bench/wi_1", 0.05f, &wi_1);
  FillNormal(13, "bench/wo", 0.05f, &wo);
  const MoeWeights w{
      .router = w_router.data(), .wi_0 = wi_0.data(), .wi_1 = wi_1.data(), .wo = wo.data()};

  ExpertParallelRunner runner(mesh, &world);
  const double t_forward =
      TimeCollective(reps, [&] { runner.Forward(/*layer=*/0, dims, w, &cache); });

  if (mesh.chips_per_rank >= mesh.expert_parallel) {
    // Whole expert groups on each rank: the runner computes in place and sends nothing.
    if (rank == 0) {
      std::printf("ep=%ld  every expert group lies inside one rank: no exchange; runner_forward "
                  "(experts only) %.3f ms\n",
                  static_cast<long>(ep), t_forward * 1e3);
    }
    return;
  }
  // The FFN part of Forward alone, on the rows the last Forward received.
  const ExpertExchangeState& s = *runner.exchange_state(/*layer=*/0);
  const int64_t received = s.recv.dim(0);
  Tensor ffn_out({received, d});
  std::vector<FfnCache> ffn_cache(s.blocks.size());
  const double t_ffn = TimeCollective(reps, [&] {
    for (size_t i = 0; i < s.blocks.size(); ++i) {
      const ExpertBlock& b = s.blocks[i];
      FfnForward(ExpertFfnDims(dims, b.rows), ExpertFfnWeights(dims, w, b.local_expert),
                 s.recv.data() + b.begin * d, &ffn_cache[i], ffn_out.data() + b.begin * d);
    }
  });

  // Raw MPI_Alltoallv of the same rows per rank pair: dispatch out, combine back.
  std::vector<int> send_counts(ranks), send_displs(ranks), recv_counts(ranks), recv_displs(ranks);
  int64_t sent = 0, got = 0, remote = 0;
  for (int q = 0; q < ranks; ++q) {
    send_counts[q] = static_cast<int>(s.send_rows[q] * d);
    recv_counts[q] = static_cast<int>(s.recv_rows[q] * d);
    send_displs[q] = static_cast<int>(sent * d);
    recv_displs[q] = static_cast<int>(got * d);
    sent += s.send_rows[q];
    got += s.recv_rows[q];
    if (q != rank) remote += s.send_rows[q];
  }
  OPENMOE_CHECK(sent == kept && got == received);
  Tensor send_buf({std::max<int64_t>(sent, 1), d}), recv_buf({std::max<int64_t>(got, 1), d});
  Tensor back_buf({std::max<int64_t>(sent, 1), d});
  const double t_raw = TimeCollective(reps, [&] {
    MPI_Alltoallv(send_buf.data(), send_counts.data(), send_displs.data(), MPI_FLOAT,
                  recv_buf.data(), recv_counts.data(), recv_displs.data(), MPI_FLOAT,
                  MPI_COMM_WORLD);
    MPI_Alltoallv(recv_buf.data(), recv_counts.data(), recv_displs.data(), MPI_FLOAT,
                  back_buf.data(), send_counts.data(), send_displs.data(), MPI_FLOAT,
                  MPI_COMM_WORLD);
  });

  int64_t totals[3] = {kept, remote, tokens * cache.routing.top_k};
  world.AllReduceSum(totals, 3);
  // Bytes a rank sends in dispatch + combine, averaged over ranks.
  const double bytes = 2.0 * static_cast<double>(totals[0]) * d * sizeof(float) / ranks;
  if (rank != 0) return;
  const double t_exchange = std::max(t_forward - t_ffn, 1e-9);
  auto line = [&](const char* what, double t, bool rate) {
    std::printf("ep=%ld  %-16s %8.3f ms", static_cast<long>(ep), what, t * 1e3);
    if (rate) std::printf("  %7.2f GB/s", bytes / t / 1e9);
    std::printf("\n");
  };
  std::printf(
      "ep=%ld  %ld ranks x %ld chips, %ld experts per rank; kept %ld of %ld assignments "
      "(%.1f%%), %.1f%% of rows to other ranks; %.2f MB per rank (dispatch + combine)\n",
      static_cast<long>(ep), static_cast<long>(ranks), static_cast<long>(mesh.chips_per_rank),
      static_cast<long>(local), static_cast<long>(totals[0]), static_cast<long>(totals[2]),
      100.0 * totals[0] / totals[2], 100.0 * totals[1] / std::max<int64_t>(totals[0], 1),
      bytes / 1e6);
  line("runner_forward", t_forward, true);
  line("expert_ffn", t_ffn, false);
  line("runner_exchange", t_exchange, true);
  line("raw_alltoallv", t_raw, true);
  std::printf(
      "ep=%ld  ratio runner_exchange / raw_alltoallv = %.2fx (runner_forward / raw = "
      "%.2fx; target <= 1.5x)\n",
      static_cast<long>(ep), t_exchange / t_raw, t_forward / t_raw);
  std::fflush(stdout);
}

}  // namespace
}  // namespace openmoe

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const openmoe::Args args = openmoe::ParseArgs(argc, argv);
  std::unique_ptr<openmoe::Communicator> world = openmoe::MakeWorldCommunicator();
  openmoe::SetGemmThreads(1);
  absl::StatusOr<openmoe::JobSpec> spec = openmoe::BenchJob(1);
  OPENMOE_CHECK_MSG(spec.ok(), "%s", std::string(spec.status().message()).c_str());
  if (world->rank() == 0) {
    std::printf(
        "expert_exchange_bench: %s MoE layer: %ld tokens/step, d_model %ld, %ld experts "
        "top-%ld, group %ld, %ld chips over %d ranks, expert d_ff %ld, 1 OpenBLAS thread; "
        "median of %d reps of the slowest rank\n",
        spec->model().name().c_str(),
        static_cast<long>(spec->train().batch_rows() * spec->train().seq_len()),
        static_cast<long>(spec->model().d_model()), static_cast<long>(spec->model().num_experts()),
        static_cast<long>(spec->router().top_k()), static_cast<long>(spec->router().group_size()),
        static_cast<long>(spec->topology().num_chips()), world->size(),
        static_cast<long>(openmoe::kExpertDff), args.reps);
  }
  for (int64_t ep : args.eps) openmoe::RunOne(ep, args.reps, *world);
  world.reset();
  MPI_Finalize();
  return 0;
}
