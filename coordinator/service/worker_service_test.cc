// The service for real: quant-coordinator, 1, 2 and 4 quant-worker processes and qctl, all
// started by the test on loopback, quantize tiny-deepseek-v3 with GSQ (expert-sharded tasks)
// to the very bytes `qctl quantize` writes in one process. Faults for real: kill -9 of a worker
// in the middle of a task, kill -9 of the coordinator mid-job and a restart on the same state,
// and a worker frozen past its lease (SIGSTOP) whose late completion must not be committed.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/service/service_test_util.h"
#include "nlohmann/json.hpp"
#include "proto/quant.grpc.pb.h"

namespace {

namespace fs = std::filesystem;
using quant::testing::CheckpointDifferences;
using quant::testing::Coordinator;
using quant::testing::JobStatusOf;
using quant::testing::PromtoolAccepts;
using quant::testing::ReadFile;
using quant::testing::RunCommand;
using quant::testing::SubmitWithQctl;
using quant::testing::WaitForJob;
using quant::testing::Worker;
const std::string kModel = std::string(QUANT_SHARED_DIR) + "/models/tiny-deepseek-v3";
constexpr uint32_t kProtocol = quant::v1::PROTOCOL_VERSION;

// GSQ at 2 bits with few steps and a small calibration set: every task kind runs, in seconds.
// GPTQ's start without the MSE scale search (--no-mse): the search was ~3/4 of the GPTQ time
// and none of these tests is about it; the GSQ tasks stay seconds long for the kills.
std::string JobFlags(const fs::path& out, int steps = 30) {
  return "--model " + kModel + " --out " + out.string() + " --method gsq --bits 2 --steps " +
         std::to_string(steps) + " --calib-tokens 8192 --no-mse --no-eval";
}

std::string Scrape(int port) {
  httplib::Client http("127.0.0.1", port);
  auto res = http.Get("/metrics");
  return res ? res->body : std::string();
}



class WorkerServiceTest : public ::testing::Test {
 protected:
  // The reference: the whole job in one process with the in-memory runner (one GSQ shard per
  // layer). ctest runs each test of this binary in its own process, and five of them compare
  // with it, so it is made once per qctl binary, job and BLAS setting and kept in the temp
  // directory under a name that says so (size and time of the binary; a rebuilt qctl makes a
  // new one), under an flock so that two tests started together make it once. Saves ~20 CPU
  // seconds in each test but the first.
  static fs::path Reference(int steps) {
    static std::map<int, fs::path> made;
    if (made.count(steps)) return made[steps];
    const fs::path qctl(QCTL_BINARY);
    const char* blas = std::getenv("OPENBLAS_NUM_THREADS");
    const std::string key =
        std::to_string(fs::file_size(qctl)) + "_" +
        std::to_string(fs::last_write_time(qctl).time_since_epoch().count()) + "_" +
        std::to_string(std::hash<std::string>{}(JobFlags("OUT", steps) + " blas " +
                                                 (blas != nullptr ? blas : "")));
    const fs::path out = fs::temp_directory_path() / ("worker_service_test_ref_" + key);
    const int lock = ::open((out.string() + ".lock").c_str(), O_CREAT | O_RDWR, 0644);
    EXPECT_GE(lock, 0) << out;
    if (lock >= 0) ::flock(lock, LOCK_EX);
    if (!fs::exists(out)) {
      // Those unused for a day (older builds', 9 MB each) go; the empty lock files stay.
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(fs::temp_directory_path(), ec)) {
        const std::string name = e.path().filename().string();
        if (name.starts_with("worker_service_test_ref_") && !name.ends_with(".lock") &&
            e.last_write_time(ec) < fs::file_time_type::clock::now() - std::chrono::hours(24)) {
          fs::remove_all(e.path(), ec);
        }
      }
      // Made beside it and renamed: a test killed midway leaves no half reference behind.
      const fs::path making = out.string() + ".making";
      fs::remove_all(making);
      int rc = 0;
      const std::string log = RunCommand(
          std::string(QCTL_BINARY) + " quantize --in-memory " + JobFlags(making, steps), &rc);
      EXPECT_EQ(rc, 0) << log;
      if (rc == 0) fs::rename(making, out);
    }
    std::error_code ec;
    fs::last_write_time(out, fs::file_time_type::clock::now(), ec);  // in use: not pruned
    if (lock >= 0) ::close(lock);  // releases the flock
    return made[steps] = out;
  }
  void SetUp() override {
    tmp_ = fs::temp_directory_path() /
           ("worker_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
    std::ofstream(tmp_ / "token") << "t0ken\n";
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(tmp_);
  }

  // qctl submit; returns the job id.
  int64_t Submit(const Coordinator& c, const std::string& flags) {
    int rc = 0;
    std::string out;
    const int64_t job = SubmitWithQctl(c.grpc_address(), tmp_ / "token", flags, &rc, &out);
    EXPECT_EQ(rc, 0) << out;
    return job;
  }
  static const quant::v1::TaskStatus* Task(const quant::v1::JobStatus& st,
                                           const std::string& name) {
    for (const auto& t : st.tasks()) {
      if (t.name() == name) return &t;
    }
    return nullptr;
  }

  fs::path tmp_;
};

TEST_F(WorkerServiceTest, OneTwoAndFourWorkersWriteTheEmbeddedRunsBytes) {
  for (int workers : {1, 2, 4}) {
    SCOPED_TRACE(std::to_string(workers) + " workers");
    const fs::path dir = tmp_ / ("n" + std::to_string(workers));
    fs::create_directories(dir);
    Coordinator c(dir / "state.db", tmp_ / "token");
    ASSERT_TRUE(c.up());
    std::vector<std::unique_ptr<Worker>> pool;
    for (int w = 0; w < workers; ++w) {
      pool.push_back(std::make_unique<Worker>(c.grpc_address(), "w" + std::to_string(w),
                                              dir / ("w" + std::to_string(w) + ".log")));
      ASSERT_TRUE(pool.back()->up());
    }
    // As many expert shards as workers: each MoE layer is calibrated and propagated by a gang
    // of all of them, each holding its own experts; its GSQ runs as that many tasks at once.
    // One worker also runs the evaluate task (the checkpoint's files are compared, not the
    // report, so the reference's --no-eval does not matter).
    std::string flags = JobFlags(dir / "out") + " --expert-shards " + std::to_string(workers);
    if (workers == 1) flags.replace(flags.find(" --no-eval"), 10, "");
    const int64_t job = Submit(c, flags);
    const quant::v1::JobStatus st = WaitForJob(c, job, 600);
    ASSERT_EQ(st.state(), quant::v1::JOB_SUCCEEDED) << st.error();
    EXPECT_EQ(CheckpointDifferences(Reference(30), dir / "out"), std::vector<std::string>{});
    EXPECT_EQ(CheckpointDifferences(dir / "out", Reference(30)), std::vector<std::string>{});
    if (workers == 1) {
      const std::string report = ReadFile(dir / "out" / "report.json");
      EXPECT_NE(report.find("\"eval\""), std::string::npos) << "the evaluate task's report";
      EXPECT_NE(report.find("\"ear\""), std::string::npos);
    }
    std::set<std::string> ran;
    for (const auto& t : st.tasks()) {
      EXPECT_EQ(t.executions(), 1) << t.name();
      ran.insert(t.worker());
    }
    if (workers > 1) {
      EXPECT_GE(ran.size(), 2u) << "the tasks all ran on one worker";
      // Each member held its own experts (the last gang task's layer) and exchanged tokens.
      for (const auto& w : pool) {
        const std::string metrics = Scrape(w->http_port());
        EXPECT_NE(metrics.find("quant_resident_experts " + std::to_string(16 / workers) + "\n"),
                  std::string::npos)
            << metrics;
        EXPECT_NE(metrics.find("quant_exchange_bytes_total{direction=\"sent\"}"),
                  std::string::npos);
        EXPECT_TRUE(PromtoolAccepts(metrics, dir / "worker_metrics.txt")) << metrics;
      }
      const std::string coordinator = Scrape(c.http_port());
      EXPECT_TRUE(PromtoolAccepts(coordinator, dir / "coordinator_metrics.txt")) << coordinator;
      for (const char* series : {"quant_jobs{state=\"succeeded\"} 1", "quant_workers ",
                                 "quant_task_duration_seconds_bucket"}) {
        EXPECT_NE(coordinator.find(series), std::string::npos) << series;
      }
    }
    // The scratch goes just after the job's last commit (the status may be read in between).
    const fs::path scratch = dir / "state.db.scratch" / ("job-" + std::to_string(job));
    for (int i = 0; i < 100 && fs::exists(scratch); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_FALSE(fs::exists(scratch)) << "the job's scratch outlives it";
  }
}

// Progress a person can read, through the service: the worker reports a running task's phase,
// layer and GSQ's step and loss on its heartbeat, and `qctl watch` (text and --json) shows them.
TEST_F(WorkerServiceTest, WatchShowsAGsqTasksStepAndLoss) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token");
  ASSERT_TRUE(c.up());
  Worker w(c.grpc_address(), "w0", tmp_ / "w0.log");
  ASSERT_TRUE(w.up());
  // 40 steps: each layer's GSQ task runs seconds, several of the worker's 1 s progress reports
  // (120 before; the watch's lines are the claim, not the number of steps).
  const int64_t job = Submit(c, JobFlags(tmp_ / "out", /*steps=*/40));
  ASSERT_GT(job, 0);
  auto watch = [&](const std::string& extra) {
    const std::string cmd = std::string(QCTL_BINARY) + " watch " + std::to_string(job) +
                            " --coordinator " + c.grpc_address() + extra + " 2>&1";
    return popen(cmd.c_str(), "r");
  };
  FILE* text = watch("");
  FILE* json = watch(" --json");
  ASSERT_NE(text, nullptr);
  ASSERT_NE(json, nullptr);
  auto drain = [](FILE* f, int* rc) {
    std::string out;
    char buf[1024];
    while (fgets(buf, sizeof(buf), f)) out += buf;
    const int status = pclose(f);
    *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
  };
  int text_rc = -1, json_rc = -1;
  std::string json_out;
  std::thread json_reader([&] { json_out = drain(json, &json_rc); });
  const std::string text_out = drain(text, &text_rc);
  json_reader.join();
  std::printf("%s", text_out.c_str());  // what docs/operations.md shows
  EXPECT_EQ(text_rc, 0) << text_out;
  EXPECT_EQ(json_rc, 0) << json_out;
  // A GSQ task's line: "  L1/gsq on w0: phase gsq, layer 1, step 27/40, loss 0.0123, ...".
  const std::regex step_line(R"(  L\d+/gsq on w0: phase gsq, layer \d+, step \d+/40, loss [0-9.e-]+, [0-9.]+ s(, ETA task \d+ s)?)");
  EXPECT_TRUE(std::regex_search(text_out, step_line)) << text_out;
  EXPECT_NE(text_out.find("succeeded"), std::string::npos) << text_out;
  // --json: one object per line; a GSQ task's step and loss among them.
  bool saw_step = false;
  std::istringstream lines(json_out);
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    EXPECT_EQ(j["job"], job);
    for (const nlohmann::json& r : j["running"]) {
      if (r.value("phase", "") == "gsq" && r.contains("step")) {
        saw_step = true;
        EXPECT_EQ(r["steps"], 40);
        EXPECT_GT(r["loss"].get<double>(), 0);
        EXPECT_GE(r["seconds"].get<double>(), 0);
        EXPECT_EQ(r["worker"], "w0");
      }
    }
  }
  EXPECT_TRUE(saw_step) << json_out;
}

