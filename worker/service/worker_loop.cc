// quant-worker's loop over a CoordinatorClient (see worker_loop.h).
#include "worker/service/worker_loop.h"

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/confine.h"
#include "common/metrics.h"
#include "proto/task_wire.h"
#include "storage/beneath.h"
#include "storage/object_store.h"
#include "worker/tasks/task_guard.h"

namespace quant::worker {
namespace {

constexpr uint32_t kProtocol = v1::PROTOCOL_VERSION;

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

void LogLine(const std::string& id, const std::string& text) {
  std::fprintf(stderr, "quant-worker %s: %s\n", id.c_str(), text.c_str());
}

// The shortest gap between two heartbeats sent early to carry fresh progress (GSQ reports about
// once a second): `qctl watch` follows a step within about a second without a heartbeat per step.
constexpr auto kProgressGap = std::chrono::seconds(1);

// Renews the lease while the task runs, carrying the task's progress (what `qctl watch` shows);
// stops at destruction.
class Heartbeats {
 public:
  Heartbeats(CoordinatorClient* client, std::string id, v1::TaskLease lease, double every)
      : start_(std::chrono::steady_clock::now()),
        thread_([=, this] { Run(client, id, lease, every); }) {}
  bool revoked() const { return revoked_.load(); }
  // The task's phase and layer, before it starts: sent once the task has run kProgressGap.
  void Start(const v1::TaskProgress& progress) {
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
      progress_.set_eta_task_s(
          step > 0 ? seconds / static_cast<double>(step) * static_cast<double>(steps - step) : -1);
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
  void Run(CoordinatorClient* client, const std::string& id, const v1::TaskLease& lease,
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
      v1::HeartbeatRequest req;
      req.set_protocol(kProtocol);
      req.set_worker_id(id);
      *req.add_held() = lease;
      req.set_memory_bytes(static_cast<uint64_t>(metrics::ResidentBytes()));
      if (!progress_.phase().empty()) {
        v1::TaskProgress* p = req.add_progress();
        *p = progress_;
        p->set_seconds(Seconds(start_));
      }
      lock.unlock();
      const absl::StatusOr<v1::HeartbeatResponse> resp = client->Heartbeat(req);
      lock.lock();
      metrics::Default()
          .GetCounter("quant_worker_heartbeats_total", "Heartbeats sent, by outcome.",
                      {{"outcome", resp.ok() ? "ok" : "error"}})
          .Inc();
      if (resp.ok() && resp->revoked_task_ids_size() > 0 && !revoked_) {
        // A cancelled job or a newer attempt: our output will not be committed, so the task
        // stops at its next step boundary (revoked()).
        revoked_ = true;
        LogLine(id, absl::StrCat("lease of ", lease.name(), " revoked: stopping it"));
      }
    }
  }
  const std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool fresh_ = false;                // progress not yet sent (under mu_)
  v1::TaskProgress progress_;         // under mu_
  std::atomic<bool> revoked_{false};  // set by the heartbeat thread, read by the task
  std::thread thread_;
};

// The gang's rendezvous through the coordinator (Workers.StoreSet / StoreGet).
class CoordinatorStore : public exchange::RendezvousStore {
 public:
  CoordinatorStore(CoordinatorClient* client, std::string worker_id)
      : client_(client), worker_id_(std::move(worker_id)) {}
  absl::Status Set(const std::string& key, const std::string& value) override {
    v1::StoreRequest req;
    req.set_protocol(kProtocol);
    req.set_key(key);
    req.set_value(value);
    req.set_worker_id(worker_id_);
    const absl::Status s = client_->StoreSet(req);
    if (!s.ok()) return absl::UnavailableError(absl::StrCat("rendezvous set: ", s.message()));
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key) override {
    v1::StoreRequest req;
    req.set_protocol(kProtocol);
    req.set_key(key);
    req.set_worker_id(worker_id_);
    const absl::StatusOr<v1::StoreResponse> resp = client_->StoreGet(req);
    if (!resp.ok()) {
      return absl::UnavailableError(absl::StrCat("rendezvous get: ", resp.status().message()));
    }
    if (!resp->found()) return std::optional<std::string>();
    return std::optional<std::string>(resp->value());
  }

