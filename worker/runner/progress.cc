// ProgressEvent's JSON and the ETA model.
#include "worker/runner/progress.h"

namespace quant::tasks {

nlohmann::ordered_json ProgressEvent::ToJson() const {
  nlohmann::ordered_json j = {{"event", event}, {"phase", phase}, {"task", task},
                      {"layer", layer}, {"layers", layers}, {"seconds", seconds},
                      {"tasks_done", tasks_done}, {"tasks_total", tasks_total}};
  if (step >= 0) {
    j["step"] = step;
    j["steps"] = steps;
  }
  if (!std::isnan(loss)) j["loss"] = loss;
  j["eta_task_s"] = eta_task_s >= 0 ? nlohmann::ordered_json(eta_task_s) : nlohmann::ordered_json();
  j["eta_job_s"] = eta_job_s >= 0 ? nlohmann::ordered_json(eta_job_s) : nlohmann::ordered_json();
  return j;
}

void EtaModel::Finished(size_t index, double seconds) {
  auto& [sum, count] = seen_[kinds_.at(index)];
  sum += seconds;
  ++count;
}

double EtaModel::After(size_t index) const {
  double all = 0;
  int all_count = 0;
  for (const auto& [kind, sc] : seen_) {
    all += sc.first;
    all_count += sc.second;
  }
  double left = 0;
  for (size_t i = index + 1; i < kinds_.size(); ++i) {
    auto it = seen_.find(kinds_[i]);
    if (it != seen_.end()) {
      left += it->second.first / it->second.second;
    } else if (kinds_[i] == "gsq" && gsq_step_s_ >= 0) {
      left += gsq_step_s_ * static_cast<double>(gsq_steps_);
    } else if (all_count > 0) {
      left += all / all_count;
    } else {
      return -1;  // nothing seen yet
    }
  }
  return left;
}

}  // namespace quant::tasks
