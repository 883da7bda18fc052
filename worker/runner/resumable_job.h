// `qctl quantize` through the service's task hand-off: the planner's tasks run one after another
// in this process with RunServiceTask, each writing its attempt into a work directory that is
// then committed by a rename and recorded in a journal, exactly as a worker and the coordinator
// do. A run that was killed (Ctrl-C, kill -9, power loss) continues from its last committed task
// with --resume and writes the same bytes as an uninterrupted run.
#pragma once

#include <atomic>
#include <string>

#include "absl/status/statusor.h"
#include "worker/runner/progress.h"
#include "worker/tasks/job_result.h"

namespace quant::tasks {

struct ResumableOptions {
  // Where the tasks' committed outputs and the journal live; "" : WorkDirFor(spec). Removed
  // when the job succeeds.
  std::string work_dir;
  // Continue the run whose work is in work_dir (its options must be the same). Without it an
  // existing work_dir is an error naming it.
  bool resume = false;
  // Set (e.g. by SIGINT) to stop at the next task or GSQ step; the work directory is kept.
  const std::atomic<bool>* interrupted = nullptr;
  // Told of every finished task and of GSQ's steps (about once a second). Unset: silent.
  ProgressSink progress;
  // The command that started the run, shell-quoted (qctl's argv): a failure after work names
  // it with --resume as the way to continue. "": "the same command with --resume".
  std::string command;
};

// Whether the job can take this path: not SLQ (its probe pass runs in memory only) and one
// expert shard (a gang's tasks need their members).
bool Resumable(const QuantizeJobSpec& spec);

// The default work directory: "<out>.qctl-work" beside a local output (the preflight checked
// that its parent takes new directories); for an s3:// output, under the user's cache directory.
std::string WorkDirFor(const QuantizeJobSpec& spec);

// Runs (or resumes) the job. On an interruption or a failure the work directory stays and the
// error says what had finished and how to continue.
absl::StatusOr<QuantizeJobResult> RunResumableQuantizeJob(const QuantizeJobSpec& spec,
                                                          const ResumableOptions& options);

}  // namespace quant::tasks
