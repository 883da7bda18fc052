// Progress of a running job, as events: what `qctl quantize` shows on a terminal (a line per
// task with a bar, GSQ's step, loss and ETAs on one updating line) or writes as one JSON object
// per event (`--progress json`, or stderr not a terminal) for notebooks and CI logs.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace quant::tasks {

struct ProgressEvent {
  std::string event;        // "task" (a task finished) | "step" (GSQ progress)
  std::string phase;        // calibrate | rtn | gptq | gsq | propagate | write | eval | publish
  std::string task;         // the planner's name: "L1/gsq"
  int layer = -1;           // -1: job-wide tasks
  int layers = 0;
  int64_t step = -1, steps = -1;    // GSQ
  double loss = std::nan("");       // GSQ's objective at `step`
  double seconds = 0;               // since the task started
  double eta_task_s = -1;           // < 0: unknown
  double eta_job_s = -1;
  int64_t tasks_done = 0, tasks_total = 0;

  nlohmann::ordered_json ToJson() const;  // "event" first: greppable lines
};

using ProgressSink = std::function<void(const ProgressEvent&)>;

// Estimates what is left: a task of a kind already seen takes that kind's mean so far; a GSQ
// task under way takes its per-step rate for the steps left (and so do GSQ tasks not begun,
// once one step rate is known); anything else the mean of all tasks seen. Rough by design.
class EtaModel {
 public:
  // `kinds`: the phase of every task of the job, in order; `steps`: GSQ steps per GSQ task.
  EtaModel(std::vector<std::string> kinds, int64_t gsq_steps)
      : kinds_(std::move(kinds)), gsq_steps_(gsq_steps) {}
  void Finished(size_t index, double seconds);
  void GsqRate(double seconds_per_step) { gsq_step_s_ = seconds_per_step; }
  // Seconds left for the tasks after `index` (the running one excluded).
  double After(size_t index) const;

 private:
  std::vector<std::string> kinds_;
  int64_t gsq_steps_;
  std::map<std::string, std::pair<double, int>> seen_;  // kind -> (seconds, count)
  double gsq_step_s_ = -1;
};

}  // namespace quant::tasks
