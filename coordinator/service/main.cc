// quant-coordinator: the service's gRPC server (Jobs for qctl, Workers for quant-worker) over the
// SQLite state, with HTTP /metrics, /healthz and /readyz. Prints "grpc HOST:PORT" and
// "http HOST:PORT" once listening (port 0 picks a free one), then serves until killed.
#include <cstdio>
#include <fstream>
#include <optional>
#include <iostream>
#include <sstream>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "common/confine.h"
#include "common/file.h"
#include "common/http_endpoints.h"
#include "coordinator/service/coordinator_service.h"
#include "proto/tls.h"
#include "storage/s3_flags.h"

int main(int argc, char** argv) {
  CLI::App app{"quant-coordinator: jobs, leases and state for the quantization service"};
  std::string listen = "127.0.0.1:0", http_host = "127.0.0.1", state_path, token_file;
  int http_port = 0, max_attempts = 3;
  double lease_seconds = 60;
  app.add_option("--listen", listen, "gRPC address host:port")->capture_default_str();
  app.add_option("--http-host", http_host, "HTTP host for /metrics, /healthz, /readyz")
      ->capture_default_str();
  app.add_option("--http-port", http_port, "HTTP port (0: any free one)")->capture_default_str();
  app.add_option("--state", state_path, "SQLite state file (created if missing)")->required();
  app.add_option("--token-file", token_file, "file holding the bearer token for submit/cancel");
  std::string worker_token_file, worker_cert_cn;
  app.add_option("--worker-token-file", worker_token_file,
                 "file holding the workers' bearer token (distinct from --token-file): every "
                 "Workers call must carry it, or a worker certificate (--worker-cert-cn)");
  app.add_option("--worker-cert-cn", worker_cert_cn,
                 "with --tls-client-ca: a Workers call is also authenticated by a client "
                 "certificate whose subject CN starts with this (e.g. quant-worker)");
  std::vector<std::string> roots;
  app.add_option("--roots", roots,
                 "directories (or s3://bucket/prefix) every path of a job must resolve into "
                 "(symlinks followed)")
      ->delimiter(',');
  app.add_option("--lease-seconds", lease_seconds, "task lease length")->capture_default_str();
  app.add_option("--max-attempts", max_attempts, "attempts per task before the job fails")
      ->capture_default_str();
  quant::tls::Files tls;
  app.add_option("--tls-cert", tls.cert, "PEM certificate chain: serve gRPC over TLS");
  app.add_option("--tls-key", tls.key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", tls.ca,
                 "PEM CA: require and verify client certificates signed by it (mTLS)");
  bool keep_failed_scratch = false;
  app.add_flag("--keep-failed-scratch", keep_failed_scratch,
               "keep a failed or cancelled job's scratch directory (debugging); by default it "
               "is removed when the job ends");
  std::string scratch;
  app.add_option("--scratch", scratch,
                 "directory shared with the workers for jobs' intermediate outputs "
                 "(default: <state>.scratch)");
  quant::storage::S3Flags s3;
  s3.AddTo(&app);
  CLI11_PARSE(app, argc, argv);
  s3.Apply();
  if (scratch.empty()) scratch = state_path + ".scratch";

  quant::coordinator::ServiceOptions options;
  options.lease_seconds = lease_seconds;
  options.roots = roots;
  options.scratch = scratch;
  options.keep_failed_scratch = keep_failed_scratch;
  auto read_token = [](const std::string& file, const char* flag, std::string* out) {
    absl::StatusOr<std::string> text = quant::ReadWholeFile(file, flag);
    if (text.ok()) *out = std::string(absl::StripAsciiWhitespace(*text));
    if (!text.ok() || out->empty()) {
      std::fprintf(stderr, "quant-coordinator: error: %s %s: empty or unreadable\n", flag,
                   file.c_str());
      return false;
    }
    return true;
  };
  if (!token_file.empty() && !read_token(token_file, "--token-file", &options.token)) return 1;
  if (!worker_token_file.empty() &&
      !read_token(worker_token_file, "--worker-token-file", &options.worker_token)) {
    return 1;
  }
  options.worker_cert_cn = worker_cert_cn;
  if (!worker_cert_cn.empty() && tls.ca.empty()) {
    std::fprintf(stderr, "quant-coordinator: error: --worker-cert-cn needs --tls-client-ca "
                         "(client certificates are verified only with mTLS)\n");
    return 1;
  }
  if (!options.token.empty() && options.token == options.worker_token) {
    std::fprintf(stderr, "quant-coordinator: error: --worker-token-file must differ from "
                         "--token-file (a worker must not be able to submit, nor a client to "
                         "lease)\n");
    return 1;
  }
  if (!options.token.empty() && options.worker_token.empty() && worker_cert_cn.empty()) {
    // Guarding submissions but not workers would let anyone who reaches the port lease tasks
    // (with their specs), fail jobs and fill the rendezvous store.
    std::fprintf(stderr, "quant-coordinator: error: --token-file guards submissions but workers "
                         "would be unauthenticated: give --worker-token-file or "
                         "--worker-cert-cn\n");
    return 1;
  }
  quant::coordinator::StateOptions state_options;
  state_options.lease_seconds = lease_seconds;
  state_options.max_attempts = max_attempts;
  auto state = quant::coordinator::StateStore::Open(state_path, state_options);
  if (!state.ok()) {
    std::fprintf(stderr, "quant-coordinator: error: %s\n",
                 std::string(state.status().message()).c_str());
    return 1;
  }
  quant::coordinator::CoordinatorService service(state->get(), options);
  service.SweepEndedJobs();  // what jobs that ended while no coordinator ran left behind
  service.RunCoordinatorTasks();  // e.g. a solve whose probes committed before a restart
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  auto credentials = quant::tls::ServerCredentials(tls);
  if (!credentials.ok()) {
    std::fprintf(stderr, "quant-coordinator: error: %s\n",
                 std::string(credentials.status().message()).c_str());
    return 1;
  }
  // With --roots, what the coordinator reads for a job (the checkpoint it plans, the texts it
  // checks, the attempts' manifests) must lie inside the roots or the scratch, checked on the
  // open file: a file inside the model directory that is a symlink out of the roots is not
  // read. The process's own files (tokens, certificates) were read above.
  std::optional<quant::ScopedReadRoots> confined;
  if (!roots.empty()) {
    std::vector<std::string> readable = roots;
    readable.push_back(scratch);
    confined.emplace(readable);
  }
  builder.AddListeningPort(listen, *credentials, &grpc_port);
  builder.SetMaxReceiveMessageSize(4 << 20);  // bounded messages (DESIGN.md section 8)
  builder.RegisterService(static_cast<quant::v1::Jobs::Service*>(&service));
  builder.RegisterService(static_cast<quant::v1::Workers::Service*>(&service));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    std::fprintf(stderr, "quant-coordinator: error: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  auto http = quant::HttpEndpoints::Start(http_host, http_port,
                                          [&service] { service.RefreshGauges(); });
  if (!http.ok()) {
    std::fprintf(stderr, "quant-coordinator: error: %s\n",
                 std::string(http.status().message()).c_str());
    return 1;
  }
  const int bound = (*http)->port();
  const std::string host = listen.substr(0, listen.rfind(':'));
  std::printf("grpc %s:%d\nhttp %s:%d\n", host.c_str(), grpc_port, http_host.c_str(), bound);
  std::fflush(stdout);
  server->Wait();
  return 0;
}
