// Jobs' in-memory logs, progress reports and the change counter (see job_log.h).
#include "coordinator/service/job_log.h"

#include <chrono>
#include <cstdint>

namespace quant::coordinator {

JobLog::JobLog(const Clock* clock, size_t max_lines) : clock_(clock), max_lines_(max_lines) {}

void JobLog::Append(int64_t job_id, const std::string& source, const std::string& text) {
  v1::LogLine l;
  l.set_time(clock_->Now());
  l.set_source(source);
  l.set_text(text);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& lines = lines_[job_id];
    lines.push_back(std::move(l));
    while (lines.size() > max_lines_) lines.pop_front();
    ++changes_;
  }
  changed_.notify_all();
}

std::vector<v1::LogLine> JobLog::Lines(int64_t job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = lines_.find(job_id);
  if (it == lines_.end()) return {};
  return std::vector<v1::LogLine>(it->second.begin(), it->second.end());
}

void JobLog::ReportProgress(const v1::TaskProgress& progress) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    progress_[{progress.job_id(), progress.task_id()}] = progress;
    ++changes_;
  }
  changed_.notify_all();
}

std::optional<v1::TaskProgress> JobLog::Progress(int64_t job_id, int64_t task_id,
                                                 int64_t epoch) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = progress_.find({job_id, task_id});
  if (it == progress_.end() || it->second.epoch() != epoch) return std::nullopt;
  return it->second;
}

void JobLog::DropProgress(int64_t job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  progress_.erase(progress_.lower_bound({job_id, INT64_MIN}),
                  progress_.lower_bound({job_id + 1, INT64_MIN}));
}

uint64_t JobLog::Changes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return changes_;
}

void JobLog::WaitForChange(uint64_t seen, double max_seconds) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_for(lock, std::chrono::milliseconds(static_cast<int64_t>(max_seconds * 1000)),
                    [&] { return changes_ != seen; });
}

void JobLog::NotifyChanged() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++changes_;
  }
  changed_.notify_all();
}

}  // namespace quant::coordinator
