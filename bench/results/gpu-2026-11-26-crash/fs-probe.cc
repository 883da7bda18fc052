#include <cstdio>
#include <filesystem>
int main() {
  std::error_code ec;
  std::filesystem::create_directories("/tmp/fsprobe/a/b", ec);
  std::FILE* f = std::fopen("/tmp/fsprobe/a/b/file", "w");
  std::fputs("x", f);
  std::fclose(f);
  const auto n = std::filesystem::remove_all("/tmp/fsprobe", ec);
  std::printf("removed %d entries: %s\n", static_cast<int>(n), ec.message().c_str());
  return 0;
}
