// A stop asked of a running task (a revoked lease, Ctrl-C) ends it at the next piece of its
// loop, not at its end: calibrate and propagate between forward batches, quantize between
// batches of units, write between the tensors it produces, evaluate between layers and scored
// batches (GSQ's steps are gsq_test's).
#include "worker/runner/service_task.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "common/metrics.h"
#include "job/plan_input.h"
#include "nlohmann/json.hpp"
#include "tests/sha256_hex.h"
#include "worker/runner/embedded_job.h"

namespace quant::tasks {
namespace {

namespace fs = std::filesystem;

class ServiceTaskStopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("task_runner_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "job");
    spec_.model_dir = std::string(QUANT_SHARED_DIR) + "/models/tiny-deepseek-v3";
    spec_.out_dir = (dir_ / "out").string();
    spec_.method = Method::kGptq;
    spec_.calib_path = std::string(QUANT_SHARED_DIR) + "/data/calib/calib.txt";
    spec_.calib_tokens = 8 * 256;
    spec_.batch_windows = 2;  // 4 forward batches
    spec_.eval_text = std::string(QUANT_SHARED_DIR) + "/data/eval/kjv_val.txt";
    auto plan = PlanJob(spec_);
    ASSERT_TRUE(plan.ok()) << plan.status();
    plan_ = *plan;
  }
  void TearDown() override { fs::remove_all(dir_); }

  const Task& Find(const std::string& name) const {
    for (const Task& t : plan_.tasks) {
      if (t.Name() == name) return t;
    }
    std::string names;
    for (const Task& t : plan_.tasks) names += " " + t.Name();
    ADD_FAILURE() << name << " is not in the plan:" << names;
    return plan_.tasks.front();
  }
  // Runs `task` asking to stop from the (after+1)-th question on; returns the questions asked.
  absl::Status Run(const Task& task, int after, int* asked) {
    const LeasedTask leased = LeaseTask(plan_, task, (dir_ / "job").string(), spec_.out_dir, 1);
    const TaskOutput& paths = leased.output;
    TaskHooks hooks;
    hooks.should_stop = [after, asked] { return (*asked)++ >= after; };
    absl::Status s = RunServiceTask(spec_, leased, nullptr, hooks);
    if (s.ok()) {
      fs::rename(paths.attempt, paths.committed);  // what the coordinator does
    } else {
      fs::remove_all(paths.attempt);  // what the worker does with a stopped attempt
    }
    return s;
  }

  fs::path dir_;
  QuantizeJobSpec spec_;
  Plan plan_;
};

// Each task stopped once in the middle, then run whole (committed as the coordinator would) so
// that the next one has its inputs: L0 is dense and out of scope (propagate only).
TEST_F(ServiceTaskStopTest, CalibrateQuantizeAndPropagateStopBetweenTheirPieces) {
  struct Case {
    const char* task;
    int after;  // questions answered "go on" before the stop
    const char* message;
  };
  for (const Case& c : {Case{"L0/propagate", 1, "stopped before batch 1 of 4"},
                        Case{"L1/calibrate", 3, "stopped before batch 3 of 4"},
                        Case{"L1/quantize", 1, "stopped before unit batch 1 of 3"},
                        Case{"L1/propagate", 2, "stopped before batch 2 of 4"}}) {
    int asked = 0;
    absl::Status s = Run(Find(c.task), c.after, &asked);
    EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << c.task << ": " << s;
    EXPECT_EQ(s.message(), c.message) << c.task;
    EXPECT_EQ(asked, c.after + 1) << c.task;
    asked = 0;
    ASSERT_TRUE(Run(Find(c.task), 1 << 30, &asked).ok()) << c.task;
  }
  // The rest of the job; the write stopped between its tensors leaves no output and no
  // temporary directory behind; the evaluation stopped between the model's layers.
  bool wrote = false, evaluated = false;
  for (const Task& t : plan_.tasks) {
    if (t.layer < 2 && t.layer >= 0) continue;
    int asked = 0;
    if (t.kind == TaskKind::kWrite) {
      absl::Status s = Run(t, 5, &asked);
      EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
      EXPECT_TRUE(absl::StartsWith(s.message(), "export: stopped before tensor 5 of ")) << s;
      EXPECT_EQ(asked, 6);
      for (const auto& entry : fs::directory_iterator(dir_)) {  // the export's temporary dir
        EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos)
            << entry.path();
      }
      EXPECT_FALSE(fs::exists(dir_ / "out"));
      wrote = true;
    }
    if (t.kind != TaskKind::kEvaluate) {
      asked = 0;
      ASSERT_TRUE(Run(t, 1 << 30, &asked).ok()) << t.Name();
      continue;
    }
    absl::Status s = Run(t, 2, &asked);
    EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
    EXPECT_EQ(s.message(), "model: stopped before layer 2 of 4");
    evaluated = true;
  }
  EXPECT_TRUE(wrote);
  EXPECT_TRUE(evaluated);
}