TEST_F(WorkerServiceTest, KillNineOfAWorkerMidTaskReRunsTheTaskElsewhere) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token", {"--lease-seconds", "3"});
  ASSERT_TRUE(c.up());
  auto victim = std::make_unique<Worker>(c.grpc_address(), "victim", tmp_ / "victim.log");
  ASSERT_TRUE(victim->up());
  const int64_t job = Submit(c, JobFlags(tmp_ / "out"));
  // Wait until the victim is inside a GSQ task (seconds of work), then kill it.
  std::string killed_task;
  WaitForJob(c, job, 300, [&](const quant::v1::JobStatus& st) {
    for (const auto& t : st.tasks()) {
      if (t.kind() == "gsq" && t.state() == "leased") killed_task = t.name();
    }
    return !killed_task.empty();
  });
  ASSERT_FALSE(killed_task.empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  victim->Kill();
  Worker rescuer(c.grpc_address(), "rescuer", tmp_ / "rescuer.log");
  ASSERT_TRUE(rescuer.up());
  const quant::v1::JobStatus st = WaitForJob(c, job, 600);
  ASSERT_EQ(st.state(), quant::v1::JOB_SUCCEEDED) << st.error();
  const quant::v1::TaskStatus* t = Task(st, killed_task);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->executions(), 2);  // the killed attempt and the rescuer's
  EXPECT_EQ(t->attempts(), 1);    // one expired lease
  EXPECT_EQ(t->worker(), "rescuer");
  EXPECT_EQ(CheckpointDifferences(Reference(30), tmp_ / "out"), std::vector<std::string>{});
  std::printf("killed worker in %s: executions %lld\n", killed_task.c_str(),
              static_cast<long long>(t->executions()));
}

