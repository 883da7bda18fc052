// What the coordinator tells watchers of a job beyond its durable state: the job's log
// (submission, leases, completions and failures with the workers' errors, gang formations,
// commits), running tasks' progress as their holders last reported it, and the change counter
// that wakes `Watch` instead of polling. In memory only: a restart starts them empty.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/service/clock.h"
#include "proto/quant.pb.h"

namespace quant::coordinator {

class JobLog {
 public:
  // `max_lines`: lines kept per job (the oldest go first).
  JobLog(const Clock* clock, size_t max_lines);

  // Appends a line (stamped with the clock) and notifies watchers: every change a watcher shows
  // is logged.
  void Append(int64_t job_id, const std::string& source, const std::string& text);
  // The job's lines, oldest first (empty for a job never logged).
  std::vector<v1::LogLine> Lines(int64_t job_id) const;

  // A running task's progress (already checked to come from a holder of its live lease);
  // notifies watchers.
  void ReportProgress(const v1::TaskProgress& progress);
  // The task's last report at `epoch`; nullopt when there is none at that epoch.
  std::optional<v1::TaskProgress> Progress(int64_t job_id, int64_t task_id, int64_t epoch) const;
  // Forgets the job's progress reports (the job ended).
  void DropProgress(int64_t job_id);

  // The change counter: read it before reading the state, then WaitForChange(seen, ...) sleeps
  // until a change after the read or `max_seconds`, whichever comes first.
  uint64_t Changes() const;
  void WaitForChange(uint64_t seen, double max_seconds);
  void NotifyChanged();

 private:
  const Clock* clock_;
  const size_t max_lines_;
  // One mutex for the lines, the reports and the counter; nothing is called while it is held.
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::map<int64_t, std::deque<v1::LogLine>> lines_;
  std::map<std::pair<int64_t, int64_t>, v1::TaskProgress> progress_;
  uint64_t changes_ = 0;
};

}  // namespace quant::coordinator
