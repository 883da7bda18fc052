#include "coordinator/state/state_store.h"

#include "common/metrics.h"

#include <sqlite3.h>

#include <cmath>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"

namespace quant::coordinator {
namespace {

// One prepared statement; binds by position (1-based), steps, reads columns.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  absl::Status status() const {
    return rc_ == SQLITE_OK ? absl::OkStatus()
                            : absl::InternalError(absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& Bind(int i, double v) {
    sqlite3_bind_double(stmt_, i, v);
    return *this;
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  // True while a row is available; an error ends iteration with status() set.
  bool Row() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) rc_ = rc;
    return false;
  }
  absl::Status Run() {
    while (Row()) {
    }
    return status();
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  double Real(int col) const { return sqlite3_column_double(stmt_, col); }
  std::string Text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
};

// Every change is one transaction: BEGIN IMMEDIATE, then COMMIT, or ROLLBACK when not committed.
class Txn {
 public:
  explicit Txn(sqlite3* db) : db_(db) {
    ok_ = sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK;
  }
  ~Txn() {
    if (ok_ && !done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  absl::Status Begun() const {
    return ok_ ? absl::OkStatus()
               : absl::InternalError(absl::StrCat("sqlite: begin: ", sqlite3_errmsg(db_)));
  }
  absl::Status Commit() {
    done_ = true;
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return absl::InternalError(absl::StrCat("sqlite: commit: ", sqlite3_errmsg(db_)));
    }
    return absl::OkStatus();
  }

 private:
  sqlite3* db_;
  bool ok_ = false, done_ = false;
};

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  client_id TEXT NOT NULL UNIQUE,
  fingerprint TEXT NOT NULL,
  spec TEXT NOT NULL,
  status INTEGER NOT NULL,
  error TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS tasks (
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  task_id INTEGER NOT NULL,
  name TEXT NOT NULL,
  kind TEXT NOT NULL,
  layer INTEGER NOT NULL,
  status INTEGER NOT NULL,
  epoch INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  executions INTEGER NOT NULL DEFAULT 0,
  worker TEXT NOT NULL DEFAULT '',
  deadline REAL NOT NULL DEFAULT 0,
  not_before REAL NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (job_id, task_id));
CREATE TABLE IF NOT EXISTS deps (
  job_id INTEGER NOT NULL,
  task_id INTEGER NOT NULL,
  dep_id INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deps_by_task ON deps(job_id, task_id);
CREATE TABLE IF NOT EXISTS probe_cache (
  key TEXT NOT NULL,
  layer INTEGER NOT NULL,
  result TEXT NOT NULL,
  PRIMARY KEY (key, layer));
CREATE TABLE IF NOT EXISTS task_results (
  job_id INTEGER NOT NULL,
  task_id INTEGER NOT NULL,
  result TEXT NOT NULL,
  PRIMARY KEY (job_id, task_id));
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(status, job_id);
)sql";

TaskRecord ReadTask(const Stmt& s) {
  TaskRecord t;
  t.job_id = s.Int(0);
  t.task_id = s.Int(1);
  t.name = s.Text(2);
  t.kind = s.Text(3);
  t.layer = static_cast<int>(s.Int(4));
  t.status = static_cast<TaskStatus>(s.Int(5));
  t.epoch = s.Int(6);
  t.attempts = static_cast<int>(s.Int(7));
  t.executions = s.Int(8);
  t.worker = s.Text(9);
  t.deadline = s.Real(10);
  t.not_before = s.Real(11);
  t.last_error = s.Text(12);
  return t;
}

constexpr const char* kTaskColumns =
    "job_id, task_id, name, kind, layer, status, epoch, attempts, executions, worker, deadline, "
    "not_before, last_error";

}  // namespace

const char* JobStatusName(JobStatus s) {
  switch (s) {
    case JobStatus::kRunning: return "running";
    case JobStatus::kSucceeded: return "succeeded";
    case JobStatus::kFailed: return "failed";
    case JobStatus::kCancelled: return "cancelled";
  }
  return "?";
}

const char* TaskStatusName(TaskStatus s) {
  switch (s) {
    case TaskStatus::kPending: return "pending";
    case TaskStatus::kLeased: return "leased";
    case TaskStatus::kDone: return "done";
    case TaskStatus::kFailed: return "failed";
  }
  return "?";
}

bool IsHolder(const TaskRecord& task, const std::string& worker) {
  for (absl::string_view holder : absl::StrSplit(task.worker, ',')) {
    if (holder == worker) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& path,
                                                             const StateOptions& options) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
    const std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat(path, ": cannot open the state database: ", msg));
  }
  std::unique_ptr<StateStore> store(new StateStore(db, options));
  sqlite3_busy_timeout(db, 5000);
  if (path != ":memory:") RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
  RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL"));
  RETURN_IF_ERROR(store->Exec(kSchema));
  return store;
}

