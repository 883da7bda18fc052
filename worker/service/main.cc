// quant-worker: registers with quant-coordinator (protocol version checked there), then leases
// tasks one at a time, heartbeats while one runs, runs it with the same task code as
// `qctl quantize` (worker/tasks/service_tasks.h) and reports it complete or failed. Its output
// goes to the attempt path; the coordinator commits it only for the lease's current epoch.
// Serves /metrics, /healthz and /readyz; prints "worker ID http HOST:PORT" once registered.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/confine.h"
#include "common/file.h"
#include "common/http_endpoints.h"
#include "common/metrics.h"
#include "proto/quant.grpc.pb.h"
#include "proto/tls.h"
#include "storage/beneath.h"
#include "storage/object_store.h"
#include "storage/s3_flags.h"
#include "worker/exchange/exchange.h"
#if defined(QUANT_WITH_NCCL)
#include "worker/exchange/nccl_exchange.h"
#endif
#include "job/job_spec.h"
#include "job/plan_input.h"
#include "proto/task_wire.h"
#include "worker/runner/service_task.h"
#include "worker/tasks/task_guard.h"

namespace {

using quant::v1::Workers;
constexpr uint32_t kProtocol = quant::v1::PROTOCOL_VERSION;

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

void Log(const std::string& id, const std::string& text) {
  std::fprintf(stderr, "quant-worker %s: %s\n", id.c_str(), text.c_str());
}

// The worker token (--token-file), sent with every call; empty: none (mTLS identifies us, or the
// coordinator checks no worker credential).
std::string& WorkerToken() {
  static std::string* token = new std::string;
  return *token;
}

std::unique_ptr<grpc::ClientContext> Ctx(double seconds = 30) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!WorkerToken().empty()) ctx->AddMetadata("authorization", "Bearer " + WorkerToken());
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return ctx;
}

// The shortest gap between two heartbeats sent early to carry fresh progress (GSQ reports about
// once a second): `qctl watch` follows a step within about a second without a heartbeat per step.
constexpr auto kProgressGap = std::chrono::seconds(1);

// Renews the lease while the task runs, carrying the task's progress (what `qctl watch` shows);
// stops at destruction.
class Heartbeats {
 public:
  Heartbeats(Workers::Stub* stub, std::string id, quant::v1::TaskLease lease, double every)
      : start_(std::chrono::steady_clock::now()),
        thread_([=, this] { Run(stub, id, lease, every); }) {}
  bool revoked() const { return revoked_.load(); }
  // The task's phase and layer, before it starts: sent once the task has run kProgressGap.
  void Start(const quant::v1::TaskProgress& progress) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      progress_ = progress;
      fresh_ = true;
    }
    cv_.notify_all();
  }
  // GSQ's step report: sent with the next heartbeat, early if the last one is kProgressGap old.
  void Step(int64_t step, int64_t steps, double loss) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      progress_.set_step(step);
      progress_.set_steps(steps);
      progress_.set_loss(loss);
      const double seconds = Seconds(start_);
      progress_.set_eta_task_s(step > 0 ? seconds / static_cast<double>(step) *
                                              static_cast<double>(steps - step)
                                        : -1);
      fresh_ = true;
    }
    cv_.notify_all();
  }
  ~Heartbeats() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
 private:
  void Run(Workers::Stub* stub, const std::string& id, const quant::v1::TaskLease& lease,
           double every) {
    using Clock = std::chrono::steady_clock;
    const auto period = std::chrono::milliseconds(static_cast<int64_t>(every * 1000));
    auto last = Clock::now();
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      // Wakes for the period, for a stop, or for fresh progress once kProgressGap has passed.
      const auto due = [&] {
        return stop_ || Clock::now() - last >= period ||
               (fresh_ && Clock::now() - last >= kProgressGap);
      };
      if (!due()) {
        const bool was_fresh = fresh_;
        const auto until = was_fresh ? std::min(last + period, last + kProgressGap) : last + period;
        cv_.wait_until(lock, until, [&] { return stop_ || (fresh_ && !was_fresh); });
        continue;
      }
      if (stop_) return;
      last = Clock::now();
      fresh_ = false;
      quant::v1::HeartbeatRequest req;
      req.set_protocol(kProtocol);
      req.set_worker_id(id);
      *req.add_held() = lease;
      req.set_memory_bytes(static_cast<uint64_t>(quant::metrics::ResidentBytes()));
      if (!progress_.phase().empty()) {
        quant::v1::TaskProgress* p = req.add_progress();
        *p = progress_;
        p->set_seconds(Seconds(start_));
      }
      quant::v1::HeartbeatResponse resp;
      lock.unlock();
      const grpc::Status s = stub->Heartbeat(Ctx(10).get(), req, &resp);
      lock.lock();
      quant::metrics::Default()
          .GetCounter("quant_worker_heartbeats_total", "Heartbeats sent, by outcome.",
                      {{"outcome", s.ok() ? "ok" : "error"}})
          .Inc();
      if (s.ok() && resp.revoked_task_ids_size() > 0 && !revoked_) {
        // A cancelled job or a newer attempt: our output will not be committed, so the task
        // stops at its next step boundary (revoked()).
        revoked_ = true;
        Log(id, absl::StrCat("lease of ", lease.name(), " revoked: stopping it"));
      }
    }
  }
  const std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool fresh_ = false;                    // progress not yet sent (under mu_)
  quant::v1::TaskProgress progress_;     // under mu_
  std::atomic<bool> revoked_{false};  // set by the heartbeat thread, read by the task
  std::thread thread_;
};