TEST_F(WorkerServiceTest, KillNineOfAGangMemberMidExchangeReFormsTheGang) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token", {"--lease-seconds", "10"});
  ASSERT_TRUE(c.up());
  // A short watchdog, so the survivor's collective fails soon after its peer dies.
  const std::vector<std::string> flags = {"--exchange-timeout", "5"};
  auto a = std::make_unique<Worker>(c.grpc_address(), "a", tmp_ / "a.log", flags);
  auto b = std::make_unique<Worker>(c.grpc_address(), "b", tmp_ / "b.log", flags);
  ASSERT_TRUE(a->up() && b->up());
  const int64_t job = Submit(c, JobFlags(tmp_ / "out") + " --expert-shards 2");
  std::string gang_task;
  WaitForJob(c, job, 300, [&](const quant::v1::JobStatus& st) {
    for (const auto& t : st.tasks()) {
      if (t.name().find("[x2]") != std::string::npos && t.state() == "leased" && t.layer() >= 2) {
        gang_task = t.name();
      }
    }
    return !gang_task.empty();
  });
  ASSERT_FALSE(gang_task.empty());
  b->Kill();  // kill -9 of a member inside the gang's exchange
  Worker spare(c.grpc_address(), "spare", tmp_ / "spare.log", flags);
  ASSERT_TRUE(spare.up());
  const quant::v1::JobStatus st = WaitForJob(c, job, 600);
  ASSERT_EQ(st.state(), quant::v1::JOB_SUCCEEDED) << st.error();
  const quant::v1::TaskStatus* t = Task(st, gang_task);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->executions(), 2) << "the gang was not re-formed once";
  EXPECT_NE(t->worker().find("spare"), std::string::npos) << t->worker();
  EXPECT_EQ(CheckpointDifferences(Reference(30), tmp_ / "out"), std::vector<std::string>{});
  const std::string metrics = Scrape(c.http_port());
  EXPECT_NE(metrics.find("quant_gang_formations_total{kind=\"re-formed\"}"), std::string::npos)
      << metrics;
  std::printf("killed a member in %s: executions %lld, last gang %s\n", gang_task.c_str(),
              static_cast<long long>(t->executions()), t->worker().c_str());
}

