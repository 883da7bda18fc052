// Service processes for tests: quant-coordinator and quant-worker started for real on loopback
// (fork + exec), their addresses read from the lines they print, killed with SIGKILL.
#pragma once

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "proto/quant.grpc.pb.h"

namespace quant::testing {

namespace fs = std::filesystem;

// Starts argv[0] with stdout on a pipe (stderr to `stderr_path` when given) and reads its first
// `lines` lines of output.
inline pid_t Spawn(std::vector<std::string> args, int lines, std::vector<std::string>* out,
                   const std::string& stderr_path = "") {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    if (!stderr_path.empty()) {
      FILE* err = std::fopen(stderr_path.c_str(), "a");
      if (err != nullptr) dup2(fileno(err), 2);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  FILE* f = fdopen(fds[0], "r");
  char line[512];
  for (int i = 0; i < lines && f && fgets(line, sizeof(line), f); ++i) {
    std::string s(line);
    s.erase(s.find_last_not_of("\n") + 1);
    out->push_back(s);
  }
  if (f) fclose(f);
  return pid;
}

// Runs a shell command; its stdout and stderr together, and its exit status in *rc.
inline std::string RunCommand(const std::string& cmd, int* rc) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while (p != nullptr && (n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  *rc = p != nullptr ? pclose(p) : -1;
  return out;
}

// `promtool check metrics` (Debian's prometheus) on an exposition, lint warnings included; the
// exposition and promtool's answer are left in `file` and `file`.out.
inline bool PromtoolAccepts(const std::string& exposition, const fs::path& file) {
  std::ofstream(file) << exposition;
  const int rc = std::system(("promtool check metrics < " + file.string() + " > " +
                              file.string() + ".out 2>&1").c_str());
  return rc == 0;
}

inline void KillNine(pid_t* pid) {
  if (*pid > 0) {
    kill(*pid, SIGKILL);
    waitpid(*pid, nullptr, 0);
    *pid = -1;
  }
}

// The worker token of the test coordinators: written beside the submit token's file as
// `<token file>.worker`; Worker below passes the last one written unless told otherwise.
inline constexpr char kWorkerToken[] = "w0rker-token";
inline std::string& TestWorkerTokenFile() {
  static std::string* file = new std::string;
  return *file;
}

// Adds the test worker token to a raw Workers call.
inline void AuthorizeWorker(grpc::ClientContext* ctx) {
  ctx->AddMetadata("authorization", std::string("Bearer ") + kWorkerToken);
}

// One coordinator process; its stdout's first two lines give the gRPC and HTTP addresses.
class Coordinator {
 public:
  // A 30 s lease unless `extra` gives --lease-seconds; stderr to `log` when given. Workers
  // authenticate with kWorkerToken (--worker-token-file) unless `extra` names worker auth.
  Coordinator(const fs::path& state, const fs::path& token_file,
              std::vector<std::string> extra = {}, const fs::path& log = {}) {
    std::vector<std::string> args = {COORDINATOR_BINARY, "--state", state.string(),
                                     "--token-file", token_file.string()};
    if (std::find(extra.begin(), extra.end(), "--worker-cert-cn") == extra.end() &&
        std::find(extra.begin(), extra.end(), "--worker-token-file") == extra.end()) {
      const std::string worker_token_file = token_file.string() + ".worker";
      std::ofstream(worker_token_file) << kWorkerToken << "\n";
      TestWorkerTokenFile() = worker_token_file;
      args.insert(args.end(), {"--worker-token-file", worker_token_file});
    }
    if (std::find(extra.begin(), extra.end(), "--lease-seconds") == extra.end()) {
      args.insert(args.end(), {"--lease-seconds", "30"});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<std::string> lines;
    pid_ = Spawn(args, 2, &lines, log.string());
    for (const std::string& s : lines) {
      if (s.rfind("grpc ", 0) == 0) grpc_ = s.substr(5);
      if (s.rfind("http ", 0) == 0) http_port_ = std::stoi(s.substr(s.rfind(':') + 1));
    }
    channel_ = grpc::CreateChannel(grpc_, grpc::InsecureChannelCredentials());
    jobs_ = quant::v1::Jobs::NewStub(channel_);
    workers_ = quant::v1::Workers::NewStub(channel_);
  }
  ~Coordinator() { Kill(); }
  void Kill() { KillNine(&pid_); }
  bool up() const { return !grpc_.empty() && http_port_ > 0; }
  const std::string& grpc_address() const { return grpc_; }
  quant::v1::Jobs::Stub& jobs() { return *jobs_; }
  quant::v1::Workers::Stub& workers() { return *workers_; }
  int http_port() const { return http_port_; }

 private:
  pid_t pid_ = -1;
  std::string grpc_;
  int http_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<quant::v1::Jobs::Stub> jobs_;
  std::unique_ptr<quant::v1::Workers::Stub> workers_;
};

#if defined(WORKER_BINARY)
// One quant-worker process; stderr (its task log) goes to `log`.
class Worker {
 public:
  Worker(const std::string& coordinator, const std::string& id, const fs::path& log,
         std::vector<std::string> extra = {}) {
    std::vector<std::string> lines;
    std::vector<std::string> args = {WORKER_BINARY, "--coordinator", coordinator, "--id", id};
    if (!TestWorkerTokenFile().empty() &&
        std::find(extra.begin(), extra.end(), "--token-file") == extra.end() &&
        std::find(extra.begin(), extra.end(), "--tls-cert") == extra.end()) {
      args.insert(args.end(), {"--token-file", TestWorkerTokenFile()});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = Spawn(args, 1, &lines, log.string());
    if (!lines.empty() && lines[0].rfind("worker ", 0) == 0) {
      http_port_ = std::stoi(lines[0].substr(lines[0].rfind(':') + 1));
    }
  }
  ~Worker() { Kill(); }
  void Kill() { KillNine(&pid_); }
  void Signal(int sig) const { kill(pid_, sig); }
  pid_t pid() const { return pid_; }
  bool up() const { return http_port_ > 0; }
  int http_port() const { return http_port_; }

 private:
  pid_t pid_ = -1;
  int http_port_ = 0;
};
#endif

// A file's bytes ("" when it cannot be read).
inline std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Files of checkpoint `a` missing from `b` or different in bytes (report.json holds timings,
// slq_bits.png is drawn from it).
inline std::vector<std::string> CheckpointDifferences(const fs::path& a, const fs::path& b) {
  std::vector<std::string> diff;
  for (const auto& e : fs::directory_iterator(a)) {
    const std::string name = e.path().filename().string();
    if (name == "report.json" || name == "slq_bits.png") continue;
    if (!fs::exists(b / name) || ReadFile(e.path()) != ReadFile(b / name)) diff.push_back(name);
  }
  return diff;
}

#if defined(QCTL_BINARY)
// `qctl submit` to `address` with `flags`; the job id it printed (-1 when none). `*output` (when
// given) receives what qctl printed, for the caller's failure message.
inline int64_t SubmitWithQctl(const std::string& address, const fs::path& token_file,
                              const std::string& flags, int* rc, std::string* output = nullptr) {
  const std::string out = RunCommand(std::string(QCTL_BINARY) + " submit --coordinator " +
                                         address + " --token-file " + token_file.string() + " " +
                                         flags,
                                     rc);
  if (output != nullptr) *output = out;
  const size_t pos = out.find("job ");
  return pos == std::string::npos ? -1 : std::stoll(out.substr(pos + 4));
}
#endif

// The job's status (with its tasks); a failed call reads as still running.
inline quant::v1::JobStatus JobStatusOf(Coordinator& c, int64_t job) {
  grpc::ClientContext ctx;
  quant::v1::JobRequest req;
  req.set_protocol(quant::v1::PROTOCOL_VERSION);
  req.set_job_id(job);
  quant::v1::JobStatus st;
  const grpc::Status s = c.jobs().Status(&ctx, req, &st);
  if (!s.ok()) {
    std::fprintf(stderr, "status: %s\n", s.error_message().c_str());
    st.set_state(quant::v1::JOB_RUNNING);  // unknown: keep waiting
  }
  return st;
}

// Polls until the job ends (or `pred` holds, when given) or `seconds` pass; the last status.
inline quant::v1::JobStatus WaitForJob(
    Coordinator& c, int64_t job, double seconds,
    const std::function<bool(const quant::v1::JobStatus&)>& pred = nullptr) {
  const auto end = std::chrono::steady_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  quant::v1::JobStatus st;
  while (std::chrono::steady_clock::now() < end) {
    st = JobStatusOf(c, job);
    if (pred ? pred(st) : st.state() != quant::v1::JOB_RUNNING) return st;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return st;
}

}  // namespace quant::testing
