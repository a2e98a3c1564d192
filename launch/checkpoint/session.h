// Checkpoints inside the training loop (RunTrain): where the run starts, when it saves, and the
// clean stop on SIGTERM / SIGINT.
//
//   start   checkpoint.resume (auto / never / DIR, see restore.h); a run that starts
//           fresh takes checkpoint.init_from_safetensors when set
//   saves   every checkpoint.every_steps steps, on a stop signal, and at the end of training, as
//           <checkpoint.dir>/step_<N> (keeping checkpoint.keep_last); none when checkpoint.dir is
//           empty. With checkpoint.async_save, interval saves are written in the background and
//           committed after the first later step at which every rank's files are written (or
//           before the next save, a stop, or the end)
//   signal  SIGUSR1, SIGUSR2, SIGTERM or SIGINT (launch/checkpoint/stop_signal.h): the step in progress finishes, every rank agrees, the checkpoint is saved, and
//           AfterStep says stop: RunTrain returns OK (exit status 0)
//
// Every method is collective over trainer.world(). Rank 0 prints what happened (resumed from,
// saved, warnings) as one line each: progress on stdout, warnings on stderr.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "launch/checkpoint/restore.h"
#include "launch/checkpoint/stop_signal.h"
#include "launch/checkpoint/writer.h"
#include "launch/trainer.h"

namespace openmoe {

class CheckpointSession {
 public:
  // Restores per the job and installs the stop-signal handlers (removed when the session ends).
  static absl::StatusOr<std::unique_ptr<CheckpointSession>> Start(Trainer& trainer);

  // After each step: commits a background save whose files are all written; saves when the
  // interval comes round or any rank got a stop signal. True when training must stop now (the
  // signal's checkpoint is saved).
  absl::StatusOr<bool> AfterStep(Trainer& trainer);

  // At the end of training: commits a background save, then saves unless the current step was
  // just saved or nothing is to be saved (no checkpoint.dir).
  absl::Status Finish(Trainer& trainer);

  const RestoreOutcome& restored() const { return restored_; }
  // The newest checkpoint saved or resumed from in this run (empty: none).
  const std::string& last_saved_path() const { return last_saved_path_; }
  // The signal that stopped the run ("SIGUSR1", ...), empty while none has.
  const std::string& stopped_by() const { return stopped_by_; }

 private:
  CheckpointSession() = default;
  absl::Status Save(Trainer& trainer, const std::string& why, bool background);
  absl::Status FinishPending(Trainer& trainer);
  void Report(const SaveStats& saved, const std::string& why, int64_t keep_last);

  StopSignalHandler signals_;
  std::unique_ptr<CheckpointSave> pending_;  // a background save not yet committed
  RestoreOutcome restored_;
  bool rank0_ = false;
  int64_t last_saved_step_ = -1;
  std::string last_saved_path_;
  std::string stopped_by_;
};

}  // namespace openmoe