StateStore::~StateStore() { sqlite3_close(db_); }

absl::Status StateStore::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("sqlite: ", msg));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> StateStore::SubmitJob(const std::string& client_id,
                                              const std::string& fingerprint,
                                              const std::string& spec_json,
                                              const tasks::Plan& plan) {
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begun());
  {
    Stmt s(db_, "SELECT id, fingerprint FROM jobs WHERE client_id = ?");
    s.Bind(1, client_id);
    if (s.Row()) {
      if (s.Text(1) != fingerprint) {
        return absl::AlreadyExistsError(absl::StrCat(
            "job id '", client_id, "' was submitted before with another model or options"));
      }
      return s.Int(0);  // the same job: nothing changes
    }
    RETURN_IF_ERROR(s.status());
  }
  Stmt insert(db_, "INSERT INTO jobs (client_id, fingerprint, spec, status) VALUES (?, ?, ?, ?)");
  RETURN_IF_ERROR(insert.status());
  insert.Bind(1, client_id).Bind(2, fingerprint).Bind(3, spec_json)
      .Bind(4, static_cast<int64_t>(JobStatus::kRunning));
  RETURN_IF_ERROR(insert.Run());
  const int64_t job_id = sqlite3_last_insert_rowid(db_);
  for (const tasks::Task& t : plan.tasks) {
    Stmt s(db_, "INSERT INTO tasks (job_id, task_id, name, kind, layer, status) "
                "VALUES (?, ?, ?, ?, ?, ?)");
    s.Bind(1, job_id).Bind(2, t.id).Bind(3, t.Name()).Bind(4, std::string(TaskKindName(t.kind)))
        .Bind(5, static_cast<int64_t>(t.layer)).Bind(6, static_cast<int64_t>(TaskStatus::kPending));
    RETURN_IF_ERROR(s.Run());
    for (int64_t dep : t.deps) {
      Stmt d(db_, "INSERT INTO deps (job_id, task_id, dep_id) VALUES (?, ?, ?)");
      d.Bind(1, job_id).Bind(2, t.id).Bind(3, dep);
      RETURN_IF_ERROR(d.Run());
    }
  }
  RETURN_IF_ERROR(txn.Commit());
  return job_id;
}

namespace {

// The kinds the coordinator runs itself (never leased to a worker): SLQ's global solve.
constexpr char kWorkerKinds[] = "AND t.kind != 'solve' ";
constexpr char kCoordinatorKinds[] = "AND t.kind = 'solve' ";

// Ready: pending, of a running job, out of backoff, every dependency done.
constexpr char kReadyTasks[] =
    "SELECT t.job_id, t.task_id, t.name, t.kind, t.layer, t.epoch FROM tasks t "
    "JOIN jobs j ON j.id = t.job_id "
    "WHERE j.status = ? AND t.status = ? AND t.not_before <= ? AND NOT EXISTS ("
    "  SELECT 1 FROM deps d JOIN tasks u ON u.job_id = d.job_id AND u.task_id = d.dep_id "
    "  WHERE d.job_id = t.job_id AND d.task_id = t.task_id AND u.status != ?) ";

}  // namespace

absl::StatusOr<std::optional<Lease>> StateStore::LeaseTask(const std::string& worker, double now) {
  return LeaseReady(worker, now, -1, -1);
}