TEST_F(WorkerServiceTest, KillNineOfTheCoordinatorMidJobResumesOnTheSameState) {
  // A fixed port, so the worker finds the restarted coordinator where it was.
  std::string address;
  int64_t job = -1;
  std::map<std::string, int64_t> done_before;
  {
    Coordinator first(tmp_ / "state.db", tmp_ / "token", {"--lease-seconds", "3"});
    ASSERT_TRUE(first.up());
    address = first.grpc_address();
    Worker w(address, "w", tmp_ / "w.log");
    ASSERT_TRUE(w.up());
    job = Submit(first, JobFlags(tmp_ / "out"));
    const quant::v1::JobStatus st =
        WaitForJob(first, job, 300, [](const quant::v1::JobStatus& s) { return s.tasks_done() >= 5; });
    ASSERT_GE(st.tasks_done(), 5);
    first.Kill();  // kill -9 mid-job; the worker keeps running and retries
    for (const auto& t : st.tasks()) {
      if (t.state() == "done") done_before[t.name()] = t.executions();
    }
    Coordinator again(tmp_ / "state.db", tmp_ / "token",
                      {"--lease-seconds", "3", "--listen", address});
    ASSERT_TRUE(again.up());
    const quant::v1::JobStatus end = WaitForJob(again, job, 600);
    ASSERT_EQ(end.state(), quant::v1::JOB_SUCCEEDED) << end.error();
    for (const auto& [name, executions] : done_before) {
      const quant::v1::TaskStatus* t = Task(end, name);
      ASSERT_NE(t, nullptr);
      EXPECT_EQ(t->executions(), 1) << name << " ran again after the restart";
    }
    EXPECT_EQ(CheckpointDifferences(Reference(30), tmp_ / "out"), std::vector<std::string>{});
    // The same client id with another option is refused (fingerprint mismatch).
    int rc = 0;
    const std::string out = RunCommand(std::string(QCTL_BINARY) + " submit --coordinator " + address +
                                    " --token-file " + (tmp_ / "token").string() +
                                    " --job-id same " + JobFlags(tmp_ / "out2"),
                                &rc);
    ASSERT_EQ(rc, 0) << out;
    const std::string refused = RunCommand(std::string(QCTL_BINARY) + " submit --coordinator " +
                                        address + " --token-file " + (tmp_ / "token").string() +
                                        " --job-id same " + JobFlags(tmp_ / "out2", 31),
                                    &rc);
    EXPECT_NE(rc, 0) << refused;
  }
  std::printf("coordinator killed after %zu done tasks; none ran again\n", done_before.size());
}

