// SLQ through the service for real (issue 23 items 6-7): quant-coordinator and two quant-worker
// processes on loopback run an SLQ job on tiny-deepseek-v3: the workers run the probe pass's
// tasks, each probe table goes into the coordinator's state as it commits, the coordinator
// solves once every probe is in and releases the quantize pass at the chosen bits. The result
// is the allocation and the bytes of `qctl quantize --slq` in one process. Faults: kill -9 of a
// worker mid-probe, and of the coordinator between the last probe and the solve; no finished
// probe runs again.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "coordinator/service/service_test_util.h"
#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using quant::testing::CheckpointDifferences;
using quant::testing::Coordinator;
using quant::testing::ReadFile;
using quant::testing::RunCommand;
using quant::testing::SubmitWithQctl;
using quant::testing::WaitForJob;
using quant::testing::Worker;
const std::string kModel = std::string(QUANT_SHARED_DIR) + "/models/tiny-deepseek-v3";

// SLQ with the RTN start over {2, 4} bits, on a small calibration set: the probe pass, the solve
// and the quantize pass all run, in seconds. `goal`: the budget (an average of 3 bits) or an
// EAR target.
const std::string kBudget = "--bits 3";
const std::string kTarget = "--target-ear 0.93";
std::string JobFlags(const fs::path& out, const std::string& goal = kBudget) {
  return "--model " + kModel + " --out " + out.string() + " --method rtn --slq --slq-bits 2,4 " +
         goal + " --probe-windows 4 --calib-tokens 2048 --no-eval";
}



// unit -> bits of a report.json's SLQ solve.
std::map<std::string, int> ReportBits(const fs::path& out) {
  std::map<std::string, int> bits;
  const nlohmann::json r = nlohmann::json::parse(ReadFile(out / "report.json"), nullptr, false);
  if (r.is_discarded()) return bits;
  for (const nlohmann::json& u : r["slq"]["units"]) bits[u["unit"]] = u["bits"].get<int>();
  return bits;
}

