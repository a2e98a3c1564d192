// Checkpoints: the one header the rest of the project includes (launch/checkpoint/*.h are its parts).
//
// On disk, a checkpoint of a run with checkpoint.dir=D after N steps is the directory
// D/step_<N, 8 digits>/ holding:
//   manifest.pbtxt   a CheckpointManifest (proto/checkpoint.proto) in protobuf text format: the
//                    resolved job spec, the step, the seeds, the writing mesh, every chip's
//                    data-iterator state and the tensor index (name, kind: parameter, Adafactor
//                    state or AdamW m / v, global shape, expert range, file, raw and compressed
//                    sizes, XXH64 of the raw bytes and of the file); its last line is
//                    `# xxh64 <16 hex digits>`, the XXH64 of every byte before it (manifest.h)
//   one file per tensor piece, each one zstd frame of little-endian float32, byte-shuffled in
//                    blocks of 262144 floats (tensor_file.h): param.<name>.zst,
//                    adafactor.<name>.zst, adamw_m.<name>.zst, adamw_v.<name>.zst, and for expert
//                    tensors <kind>.<name>.experts_<a>-<b>.zst (global experts [a, b])
// plus D/LOCK, the flock of the run using D (run_lock.h).
//
// Saving (writer.h), collective: rank 0 writes the shared tensors and the lowest rank of each
// expert replica set its experts, all into D/step_N.tmp; every file is fsync'd, rank 0 writes the
// manifest last and fsyncs it, renames the directory to step_N and fsyncs D; only then are older
// checkpoints beyond checkpoint.keep_last removed. A failed save removes its .tmp and leaves every
// existing checkpoint untouched; a checkpoint never holds a NaN or infinity (session.h).
// Loading (reader.h, restore.h): the manifest's checksum, then every file against the index;
// shared tensors by name and expert tensors by global expert id, so any topology, world size or
// expert parallelism loads any checkpoint of the same model. In a step loop, session.h is the
// whole interface (resume, interval / stop-signal / final saves); stop_signal.h the signals.
//
// Exported weights (export.h, safetensors.h): standard safetensors, F32, the names and layouts of
// the README's table, metadata `openmoe.job` holding the job spec.
#pragma once

#include "launch/checkpoint/export.h"       // IWYU pragma: export
#include "launch/checkpoint/manifest.h"     // IWYU pragma: export
#include "launch/checkpoint/reader.h"       // IWYU pragma: export
#include "launch/checkpoint/restore.h"      // IWYU pragma: export
#include "launch/checkpoint/run_lock.h"     // IWYU pragma: export
#include "launch/checkpoint/safetensors.h"  // IWYU pragma: export
#include "launch/checkpoint/session.h"      // IWYU pragma: export
#include "launch/checkpoint/writer.h"       // IWYU pragma: export