absl::StatusOr<std::optional<Lease>> StateStore::LeaseTaskById(const std::string& worker,
                                                               double now, int64_t job_id,
                                                               int64_t task_id) {
  return LeaseReady(worker, now, job_id, task_id);
}

absl::StatusOr<std::vector<std::pair<int64_t, int64_t>>> StateStore::ReadyTasks(double now,
                                                                                int limit) {
  RETURN_IF_ERROR(ExpireLeases(now).status());
  std::lock_guard<std::mutex> lock(mu_);
  const std::string sql =
      std::string(kReadyTasks) + kWorkerKinds + "ORDER BY t.job_id, t.task_id LIMIT ?";
  Stmt pick(db_, sql.c_str());
  RETURN_IF_ERROR(pick.status());
  pick.Bind(1, static_cast<int64_t>(JobStatus::kRunning))
      .Bind(2, static_cast<int64_t>(TaskStatus::kPending)).Bind(3, now)
      .Bind(4, static_cast<int64_t>(TaskStatus::kDone)).Bind(5, static_cast<int64_t>(limit));
  std::vector<std::pair<int64_t, int64_t>> ready;
  while (pick.Row()) ready.emplace_back(pick.Int(0), pick.Int(1));
  RETURN_IF_ERROR(pick.status());
  return ready;
}

absl::StatusOr<std::optional<Lease>> StateStore::LeaseReady(const std::string& worker,
                                                            double now, int64_t job_id,
                                                            int64_t task_id) {
  RETURN_IF_ERROR(ExpireLeases(now).status());
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begun());
  // The lowest ready task of the oldest running job (or the one asked for).
  const std::string sql = std::string(kReadyTasks) + kWorkerKinds +
                          (job_id >= 0 ? "AND t.job_id = ? AND t.task_id = ? " : "") +
                          "ORDER BY t.job_id, t.task_id LIMIT 1";
  Stmt pick(db_, sql.c_str());
  RETURN_IF_ERROR(pick.status());
  pick.Bind(1, static_cast<int64_t>(JobStatus::kRunning))
      .Bind(2, static_cast<int64_t>(TaskStatus::kPending)).Bind(3, now)
      .Bind(4, static_cast<int64_t>(TaskStatus::kDone));
  if (job_id >= 0) pick.Bind(5, job_id).Bind(6, task_id);
  if (!pick.Row()) {
    RETURN_IF_ERROR(pick.status());
    return std::optional<Lease>();
  }
  Lease lease;
  lease.job_id = pick.Int(0);
  lease.task_id = pick.Int(1);
  lease.name = pick.Text(2);
  lease.kind = pick.Text(3);
  lease.layer = static_cast<int>(pick.Int(4));
  lease.epoch = pick.Int(5) + 1;
  lease.deadline = now + options_.lease_seconds;
  Stmt update(db_, "UPDATE tasks SET status = ?, epoch = ?, worker = ?, deadline = ?, "
                   "executions = executions + 1 WHERE job_id = ? AND task_id = ?");
  update.Bind(1, static_cast<int64_t>(TaskStatus::kLeased)).Bind(2, lease.epoch).Bind(3, worker)
      .Bind(4, lease.deadline).Bind(5, lease.job_id).Bind(6, lease.task_id);
  RETURN_IF_ERROR(update.Run());
  RETURN_IF_ERROR(txn.Commit());
  return std::optional<Lease>(lease);
}

