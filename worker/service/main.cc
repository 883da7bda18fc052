// quant-worker: registers with quant-coordinator (protocol version checked there), then leases
// tasks one at a time, heartbeats while one runs, runs it with the same task code as
// `qctl quantize` (worker/runner/service_task.h) and reports it complete or failed. Its output
// goes to the attempt path; the coordinator commits it only for the lease's current epoch.
// Serves /metrics, /healthz and /readyz; prints "worker ID http HOST:PORT" once registered.
// This file is flags and wiring: the loop is WorkerLoop (worker_loop.h) over a
// GrpcCoordinatorClient.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/http_endpoints.h"
#include "proto/tls.h"
#include "storage/s3_flags.h"
#include "worker/exchange/exchange.h"
#if defined(QUANT_WITH_NCCL)
#include "worker/exchange/nccl_exchange.h"
#endif
#include "worker/service/coordinator_client.h"
#include "worker/service/worker_loop.h"
#include "worker/runner/service_task.h"

namespace {

void Log(const std::string& id, const std::string& text) {
  std::fprintf(stderr, "quant-worker %s: %s\n", id.c_str(), text.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"quant-worker: runs quantization tasks leased from quant-coordinator"};
  std::string coordinator = "127.0.0.1:7070", id, http_host = "127.0.0.1", device = "cpu";
  int http_port = 0;
  double idle_exit = 0;
  app.add_option("--coordinator", coordinator, "quant-coordinator HOST:PORT")
      ->capture_default_str();
  app.add_option("--id", id, "worker id (default: hostname-pid)");
  app.add_option("--http-host", http_host, "HTTP host for /metrics, /healthz, /readyz")
      ->capture_default_str();
  app.add_option("--http-port", http_port, "HTTP port (0: any free one)")->capture_default_str();
  app.add_option("--device", device, "cpu or cuda (what this worker offers)")
      ->capture_default_str();
  app.add_option("--exit-when-idle", idle_exit,
                 "exit after this many seconds without a task (0: never)");
  quant::tls::Files tls;
  app.add_option("--tls-ca", tls.ca, "PEM CA that signed the coordinator's certificate (TLS)");
  app.add_option("--tls-cert", tls.cert, "PEM client certificate for mTLS");
  app.add_option("--tls-key", tls.key, "PEM private key of --tls-cert");
  std::string token_file, worker_token;
  app.add_option("--token-file", token_file,
                 "file holding the worker token (the coordinator's --worker-token-file)");
  std::string exchange_host = "127.0.0.1";
  double exchange_timeout = 60;
  app.add_option("--exchange-host", exchange_host,
                 "address this worker's expert exchange listens on (reachable by the gang)")
      ->capture_default_str();
  app.add_option("--exchange-timeout", exchange_timeout,
                 "watchdog of the gang's rendezvous and of every collective, seconds")
      ->capture_default_str();
  quant::storage::S3Flags s3;
  s3.AddTo(&app);
  CLI11_PARSE(app, argc, argv);
  s3.Apply();
  if (!token_file.empty()) {
    absl::StatusOr<std::string> token = quant::ReadWholeFile(token_file, "worker token file");
    if (!token.ok()) {
      std::fprintf(stderr, "quant-worker: error: %s\n",
                   std::string(token.status().message()).c_str());
      return 1;
    }
    worker_token = std::string(absl::StripAsciiWhitespace(*token));
  }
  if (id.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    id = absl::StrCat(host, "-", getpid());
  }
  auto http = quant::HttpEndpoints::Start(http_host, http_port);
  if (!http.ok()) {
    Log(id, absl::StrCat("error: ", http.status().message()));
    return 1;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(4 << 20);  // bounded messages (DESIGN.md section 8)
  auto credentials = quant::tls::ChannelCredentials(tls);
  if (!credentials.ok()) {
    Log(id, absl::StrCat("error: ", credentials.status().message()));
    return 1;
  }
  auto channel = grpc::CreateCustomChannel(coordinator, *credentials, args);
  quant::worker::GrpcCoordinatorClient client(channel, worker_token);

  // A gang's connection: NCCL between GPU workers (each sees its GPU as 0), else Gloo over TCP.
  const auto watchdog = std::chrono::milliseconds(static_cast<int64_t>(exchange_timeout * 1000));
  auto connect_gang = [&](quant::exchange::RendezvousStore* store, const std::string& prefix,
                          int rank,
                          int size) -> absl::StatusOr<std::unique_ptr<quant::exchange::Exchange>> {
#if defined(QUANT_WITH_NCCL)
    if (device == "cuda") {
      return quant::exchange::ConnectNccl(store, prefix, rank, size, /*device=*/0, watchdog);
    }
#endif
    return quant::exchange::ConnectGloo(store, prefix, rank, size, exchange_host, watchdog);
  };
  quant::worker::WorkerLoop loop(
      &client, {.id = id, .device = device, .exit_when_idle_seconds = idle_exit},
      [](const quant::tasks::QuantizeJobSpec& spec, const quant::tasks::LeasedTask& leased,
         quant::exchange::Exchange* exchange, quant::tasks::TaskHooks hooks) {
        return quant::tasks::RunServiceTask(spec, leased, exchange, std::move(hooks));
      },
      connect_gang);
  if (absl::Status s = loop.Register(); !s.ok()) {
    Log(id, absl::StrCat("error: register with ", coordinator, ": ", s.message()));
    return 1;
  }
  std::printf("worker %s http %s:%d\n", id.c_str(), http_host.c_str(), (*http)->port());
  std::fflush(stdout);
  loop.Run();
  return 0;
}
