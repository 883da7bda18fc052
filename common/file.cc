#include "common/file.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace quant {
namespace {

// `path` opened for reading, or the one-line reason it cannot be (a directory opens as a stream
// on Linux and only fails at the first read, with a misleading "read error").
absl::Status OpenForReading(const std::string& path, const std::string& what,
                            std::ifstream* in) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": is a directory; the ", what, " must be a file"));
  }
  in->open(path, std::ios::binary);
  if (!*in) return absl::NotFoundError(absl::StrCat(path, ": cannot read ", what));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, const std::string& what) {
  std::ifstream in;
  if (absl::Status s = OpenForReading(path, what, &in); !s.ok()) return s;
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error in ", what));
  std::string s = ss.str();
  if (s.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": empty ", what));
  return s;
}

absl::Status CheckFileReadable(const std::string& path, const std::string& what) {
  std::ifstream in;
  if (absl::Status s = OpenForReading(path, what, &in); !s.ok()) return s;
  char byte = 0;
  in.read(&byte, 1);
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error in ", what));
  if (in.gcount() == 0) return absl::InvalidArgumentError(absl::StrCat(path, ": empty ", what));
  return absl::OkStatus();
}

std::string UserCacheDir() {
  const char* cache = std::getenv("XDG_CACHE_HOME");
  if (cache != nullptr && *cache != 0) return cache;
  const char* home = std::getenv("HOME");
  return home != nullptr ? std::string(home) + "/.cache" : std::string();
}

}  // namespace quant
