#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/atomic_file.h"
#include "worker/exchange/exchange.h"

namespace quant::exchange {

std::string DirectoryStore::Path(const std::string& key) const {
  std::string name;
  for (char c : key) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return dir_ + "/" + name;
}

absl::Status DirectoryStore::Set(const std::string& key, const std::string& value) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  // Readers see the whole value or nothing.
  absl::Status s = WriteFileAtomically(Path(key), value);
  return s.ok() ? s : absl::UnavailableError(s.message());
}

absl::StatusOr<std::optional<std::string>> DirectoryStore::Get(const std::string& key) {
  std::ifstream in(Path(key), std::ios::binary);
  if (!in) return std::optional<std::string>();
  std::stringstream ss;
  ss << in.rdbuf();
  return std::optional<std::string>(ss.str());
}

}  // namespace quant::exchange