class SlqServiceTest : public ::testing::Test {
 protected:
  // The reference: `qctl quantize --slq` in one process (in memory), made once per process and
  // goal.
  static fs::path Reference(const std::string& goal = kBudget) {
    static std::map<std::string, fs::path> made;
    if (made.count(goal)) return made[goal];
    const fs::path out = RefRoot() / std::to_string(made.size());
    fs::remove_all(out);
    int rc = 0;
    const std::string log = RunCommand(
        std::string(QCTL_BINARY) + " quantize --in-memory " + JobFlags(out, goal), &rc);
    EXPECT_EQ(rc, 0) << log;
    return made[goal] = out;
  }
  static fs::path RefRoot() {
    return fs::temp_directory_path() / ("slq_service_ref_" + std::to_string(getpid()));
  }
  static void TearDownTestSuite() { fs::remove_all(RefRoot()); }
  void SetUp() override {
    tmp_ = fs::temp_directory_path() /
           ("slq_service_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
    std::ofstream(tmp_ / "token") << "t0ken\n";
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(tmp_);
  }
  int64_t Submit(const std::string& address, const std::string& flags) {
    int rc = 0;
    std::string out;
    const int64_t job = SubmitWithQctl(address, tmp_ / "token", flags, &rc, &out);
    EXPECT_EQ(rc, 0) << out;
    return job;
  }
  // The job ended well with the reference's bytes and bits, the allocation in its status.
  void ExpectTheReference(const quant::v1::JobStatus& st, const std::string& goal = kBudget) {
    ASSERT_EQ(st.state(), quant::v1::JOB_SUCCEEDED) << st.error();
    EXPECT_EQ(CheckpointDifferences(Reference(goal), tmp_ / "out"), std::vector<std::string>{});
    EXPECT_EQ(CheckpointDifferences(tmp_ / "out", Reference(goal)), std::vector<std::string>{});
    const std::map<std::string, int> bits = ReportBits(tmp_ / "out");
    EXPECT_FALSE(bits.empty());
    EXPECT_EQ(bits, ReportBits(Reference(goal)));
    ASSERT_TRUE(st.has_slq());
    const std::map<std::string, int> in_status(st.slq().unit_bits().begin(),
                                               st.slq().unit_bits().end());
    EXPECT_EQ(in_status, bits);
    if (goal == kBudget) {
      EXPECT_EQ(st.slq().mode(), "budget");
      EXPECT_LE(st.slq().average_bits(), 3.0 + 1e-9);
    } else {
      EXPECT_EQ(st.slq().mode(), "target-ear");
      EXPECT_GE(st.slq().predicted_ear(), 0.93);
    }
    EXPECT_GT(st.slq().predicted_ear(), 0);
  }

  // A coordinator and two workers on loopback.
  struct Service {
    explicit Service(const fs::path& dir)
        : c(dir / "state.db", dir / "token"),
          w0(c.grpc_address(), "w0", dir / "w0.log"),
          w1(c.grpc_address(), "w1", dir / "w1.log") {}
    bool up() const { return c.up() && w0.up() && w1.up(); }
    Coordinator c;
    Worker w0, w1;
  };

  fs::path tmp_;
};

TEST_F(SlqServiceTest, TwoWorkersPickTheEmbeddedRunsBitsAndWriteItsBytes) {
  Service service(tmp_);
  ASSERT_TRUE(service.up());
  Coordinator& c = service.c;
  const int64_t job = Submit(c.grpc_address(), JobFlags(tmp_ / "out"));
  const quant::v1::JobStatus st = WaitForJob(c, job, 600);
  ExpectTheReference(st);
  std::set<std::string> probed_on;
  int probes = 0;
  for (const auto& t : st.tasks()) {
    EXPECT_EQ(t.executions(), 1) << t.name();
    if (t.kind() == "probe") {
      ++probes;
      probed_on.insert(t.worker());
    }
    if (t.kind() == "solve") EXPECT_EQ(t.worker(), "coordinator");
  }
  EXPECT_GE(probes, 2);
  EXPECT_EQ(probed_on.size(), 2u) << "the probes all ran on one worker";
  // qctl status shows the allocation.
  int rc = 0;
  const std::string status = RunCommand(std::string(QCTL_BINARY) + " status --coordinator " +
                                            c.grpc_address() + " " + std::to_string(job),
                                        &rc);
  EXPECT_EQ(rc, 0) << status;
  EXPECT_NE(status.find("SLQ budget: average"), std::string::npos) << status;
  EXPECT_NE(status.find("mlp.experts.gate_up"), std::string::npos) << status;

  // The same job again (another output): every probe comes from the coordinator's probe cache,
  // none runs, and the result is the same.
  fs::rename(tmp_ / "out", tmp_ / "first");
  const int64_t again = Submit(c.grpc_address(), "--job-id again " + JobFlags(tmp_ / "out"));
  ASSERT_NE(again, job);
  const quant::v1::JobStatus cached = WaitForJob(c, again, 600);
  ExpectTheReference(cached);
  for (const auto& t : cached.tasks()) {
    if (t.kind() != "probe") continue;
    EXPECT_EQ(t.executions(), 0) << t.name();
    EXPECT_EQ(t.worker(), "probe cache") << t.name();
  }
  EXPECT_EQ(cached.slq().probes_run(), 0);
}

// The EAR-target mode through the service: the coordinator's solve picks the fewest bits whose
// predicted EAR reaches the target, as the embedded run does.
TEST_F(SlqServiceTest, AnEarTargetGivesTheEmbeddedRunsBitsAndBytes) {
  Service service(tmp_);
  ASSERT_TRUE(service.up());
  const int64_t job = Submit(service.c.grpc_address(), JobFlags(tmp_ / "out", kTarget));
  ExpectTheReference(WaitForJob(service.c, job, 600), kTarget);
}

TEST_F(SlqServiceTest, KillNineOfAWorkerMidProbeAndOfTheCoordinatorBeforeTheSolve) {
  std::string address;
  int64_t job = -1;
  std::map<std::string, int64_t> probes_done;
  {
    // The first coordinator exits as kill -9 would once every probe committed, before it solves.
    setenv("QUANT_TEST_EXIT_BEFORE_SOLVE", (tmp_ / "exited").c_str(), 1);
    Coordinator first(tmp_ / "state.db", tmp_ / "token", {"--lease-seconds", "3"});
    unsetenv("QUANT_TEST_EXIT_BEFORE_SOLVE");
    ASSERT_TRUE(first.up());
    address = first.grpc_address();
    auto w0 = std::make_unique<Worker>(address, "w0", tmp_ / "w0.log");
    Worker w1(address, "w1", tmp_ / "w1.log");
    ASSERT_TRUE(w0->up() && w1.up());
    job = Submit(address, JobFlags(tmp_ / "out"));
    // A probe held by w0: kill it there (kill -9), mid-probe.
    const quant::v1::JobStatus mid = WaitForJob(first, job, 300, [](const quant::v1::JobStatus& s) {
      for (const auto& t : s.tasks()) {
        if (t.kind() == "probe" && t.state() == "leased" && t.worker() == "w0") return true;
      }
      return false;
    });
    bool killed = false;
    for (const auto& t : mid.tasks()) {
      if (t.kind() == "probe" && t.state() == "leased" && t.worker() == "w0") killed = true;
    }
    ASSERT_TRUE(killed) << "w0 never held a probe";
    w0.reset();
    // The coordinator goes down after the last probe's commit, before the solve.
    for (int i = 0; i < 6000 && !fs::exists(tmp_ / "exited"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(fs::exists(tmp_ / "exited")) << "the coordinator never reached the solve";
    Coordinator again(tmp_ / "state.db", tmp_ / "token",
                      {"--lease-seconds", "3", "--listen", address});
    ASSERT_TRUE(again.up());
    const quant::v1::JobStatus end = WaitForJob(again, job, 600);
    ExpectTheReference(end);
    int probes = 0, rerun = 0;
    for (const auto& t : end.tasks()) {
      if (t.kind() != "probe") continue;
      ++probes;
      // The probe killed with w0 ran twice; every other probe once, the restart included.
      if (t.executions() > 1) ++rerun;
      EXPECT_LE(t.executions(), 2) << t.name();
    }
    EXPECT_GE(probes, 2);
    EXPECT_EQ(rerun, 1) << "only the probe killed mid-way runs again";
  }
}

}  // namespace