 private:
  CoordinatorClient* client_;
  std::string worker_id_;
};

// The phase a task shows as progress: the names `qctl quantize --progress` uses.
std::string PhaseName(const tasks::Task& task, const tasks::QuantizeJobSpec& spec) {
  using tasks::TaskKind;
  switch (task.kind) {
    case TaskKind::kQuantize:
      return spec.method == tasks::Method::kRtn ? "rtn" : "gptq";
    case TaskKind::kEvaluate:
      return "eval";
    default:
      return std::string(tasks::TaskKindName(task.kind));
  }
}

}  // namespace

WorkerLoop::WorkerLoop(CoordinatorClient* client, WorkerOptions options, TaskFunction run_task,
                       ConnectGangFunction connect_gang)
    : client_(client),
      options_(std::move(options)),
      run_task_(std::move(run_task)),
      connect_gang_(std::move(connect_gang)) {}

void WorkerLoop::Log(const std::string& text) const { LogLine(options_.id, text); }

absl::Status WorkerLoop::Register() {
  v1::RegisterRequest reg;
  reg.set_protocol(kProtocol);
  reg.set_worker_id(options_.id);
  reg.mutable_resources()->set_cpu_cores(static_cast<int>(std::thread::hardware_concurrency()));
  reg.mutable_resources()->set_device(options_.device);
  absl::StatusOr<v1::RegisterResponse> registered;
  for (int attempt = 0; attempt < options_.register_attempts; ++attempt) {
    registered = client_->Register(reg);
    if (registered.ok() || registered.status().code() != absl::StatusCode::kUnavailable) break;
    std::this_thread::sleep_for(
        std::chrono::milliseconds(static_cast<int64_t>(options_.register_retry_seconds * 1000)));
  }
  if (!registered.ok()) return registered.status();
  heartbeat_seconds_ = registered->heartbeat_seconds();
  return absl::OkStatus();
}

void WorkerLoop::Run() {
  auto idle_since = std::chrono::steady_clock::now();
  while (true) {
    double wait = 0;
    if (RunOnce(&wait)) {
      idle_since = std::chrono::steady_clock::now();
      continue;
    }
    if (options_.exit_when_idle_seconds > 0 &&
        Seconds(idle_since) > options_.exit_when_idle_seconds) {
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(wait * 1000)));
  }
}

bool WorkerLoop::RunOnce(double* retry_after_seconds) {
  v1::LeaseRequest lreq;
  lreq.set_protocol(kProtocol);
  lreq.set_worker_id(options_.id);
  const absl::StatusOr<v1::LeaseResponse> lease = client_->Lease(lreq);
  if (!lease.ok() || !lease->has_task()) {
    if (retry_after_seconds != nullptr) {
      *retry_after_seconds = lease.ok() ? std::max(0.1, lease->retry_after_seconds()) : 1.0;
    }
    return false;
  }
  const v1::TaskLease& t = lease->task();
  const auto start = std::chrono::steady_clock::now();
  const absl::Status result = RunLease(t);
  const double seconds = Seconds(start);
  v1::CompleteRequest done;
  done.set_protocol(kProtocol);
  done.set_worker_id(options_.id);
  done.set_job_id(t.job_id());
  done.set_task_id(t.task_id());
  done.set_epoch(t.epoch());
  done.set_ok(result.ok());
  done.set_error(std::string(result.message()));
  done.set_seconds(seconds);
  done.set_rank(t.rank());
  const absl::StatusOr<v1::CompleteResponse> committed = client_->Complete(done);
  const bool was_committed = committed.ok() && committed->committed();
  auto& metrics = metrics::Default();
  metrics
      .GetCounter("quant_worker_tasks_total", "Tasks run by this worker, by outcome.",
                  {{"outcome", !result.ok()    ? "failed"
                               : was_committed ? "committed"
                                               : "discarded"}})
      .Inc();
  metrics
      .GetHistogram("quant_worker_task_duration_seconds", "Task durations on this worker.",
                    metrics::DurationBounds())
      .Observe(seconds);
  // A message from inside the task names it already (GuardTask puts the name first).
  const std::string what(result.message());
  Log(absl::StrCat(result.ok()                        ? t.name() + " done"
                   : what.starts_with(t.name() + ":") ? "failed: " + what
                                                      : t.name() + " failed: " + what,
                   " in ", seconds, " s",
                   committed.ok() && !was_committed && result.ok() ? " (stale: discarded)" : ""));
  return true;
}