namespace {

// The task's current epoch and status, or NotFound.
absl::Status CheckLease(sqlite3* db, int64_t job_id, int64_t task_id, int64_t epoch) {
  Stmt s(db, "SELECT epoch, status FROM tasks WHERE job_id = ? AND task_id = ?");
  s.Bind(1, job_id).Bind(2, task_id);
  if (!s.Row()) {
    RETURN_IF_ERROR(s.status());
    return absl::NotFoundError(absl::StrCat("job ", job_id, " has no task ", task_id));
  }
  if (s.Int(0) != epoch || static_cast<TaskStatus>(s.Int(1)) != TaskStatus::kLeased) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " task ", task_id, ": lease epoch ", epoch,
        " is not current (current epoch ", s.Int(0), ", ",
        TaskStatusName(static_cast<TaskStatus>(s.Int(1))), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status StateStore::Heartbeat(int64_t job_id, int64_t task_id, int64_t epoch, double now) {
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begun());
  RETURN_IF_ERROR(CheckLease(db_, job_id, task_id, epoch));
  Stmt s(db_, "UPDATE tasks SET deadline = ? WHERE job_id = ? AND task_id = ?");
  s.Bind(1, now + options_.lease_seconds).Bind(2, job_id).Bind(3, task_id);
  RETURN_IF_ERROR(s.Run());
  return txn.Commit();
}

absl::Status StateStore::CompleteTask(int64_t job_id, int64_t task_id, int64_t epoch, double now,
                                      const std::string& result) {
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begun());
  RETURN_IF_ERROR(CheckLease(db_, job_id, task_id, epoch));
  // A done task keeps the worker that committed it (status and watch show who ran what).
  Stmt s(db_, "UPDATE tasks SET status = ? WHERE job_id = ? AND task_id = ?");
  s.Bind(1, static_cast<int64_t>(TaskStatus::kDone)).Bind(2, job_id).Bind(3, task_id);
  RETURN_IF_ERROR(s.Run());
  RETURN_IF_ERROR(PutResult(job_id, task_id, result));
  RETURN_IF_ERROR(MaybeFinishJob(job_id));
  return txn.Commit();
}

absl::Status StateStore::PutResult(int64_t job_id, int64_t task_id, const std::string& result) {
  if (result.empty()) return absl::OkStatus();
  Stmt r(db_, "INSERT OR REPLACE INTO task_results (job_id, task_id, result) VALUES (?, ?, ?)");
  r.Bind(1, job_id).Bind(2, task_id).Bind(3, result);
  return r.Run();
}

absl::StatusOr<std::vector<std::pair<int64_t, int64_t>>> StateStore::ReadyCoordinatorTasks(
    double now) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string sql =
      std::string(kReadyTasks) + kCoordinatorKinds + "ORDER BY t.job_id, t.task_id";
  Stmt pick(db_, sql.c_str());
  RETURN_IF_ERROR(pick.status());
  pick.Bind(1, static_cast<int64_t>(JobStatus::kRunning))
      .Bind(2, static_cast<int64_t>(TaskStatus::kPending)).Bind(3, now)
      .Bind(4, static_cast<int64_t>(TaskStatus::kDone));
  std::vector<std::pair<int64_t, int64_t>> ready;
  while (pick.Row()) ready.emplace_back(pick.Int(0), pick.Int(1));
  RETURN_IF_ERROR(pick.status());
  return ready;
}

absl::Status StateStore::FinishCoordinatorTask(int64_t job_id, int64_t task_id,
                                               const std::string& result,
                                               const std::string& error, const std::string& by) {
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begun());
  // Run by the coordinator, it counts as an execution; taken from the probe cache, it does not.
  Stmt s(db_, "UPDATE tasks SET status = ?, executions = executions + ?, worker = ?, "
              "last_error = ? WHERE job_id = ? AND task_id = ? AND status = ?");
  s.Bind(1, static_cast<int64_t>(error.empty() ? TaskStatus::kDone : TaskStatus::kFailed))
      .Bind(2, int64_t{by == "coordinator" ? 1 : 0}).Bind(3, by).Bind(4, error).Bind(5, job_id)
      .Bind(6, task_id).Bind(7, static_cast<int64_t>(TaskStatus::kPending));
  RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " task ", task_id, " is not pending"));
  }
  if (!error.empty()) {
    Stmt j(db_, "UPDATE jobs SET status = ?, error = ? WHERE id = ? AND status = ?");
    j.Bind(1, static_cast<int64_t>(JobStatus::kFailed)).Bind(2, error).Bind(3, job_id)
        .Bind(4, static_cast<int64_t>(JobStatus::kRunning));
    RETURN_IF_ERROR(j.Run());
    return txn.Commit();
  }
  RETURN_IF_ERROR(PutResult(job_id, task_id, result));
  RETURN_IF_ERROR(MaybeFinishJob(job_id));
  return txn.Commit();
}

