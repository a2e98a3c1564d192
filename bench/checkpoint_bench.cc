// Checkpoint save and load throughput and compression ratio, on launch/configs/bench_small.pbtxt
// and on a larger model (bench_small widened: d_model 1024, 8 heads x 128, d_ff 2048, 6 layers,
// vocabulary 32000; 342M parameters, 1.4 GB of fp32 parameters plus Adafactor state).
//
//   build/bench/checkpoint_bench [--dir=PATH] [benchmark flags]
//
// Each model first takes one or two training steps, so that parameters and Adafactor statistics
// look like a run's. Reported per benchmark:
//   raw_MBps     raw tensor bytes (parameters + optimizer state) per second of wall time
//   file_MBps    bytes written to / read from disk per second
//   ratio        raw bytes / file bytes (zstd level 1 of byte-shuffled floats)
// BM_WriteRawBytes writes the same raw bytes uncompressed (one file, fsync): the time to write the
// bytes, which a save should not exceed by much. BM_BackgroundSaveStall measures what an
// interval save with checkpoint.async_save costs the training loop (see there). One process (no
// MPI); files go to --dir (default: a new directory under $TMPDIR or /tmp), which is removed at the
// end.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/check.h"
#include "core/timer.h"
#include "launch/checkpoint/checkpoint.h"
#include "launch/job_loader.h"
#include "launch/trainer.h"

