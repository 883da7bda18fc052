#include "common/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace quant {
namespace {

std::string ParentOf(const std::string& path) {
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AtomicFile>> AtomicFile::Create(const std::string& path) {
  // Unique per process and call: two writers of one name never share a temporary.
  static std::atomic<uint64_t> counter{0};
  std::string tmp = absl::StrCat(path, ".tmp-", ::getpid(), "-", counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot create"));
  return std::unique_ptr<AtomicFile>(new AtomicFile(path, std::move(tmp), fd));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

absl::Status AtomicFile::Write(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t wrote = ::write(fd_, p, n);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat(path_, ": write failed"));
    }
    p += wrote;
    n -= static_cast<size_t>(wrote);
    bytes_ += static_cast<uint64_t>(wrote);
  }
  return absl::OkStatus();
}

absl::Status AtomicFile::Commit() {
  // fsync before the rename: otherwise a crash can leave the name pointing at missing data.
  if (::fsync(fd_) != 0) return absl::ErrnoToStatus(errno, absl::StrCat(path_, ": fsync failed"));
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) return absl::ErrnoToStatus(errno, absl::StrCat(path_, ": close failed"));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(path_, ": cannot rename ", tmp_, " to it"));
  }
  committed_ = true;
  return SyncDirectory(ParentOf(path_));
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes) {
  ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(path));
  RETURN_IF_ERROR(file->Write(bytes));
  return file->Commit();
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(dir, ": cannot open directory"));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) {
    return absl::ErrnoToStatus(err, absl::StrCat(dir, ": fsync of directory failed"));
  }
  return absl::OkStatus();
}

absl::Status RenameDurably(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(to, ": cannot rename ", from, " to it"));
  }
  const std::string a = ParentOf(from), b = ParentOf(to);
  RETURN_IF_ERROR(SyncDirectory(b));
  return a == b ? absl::OkStatus() : SyncDirectory(a);
}

}  // namespace quant
