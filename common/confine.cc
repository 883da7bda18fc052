#include "common/confine.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace quant {
namespace {

std::mutex& RootsMutex() {
  static std::mutex mu;
  return mu;
}

// The current scope's dirs, canonical; null when reads are not confined.
std::shared_ptr<const std::vector<std::string>>& Roots() {
  static std::shared_ptr<const std::vector<std::string>> roots;
  return roots;
}

std::shared_ptr<const std::vector<std::string>> CurrentRoots() {
  std::lock_guard<std::mutex> lock(RootsMutex());
  return Roots();
}

bool Inside(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path == dir || (path.size() > dir.size() && path.starts_with(dir) &&
                         path[dir.size()] == '/');
}

}  // namespace

ScopedReadRoots::ScopedReadRoots(const std::vector<std::string>& dirs) {
  auto canonical = std::make_shared<std::vector<std::string>>();
  for (const std::string& d : dirs) {
    if (d.starts_with("s3://") || d.empty()) continue;
    std::error_code ec;
    std::filesystem::path p = std::filesystem::weakly_canonical(d, ec);
    canonical->push_back(ec ? d : p.string());
  }
  std::lock_guard<std::mutex> lock(RootsMutex());
  previous_ = std::exchange(Roots(), std::move(canonical));
}

ScopedReadRoots::~ScopedReadRoots() {
  std::lock_guard<std::mutex> lock(RootsMutex());
  Roots() = std::move(previous_);
}

absl::Status CheckOpenedInside(int fd, const std::string& path) {
  const std::shared_ptr<const std::vector<std::string>> roots = CurrentRoots();
  if (roots == nullptr) return absl::OkStatus();
  const std::string link = absl::StrCat("/proc/self/fd/", fd);
  std::string target(4096, '\0');
  const ssize_t n = ::readlink(link.c_str(), target.data(), target.size());
  if (n <= 0 || static_cast<size_t>(n) >= target.size()) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot tell where the opened file lies, so it is not read"));
  }
  target.resize(static_cast<size_t>(n));
  for (const std::string& dir : *roots) {
    if (Inside(target, dir)) return absl::OkStatus();
  }
  return absl::PermissionDeniedError(
      absl::StrCat(path, ": opens a file outside the allowed roots; it is not read"));
}

absl::StatusOr<UniqueFile> OpenInputFile(const std::string& path, const std::string& what) {
  // O_NONBLOCK: a FIFO (outside the roots or not) must not hang the open; cleared once checked.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot read ", what));
  UniqueFile file(::fdopen(fd, "rb"));
  if (file == nullptr) {
    ::close(fd);
    return absl::ResourceExhaustedError(absl::StrCat(path, ": cannot read ", what));
  }
  RETURN_IF_ERROR(CheckOpenedInside(fd, path));
  struct stat st;
  if (::fstat(fd, &st) != 0) return absl::NotFoundError(absl::StrCat(path, ": cannot read ", what));
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": is a directory; the ", what, " must be a file"));
  }
  if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode)) {  // a pipe: `--calib <(zcat ...)`
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": is not a regular file; the ", what, " must be one"));
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return file;
}

}  // namespace quant
