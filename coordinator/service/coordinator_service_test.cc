// quant-coordinator for real: the binary started on loopback by the test, spoken to over gRPC
// (the generated stubs) and HTTP. Checks the protocol-version refusal, the bearer token, spec
// validation, idempotent submission, leases and completions, and that `kill -9` of the
// coordinator followed by a restart on the same state resumes the job without re-running
// finished tasks. /metrics passes `promtool check metrics`.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/service/service_test_util.h"
#include "proto/quant.grpc.pb.h"
#include "job/plan_input.h"

namespace {

namespace fs = std::filesystem;
using quant::testing::Coordinator;
const std::string kModel = std::string(QUANT_SHARED_DIR) + "/models/tiny-deepseek-v3";
const std::string kCalib = std::string(QUANT_SHARED_DIR) + "/data/calib/calib.txt";
constexpr uint32_t kProtocol = quant::v1::PROTOCOL_VERSION;

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() / ("coordinator_test_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
    std::ofstream(tmp_ / "token") << "s3cret-token\n";
  }
  void TearDown() override { fs::remove_all(tmp_); }

  quant::v1::SubmitRequest Request(const std::string& client_id, const std::string& method) {
    quant::v1::SubmitRequest r;
    r.set_protocol(kProtocol);
    r.mutable_job()->set_client_job_id(client_id);
    r.mutable_job()->set_spec_json(R"({"calib": ")" + kCalib + R"(", "model": ")" + kModel + R"(", "out": ")" +
                                   (tmp_ / "out").string() + R"(", "method": ")" + method +
                                   R"(", "bits": 3})");
    return r;
  }
  static void Authorize(grpc::ClientContext* ctx) {
    ctx->AddMetadata("authorization", "Bearer s3cret-token");
  }
  // A worker's turn: lease the next task and, after `hold`, complete it. False when no task is
  // ready.
  bool LeaseAndComplete(Coordinator& c, const std::string& worker,
                               std::chrono::milliseconds hold = std::chrono::milliseconds(0)) {
    grpc::ClientContext lctx;
    quant::testing::AuthorizeWorker(&lctx);
    quant::v1::LeaseRequest lr;
    lr.set_protocol(kProtocol);
    lr.set_worker_id(worker);
    quant::v1::LeaseResponse lease;
    EXPECT_TRUE(c.workers().Lease(&lctx, lr, &lease).ok());
    if (!lease.has_task()) return false;
    std::this_thread::sleep_for(hold);
    // The attempt's output, where the lease tells a real worker to write it (the coordinator
    // commits it).
    const std::string attempt = lease.task().task().attempt();
    EXPECT_FALSE(attempt.empty());
    fs::create_directories(fs::path(attempt).parent_path());
    if (lease.task().task().kind() == quant::v1::TASK_EVALUATE) {
      std::ofstream(attempt) << "{}\n";
    } else {
      fs::create_directories(attempt);
    }
    grpc::ClientContext cctx;
    quant::testing::AuthorizeWorker(&cctx);
    quant::v1::CompleteRequest done;
    done.set_protocol(kProtocol);
    done.set_worker_id(worker);
    done.set_job_id(lease.task().job_id());
    done.set_task_id(lease.task().task_id());
    done.set_epoch(lease.task().epoch());
    done.set_ok(true);
    done.set_seconds(0.5);
    quant::v1::CompleteResponse cresp;
    EXPECT_TRUE(c.workers().Complete(&cctx, done, &cresp).ok());
    if (expect_commits_) EXPECT_TRUE(cresp.committed());
    return true;
  }
  fs::path tmp_;
  bool expect_commits_ = true;  // LeaseAndComplete's completions commit
};

