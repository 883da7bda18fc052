// Test helper: runs a command line (qctl, or a script that runs it) the way qctl_test's fixture
// does, through the shell, and reads back files. Header-only; tests only.
#ifndef QUANT_COORDINATOR_QCTL_QCTL_TEST_UTIL_H_
#define QUANT_COORDINATOR_QCTL_QCTL_TEST_UTIL_H_

#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace quant::qctl_test {

inline std::string Slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct CommandResult {
  int exit_code = -1;  // -1: killed by a signal
  std::string out;
  std::string err;
  double seconds = 0;  // wall time
};

// `command` run by /bin/sh with stdout and stderr captured in files under `scratch`.
inline CommandResult RunCommand(const std::string& command, const std::filesystem::path& scratch) {
  const std::filesystem::path out = scratch / "stdout", err = scratch / "stderr";
  const auto start = std::chrono::steady_clock::now();
  const int status = std::system((command + " >" + out.string() + " 2>" + err.string()).c_str());
  CommandResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = Slurp(out);
  r.err = Slurp(err);
  return r;
}

}  // namespace quant::qctl_test

#endif  // QUANT_COORDINATOR_QCTL_QCTL_TEST_UTIL_H_