absl::Status StateStore::PutProbeCache(const std::string& key, int layer,
                                       const std::string& result) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt r(db_, "INSERT OR REPLACE INTO probe_cache (key, layer, result) VALUES (?, ?, ?)");
  r.Bind(1, key).Bind(2, static_cast<int64_t>(layer)).Bind(3, result);
  return r.Run();
}

absl::StatusOr<std::map<int, std::string>> StateStore::ProbeCache(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT layer, result FROM probe_cache WHERE key = ?");
  RETURN_IF_ERROR(s.status());
  s.Bind(1, key);
  std::map<int, std::string> out;
  while (s.Row()) out[static_cast<int>(s.Int(0))] = s.Text(1);
  RETURN_IF_ERROR(s.status());
  return out;
}

absl::StatusOr<std::map<int64_t, std::string>> StateStore::TaskResults(int64_t job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT task_id, result FROM task_results WHERE job_id = ? ORDER BY task_id");
  RETURN_IF_ERROR(s.status());
  s.Bind(1, job_id);
  std::map<int64_t, std::string> out;
  while (s.Row()) out[s.Int(0)] = s.Text(1);
  RETURN_IF_ERROR(s.status());
  return out;
}

absl::Status StateStore::FailTask(int64_t job_id, int64_t task_id, int64_t epoch,
                                  const std::string& error, double now) {
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begun());
  RETURN_IF_ERROR(CheckLease(db_, job_id, task_id, epoch));
  RETURN_IF_ERROR(FailAttempt(job_id, task_id, error, now));
  return txn.Commit();
}

// Inside a transaction: one more failed attempt; back to pending with backoff, or failed.
absl::Status StateStore::FailAttempt(int64_t job_id, int64_t task_id, const std::string& error,
                                     double now) {
  Stmt get(db_, "SELECT attempts, name FROM tasks WHERE job_id = ? AND task_id = ?");
  get.Bind(1, job_id).Bind(2, task_id);
  if (!get.Row()) return absl::NotFoundError(absl::StrCat("job ", job_id, " task ", task_id));
  const int attempts = static_cast<int>(get.Int(0)) + 1;
  const std::string name = get.Text(1);
  const bool give_up = attempts >= options_.max_attempts;
  const double not_before = now + options_.backoff_seconds * std::pow(2.0, attempts - 1);
  Stmt s(db_, "UPDATE tasks SET status = ?, attempts = ?, worker = '', not_before = ?, "
              "last_error = ? WHERE job_id = ? AND task_id = ?");
  s.Bind(1, static_cast<int64_t>(give_up ? TaskStatus::kFailed : TaskStatus::kPending))
      .Bind(2, static_cast<int64_t>(attempts)).Bind(3, not_before).Bind(4, error)
      .Bind(5, job_id).Bind(6, task_id);
  RETURN_IF_ERROR(s.Run());
  if (give_up) {
    Stmt j(db_, "UPDATE jobs SET status = ?, error = ? WHERE id = ? AND status = ?");
    j.Bind(1, static_cast<int64_t>(JobStatus::kFailed))
        .Bind(2, absl::StrCat(name, " failed ", attempts, " times; last error: ", error))
        .Bind(3, job_id).Bind(4, static_cast<int64_t>(JobStatus::kRunning));
    RETURN_IF_ERROR(j.Run());
  }
  return absl::OkStatus();
}

absl::StatusOr<int> StateStore::ExpireLeases(double now) {
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begun());
  std::vector<std::pair<int64_t, int64_t>> expired;
  {
    Stmt s(db_, "SELECT job_id, task_id FROM tasks WHERE status = ? AND deadline < ?");
    s.Bind(1, static_cast<int64_t>(TaskStatus::kLeased)).Bind(2, now);
    while (s.Row()) expired.emplace_back(s.Int(0), s.Int(1));
    RETURN_IF_ERROR(s.status());
  }
  for (const auto& [job, task] : expired) {
    RETURN_IF_ERROR(FailAttempt(job, task, "lease expired (worker lost or too slow)", now));
  }
  RETURN_IF_ERROR(txn.Commit());
  if (!expired.empty()) {
    metrics::Default()
        .GetCounter("quant_lease_expiries_total", "Leases that expired (a worker stopped "
                                                  "heartbeating).")
        .Inc(static_cast<double>(expired.size()));
  }
  return static_cast<int>(expired.size());
}

