// One rule for every file the project writes whole (reports, hand-off state, shards, caches,
// rendezvous values): it is written beside its final name, fsynced, renamed over the name, and
// the directory is fsynced, so that after a crash the name holds the old bytes or all the new
// ones, never a part. Directory commits (a task's attempt renamed to its committed name) use
// RenameDurably, the same rule for the rename alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace quant {

// A file being written: bytes go to a temporary beside `path`; Commit() publishes them under
// `path`. Destroyed without a Commit, it removes the temporary (nothing is half-written).
class AtomicFile {
 public:
  static absl::StatusOr<std::unique_ptr<AtomicFile>> Create(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  absl::Status Write(const void* data, size_t n);
  absl::Status Write(std::string_view bytes) { return Write(bytes.data(), bytes.size()); }
  // fsync, close, rename over `path`, fsync of the directory.
  absl::Status Commit();
  uint64_t bytes() const { return bytes_; }
  const std::string& path() const { return path_; }

 private:
  AtomicFile(std::string path, std::string tmp, int fd)
      : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd) {}
  std::string path_, tmp_;
  int fd_;
  uint64_t bytes_ = 0;
  bool committed_ = false;
};

// `bytes` under `path` by the rule above.
absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes);

// fsync of a directory (its entries: a rename into it). EINVAL (file systems that cannot sync a
// directory) is not an error: the files themselves are synced.
absl::Status SyncDirectory(const std::string& dir);

// rename(from, to) (files or directories), then both parents fsynced.
absl::Status RenameDurably(const std::string& from, const std::string& to);

}  // namespace quant
