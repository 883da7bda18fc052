// Whole-file reads of outside input with the project's one-line errors.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace quant {

// The bytes of `path`; `what` names the file in errors ("calibration file"). An empty file is
// an error: no input of ours is legitimately empty.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, const std::string& what);

// What ReadWholeFile would refuse (cannot open, cannot read, empty), found by reading one byte:
// for inputs checked up front and read in pieces later.
absl::Status CheckFileReadable(const std::string& path, const std::string& what);

// The user's cache directory: $XDG_CACHE_HOME, else $HOME/.cache; "" when neither is set.
std::string UserCacheDir();

}  // namespace quant