// A task opens only what it needs: with the calibration text removed once the first layer's
// task has made the calibration windows, every later task of a GSQ job (calibrate, quantize,
// the GSQ shard, propagate, write) still runs, from the hand-off alone; the text was tokenized
// once in the whole job.
TEST_F(ServiceTaskStopTest, OnlyTheFirstLayersTaskReadsTheCalibrationText) {
  fs::copy_file(spec_.calib_path, dir_ / "calib.txt");
  spec_.calib_path = (dir_ / "calib.txt").string();
  spec_.method = Method::kGsq;
  spec_.steps = 2;
  spec_.evaluate = false;
  auto plan = PlanJob(spec_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  plan_ = *plan;
  const metrics::Counter& tokenized = metrics::Default().GetCounter(
      "quant_calibration_tokenizations_total",
      "Calibration sources tokenized into windows (only tasks that forward them).");
  const double before = tokenized.Value();
  int asked = 0;
  ASSERT_TRUE(Run(Find("L0/propagate"), 1 << 30, &asked).ok());
  EXPECT_EQ(tokenized.Value(), before + 1);
  fs::remove(dir_ / "calib.txt");
  bool ran_gsq = false;
  for (const Task& t : plan_.tasks) {
    if (t.layer == 0) continue;
    ran_gsq = ran_gsq || t.kind == TaskKind::kGsq;
    absl::Status s = Run(t, 1 << 30, &asked);
    ASSERT_TRUE(s.ok()) << t.Name() << ": " << s;
  }
  EXPECT_TRUE(ran_gsq);
  EXPECT_EQ(tokenized.Value(), before + 1);
  EXPECT_TRUE(fs::exists(dir_ / "out" / "model.safetensors.index.json"));
}

// SLQ over the scratch hand-off: every task of the plan (the probe pass, the solve, the second
// pass, the write) run as quant-worker runs one, each from the committed outputs its lease
// names, picks the same bits for every unit and writes the same checkpoint bytes as the same job
// in memory (qctl quantize --in-memory).
TEST_F(ServiceTaskStopTest, SlqOverTheScratchHandOffIsTheInMemoryRun) {
  spec_.method = Method::kRtn;
  spec_.slq = true;
  spec_.slq_budget = 3;
  spec_.slq_bits = {2, 4};
  spec_.probe_windows = 4;
  spec_.evaluate = false;
  auto plan = PlanJob(spec_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  plan_ = *plan;
  int probes = 0;
  for (const Task& t : plan_.tasks) {
    int asked = 0;
    absl::Status s = Run(t, 1 << 30, &asked);
    ASSERT_TRUE(s.ok()) << t.Name() << ": " << s;
    probes += t.kind == TaskKind::kProbe ? 1 : 0;
  }
  EXPECT_GE(probes, 2);
  QuantizeJobSpec memory = spec_;
  memory.out_dir = (dir_ / "memory").string();
  auto result = RunQuantizeJob(memory, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();

  auto report = [](const fs::path& out) {
    std::ifstream in(out / "report.json");
    return nlohmann::json::parse(in);
  };
  const nlohmann::json scratch_slq = report(dir_ / "out")["slq"];
  const nlohmann::json memory_slq = report(dir_ / "memory")["slq"];
  ASSERT_TRUE(scratch_slq.contains("units")) << scratch_slq.dump();
  EXPECT_EQ(scratch_slq["units"], memory_slq["units"]);
  EXPECT_EQ(scratch_slq["probes"], memory_slq["probes"]);
  EXPECT_EQ(scratch_slq["probes_run"], memory_slq["probes_run"]);
  std::set<int> chosen;
  for (const nlohmann::json& u : scratch_slq["units"]) chosen.insert(u["bits"].get<int>());
  EXPECT_EQ(chosen.size(), 2u) << "a budget of 3 over {2, 4} mixes both";
  int shards = 0;
  for (const auto& e : fs::directory_iterator(dir_ / "out")) {
    const std::string name = e.path().filename().string();
    if (!name.ends_with(".safetensors")) continue;
    ++shards;
    auto bytes = [](const fs::path& path) {
      std::ifstream in(path, std::ios::binary);
      return std::string(std::istreambuf_iterator<char>(in), {});
    };
    EXPECT_EQ(testing::Sha256Hex(bytes(e.path())), testing::Sha256Hex(bytes(dir_ / "memory" / name)))
        << name;
  }
  EXPECT_GE(shards, 1);
}

}  // namespace
}  // namespace quant::tasks
