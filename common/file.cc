#include "common/file.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/confine.h"
#include "common/status.h"

namespace quant {

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, const std::string& what) {
  ASSIGN_OR_RETURN(UniqueFile file, OpenInputFile(path, what));
  std::string s;
  char buffer[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) s.append(buffer, n);
  if (std::ferror(file.get()) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": read error in ", what));
  }
  if (s.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": empty ", what));
  return s;
}

absl::Status CheckFileReadable(const std::string& path, const std::string& what) {
  ASSIGN_OR_RETURN(UniqueFile file, OpenInputFile(path, what));
  const int byte = std::fgetc(file.get());
  if (byte == EOF && std::ferror(file.get()) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": read error in ", what));
  }
  if (byte == EOF) return absl::InvalidArgumentError(absl::StrCat(path, ": empty ", what));
  return absl::OkStatus();
}

std::string UserCacheDir() {
  const char* cache = std::getenv("XDG_CACHE_HOME");
  if (cache != nullptr && *cache != 0) return cache;
  const char* home = std::getenv("HOME");
  return home != nullptr ? std::string(home) + "/.cache" : std::string();
}

}  // namespace quant
