// Free space where a job will write, checked against what it needs before any expensive phase
// (issue 21 item 2): a job that runs for hours must not die at the export on a full disk.
#pragma once

#include <sys/statvfs.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace quant::storage {

// statvfs(2), or a fake of it in tests (a full disk cannot be made without privileges).
using StatvfsFn = std::function<int(const char* path, struct statvfs* out)>;

// The filesystem that would hold `path`: statvfs of its nearest existing ancestor (a path not
// yet created is checked where it will be created).
struct FreeSpace {
  std::string checked_path;  // the ancestor that exists
  uint64_t free_bytes = 0;   // f_bavail * f_frsize: what an unprivileged writer may use
  uint64_t filesystem = 0;   // f_fsid: needs on one filesystem add up
};
[[nodiscard]] absl::StatusOr<FreeSpace> FreeSpaceAt(const std::string& path,
                                                    const StatvfsFn& statvfs_fn = {});

// One place a job writes to and the bytes it will put there at most.
struct SpaceNeed {
  std::string path;  // local path (need not exist yet)
  uint64_t bytes = 0;
  std::string what;  // "the checkpoint", "the work directory": named in the error
};

// Fails (ResourceExhausted, one line naming the path, the free and the needed bytes and what
// needs them) when the needs on one filesystem add up to more than it has free. Needs of 0
// bytes are skipped. Reads nothing but statvfs.
[[nodiscard]] absl::Status CheckFreeSpace(const std::vector<SpaceNeed>& needs,
                                          const StatvfsFn& statvfs_fn = {});

// "1.23 GB (1234567890 bytes)": bytes as a person reads them, and exactly.
std::string HumanBytes(uint64_t bytes);

}  // namespace quant::storage