TEST_F(WorkerServiceTest, AWorkerFrozenPastItsLeaseCannotCommitOverTheNewerAttempt) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token", {"--lease-seconds", "2"});
  ASSERT_TRUE(c.up());
  Worker frozen(c.grpc_address(), "frozen", tmp_ / "frozen.log");
  ASSERT_TRUE(frozen.up());
  const int64_t job = Submit(c, JobFlags(tmp_ / "out"));
  std::string task;
  WaitForJob(c, job, 300, [&](const quant::v1::JobStatus& st) {
    for (const auto& t : st.tasks()) {
      if (t.kind() == "gsq" && t.state() == "leased") task = t.name();
    }
    return !task.empty();
  });
  ASSERT_FALSE(task.empty());
  frozen.Signal(SIGSTOP);  // no heartbeats: the lease expires
  Worker other(c.grpc_address(), "other", tmp_ / "other.log");
  ASSERT_TRUE(other.up());
  // The other worker re-runs the task under a newer epoch and commits it.
  const quant::v1::JobStatus st = WaitForJob(c, job, 300, [&](const quant::v1::JobStatus& s) {
    const quant::v1::TaskStatus* t = Task(s, task);
    return t != nullptr && t->state() == "done";
  });
  ASSERT_EQ(Task(st, task)->worker(), "other");
  frozen.Signal(SIGCONT);  // its late completion carries the old epoch
  const quant::v1::JobStatus end = WaitForJob(c, job, 600);
  ASSERT_EQ(end.state(), quant::v1::JOB_SUCCEEDED) << end.error();
  // Woken, the frozen worker learns at its next heartbeat that its lease was revoked and stops
  // the attempt at the next GSQ step (or, had it finished first, is told its completion was
  // discarded); either way nothing of it is committed.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  std::string log;
  auto told = [&] {
    return log.find("revoked: stopping it") != std::string::npos ||
           log.find("stale: discarded") != std::string::npos;
  };
  while (std::chrono::steady_clock::now() < deadline &&
         (log = ReadFile(tmp_ / "frozen.log"), !told())) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(told()) << log;
  EXPECT_EQ(CheckpointDifferences(Reference(30), tmp_ / "out"), std::vector<std::string>{});
  EXPECT_EQ(Task(end, task)->executions(), 2);
  // The coordinator's log of the job tells the story.
  int rc = 0;
  const std::string logs = RunCommand(std::string(QCTL_BINARY) + " logs " +
                                          std::to_string(job) + " --coordinator " +
                                          c.grpc_address(),
                                      &rc);
  EXPECT_EQ(rc, 0) << logs;
  for (const std::string& line : {task + " epoch 1 leased to frozen",
                                  task + " epoch 2 leased to other",
                                  std::string("job succeeded")}) {
    EXPECT_NE(logs.find(line), std::string::npos) << line << "\n" << logs;
  }
  // The late completion (failed: stopped, or done) is discarded: the lease is no longer its.
  const auto late = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::string all = logs;
  while (std::chrono::steady_clock::now() < late &&
         all.find("completion from frozen, not a holder of its lease: discarded") ==
             std::string::npos) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    all = RunCommand(std::string(QCTL_BINARY) + " logs " + std::to_string(job) +
                         " --coordinator " + c.grpc_address(),
                     &rc);
  }
  EXPECT_NE(all.find("completion from frozen, not a holder of its lease: discarded"),
            std::string::npos)
      << all;
}

}  // namespace

