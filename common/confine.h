// Reads of outside input confined to a set of directories while a service task runs. The job's
// paths are checked against the allowed roots at submit and again at use, but a check of a path
// is not the file that is opened a moment later: a path swapped for a symlink in between, or a
// file inside the model directory that is itself a symlink out of the roots (a shard, the
// tokenizer), would be read from anywhere the process can read. Under ScopedReadRoots, every
// input opened through OpenInputFile, ReadWholeFile, CheckFileReadable and storage's local reads
// is checked after it is open: the file the descriptor holds must lie inside one of the dirs.
#pragma once

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace quant {

// While alive, inputs must lie inside one of `dirs` (s3:// entries are ignored: object reads
// do not open local files). Scopes nest; the outer one is back when the inner one ends. Meant
// for one task at a time in a process (quant-worker) or the process's whole life
// (quant-coordinator); not for overlapping scopes on several threads.
class ScopedReadRoots {
 public:
  explicit ScopedReadRoots(const std::vector<std::string>& dirs);
  ~ScopedReadRoots();
  ScopedReadRoots(const ScopedReadRoots&) = delete;
  ScopedReadRoots& operator=(const ScopedReadRoots&) = delete;

 private:
  std::shared_ptr<const std::vector<std::string>> previous_;
};

// OK when no read roots are set, or the file open as `fd` (its path read back from
// /proc/self/fd, so symlinks and ".." are already resolved by the open itself) lies inside one
// of them. Otherwise one line naming `path`.
absl::Status CheckOpenedInside(int fd, const std::string& path);

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using UniqueFile = std::unique_ptr<std::FILE, FileCloser>;

// `path` opened for reading ("rb") and checked by CheckOpenedInside; `what` names the file in
// errors ("calibration file"): NotFound when it cannot be opened, InvalidArgument for a
// directory, PermissionDenied outside the read roots.
absl::StatusOr<UniqueFile> OpenInputFile(const std::string& path, const std::string& what);

}  // namespace quant