TEST_F(CoordinatorTest, RefusesOldProtocolsMissingTokensAndBadSpecs) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token");
  ASSERT_TRUE(c.up());
  quant::v1::SubmitResponse resp;
  {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    auto req = Request("a", "rtn");
    req.set_protocol(0);
    const grpc::Status s = c.jobs().Submit(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(s.error_message().find("protocol version 0"), std::string::npos) << s.error_message();
  }
  {
    grpc::ClientContext ctx;  // no token
    const grpc::Status s = c.jobs().Submit(&ctx, Request("a", "rtn"), &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer s3cret-tokeX");
    EXPECT_EQ(c.jobs().Submit(&ctx, Request("a", "rtn"), &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    const grpc::Status s = c.jobs().Submit(&ctx, Request("a", "awq"), &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("\"method\""), std::string::npos) << s.error_message();
  }
  {
    // SLQ runs through the service (its probe pass on the workers, the solve here): accepted.
    grpc::ClientContext ctx;
    Authorize(&ctx);
    auto req = Request("slq", "gptq");
    std::string spec = req.job().spec_json();
    spec.insert(spec.size() - 1, R"(, "slq": true, "slq_budget": 3)");
    req.mutable_job()->set_spec_json(spec);
    req.set_dry_run(true);
    const grpc::Status s = c.jobs().Submit(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  {
    grpc::ClientContext ctx;
    quant::v1::LeaseRequest lr;
    lr.set_protocol(7);
    quant::v1::LeaseResponse lresp;
    EXPECT_EQ(c.workers().Lease(&ctx, lr, &lresp).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  quant::v1::ListResponse list;
  grpc::ClientContext ctx;
  quant::v1::ListRequest lreq;
  lreq.set_protocol(kProtocol);
  ASSERT_TRUE(c.jobs().List(&ctx, lreq, &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);  // nothing was stored
}

// A config that claims a billion layers: refused by Submit, dry run or not, when the checkpoint
// is opened and before anything is planned per layer (it took the dry run 14 s, then "Unexpected
// error in RPC handling").
TEST_F(CoordinatorTest, SubmitRefusesAConfigThatDisagreesWithTheCheckpointAtOnce) {
  const fs::path model = tmp_ / "model";
  fs::create_directories(model);
  for (const auto& entry : fs::directory_iterator(kModel)) {
    if (entry.path().filename() != "config.json") {
      fs::create_symlink(entry.path(), model / entry.path().filename());
    }
  }
  std::ifstream in(fs::path(kModel) / "config.json");
  std::stringstream config;
  config << in.rdbuf();
  std::string text = config.str();
  const std::string layers = "\"num_hidden_layers\": 4";
  ASSERT_NE(text.find(layers), std::string::npos);
  text.replace(text.find(layers), layers.size(), "\"num_hidden_layers\": 1000000000");
  std::ofstream(model / "config.json") << text;
  Coordinator c(tmp_ / "state.db", tmp_ / "token");
  ASSERT_TRUE(c.up());
  for (const bool dry_run : {true, false}) {
    quant::v1::SubmitRequest r;
    r.set_protocol(kProtocol);
    r.set_dry_run(dry_run);
    r.mutable_job()->set_client_job_id("billion");
    r.mutable_job()->set_spec_json(R"({"calib": ")" + kCalib + R"(", "model": ")" + model.string() + R"(", "out": ")" +
                                   (tmp_ / "out").string() + R"(", "method": "rtn", "bits": 3})");
    grpc::ClientContext ctx;
    Authorize(&ctx);
    quant::v1::SubmitResponse resp;
    const auto start = std::chrono::steady_clock::now();
    const grpc::Status s = c.jobs().Submit(&ctx, r, &resp);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_NE(s.error_message().find((model / "config.json").string() +
                                     ": field 'num_hidden_layers' is 1000000000"),
              std::string::npos)
        << s.error_message();
    EXPECT_LT(seconds, 1.0) << "dry run " << dry_run;
  }
  quant::v1::ListResponse list;
  grpc::ClientContext ctx;
  quant::v1::ListRequest lreq;
  lreq.set_protocol(kProtocol);
  ASSERT_TRUE(c.jobs().List(&ctx, lreq, &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);
}

TEST_F(CoordinatorTest, JobSurvivesKillNineOfTheCoordinator) {
  const fs::path state = tmp_ / "state.db";
  int64_t job_id = 0;
  int64_t total = 0;
  {
    Coordinator c(state, tmp_ / "token");
    ASSERT_TRUE(c.up());
    quant::v1::SubmitResponse resp;
    {
      grpc::ClientContext ctx;
      Authorize(&ctx);
      ASSERT_TRUE(c.jobs().Submit(&ctx, Request("job-1", "rtn"), &resp).ok());
      job_id = resp.job_id();
      EXPECT_FALSE(resp.existing());
      EXPECT_GT(resp.estimate().storage_bytes(), 0u);
    }
    {
      grpc::ClientContext ctx;  // the same client id: the same job
      Authorize(&ctx);
      quant::v1::SubmitResponse again;
      ASSERT_TRUE(c.jobs().Submit(&ctx, Request("job-1", "rtn"), &again).ok());
      EXPECT_EQ(again.job_id(), job_id);
      EXPECT_TRUE(again.existing());
    }
    {
      grpc::ClientContext ctx;  // the same id with other options: refused
      Authorize(&ctx);
      quant::v1::SubmitResponse other;
      EXPECT_EQ(c.jobs().Submit(&ctx, Request("job-1", "gptq"), &other).error_code(),
                grpc::StatusCode::ALREADY_EXISTS);
    }
    grpc::ClientContext rctx;
    quant::testing::AuthorizeWorker(&rctx);
    quant::v1::RegisterRequest reg;
    reg.set_protocol(kProtocol);
    reg.set_worker_id("w0");
    quant::v1::RegisterResponse rresp;
    ASSERT_TRUE(c.workers().Register(&rctx, reg, &rresp).ok());
    EXPECT_GT(rresp.lease_seconds(), 0);
    for (int i = 0; i < 3; ++i) {  // three tasks done before the coordinator dies
      ASSERT_TRUE(LeaseAndComplete(c, "w0"));
    }
    grpc::ClientContext sctx;
    quant::v1::JobRequest jr;
    jr.set_protocol(kProtocol);
    jr.set_job_id(job_id);
    quant::v1::JobStatus st;
    ASSERT_TRUE(c.jobs().Status(&sctx, jr, &st).ok());
    EXPECT_EQ(st.tasks_done(), 3);
    total = st.tasks_total();
    // /metrics and /healthz answer, and promtool accepts the exposition.
    httplib::Client http("127.0.0.1", c.http_port());
    auto health = http.Get("/healthz");
    ASSERT_TRUE(health && health->status == 200);
    auto metrics = http.Get("/metrics");
    ASSERT_TRUE(metrics && metrics->status == 200);
    EXPECT_NE(metrics->body.find("quant_task_outcomes_total{outcome=\"done\"} 3"),
              std::string::npos) << metrics->body;
    EXPECT_TRUE(quant::testing::PromtoolAccepts(metrics->body, tmp_ / "metrics.txt"));
    c.Kill();  // kill -9, mid-job
  }
  Coordinator c(state, tmp_ / "token");  // restarted on the same state
  ASSERT_TRUE(c.up());
  int runs = 0;
  while (LeaseAndComplete(c, "w1")) ++runs;
  EXPECT_EQ(runs, total - 3);  // finished tasks are not leased again
  grpc::ClientContext sctx;
  quant::v1::JobRequest jr;
  jr.set_protocol(kProtocol);
  jr.set_job_id(job_id);
  quant::v1::JobStatus st;
  ASSERT_TRUE(c.jobs().Status(&sctx, jr, &st).ok());
  EXPECT_EQ(st.state(), quant::v1::JOB_SUCCEEDED);
  for (const quant::v1::TaskStatus& t : st.tasks()) EXPECT_EQ(t.executions(), 1) << t.name();
}

// --roots: paths that resolve outside every root are refused, ".." and symlinks followed.
TEST_F(CoordinatorTest, JobPathsAreConfinedToTheRoots) {
  const fs::path allowed = tmp_ / "allowed";
  fs::create_directories(allowed / "models");
  fs::create_symlink(kModel, allowed / "models" / "deepseek");         // inside -> outside
  fs::create_directories(tmp_ / "elsewhere");
  fs::create_symlink(tmp_ / "elsewhere", allowed / "escape");           // a directory escape
  Coordinator c(tmp_ / "state.db", tmp_ / "token",
                {"--roots", allowed.string() + "," + fs::path(kModel).parent_path().string() + "," +
                                fs::path(kCalib).parent_path().string()});
  ASSERT_TRUE(c.up());
  auto submit = [&](const std::string& model, const std::string& out) {
    quant::v1::SubmitRequest r;
    r.set_protocol(kProtocol);
    r.set_dry_run(true);
    r.mutable_job()->set_client_job_id("x");
    r.mutable_job()->set_spec_json(R"({"calib": ")" + kCalib + R"(", "model": ")" + model +
                                   R"(", "out": ")" + out + R"(", "method": "rtn", "bits": 3})");
    grpc::ClientContext ctx;
    Authorize(&ctx);
    quant::v1::SubmitResponse resp;
    return c.jobs().Submit(&ctx, r, &resp);
  };
  EXPECT_TRUE(submit(kModel, (allowed / "out").string()).ok());
  // The symlinked model resolves to the shared models, which are a root too.
  EXPECT_TRUE(submit((allowed / "models" / "deepseek").string(), (allowed / "o2").string()).ok());
  const grpc::Status dots = submit(kModel, (allowed / ".." / "out").string());
  EXPECT_EQ(dots.error_code(), grpc::StatusCode::PERMISSION_DENIED) << dots.error_message();
  EXPECT_NE(dots.error_message().find("\"out\""), std::string::npos) << dots.error_message();
  const grpc::Status link = submit(kModel, (allowed / "escape" / "out").string());
  EXPECT_EQ(link.error_code(), grpc::StatusCode::PERMISSION_DENIED) << link.error_message();
  const grpc::Status model = submit("/etc", (allowed / "out").string());
  EXPECT_EQ(model.error_code(), grpc::StatusCode::PERMISSION_DENIED) << model.error_message();
  EXPECT_NE(model.error_message().find("\"model\""), std::string::npos) << model.error_message();
}

// qctl's client commands against the real coordinator: one line per outcome, exit codes.
TEST_F(CoordinatorTest, QctlSubmitStatusListCancel) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token");
  ASSERT_TRUE(c.up());
  const std::string conn = " --coordinator " + c.grpc_address();
  const std::string job = " --model " + kModel + " --out " + (tmp_ / "out").string() +
                          " --method rtn --bits 3";
  auto run = [&](const std::string& args, std::string* out) {
    const std::string cmd = std::string(QCTL_BINARY) + " " + args + " > " +
                            (tmp_ / "o.txt").string() + " 2>&1";
    const int status = std::system(cmd.c_str());
    std::ifstream in(tmp_ / "o.txt");
    std::stringstream ss;
    ss << in.rdbuf();
    *out = ss.str();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string out;
  EXPECT_EQ(run("submit" + job + conn, &out), 1);  // no token
  EXPECT_NE(out.find("qctl: error:"), std::string::npos) << out;
  EXPECT_NE(out.find("bearer token"), std::string::npos) << out;
  const std::string token = " --token-file " + (tmp_ / "token").string();
  EXPECT_EQ(run("submit" + job + conn + token + " --dry-run", &out), 0) << out;
  EXPECT_NE(out.find("estimate"), std::string::npos) << out;
  EXPECT_EQ(run("list" + conn, &out), 0);
  EXPECT_EQ(out, "");  // a dry run creates nothing
  EXPECT_EQ(run("submit" + job + conn + token, &out), 0) << out;
  EXPECT_NE(out.find("job 1 ("), std::string::npos) << out;
  EXPECT_EQ(run("submit" + job + conn + token, &out), 0) << out;
  EXPECT_NE(out.find("already submitted"), std::string::npos) << out;
  EXPECT_EQ(run("status 1" + conn, &out), 0) << out;
  EXPECT_NE(out.find("running, 0/"), std::string::npos) << out;
  EXPECT_NE(out.find("L1/calibrate"), std::string::npos) << out;
  EXPECT_EQ(run("cancel 1" + conn + token, &out), 0) << out;
  EXPECT_EQ(run("watch 1" + conn, &out), 1) << out;  // ends at once: cancelled
  EXPECT_NE(out.find("cancelled"), std::string::npos) << out;
  EXPECT_EQ(run("status 7" + conn, &out), 1);
  EXPECT_NE(out.find("no job 7"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);  // one line
}

// qctl watch follows a job on the coordinator's stream while a worker completes its tasks.
TEST_F(CoordinatorTest, QctlWatchFollowsAJobToTheEnd) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token");
  ASSERT_TRUE(c.up());
  {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    quant::v1::SubmitResponse resp;
    ASSERT_TRUE(c.jobs().Submit(&ctx, Request("job-w", "rtn"), &resp).ok());
  }
  const std::string cmd = std::string(QCTL_BINARY) + " watch 1 --coordinator " +
                          c.grpc_address() + " 2>&1";
  FILE* watch = popen(cmd.c_str(), "r");
  ASSERT_NE(watch, nullptr);
  std::string out;
  char buf[512];
  // The watch is connected once it printed the job's first status: no race with the worker.
  ASSERT_NE(fgets(buf, sizeof(buf), watch), nullptr);
  out += buf;
  // A worker that holds each task long enough for the watch to see it running.
  while (LeaseAndComplete(c, "w0", std::chrono::milliseconds(250))) {
  }
  while (fgets(buf, sizeof(buf), watch)) out += buf;
  const int status = pclose(watch);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find(" on w0"), std::string::npos) << out;  // some task seen running on w0
  EXPECT_NE(out.find("ETA"), std::string::npos) << out;
  EXPECT_NE(out.find("succeeded"), std::string::npos) << out;
  EXPECT_GE(std::count(out.begin(), out.end(), '\n'), 5) << out;
}

}  // namespace

// ---- The adversarial pass's attacks (docs/operations.md, "Security"), each against the real
// coordinator. ----

// Every Workers RPC needs a worker credential: none, or the submit token, is refused; before
// this, anyone reaching the port could lease tasks (specs included), fail any job with three
// Complete(ok=false) calls and fill the rendezvous store.
TEST_F(CoordinatorTest, SecurityWorkersApiNeedsAWorkerCredential) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token");
  ASSERT_TRUE(c.up());
  quant::v1::SubmitResponse submitted;
  {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    ASSERT_TRUE(c.jobs().Submit(&ctx, Request("victim", "rtn"), &submitted).ok());
  }
  // (0) none, (1) the submit token, (2) a wrong worker token.
  for (int who = 0; who < 3; ++who) {
    auto ctx = [&] {
      auto x = std::make_unique<grpc::ClientContext>();
      if (who == 1) Authorize(x.get());
      if (who == 2) x->AddMetadata("authorization", "Bearer w0rker-tokeX");
      return x;
    };
    quant::v1::RegisterRequest reg;
    reg.set_protocol(kProtocol);
    reg.set_worker_id("stranger");
    quant::v1::RegisterResponse rr;
    EXPECT_EQ(c.workers().Register(ctx().get(), reg, &rr).error_code(),
              grpc::StatusCode::UNAUTHENTICATED) << who;
    quant::v1::LeaseRequest lr;
    lr.set_protocol(kProtocol);
    lr.set_worker_id("stranger");
    quant::v1::LeaseResponse lease;
    EXPECT_EQ(c.workers().Lease(ctx().get(), lr, &lease).error_code(),
              grpc::StatusCode::UNAUTHENTICATED) << who;
    EXPECT_FALSE(lease.has_task());
    quant::v1::HeartbeatRequest hr;
    hr.set_protocol(kProtocol);
    hr.set_worker_id("stranger");
    quant::v1::HeartbeatResponse hresp;
    EXPECT_EQ(c.workers().Heartbeat(ctx().get(), hr, &hresp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED) << who;
    for (int i = 0; i < 3; ++i) {  // the sabotage: three failed completions
      quant::v1::CompleteRequest done;
      done.set_protocol(kProtocol);
      done.set_worker_id("stranger");
      done.set_job_id(submitted.job_id());
      done.set_task_id(0);
      done.set_epoch(1);
      done.set_ok(false);
      done.set_error("sabotaged by an unauthenticated client");
      quant::v1::CompleteResponse cr;
      EXPECT_EQ(c.workers().Complete(ctx().get(), done, &cr).error_code(),
                grpc::StatusCode::UNAUTHENTICATED) << who;
    }
    quant::v1::StoreRequest sr;
    sr.set_protocol(kProtocol);
    sr.set_worker_id("stranger");
    sr.set_key("g/1/0/1/x");
    sr.set_value(std::string(65536, 'x'));
    quant::v1::StoreResponse sresp;
    EXPECT_EQ(c.workers().StoreSet(ctx().get(), sr, &sresp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED) << who;
    EXPECT_EQ(c.workers().StoreGet(ctx().get(), sr, &sresp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED) << who;
  }
  // An authenticated worker that holds no lease of the task cannot fail it either.
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    quant::testing::AuthorizeWorker(&ctx);
    quant::v1::CompleteRequest done;
    done.set_protocol(kProtocol);
    done.set_worker_id("not-the-holder");
    done.set_job_id(submitted.job_id());
    done.set_task_id(0);
    done.set_epoch(1);
    done.set_ok(false);
    quant::v1::CompleteResponse cr;
    ASSERT_TRUE(c.workers().Complete(&ctx, done, &cr).ok());
    EXPECT_FALSE(cr.committed());
  }
  grpc::ClientContext sctx;
  quant::v1::JobRequest jr;
  jr.set_protocol(kProtocol);
  jr.set_job_id(submitted.job_id());
  quant::v1::JobStatus st;
  ASSERT_TRUE(c.jobs().Status(&sctx, jr, &st).ok());
  EXPECT_EQ(st.state(), quant::v1::JOB_RUNNING) << st.error();
  for (const quant::v1::TaskStatus& t : st.tasks()) EXPECT_EQ(t.attempts(), 0) << t.name();
  // The real worker token gets in.
  grpc::ClientContext rctx;
  quant::testing::AuthorizeWorker(&rctx);
  quant::v1::RegisterRequest reg;
  reg.set_protocol(kProtocol);
  reg.set_worker_id("w0");
  quant::v1::RegisterResponse rr;
  EXPECT_TRUE(c.workers().Register(&rctx, reg, &rr).ok());
}

// The rendezvous store takes keys only from a member of a live gang attempt: 1,500 StoreSet
// calls of 64 KiB each by an authenticated worker with no such lease store nothing.
TEST_F(CoordinatorTest, SecurityRendezvousIsScopedToALiveGangAttempt) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token");
  ASSERT_TRUE(c.up());
  quant::v1::SubmitResponse submitted;
  {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    ASSERT_TRUE(c.jobs().Submit(&ctx, Request("job", "rtn"), &submitted).ok());
  }
  for (int i = 0; i < 1500; ++i) {
    grpc::ClientContext ctx;
    quant::testing::AuthorizeWorker(&ctx);
    quant::v1::StoreRequest sr;
    sr.set_protocol(kProtocol);
    sr.set_worker_id("w0");
    sr.set_key("g/" + std::to_string(submitted.job_id()) + "/0/1/k" + std::to_string(i));
    sr.set_value(std::string(65536, 'x'));
    quant::v1::StoreResponse sresp;
    const grpc::Status s = c.workers().StoreSet(&ctx, sr, &sresp);
    ASSERT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  }
  for (const std::string key : {"x", "g/", "g/a/b/c/d", "not/g/1/2/3"}) {
    grpc::ClientContext ctx;
    quant::testing::AuthorizeWorker(&ctx);
    quant::v1::StoreRequest sr;
    sr.set_protocol(kProtocol);
    sr.set_worker_id("w0");
    sr.set_key(key);
    quant::v1::StoreResponse sresp;
    EXPECT_EQ(c.workers().StoreGet(&ctx, sr, &sresp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT) << key;
  }
}

// A running task's progress (the heartbeat's TaskProgress) is kept only from a holder of the
// task's live lease at that epoch; Status shows it on the leased task.
TEST_F(CoordinatorTest, SecurityOnlyTheLeaseHolderReportsProgress) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token");
  ASSERT_TRUE(c.up());
  quant::v1::SubmitResponse submitted;
  {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    ASSERT_TRUE(c.jobs().Submit(&ctx, Request("job-p", "rtn"), &submitted).ok());
  }
  quant::v1::LeaseResponse lease;
  {
    grpc::ClientContext ctx;
    quant::testing::AuthorizeWorker(&ctx);
    quant::v1::LeaseRequest lr;
    lr.set_protocol(kProtocol);
    lr.set_worker_id("w0");
    ASSERT_TRUE(c.workers().Lease(&ctx, lr, &lease).ok());
    ASSERT_TRUE(lease.has_task());
  }
  auto report = [&](const std::string& worker, int64_t epoch, int64_t step) {
    grpc::ClientContext ctx;
    quant::testing::AuthorizeWorker(&ctx);
    quant::v1::HeartbeatRequest hr;
    hr.set_protocol(kProtocol);
    hr.set_worker_id(worker);
    quant::v1::TaskProgress* p = hr.add_progress();
    p->set_job_id(submitted.job_id());
    p->set_task_id(lease.task().task_id());
    p->set_epoch(epoch);
    p->set_phase("gsq");
    p->set_layer(lease.task().task().layer());
    p->set_step(step);
    p->set_steps(40);
    p->set_loss(0.25);
    p->set_seconds(1.5);
    quant::v1::HeartbeatResponse hresp;
    EXPECT_TRUE(c.workers().Heartbeat(&ctx, hr, &hresp).ok());
  };
  auto shown = [&]() -> quant::v1::TaskProgress {
    grpc::ClientContext ctx;
    quant::v1::JobRequest jr;
    jr.set_protocol(kProtocol);
    jr.set_job_id(submitted.job_id());
    quant::v1::JobStatus st;
    EXPECT_TRUE(c.jobs().Status(&ctx, jr, &st).ok());
    for (const quant::v1::TaskStatus& t : st.tasks()) {
      if (t.task_id() == lease.task().task_id()) return t.progress();
    }
    return {};
  };
  report("w1", lease.task().epoch(), 7);      // not the holder
  report("w0", lease.task().epoch() + 1, 8);  // not the lease's epoch
  EXPECT_EQ(shown().step(), 0);
  EXPECT_TRUE(shown().worker().empty());
  report("w0", lease.task().epoch(), 9);
  const quant::v1::TaskProgress p = shown();
  EXPECT_EQ(p.step(), 9);
  EXPECT_EQ(p.steps(), 40);
  EXPECT_EQ(p.phase(), "gsq");
  EXPECT_DOUBLE_EQ(p.loss(), 0.25);
  EXPECT_EQ(p.worker(), "w0");
}

// The coordinator will not start half-guarded: a submit token without any worker credential,
// or one token for both.
TEST_F(CoordinatorTest, SecurityRefusesToStartWithUnauthenticatedWorkers) {
  int rc = 0;
  std::string out = quant::testing::RunCommand(
      std::string(COORDINATOR_BINARY) + " --state " + (tmp_ / "a.db").string() +
          " --token-file " + (tmp_ / "token").string(),
      &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("workers would be unauthenticated"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  out = quant::testing::RunCommand(std::string(COORDINATOR_BINARY) + " --state " +
                                       (tmp_ / "b.db").string() + " --token-file " +
                                       (tmp_ / "token").string() + " --worker-token-file " +
                                       (tmp_ / "token").string(),
                                   &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("must differ"), std::string::npos) << out;
}

// Submit-time edges: relative paths (the coordinator's and the worker's working directories
// differ), control characters in the client id (forged lines in `qctl list`/`logs`), a second
// live job onto the same output, and a spec with no calibration text.
TEST_F(CoordinatorTest, SecuritySubmitRefusesAmbiguousOrForgedInput) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token");
  ASSERT_TRUE(c.up());
  auto submit = [&](const std::string& id, const std::string& spec) {
    quant::v1::SubmitRequest r;
    r.set_protocol(kProtocol);
    r.mutable_job()->set_client_job_id(id);
    r.mutable_job()->set_spec_json(spec);
    grpc::ClientContext ctx;
    Authorize(&ctx);
    quant::v1::SubmitResponse resp;
    return c.jobs().Submit(&ctx, r, &resp);
  };
  const std::string out = (tmp_ / "out").string();
  auto spec = [&](const std::string& model, const std::string& o, int bits) {
    return R"({"calib": ")" + kCalib + R"(", "model": ")" + model + R"(", "out": ")" + o +
           R"(", "method": "rtn", "bits": )" + std::to_string(bits) + "}";
  };
  grpc::Status s = submit("rel", spec("models/tiny-deepseek-v3", out, 3));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("\"model\""), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("relative"), std::string::npos) << s.error_message();
  s = submit("rel-out", spec(kModel, "out", 3));
  EXPECT_NE(s.error_message().find("relative"), std::string::npos) << s.error_message();
  s = submit("evil\n[coordinator] job 1 succeeded", spec(kModel, out, 3));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("control characters"), std::string::npos);
  s = submit("ansi\x1b[2J", spec(kModel, out, 3));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = submit("nocalib", R"({"model": ")" + kModel + R"(", "out": ")" + out +
                            R"(", "method": "rtn", "bits": 3})");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("\"calib\""), std::string::npos) << s.error_message();
  // The NUL attack: the whole string passed the roots check, the kernel stopped at the NUL.
  s = submit("nul", spec(kModel, (tmp_ / "victim").string() + "\\u0000/../../out/victim", 3));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("\"out\": holds a control character"), std::string::npos)
      << s.error_message();
  ASSERT_TRUE(submit("first", spec(kModel, out, 3)).ok());
  s = submit("second", spec(kModel, out + "/", 4));  // the same place, spelled otherwise
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_NE(s.error_message().find("running job"), std::string::npos) << s.error_message();
  EXPECT_TRUE(submit("first", spec(kModel, out, 3)).ok());  // the same job again: idempotent
}

