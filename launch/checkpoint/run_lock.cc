#include "launch/checkpoint/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "core/check.h"
#include "core/io/file.h"
#include "parallel/collective_status.h"

namespace openmoe {
namespace {

std::string Holder() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char when[32];
  std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return absl::StrFormat("pid %d host %s since %s", getpid(), host, when);
}

absl::Status Problem(const std::string& dir, const std::string& what) {
  return absl::FailedPreconditionError(absl::StrCat("checkpoint.dir=", dir, ": ", what));
}

// Rank 0: creates the directory and takes the lock into *fd.
absl::Status Lock(const std::string& dir, int* fd) {
  const absl::Status made = MakeDirectories(dir);
  if (!made.ok()) return Problem(dir, absl::StrCat("cannot create: ", made.message()));
  const std::string path = JoinPath(dir, "LOCK");
  *fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (*fd < 0) return Problem(dir, absl::StrCat("not writable (", path, ": ", std::strerror(errno), ")"));
  if (::flock(*fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[512] = {};
    const ssize_t n = ::pread(*fd, buf, sizeof(buf) - 1, 0);
    ::close(*fd);
    *fd = -1;
    if (err != EWOULDBLOCK) return Problem(dir, absl::StrCat("cannot lock ", path, ": ", std::strerror(err)));
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "another process";
    absl::StripTrailingAsciiWhitespace(&holder);
    return Problem(dir, absl::StrCat("in use by another run (", holder,
                                     "); wait for it to finish or use another checkpoint.dir"));
  }
  const std::string me = Holder() + "\n";
  if (::ftruncate(*fd, 0) != 0 || ::pwrite(*fd, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    return Problem(dir, absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status Probe(const std::string& dir, int rank) {
  const std::string path = JoinPath(dir, absl::StrFormat(".write_probe.%d.%d", rank, getpid()));
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Problem(dir, absl::StrFormat("not writable from rank %d (%s)", rank, std::strerror(errno)));
  }
  ::close(fd);
  ::unlink(path.c_str());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RunLock>> RunLock::Acquire(const std::string& dir,
                                                          Communicator& world) {
  std::unique_ptr<RunLock> lock(new RunLock());
  OPENMOE_RETURN_IF_ERROR(
      AgreeOnFirstError(world, world.rank() == 0 ? Lock(dir, &lock->fd_) : absl::OkStatus()));
  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(world, Probe(dir, world.rank())));
  return lock;
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing drops the flock; the file stays (harmless, reused)
}

}  // namespace openmoe