namespace openmoe {
namespace {

std::string g_root;

struct Model {
  std::string name;
  std::vector<std::string> sets;  // overrides of bench_small
  int steps = 0;
};

const std::vector<Model>& Models() {
  static const std::vector<Model> kModels = {
      {"bench_small", {}, 2},
      {"large_342M",
       {"model.d_model=1024", "model.num_heads=8", "model.head_dim=128", "model.d_ff=2048",
        "model.num_layers=6", "model.vocab_size=32000", "train.batch_rows=4", "train.seq_len=64",
        "router.group_size=256", "topology.num_chips=1", "topology.torus_x=1", "topology.torus_y=1",
        "mesh.expert_parallel=1"},
       1},
  };
  return kModels;
}

// One trained model per config, made once.
Trainer& TrainedModel(int index) {
  static std::map<int, std::unique_ptr<Trainer>> trainers;
  auto& slot = trainers[index];
  if (slot == nullptr) {
    const Model& m = Models()[index];
    auto spec =
        LoadJob({std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/bench_small.pbtxt"}, m.sets);
    OPENMOE_CHECK_MSG(spec.ok(), "%s", std::string(spec.status().message()).c_str());
    auto created = Trainer::Create(*spec);
    OPENMOE_CHECK_MSG(created.ok(), "%s", std::string(created.status().message()).c_str());
    slot = std::move(created).value();
    for (int i = 0; i < m.steps; ++i) slot->Step();
  }
  return *slot;
}

std::string DirOf(int index) { return g_root + "/" + Models()[index].name; }

void Report(benchmark::State& state, int64_t raw, int64_t file, double seconds,
            int64_t iterations) {
  state.counters["raw_MBps"] = raw * iterations / seconds / 1e6;
  state.counters["file_MBps"] = file * iterations / seconds / 1e6;
  state.counters["ratio"] = static_cast<double>(raw) / static_cast<double>(file);
  state.counters["raw_MB"] = raw / 1e6;
}

void BM_Save(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  Trainer& trainer = TrainedModel(index);
  state.SetLabel(Models()[index].name);
  SaveStats last;
  double seconds = 0;
  int64_t iterations = 0;
  for (auto _ : state) {
    Timer t;
    auto saved = SaveCheckpoint(trainer, DirOf(index), 1);  // same step: replaces the previous one
    seconds += t.Seconds();
    OPENMOE_CHECK_MSG(saved.ok(), "%s", std::string(saved.status().message()).c_str());
    last = *saved;
    ++iterations;
  }
  Report(state, last.raw_bytes, last.compressed_bytes, seconds, iterations);
  state.counters["files"] = static_cast<double>(last.files);
}

void BM_Load(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  Trainer& source = TrainedModel(index);
  state.SetLabel(Models()[index].name);
  auto saved = SaveCheckpoint(source, DirOf(index), 1);
  OPENMOE_CHECK(saved.ok());
  auto target = Trainer::Create(source.spec());
  OPENMOE_CHECK(target.ok());
  double seconds = 0;
  int64_t iterations = 0;
  for (auto _ : state) {
    Timer t;
    auto restored = RestoreCheckpoint(**target, saved->path);
    seconds += t.Seconds();
    OPENMOE_CHECK_MSG(restored.ok(), "%s", std::string(restored.status().message()).c_str());
    ++iterations;
  }
  OPENMOE_CHECK(std::memcmp((*target)->params().data(), source.params().data(),
                            4 * source.params().size()) == 0);
  Report(state, saved->raw_bytes, saved->compressed_bytes, seconds, iterations);
}

// The baseline: the same number of raw bytes written uncompressed to one file and fsync'd.
void BM_WriteRawBytes(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  Trainer& trainer = TrainedModel(index);
  state.SetLabel(Models()[index].name);
  const int64_t raw = 4 * (trainer.params().size() + trainer.optimizer().state().size());
  const std::string path = g_root + "/raw.bin";
  double seconds = 0;
  int64_t iterations = 0;
  for (auto _ : state) {
    Timer t;
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    OPENMOE_CHECK(fd >= 0);
    for (const Tensor* buffer : {&trainer.params(), &trainer.optimizer().state()}) {
      const char* p = reinterpret_cast<const char*>(buffer->data());
      size_t left = 4 * static_cast<size_t>(buffer->size());
      while (left > 0) {
        const ssize_t w = ::write(fd, p, left);
        OPENMOE_CHECK(w > 0);
        p += w;
        left -= static_cast<size_t>(w);
      }
    }
    OPENMOE_CHECK(::fsync(fd) == 0);
    ::close(fd);
    seconds += t.Seconds();
    ++iterations;
  }
  std::filesystem::remove(path);
  Report(state, raw, raw, seconds, iterations);
}

// What a background save costs the training loop: the wall time of (start a background save,
// one training step, finish the save) minus that of one step alone. The step overlaps the
// compression and writing.
void BM_BackgroundSaveStall(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  Trainer& trainer = TrainedModel(index);
  state.SetLabel(Models()[index].name);
  double step_alone = 0, with_save = 0, blocking = 0;
  int64_t iterations = 0;
  for (auto _ : state) {
    Timer alone;
    trainer.Step();
    step_alone += alone.Seconds();
    Timer t;
    auto save = CheckpointSave::Start(trainer, DirOf(index), 1, /*background=*/true);
    OPENMOE_CHECK(save.ok());
    trainer.Step();
    auto saved = (*save)->Finish();
    with_save += t.Seconds();
    OPENMOE_CHECK_MSG(saved.ok(), "%s", std::string(saved.status().message()).c_str());
    blocking += saved->blocking_seconds;
    ++iterations;
  }
  state.counters["step_ms"] = 1e3 * step_alone / iterations;
  state.counters["step_with_save_ms"] = 1e3 * with_save / iterations;
  state.counters["stall_ms"] = 1e3 * (with_save - step_alone) / iterations;
  state.counters["blocking_ms"] = 1e3 * blocking / iterations;
}

BENCHMARK(BM_BackgroundSaveStall)
    ->Arg(0)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(4.0);
BENCHMARK(BM_Save)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_Load)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_WriteRawBytes)
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);

}  // namespace
}  // namespace openmoe

int main(int argc, char** argv) {
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--dir=", 6) == 0) {
      openmoe::g_root = argv[i] + 6;
    } else {
      rest.push_back(argv[i]);
    }
  }
  bool made = false;
  if (openmoe::g_root.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr ? tmp : "/tmp") + "/openmoe_checkpoint_bench_XXXXXX";
    OPENMOE_CHECK(mkdtemp(pattern.data()) != nullptr);
    openmoe::g_root = pattern;
    made = true;
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::error_code ec;
  if (made) {
    std::filesystem::remove_all(openmoe::g_root, ec);
  } else {
    for (const openmoe::Model& m : openmoe::Models())
      std::filesystem::remove_all(openmoe::g_root + "/" + m.name, ec);
  }
  return 0;
}
