// PrepareLocalOutput: the output location's checks, run before a job reads its model.
#include "storage/output_location.h"

#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "storage/object_store.h"

namespace quant::storage {
namespace {

namespace fs = std::filesystem;

// True when `inner` is `outer` or lies beneath it, comparing whole path components.
bool IsWithin(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;  // a trailing separator
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

// The path with every existing component's symlinks resolved, made absolute.
fs::path Resolved(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) p = fs::absolute(path, ec).lexically_normal();
  // weakly_canonical keeps a trailing separator of a non-existent tail: drop it for comparisons.
  if (p.has_relative_path() && p.filename().empty()) p = p.parent_path();
  return p;
}

}  // namespace

absl::Status PrepareLocalOutput(const std::string& out_dir, const std::string& model_dir,
                                bool overwrite) {
  if (out_dir.empty()) return absl::InvalidArgumentError("--out is empty");
  for (const char c : out_dir) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError("--out holds a control character");
    }
  }
  const fs::path out = Resolved(out_dir);
  if (!model_dir.empty() && !IsS3Location(model_dir)) {
    const fs::path model = Resolved(model_dir);
    if (IsWithin(out, model)) {
      return absl::InvalidArgumentError(
          out == model ? absl::StrCat(out_dir, ": the output is the model directory")
                       : absl::StrCat(out_dir, ": the output is inside the model directory ",
                                      model.string()));
    }
    if (IsWithin(model, out)) {
      return absl::InvalidArgumentError(absl::StrCat(
          out_dir, ": the output contains the model directory ", model.string()));
    }
  }
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(out, ec);
  if (fs::exists(status)) {
    if (!fs::is_directory(status)) {
      return absl::FailedPreconditionError(
          absl::StrCat(out_dir, ": exists and is not a directory"));
    }
    if (!overwrite) {
      return absl::AlreadyExistsError(
          absl::StrCat(out_dir, ": output directory already exists (pass --overwrite)"));
    }
    if (!fs::is_empty(out, ec) && !fs::exists(out / kCheckpointManifest, ec)) {
      return absl::FailedPreconditionError(absl::StrCat(
          out_dir, ": holds files but no ", kCheckpointManifest,
          "; --overwrite replaces only an empty directory or a checkpoint this tool wrote"));
    }
  }
  const fs::path parent = out.parent_path();
  fs::create_directories(parent, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        out_dir, ": cannot create its parent directory ", parent.string(), ": ", ec.message()));
  }
  // The export writes a sibling temporary directory and renames it into place: the parent must
  // take a new directory. A probe says so even for root, which permission bits do not stop.
  std::string probe = (parent / ".qctl-write-check-XXXXXX").string();
  if (::mkdtemp(probe.data()) == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat(
        out_dir, ": cannot write in its parent directory ", parent.string(), ": ",
        std::strerror(errno)));
  }
  ::rmdir(probe.c_str());
  return absl::OkStatus();
}

}  // namespace quant::storage
