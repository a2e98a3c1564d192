#include "launch/checkpoint/session.h"

#include <csignal>
#include <cstdio>
#include <string>

#include "absl/strings/str_format.h"
#include "core/check.h"
#include "launch/checkpoint/writer.h"
#include "launch/console.h"
#include "launch/checkpoint/export.h"
#include "parallel/collective_status.h"

namespace openmoe {
namespace {

// Through the console (launch/console.h): a stalled stdout must not stall training.
void Info(bool rank0, const std::string& line) {
  if (rank0) console::Out(line);
}

void Warn(bool rank0, const std::string& line) {
  if (rank0) console::Warn(line);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointSession>> CheckpointSession::Start(Trainer& trainer) {
  std::unique_ptr<CheckpointSession> session(new CheckpointSession());
  session->rank0_ = trainer.world().rank() == 0;
  const CheckpointConfig& config = trainer.spec().checkpoint();
  absl::StatusOr<RestoreOutcome> restored = ResumeTraining(trainer, config.resume(), config.dir());
  if (!restored.ok()) return restored.status();
  session->restored_ = *std::move(restored);
  for (const std::string& w : session->restored_.warnings) Warn(session->rank0_, w);
  if (session->restored_.restored) {
    session->last_saved_step_ = session->restored_.step;
    session->last_saved_path_ = session->restored_.dir;
    Info(session->rank0_, absl::StrFormat("checkpoint: resumed from %s at step %d",
                                          session->restored_.dir, session->restored_.step));
  } else if (!config.init_from_safetensors().empty()) {
    OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(
        trainer.world(), LoadParamsFromSafetensors(config.init_from_safetensors(), trainer.layout(),
                                                   trainer.params().data())));
    Info(session->rank0_, absl::StrFormat("checkpoint: parameters initialised from %s",
                                          config.init_from_safetensors()));
  }
  return session;
}

void CheckpointSession::Report(const SaveStats& saved, const std::string& why, int64_t keep_last) {
  last_saved_step_ = saved.step;
  last_saved_path_ = saved.path;
  Info(rank0_, absl::StrFormat(
                   "checkpoint: saved %s (%s; %d files, %.1f MB -> %.1f MB, %.2fs, %.2fs blocking)",
                   saved.path, why, saved.files, saved.raw_bytes / 1e6,
                   saved.compressed_bytes / 1e6, saved.seconds, saved.blocking_seconds));
  for (const std::string& p : saved.pruned) {
    Info(rank0_, absl::StrFormat("checkpoint: removed %s (keep_last %d)", p, keep_last));
  }
}

absl::Status CheckpointSession::FinishPending(Trainer& trainer) {
  if (pending_ == nullptr) return absl::OkStatus();
  std::unique_ptr<CheckpointSave> save = std::move(pending_);
  absl::StatusOr<SaveStats> saved = save->Finish();
  if (!saved.ok()) return saved.status();
  Report(*saved, "interval, written in the background", trainer.spec().checkpoint().keep_last());
  return absl::OkStatus();
}

absl::Status CheckpointSession::Save(Trainer& trainer, const std::string& why, bool background) {
  OPENMOE_RETURN_IF_ERROR(FinishPending(trainer));
  if (last_saved_step_ == trainer.step()) return absl::OkStatus();
  // Parameters that just gave a non-finite loss are not worth keeping over the last checkpoint.
  if (trainer.last_step_skipped()) {
    Warn(rank0_, absl::StrFormat("not saving a checkpoint at step %d (%s): its loss or gradient "
                                 "was not finite; the newest checkpoint stays %s",
                                 trainer.step(), why,
                                 last_saved_path_.empty() ? "(none)" : last_saved_path_));
    return absl::OkStatus();
  }
  // A checkpoint never holds a NaN or infinity: resuming from one could only fail again.
  const absl::Status finite = trainer.CheckParamsFinite();
  if (!finite.ok()) {
    return absl::DataLossError(absl::StrFormat("not saving a checkpoint at step %d (%s): %s",
                                               trainer.step(), why, finite.message()));
  }
  const CheckpointConfig& config = trainer.spec().checkpoint();
  absl::StatusOr<std::unique_ptr<CheckpointSave>> save =
      CheckpointSave::Start(trainer, config.dir(), config.keep_last(), background);
  if (!save.ok()) return save.status();
  if (background) {
    pending_ = *std::move(save);
    return absl::OkStatus();
  }
  absl::StatusOr<SaveStats> saved = (*save)->Finish();
  if (!saved.ok()) return saved.status();
  Report(*saved, why, config.keep_last());
  return absl::OkStatus();
}

absl::StatusOr<bool> CheckpointSession::AfterStep(Trainer& trainer) {
  const CheckpointConfig& config = trainer.spec().checkpoint();
  // One reduction: did any rank get a stop signal; has any rank's background save not finished.
  int64_t flags[2] = {StopSignalHandler::Received() != 0 ? 1 : 0,
                      pending_ != nullptr && !pending_->WrittenHere() ? 1 : 0};
  trainer.world().AllReduceSum(flags, 2);
  const bool stop = flags[0] > 0;
  if (pending_ != nullptr && flags[1] == 0) OPENMOE_RETURN_IF_ERROR(FinishPending(trainer));
  const bool has_dir = !config.dir().empty();
  if (stop) {
    const int sig = StopSignalHandler::Received();
    const char* name = sig != 0 ? StopSignalHandler::Name(sig) : "a signal on another rank";
    stopped_by_ = name;
    if (has_dir) {
      OPENMOE_RETURN_IF_ERROR(
          Save(trainer, absl::StrFormat("stop requested by %s", name), /*background=*/false));
    } else {
      Warn(rank0_,
           absl::StrFormat(
               "stop requested by %s after step %d; checkpoint.dir is empty, so nothing is saved",
               name, trainer.step()));
    }
    return true;
  }
  if (has_dir && config.every_steps() > 0 && trainer.step() % config.every_steps() == 0) {
    OPENMOE_RETURN_IF_ERROR(Save(trainer, "interval", config.async_save()));
  }
  return false;
}

absl::Status CheckpointSession::Finish(Trainer& trainer) {
  OPENMOE_RETURN_IF_ERROR(FinishPending(trainer));
  if (trainer.spec().checkpoint().dir().empty()) return absl::OkStatus();
  return Save(trainer, "end of training", /*background=*/false);
}

}  // namespace openmoe