absl::Status StateStore::MaybeFinishJob(int64_t job_id) {
  Stmt s(db_, "SELECT COUNT(*) FROM tasks WHERE job_id = ? AND status != ?");
  s.Bind(1, job_id).Bind(2, static_cast<int64_t>(TaskStatus::kDone));
  if (!s.Row()) return s.status();
  if (s.Int(0) != 0) return absl::OkStatus();
  Stmt j(db_, "UPDATE jobs SET status = ? WHERE id = ? AND status = ?");
  j.Bind(1, static_cast<int64_t>(JobStatus::kSucceeded)).Bind(2, job_id)
      .Bind(3, static_cast<int64_t>(JobStatus::kRunning));
  return j.Run();
}

absl::Status StateStore::CancelJob(int64_t job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begun());
  Stmt j(db_, "UPDATE jobs SET status = ? WHERE id = ? AND status = ?");
  j.Bind(1, static_cast<int64_t>(JobStatus::kCancelled)).Bind(2, job_id)
      .Bind(3, static_cast<int64_t>(JobStatus::kRunning));
  RETURN_IF_ERROR(j.Run());
  if (sqlite3_changes(db_) == 0) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " is not running"));
  }
  // Leases of a cancelled job can no longer commit.
  Stmt t(db_, "UPDATE tasks SET status = ?, epoch = epoch + 1, worker = '' "
              "WHERE job_id = ? AND status = ?");
  t.Bind(1, static_cast<int64_t>(TaskStatus::kPending)).Bind(2, job_id)
      .Bind(3, static_cast<int64_t>(TaskStatus::kLeased));
  RETURN_IF_ERROR(t.Run());
  return txn.Commit();
}

absl::StatusOr<JobRecord> StateStore::GetJob(int64_t job_id) {
  ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, ListJobs());
  for (JobRecord& j : jobs) {
    if (j.id == job_id) return std::move(j);
  }
  return absl::NotFoundError(absl::StrCat("no job ", job_id));
}

absl::StatusOr<std::vector<JobRecord>> StateStore::ListJobs() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "SELECT j.id, j.client_id, j.fingerprint, j.spec, j.status, j.error, "
         "(SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.id), "
         "(SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.id AND t.status = ?) "
         "FROM jobs j ORDER BY j.id");
  RETURN_IF_ERROR(s.status());
  s.Bind(1, static_cast<int64_t>(TaskStatus::kDone));
  std::vector<JobRecord> out;
  while (s.Row()) {
    JobRecord j;
    j.id = s.Int(0);
    j.client_id = s.Text(1);
    j.fingerprint = s.Text(2);
    j.spec_json = s.Text(3);
    j.status = static_cast<JobStatus>(s.Int(4));
    j.error = s.Text(5);
    j.tasks_total = s.Int(6);
    j.tasks_done = s.Int(7);
    out.push_back(std::move(j));
  }
  RETURN_IF_ERROR(s.status());
  return out;
}

absl::StatusOr<std::vector<TaskRecord>> StateStore::Tasks(int64_t job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, absl::StrCat("SELECT ", kTaskColumns,
                           " FROM tasks WHERE job_id = ? ORDER BY task_id").c_str());
  RETURN_IF_ERROR(s.status());
  s.Bind(1, job_id);
  std::vector<TaskRecord> out;
  while (s.Row()) out.push_back(ReadTask(s));
  RETURN_IF_ERROR(s.status());
  return out;
}

absl::StatusOr<TaskRecord> StateStore::GetTask(int64_t job_id, int64_t task_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, absl::StrCat("SELECT ", kTaskColumns,
                           " FROM tasks WHERE job_id = ? AND task_id = ?").c_str());
  RETURN_IF_ERROR(s.status());
  s.Bind(1, job_id);
  s.Bind(2, task_id);
  if (!s.Row()) {
    RETURN_IF_ERROR(s.status());
    return absl::NotFoundError(absl::StrCat("job ", job_id, " has no task ", task_id));
  }
  return ReadTask(s);
}

}  // namespace quant::coordinator
