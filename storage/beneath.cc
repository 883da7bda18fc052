// OpenDirBeneath: openat2(2) with RESOLVE_BENEATH from the root's descriptor, one prefix of the
// path at a time so that missing components can be created in the directory already pinned.
#include "storage/beneath.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "storage/object_store.h"

namespace quant::storage {
namespace {

namespace fs = std::filesystem;

int OpenAt2(int dirfd, const std::string& path) {
  struct open_how how = {};
  how.flags = O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof(how)));
}

// `dir` relative to `root` when it lies beneath it (lexically, both normalised), else empty.
std::optional<fs::path> Below(const fs::path& dir, const fs::path& root) {
  const fs::path rel = dir.lexically_normal().lexically_relative(root.lexically_normal());
  if (rel.empty() || *rel.begin() == "..") return std::nullopt;
  return rel;
}

}  // namespace

PinnedDir::~PinnedDir() { ::close(fd_); }

std::string PinnedDir::path() const { return absl::StrCat("/proc/self/fd/", fd_); }

absl::StatusOr<std::unique_ptr<PinnedDir>> OpenDirBeneath(const std::vector<std::string>& roots,
                                                          const std::string& dir, bool create) {
  const fs::path target(dir);
  if (!target.is_absolute()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": not an absolute path"));
  }
  for (const std::string& root : roots) {
    std::optional<fs::path> rel = Below(target, root);
    std::error_code ec;
    const fs::path canonical_root = fs::weakly_canonical(root, ec);
    if (!rel && !ec) rel = Below(target, canonical_root);
    if (!rel) continue;
    int fd = ::open(root.c_str(), O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(root, ": cannot open the root"));
    }
    fs::path prefix;
    for (const fs::path& part : *rel) {
      if (part == ".") continue;
      prefix /= part;
      int next = OpenAt2(fd, prefix.string());
      if (next < 0 && errno == ENOENT && create) {
        // `fd` is the pinned parent of this component: create it there, then resolve again.
        // (The first component's parent is the root's descriptor itself.)
        const int parent = prefix.has_parent_path()
                               ? OpenAt2(fd, prefix.parent_path().string())
                               : ::dup(fd);
        if (parent >= 0) {
          if (::mkdirat(parent, part.c_str(), 0755) != 0 && errno != EEXIST) {
            const int err = errno;
            ::close(parent);
            ::close(fd);
            return absl::ErrnoToStatus(err, absl::StrCat(dir, ": cannot create ", prefix.string(),
                                                         " beneath ", root));
          }
          ::close(parent);
        }
        next = OpenAt2(fd, prefix.string());
      }
      if (next < 0) {
        const int err = errno;
        ::close(fd);
        if (err == EXDEV || err == ELOOP) {
          return absl::PermissionDeniedError(absl::StrCat(
              dir, ": ", prefix.string(), " leads out of the root ", root,
              " (a symlink or \"..\"); refusing to follow it"));
        }
        return absl::ErrnoToStatus(err, absl::StrCat(dir, ": cannot open ", prefix.string(),
                                                     " beneath ", root));
      }
      ::close(next);
    }
    // The whole path once more, from the root: the descriptor that is returned.
    const int pinned = rel->empty() || *rel == "." ? ::dup(fd) : OpenAt2(fd, rel->string());
    const int err = errno;
    ::close(fd);
    if (pinned < 0) {
      return absl::ErrnoToStatus(err, absl::StrCat(dir, ": cannot open beneath ", root));
    }
    return std::make_unique<PinnedDir>(pinned);
  }
  return absl::PermissionDeniedError(
      absl::StrCat(dir, ": outside the allowed roots"));
}

bool ResolvesInside(const std::string& path, const std::vector<std::string>& roots) {
  if (IsS3Location(path)) {
    if (path.find("/../") != std::string::npos || path.ends_with("/..")) return false;
    for (std::string root : roots) {
      while (root.size() > 5 && root.back() == '/') root.pop_back();
      if (IsS3Location(root) && (path == root || path.starts_with(root + "/"))) return true;
    }
    return false;
  }
  std::error_code ec;
  const fs::path real = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) return false;
  for (const std::string& root : roots) {
    if (IsS3Location(root)) continue;
    const fs::path r = fs::weakly_canonical(fs::absolute(root, ec), ec);
    if (ec) continue;
    if (Below(real, r)) return true;
  }
  return false;
}

}  // namespace quant::storage
