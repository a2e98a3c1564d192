#include "launch/train.h"

namespace openmoe {

absl::Status RunTrain(const JobSpec& spec, const std::string& job_description) {
  return absl::UnimplementedError("train: not yet written");
}

}  // namespace openmoe
