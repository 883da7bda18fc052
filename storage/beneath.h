// Directories opened beneath a confinement root without following anything out of it: the
// service's workers and coordinator write and remove outputs through these, so that a path
// checked at submit cannot be redirected (a symlink swapped in later, "..") at use.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quant::storage {

// An open directory. path() is "/proc/self/fd/N": it names this directory for as long as the
// object lives, whatever happens to the path it was opened by, so string-based file code
// (exports, removals) can work beneath it unchanged.
class PinnedDir {
 public:
  explicit PinnedDir(int fd) : fd_(fd) {}
  ~PinnedDir();
  PinnedDir(const PinnedDir&) = delete;
  PinnedDir& operator=(const PinnedDir&) = delete;
  int fd() const { return fd_; }
  std::string path() const;

 private:
  int fd_;
};

// Opens `dir` (absolute) beneath the first of `roots` that lexically contains it, resolving
// every component with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS): "..", absolute
// symlinks and relative ones that climb out of the root are refused. With `create`, missing
// components are made (mode 0755) as `mkdir -p` would. One error line naming `dir` otherwise.
[[nodiscard]] absl::StatusOr<std::unique_ptr<PinnedDir>> OpenDirBeneath(
    const std::vector<std::string>& roots, const std::string& dir, bool create);

// Whether `path` (symlinks and ".." resolved; the part that does not exist yet taken as written)
// lies inside one of `roots`. An s3:// location is inside an s3:// root that is a prefix of it
// at a "/" boundary. A check at one moment: writes go through OpenDirBeneath.
bool ResolvesInside(const std::string& path, const std::vector<std::string>& roots);

}  // namespace quant::storage