// The gang's rendezvous through the coordinator (Workers.StoreSet / StoreGet).
class CoordinatorStore : public quant::exchange::RendezvousStore {
 public:
  CoordinatorStore(Workers::Stub* stub, std::string worker_id)
      : stub_(stub), worker_id_(std::move(worker_id)) {}
  absl::Status Set(const std::string& key, const std::string& value) override {
    quant::v1::StoreRequest req;
    req.set_protocol(kProtocol);
    req.set_key(key);
    req.set_value(value);
    req.set_worker_id(worker_id_);
    quant::v1::StoreResponse resp;
    const grpc::Status s = stub_->StoreSet(Ctx(10).get(), req, &resp);
    if (!s.ok()) return absl::UnavailableError("rendezvous set: " + s.error_message());
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key) override {
    quant::v1::StoreRequest req;
    req.set_protocol(kProtocol);
    req.set_key(key);
    req.set_worker_id(worker_id_);
    quant::v1::StoreResponse resp;
    const grpc::Status s = stub_->StoreGet(Ctx(10).get(), req, &resp);
    if (!s.ok()) return absl::UnavailableError("rendezvous get: " + s.error_message());
    if (!resp.found()) return std::optional<std::string>();
    return std::optional<std::string>(resp.value());
  }

 private:
  Workers::Stub* stub_;
  std::string worker_id_;
};

