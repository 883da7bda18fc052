#include "storage/free_space.h"

#include <cerrno>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace quant::storage {

namespace fs = std::filesystem;

absl::StatusOr<FreeSpace> FreeSpaceAt(const std::string& path, const StatvfsFn& statvfs_fn) {
  const StatvfsFn call = statvfs_fn ? statvfs_fn : StatvfsFn(::statvfs);
  std::error_code ec;
  fs::path p = fs::absolute(path, ec).lexically_normal();
  if (ec) return absl::InvalidArgumentError(absl::StrCat(path, ": ", ec.message()));
  while (true) {
    struct statvfs st {};
    if (call(p.c_str(), &st) == 0) {
      FreeSpace f;
      f.checked_path = p.string();
      f.free_bytes = static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
      f.filesystem = static_cast<uint64_t>(st.f_fsid);
      return f;
    }
    const int err = errno;
    // Not there yet: the filesystem it will be created on is its nearest existing ancestor's.
    if ((err != ENOENT && err != ENOTDIR) || p == p.root_path() || !p.has_parent_path()) {
      return absl::ErrnoToStatus(err, absl::StrCat(p.string(), ": cannot read its free space"));
    }
    p = p.parent_path();
  }
}

std::string HumanBytes(uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1e12) return absl::StrFormat("%.2f TB (%d bytes)", b / 1e12, bytes);
  if (b >= 1e9) return absl::StrFormat("%.2f GB (%d bytes)", b / 1e9, bytes);
  if (b >= 1e6) return absl::StrFormat("%.1f MB (%d bytes)", b / 1e6, bytes);
  return absl::StrFormat("%d bytes", bytes);
}

absl::Status CheckFreeSpace(const std::vector<SpaceNeed>& needs, const StatvfsFn& statvfs_fn) {
  struct Filesystem {
    FreeSpace space;
    uint64_t needed = 0;
    std::vector<std::string> what;
    std::string first_path;
  };
  std::map<uint64_t, Filesystem> by_fs;
  std::vector<uint64_t> order;
  for (const SpaceNeed& need : needs) {
    if (need.bytes == 0) continue;
    absl::StatusOr<FreeSpace> space = FreeSpaceAt(need.path, statvfs_fn);
    if (!space.ok()) return space.status();
    auto [it, added] = by_fs.try_emplace(space->filesystem);
    if (added) {
      it->second.space = *space;
      it->second.first_path = need.path;
      order.push_back(space->filesystem);
    }
    it->second.needed += need.bytes;
    it->second.what.push_back(absl::StrCat(need.what, " ", HumanBytes(need.bytes)));
  }
  for (uint64_t id : order) {
    const Filesystem& f = by_fs[id];
    if (f.needed <= f.space.free_bytes) continue;
    return absl::ResourceExhaustedError(absl::StrCat(
        f.first_path, ": not enough free disk space: ", HumanBytes(f.space.free_bytes),
        " free on the filesystem of ", f.space.checked_path, ", the job needs about ",
        HumanBytes(f.needed), " there (", absl::StrJoin(f.what, " + "),
        "; the preflight estimate, as qctl submit --dry-run gives it)"));
  }
  return absl::OkStatus();
}

}  // namespace quant::storage