// A commit whose target already holds other content fails the task (and, after the retries,
// the job) with one line; it was a no-op reported as "committed".
TEST_F(CoordinatorTest, SecurityCommitOntoOtherContentFails) {
  Coordinator c(tmp_ / "state.db", tmp_ / "token", {"--max-attempts", "1"});
  ASSERT_TRUE(c.up());
  quant::v1::SubmitResponse submitted;
  {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    ASSERT_TRUE(c.jobs().Submit(&ctx, Request("job", "rtn"), &submitted).ok());
  }
  // Another checkpoint lands at the output after the submission.
  fs::create_directories(tmp_ / "out");
  std::ofstream(tmp_ / "out" / "quant_manifest.json") << "{\"other\": true}\n";
  expect_commits_ = false;  // the write task's will not
  for (int i = 0; i < 100 && LeaseAndComplete(c, "w0"); ++i) {
  }
  grpc::ClientContext sctx;
  quant::v1::JobRequest jr;
  jr.set_protocol(kProtocol);
  jr.set_job_id(submitted.job_id());
  quant::v1::JobStatus st;
  ASSERT_TRUE(c.jobs().Status(&sctx, jr, &st).ok());
  EXPECT_EQ(st.state(), quant::v1::JOB_FAILED);
  EXPECT_NE(st.error().find("already holds other content"), std::string::npos) << st.error();
  std::ifstream in(tmp_ / "out" / "quant_manifest.json");
  std::string kept((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(kept, "{\"other\": true}\n");
}