// The phase a task shows as progress: the names `qctl quantize --progress` uses.
std::string PhaseName(const quant::tasks::Task& task, const quant::tasks::QuantizeJobSpec& spec) {
  using quant::tasks::TaskKind;
  switch (task.kind) {
    case TaskKind::kQuantize:
      return spec.method == quant::tasks::Method::kRtn ? "rtn" : "gptq";
    case TaskKind::kEvaluate: return "eval";
    default: return std::string(quant::tasks::TaskKindName(task.kind));
  }
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
  std::string token_file;
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
      std::fprintf(stderr, "quant-worker: error: %s\n", std::string(token.status().message()).c_str());
      return 1;
    }
    WorkerToken() = std::string(absl::StripAsciiWhitespace(*token));
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
  auto stub = Workers::NewStub(channel);

  quant::v1::RegisterRequest reg;
  reg.set_protocol(kProtocol);
  reg.set_worker_id(id);
  reg.mutable_resources()->set_cpu_cores(static_cast<int>(std::thread::hardware_concurrency()));
  reg.mutable_resources()->set_device(device);
  quant::v1::RegisterResponse registered;
  grpc::Status s;
  for (int attempt = 0; attempt < 60; ++attempt) {
    s = stub->Register(Ctx(10).get(), reg, &registered);
    if (s.ok() || s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  if (!s.ok()) {
    Log(id, absl::StrCat("error: register with ", coordinator, ": ", s.error_message()));
    return 1;
  }
  std::printf("worker %s http %s:%d\n", id.c_str(), http_host.c_str(), (*http)->port());
  std::fflush(stdout);

  auto& metrics = quant::metrics::Default();
  auto idle_since = std::chrono::steady_clock::now();
  while (true) {
    quant::v1::LeaseRequest lreq;
    lreq.set_protocol(kProtocol);
    lreq.set_worker_id(id);
    quant::v1::LeaseResponse lease;
    s = stub->Lease(Ctx(10).get(), lreq, &lease);
    if (!s.ok() || !lease.has_task()) {
      if (idle_exit > 0 && Seconds(idle_since) > idle_exit) return 0;
      const double wait = s.ok() ? std::max(0.1, lease.retry_after_seconds()) : 1.0;
      std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(wait * 1000)));
      continue;
    }
    const quant::v1::TaskLease& t = lease.task();
    const auto start = std::chrono::steady_clock::now();
    absl::Status result;
    {
      // The heartbeat names the lease (job, task, epoch), not its task's inputs.
      quant::v1::TaskLease held;
      held.set_job_id(t.job_id());
      held.set_task_id(t.task_id());
      held.set_epoch(t.epoch());
      held.set_name(t.name());
      Heartbeats beats(stub.get(), id, held, registered.heartbeat_seconds());
      const std::vector<std::string> roots(t.roots().begin(), t.roots().end());
      // Every input this task opens must lie inside the roots or the job's scratch, checked on
      // the open file (a path checked below can still be swapped before the open, and files
      // inside the model directory are not checked by path at all).
      std::optional<quant::ScopedReadRoots> confined;
      if (!roots.empty()) {
        std::vector<std::string> readable = roots;
        readable.push_back(t.job_dir());
        confined.emplace(readable);
      }
      auto spec = quant::tasks::SpecFromJson(t.spec_json());
      // The job's paths against the lease's roots, at use, before anything is read: a path
      // swapped for a symlink after the submission is refused here; the checkpoint itself is
      // written through a directory opened beneath its root (storage::OpenDirBeneath).
      absl::Status inside =
          spec.ok() ? quant::tasks::CheckSpecInsideRoots(*spec, roots,
                                                         "now resolves outside the allowed roots")
                    : spec.status();
      // The task as the coordinator planned it, with its inputs and attempt: never re-planned.
      absl::StatusOr<quant::tasks::LeasedTask> leased =
          inside.ok() ? quant::wire::LeasedTaskFromProto(t.task())
                      : absl::StatusOr<quant::tasks::LeasedTask>(inside);
      if (leased.ok() && leased->task.id != t.task_id()) {
        leased = absl::InvalidArgumentError(absl::StrCat("lease of task ", t.task_id(),
                                                         " names task ", leased->task.id));
      }
      result = leased.status();
      if (leased.ok()) {
        const quant::tasks::Task* task = &leased->task;
        {
          std::string& attempt = leased->output.attempt;
          std::unique_ptr<quant::storage::PinnedDir> out_parent;
          if (result.ok() && !roots.empty() && task->kind == quant::tasks::TaskKind::kWrite &&
              !quant::storage::IsS3Location(spec->out_dir)) {
            // The checkpoint's attempt sits beside the output: written through its parent
            // opened beneath the root, whatever the path does meanwhile.
            auto parent = quant::storage::OpenDirBeneath(
                roots, std::filesystem::path(attempt).parent_path().string(), /*create=*/true);
            result = parent.status();
            if (parent.ok()) {
              out_parent = std::move(*parent);
              attempt = out_parent->path() + "/" +
                        std::filesystem::path(attempt).filename().string();
            }
          }
          Log(id, absl::StrCat("job ", t.job_id(), " ", task->Name(), " epoch ", t.epoch(),
                               task->gang > 1 ? absl::StrCat(" rank ", t.rank()) : ""));
          std::unique_ptr<quant::exchange::Exchange> exchange;
          if (result.ok() && task->gang > 1) {
            // One connection per gang and attempt: the rendezvous keys carry the epoch.
            CoordinatorStore store(stub.get(), id);
            const std::string prefix =
                absl::StrCat("g/", t.job_id(), "/", t.task_id(), "/", t.epoch(), "/");
            const auto watchdog =
                std::chrono::milliseconds(static_cast<int64_t>(exchange_timeout * 1000));
#if defined(QUANT_WITH_NCCL)
            if (device == "cuda") {  // NCCL between GPU workers (each sees its GPU as 0)
              auto connected = quant::exchange::ConnectNccl(&store, prefix, t.rank(), task->gang,
                                                            /*device=*/0, watchdog);
              if (connected.ok()) exchange = std::move(*connected);
              result = connected.status();
            } else
#endif
            {
              auto connected = quant::exchange::ConnectGloo(&store, prefix, t.rank(), task->gang,
                                                            exchange_host, watchdog);
              if (connected.ok()) exchange = std::move(*connected);
              result = connected.status();
            }
          }
          if (result.ok()) {
            quant::v1::TaskProgress progress;
            progress.set_job_id(t.job_id());
            progress.set_task_id(t.task_id());
            progress.set_epoch(t.epoch());
            progress.set_phase(PhaseName(*task, *spec));
            progress.set_layer(task->layer);
            progress.set_eta_task_s(-1);
            beats.Start(progress);
            // Whatever the task throws is a failed attempt with one line (the job's log and
            // `qctl status` show it), not a crash seen only as an expired lease.
            result = quant::tasks::GuardTask(*task, [&] {
              return quant::tasks::RunServiceTask(
                  *spec, *leased, exchange.get(),
                  {.should_stop = [&beats] { return beats.revoked(); },
                   .on_gsq_step = [&beats](int64_t step, int64_t steps,
                                           double loss) { beats.Step(step, steps, loss); }});
            });
          }
          if (beats.revoked()) {
            // Nothing of a revoked attempt is committed: remove what it wrote now.
            std::error_code ec;
            std::filesystem::remove_all(attempt, ec);
            if (result.ok()) result = absl::CancelledError("lease revoked");
          }
        }
      }
    }
    const double seconds = Seconds(start);
    quant::v1::CompleteRequest done;
    done.set_protocol(kProtocol);
    done.set_worker_id(id);
    done.set_job_id(t.job_id());
    done.set_task_id(t.task_id());
    done.set_epoch(t.epoch());
    done.set_ok(result.ok());
    done.set_error(std::string(result.message()));
    done.set_seconds(seconds);
    done.set_rank(t.rank());
    quant::v1::CompleteResponse committed;
    s = stub->Complete(Ctx(60).get(), done, &committed);
    metrics.GetCounter("quant_worker_tasks_total", "Tasks run by this worker, by outcome.",
                       {{"outcome", !result.ok() ? "failed" : committed.committed() ? "committed"
                                                                                : "discarded"}})
        .Inc();
    metrics.GetHistogram("quant_worker_task_duration_seconds", "Task durations on this worker.",
                         quant::metrics::DurationBounds())
        .Observe(seconds);
    // A message from inside the task names it already (GuardTask puts the name first).
    const std::string what(result.message());
    Log(id, absl::StrCat(result.ok() ? t.name() + " done"
                         : what.starts_with(t.name() + ":") ? "failed: " + what
                                                             : t.name() + " failed: " + what,
                         " in ", seconds, " s",
                         s.ok() && !committed.committed() && result.ok() ? " (stale: discarded)"
                                                                         : ""));
    idle_since = std::chrono::steady_clock::now();
  }
}