namespace {

// Security: a cancel stops the running task at its next step boundary (it ran to the end, with
// only a "revoked" log line) and the coordinator removes the job's scratch (failed and
// cancelled jobs kept about 92 MB each).
TEST_F(WorkerServiceTest, CancelStopsTheRunningTaskAndRemovesTheScratch) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token",
                {"--lease-seconds", "2", "--scratch", (tmp_ / "scratch").string()});
  ASSERT_TRUE(c.up());
  Worker w(c.grpc_address(), "w", tmp_ / "w.log");
  ASSERT_TRUE(w.up());
  // 100,000 steps: minutes of GSQ if it were not stopped.
  const int64_t job = Submit(c, JobFlags(tmp_ / "out", 100000));
  std::string gsq_task;
  WaitForJob(c, job, 300, [&](const quant::v1::JobStatus& st) {
    for (const auto& t : st.tasks()) {
      if (t.kind() == "gsq" && t.state() == "leased") gsq_task = t.name();
    }
    return !gsq_task.empty();
  });
  ASSERT_FALSE(gsq_task.empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  int rc = 0;
  const std::string out = RunCommand(std::string(QCTL_BINARY) + " cancel " +
                                         std::to_string(job) + " --coordinator " +
                                         c.grpc_address() + " --token-file " +
                                         (tmp_ / "token").string(),
                                     &rc);
  ASSERT_EQ(rc, 0) << out;
  const auto cancelled_at = std::chrono::steady_clock::now();
  // The worker stops within a heartbeat period (lease / 4) and a step, and says so.
  std::string log;
  while (std::chrono::steady_clock::now() - cancelled_at < std::chrono::seconds(30)) {
    log = ReadFile(tmp_ / "w.log");
    if (log.find("GSQ stopped at step") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - cancelled_at).count();
  EXPECT_NE(log.find("revoked: stopping it"), std::string::npos) << log;
  EXPECT_NE(log.find("GSQ stopped at step"), std::string::npos) << log;
  std::printf("the GSQ task stopped %.1f s after the cancel\n", seconds);
  EXPECT_EQ(JobStatusOf(c, job).state(), quant::v1::JOB_CANCELLED);
  EXPECT_FALSE(fs::exists(tmp_ / "scratch" / ("job-" + std::to_string(job))));
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
  // No attempt of the stopped task is left beside the scratch either.
  if (fs::exists(tmp_ / "scratch")) EXPECT_TRUE(fs::is_empty(tmp_ / "scratch"));
}


// Security: the roots were checked at submit only. Replacing the output's parent with a symlink
// after the submission made the worker write the checkpoint outside the roots, and the job
// reported success. Now the worker checks the job's paths at use and writes through a
// directory opened beneath its root: the job fails with one line and nothing lands outside.
TEST_F(WorkerServiceTest, SymlinkSwappedInAfterSubmitCannotMoveTheOutputOutOfTheRoots) {
  const fs::path allowed = tmp_ / "allowed", outside = tmp_ / "outside";
  fs::create_directories(allowed / "sub");
  fs::create_directories(outside);
  Coordinator c(tmp_ / "state.db", tmp_ / "token",
                {"--max-attempts", "1", "--roots",
                 allowed.string() + "," + fs::path(kModel).parent_path().string() + "," +
                     std::string(QUANT_SHARED_DIR) + "/data"});
  ASSERT_TRUE(c.up());
  const int64_t job = Submit(c, "--model " + kModel + " --out " + (allowed / "sub" / "out").string() +
                                    " --method rtn --bits 4 --calib-tokens 2048 --no-eval");
  ASSERT_GE(job, 0);
  fs::rename(allowed / "sub", allowed / "sub.orig");
  fs::create_directory_symlink(outside, allowed / "sub");
  Worker w(c.grpc_address(), "w", tmp_ / "w.log");
  ASSERT_TRUE(w.up());
  const quant::v1::JobStatus st = WaitForJob(c, job, 300);
  EXPECT_EQ(st.state(), quant::v1::JOB_FAILED);
  EXPECT_NE(st.error().find("outside the allowed roots"), std::string::npos) << st.error();
  EXPECT_TRUE(fs::is_empty(outside));
}

// Security: the job's paths were checked (at submit and at use), but not the files opened
// through them: a file inside the model directory that is a symlink out of the roots was read
// from anywhere the process could read. Now the coordinator and the workers check the file each
// descriptor holds: a shard linked out of the roots refuses the submission, and a tokenizer
// swapped for such a link after the submission fails the job with one line.
TEST_F(WorkerServiceTest, AModelFileLinkedOutOfTheRootsIsNotRead) {
  const fs::path allowed = tmp_ / "allowed", outside = tmp_ / "outside";
  const fs::path model = allowed / "model";
  fs::create_directories(allowed);
  fs::create_directories(outside);
  fs::copy(kModel, model, fs::copy_options::recursive);
  Coordinator c(tmp_ / "state.db", tmp_ / "token",
                {"--max-attempts", "1", "--roots",
                 allowed.string() + "," + std::string(QUANT_SHARED_DIR) + "/data"});
  ASSERT_TRUE(c.up());
  const std::string flags = "--model " + model.string() + " --out " +
                            (allowed / "out").string() +
                            " --method rtn --bits 4 --calib-tokens 2048 --no-eval";
  // The same bytes, but outside the roots: without the check the job would succeed.
  const std::string shard = "model-00002-of-00003.safetensors";
  fs::rename(model / shard, outside / shard);
  fs::create_symlink(outside / shard, model / shard);
  int rc = 0;
  const std::string refused =
      RunCommand(std::string(QCTL_BINARY) + " submit --coordinator " + c.grpc_address() +
                     " --token-file " + (tmp_ / "token").string() + " " + flags,
                 &rc);
  EXPECT_NE(rc, 0) << refused;
  EXPECT_NE(refused.find(shard + ": opens a file outside the allowed roots"), std::string::npos)
      << refused;
  fs::remove(model / shard);
  fs::rename(outside / shard, model / shard);

  const int64_t job = Submit(c, flags);
  ASSERT_GE(job, 0);
  fs::rename(model / "tokenizer.json", outside / "tokenizer.json");
  fs::create_symlink(outside / "tokenizer.json", model / "tokenizer.json");
  Worker w(c.grpc_address(), "w", tmp_ / "w.log");
  ASSERT_TRUE(w.up());
  const quant::v1::JobStatus st = WaitForJob(c, job, 300);
  EXPECT_EQ(st.state(), quant::v1::JOB_FAILED);
  EXPECT_NE(st.error().find("tokenizer.json: opens a file outside the allowed roots"),
            std::string::npos) << st.error();
  EXPECT_FALSE(fs::exists(allowed / "out"));
}

// The task boundary on a worker: a torch error inside a task is a failed attempt whose one-line
// message `qctl status` shows (retried per the job's attempts), and the worker lives on.
TEST_F(WorkerServiceTest, ATaskThatThrowsIsAFailedAttemptNotACrash) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token", {"--max-attempts", "2"});
  ASSERT_TRUE(c.up());
  ::setenv("QUANT_INJECT_TASK_FAILURE", "throw:L1/calibrate", 1);
  Worker w(c.grpc_address(), "w", tmp_ / "w.log");
  ::unsetenv("QUANT_INJECT_TASK_FAILURE");
  ASSERT_TRUE(w.up());
  const int64_t job = Submit(c, JobFlags(tmp_ / "out"));
  const quant::v1::JobStatus st = WaitForJob(c, job, 120);
  EXPECT_EQ(st.state(), quant::v1::JOB_FAILED);
  EXPECT_NE(st.error().find("L1/calibrate (layer 1): torch error: injected failure"),
            std::string::npos) << st.error();
  const quant::v1::TaskStatus* t = Task(st, "L1/calibrate");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->attempts(), 2);
  int rc = 0;
  const std::string status = RunCommand(std::string(QCTL_BINARY) + " status " +
                                            std::to_string(job) + " --coordinator " +
                                            c.grpc_address(), &rc);
  EXPECT_NE(status.find("injected failure"), std::string::npos) << status;
  EXPECT_EQ(::kill(w.pid(), 0), 0) << "the worker died";
}

}  // namespace
