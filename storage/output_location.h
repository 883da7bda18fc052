// Checks a local output directory before any work is done, so that a job never runs for minutes
// and then dies at the export on a location it could have refused at once.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace quant::storage {

// The file a checkpoint of ours holds, written last (DESIGN.md section 7): what marks a
// directory as this tool's output, which --overwrite may replace.
inline constexpr char kCheckpointManifest[] = "quant_manifest.json";

// Prepares `out_dir` (a local path) to receive a checkpoint exported from `model_dir` (local
// path or s3:// location; only a local one is compared). In order, each failure one line:
//   - `out_dir` is empty or holds a control character;
//   - `out_dir` is the model directory, is inside it, or contains it (symlinks resolved);
//   - `out_dir` exists and is not a directory;
//   - `out_dir` exists and `overwrite` is false, or it holds files but no kCheckpointManifest
//     (--overwrite replaces only an empty directory or a checkpoint this tool wrote);
//   - its parent cannot be created (created as `mkdir -p` would) or is not writable (checked by
//     creating and removing a probe directory in it: root passes permission bits, so
//     access(2) would not tell).
// Touches nothing but the missing parents and the probe; reads nothing of the model.
[[nodiscard]] absl::Status PrepareLocalOutput(const std::string& out_dir,
                                              const std::string& model_dir, bool overwrite);

}  // namespace quant::storage