absl::Status WorkerLoop::RunLease(const v1::TaskLease& t) {
  // The heartbeat names the lease (job, task, epoch), not its task's inputs.
  v1::TaskLease held;
  held.set_job_id(t.job_id());
  held.set_task_id(t.task_id());
  held.set_epoch(t.epoch());
  held.set_name(t.name());
  Heartbeats beats(client_, options_.id, held, heartbeat_seconds_);
  const std::vector<std::string> roots(t.roots().begin(), t.roots().end());
  // Every input this task opens must lie inside the roots or the job's scratch, checked on the
  // open file (a path checked below can still be swapped before the open, and files inside the
  // model directory are not checked by path at all).
  std::optional<ScopedReadRoots> confined;
  if (!roots.empty()) {
    std::vector<std::string> readable = roots;
    readable.push_back(t.job_dir());
    confined.emplace(readable);
  }
  absl::StatusOr<tasks::QuantizeJobSpec> spec = tasks::SpecFromJson(t.spec_json());
  // The job's paths against the lease's roots, at use, before anything is read: a path swapped
  // for a symlink after the submission is refused here; the checkpoint itself is written through
  // a directory opened beneath its root (storage::OpenDirBeneath).
  absl::Status result = spec.ok() ? tasks::CheckSpecInsideRoots(
                                        *spec, roots, "now resolves outside the allowed roots")
                                  : spec.status();
  // The task as the coordinator planned it, with its inputs and attempt: never re-planned.
  absl::StatusOr<tasks::LeasedTask> leased =
      result.ok() ? wire::LeasedTaskFromProto(t.task()) : absl::StatusOr<tasks::LeasedTask>(result);
  if (leased.ok() && leased->task.id != t.task_id()) {
    leased = absl::InvalidArgumentError(
        absl::StrCat("lease of task ", t.task_id(), " names task ", leased->task.id));
  }
  if (!leased.ok()) return leased.status();
  const tasks::Task& task = leased->task;
  std::string& attempt = leased->output.attempt;
  std::unique_ptr<storage::PinnedDir> out_parent;
  if (!roots.empty() && task.kind == tasks::TaskKind::kWrite &&
      !storage::IsS3Location(spec->out_dir)) {
    // The checkpoint's attempt sits beside the output: written through its parent opened
    // beneath the root, whatever the path does meanwhile.
    auto parent = storage::OpenDirBeneath(
        roots, std::filesystem::path(attempt).parent_path().string(), /*create=*/true);
    result = parent.status();
    if (parent.ok()) {
      out_parent = std::move(*parent);
      attempt = out_parent->path() + "/" + std::filesystem::path(attempt).filename().string();
    }
  }
  Log(absl::StrCat("job ", t.job_id(), " ", task.Name(), " epoch ", t.epoch(),
                   task.gang > 1 ? absl::StrCat(" rank ", t.rank()) : ""));
  std::unique_ptr<exchange::Exchange> exchange;
  if (result.ok() && task.gang > 1) {
    // One connection per gang and attempt: the rendezvous keys carry the epoch.
    CoordinatorStore store(client_, options_.id);
    const std::string prefix =
        absl::StrCat("g/", t.job_id(), "/", t.task_id(), "/", t.epoch(), "/");
    absl::StatusOr<std::unique_ptr<exchange::Exchange>> connected =
        connect_gang_(&store, prefix, t.rank(), task.gang);
    result = connected.status();
    if (connected.ok()) exchange = std::move(*connected);
  }
  if (result.ok()) {
    v1::TaskProgress progress;
    progress.set_job_id(t.job_id());
    progress.set_task_id(t.task_id());
    progress.set_epoch(t.epoch());
    progress.set_phase(PhaseName(task, *spec));
    progress.set_layer(task.layer);
    progress.set_eta_task_s(-1);
    beats.Start(progress);
    // Whatever the task throws is a failed attempt with one line (the job's log and
    // `qctl status` show it), not a crash seen only as an expired lease.
    result = tasks::GuardTask(task, [&] {
      return run_task_(*spec, *leased, exchange.get(),
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
  return result;
}

}  // namespace quant::worker
