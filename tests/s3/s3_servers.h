// A real S3 endpoint for tests: s3rver (npm, tests/s3/node_modules) on loopback behind
// tests/s3/sigv4_proxy.py, which recomputes every request's SigV4 signature with botocore and
// answers 403 SignatureDoesNotMatch to a wrong one. s3rver accepts the access key S3RVER with any
// secret; the proxy accepts only `secret`. Logs go to <dir>/s3rver.log and <dir>/proxy.log.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "tests/free_port.h"

namespace quant::testing {

class S3Servers {
 public:
  // Starts both and waits until the proxy answers (up to 10 s); port() is 0 on failure.
  S3Servers(const std::string& dir, const std::string& bucket, const std::string& secret)
      : dir_(dir) {
    const std::string tests = std::string(QUANT_SOURCE_DIR) + "/tests/s3";
    const int s3rver_port = FreePort();
    // s3rver exits on EPIPE when its stdout closes: it writes to its log file.
    s3rver_ =
        Spawn({"node", tests + "/node_modules/s3rver/bin/s3rver.js", "-d", dir + "/data", "-a",
               "127.0.0.1", "-p", std::to_string(s3rver_port), "--configure-bucket", bucket},
              dir + "/s3rver.log", nullptr);
    std::string line;
    proxy_ = Spawn({"python3", tests + "/sigv4_proxy.py", "--upstream-port",
                    std::to_string(s3rver_port), "--access-key", "S3RVER", "--secret-key", secret},
                   dir + "/proxy.log", &line);
    if (line.rfind("proxy ", 0) == 0) port_ = std::stoi(line.substr(6));
  }
  ~S3Servers() {
    for (pid_t p : {proxy_, s3rver_}) {
      if (p > 0) {
        kill(p, SIGKILL);
        waitpid(p, nullptr, 0);
      }
    }
  }
  S3Servers(const S3Servers&) = delete;
  S3Servers& operator=(const S3Servers&) = delete;

  int port() const { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Both servers' logs, for a failed test's output.
  std::string Logs() const {
    std::string all;
    for (const char* log : {"/proxy.log", "/s3rver.log"}) {
      std::ifstream in(dir_ + log);
      all += std::string("--- ") + (log + 1) + "\n" +
             std::string(std::istreambuf_iterator<char>(in), {}) + "\n";
    }
    return all;
  }

  // Runs `argv` with stdout to a pipe when `first_line` is set (its first line returned there),
  // stderr (and otherwise stdout) appended to `log`.
  static pid_t Spawn(const std::vector<std::string>& args, const std::string& log,
                     std::string* first_line) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    const pid_t pid = fork();
    if (pid == 0) {
      dup2(fds[1], 1);
      FILE* err = std::fopen(log.c_str(), "a");
      if (err != nullptr) dup2(fileno(err), 2);
      if (err != nullptr && first_line == nullptr) dup2(fileno(err), 1);
      close(fds[0]);
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execvp(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    if (first_line != nullptr) {
      FILE* f = fdopen(fds[0], "r");
      char line[256] = {0};
      if (f != nullptr && fgets(line, sizeof(line), f) != nullptr) *first_line = line;
      if (f != nullptr) fclose(f);
    } else {
      close(fds[0]);
    }
    return pid;
  }

 private:
  std::string dir_;
  pid_t s3rver_ = -1, proxy_ = -1;
  int port_ = 0;
};

}  // namespace quant::testing
