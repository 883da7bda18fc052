// RunResumableQuantizeJob: the service's tasks and hand-off (RunServiceTask, TaskOutputPaths,
// commit by rename) driven by this process, with a journal of committed tasks for --resume.
#include "worker/runner/resumable_job.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/atomic_file.h"
#include "common/file.h"
#include "common/status.h"
#include "storage/object_store.h"
#include "storage/output_location.h"
#include "worker/eval/eval_job.h"
#include "job/job_spec.h"
#include "job/plan_input.h"
#include "worker/runner/embedded_job.h"
#include "worker/runner/service_task.h"
#include "worker/runner/task_runner.h"
#include "worker/tasks/task_guard.h"
#include "worker/tasks/task_state.h"

namespace quant::tasks {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr char kJournal[] = "finished";   // one committed task name per line
constexpr char kJobFile[] = "job.json";   // the job's options, compared on --resume

// Appends `line` to the journal and makes it durable: a task counts as finished only once its
// output is committed and this line is on disk.
absl::Status AppendJournal(const std::string& dir, const std::string& line) {
  const std::string path = dir + "/" + kJournal;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open the journal"));
  const std::string text = line + "\n";
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) return absl::ErrnoToStatus(err, absl::StrCat(path, ": cannot write the journal"));
  return absl::OkStatus();
}

std::set<std::string> ReadJournal(const std::string& dir) {
  std::set<std::string> done;
  std::ifstream in(dir + "/" + kJournal);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) done.insert(line);
  }
  return done;
}

eval::Interval IntervalOf(const nlohmann::json& j) {
  eval::Interval i;
  if (j.is_array() && j.size() == 3) {
    i.value = j[0].get<double>();
    i.lo = j[1].get<double>();
    i.hi = j[2].get<double>();
  }
  return i;
}

// What qctl prints, from the report the write and evaluate tasks left at the output.
void FillFromReport(const nlohmann::json& report, QuantizeJobResult* r) {
  const nlohmann::json& bits = report.value("bits_per_param", nlohmann::json::object());
  r->bits_per_quantized_param_true = bits.value("quantized_true", 0.0);
  r->bits_per_quantized_param_stored = bits.value("quantized_stored", 0.0);
  r->bits_per_param_true = bits.value("checkpoint_true", 0.0);
  r->bits_per_param_stored = bits.value("checkpoint_stored", 0.0);
  r->container_note = report.value("container_note", "");
  r->fallback_experts = report.value("fallback_experts", std::vector<std::string>{});
  const nlohmann::json& units = report.value("units", nlohmann::json::array());
  r->units = static_cast<int64_t>(units.size());
  double changed = 0, ratio = 0;
  int64_t gsq_units = 0;
  for (const nlohmann::json& u : units) {
    if (!u.contains("gsq_changed_fraction")) continue;
    changed += u.value("gsq_changed_fraction", 0.0);
    const double before = u.value("gsq_loss_before", 0.0);
    if (before > 0) ratio += u.value("gsq_loss_after", 0.0) / before;
    ++gsq_units;
  }
  if (gsq_units > 0) {
    r->gsq_mean_changed_fraction = changed / gsq_units;
    r->gsq_mean_loss_ratio = ratio / gsq_units;
  }
  if (report.contains("eval")) {
    const nlohmann::json& e = report["eval"];
    r->evaluated = true;
    r->eval.windows = e.value("windows", int64_t{0});
    r->eval.ppl = IntervalOf(e.value("ppl", nlohmann::json()));
    r->eval.kl = IntervalOf(e.value("kl", nlohmann::json()));
    r->eval.ear = IntervalOf(e.value("ear", nlohmann::json()));
    r->eval.ear_top10 = IntervalOf(e.value("ear_top10", nlohmann::json()));
    r->eval.flip_rate = IntervalOf(e.value("flip_rate", nlohmann::json()));
    r->eval.accuracy = IntervalOf(e.value("next_token_acc", nlohmann::json()));
  }
}

// "L0, L1 done; L2 calibrate, gptq; write": the finished tasks by layer, in plan order.
std::string FinishedSummary(const Plan& plan, const std::set<std::string>& finished,
                            const QuantizeJobSpec& spec) {
  std::vector<std::string> done_layers, parts;
  std::map<int, std::pair<int, std::vector<std::string>>> layers;  // layer -> {tasks, done}
  std::vector<int> layer_order;
  for (const Task& t : plan.tasks) {
    if (t.layer < 0) {
      if (finished.count(t.Name())) parts.push_back(PhaseOf(t, spec));
      continue;
    }
    auto [it, added] = layers.try_emplace(t.layer);
    if (added) layer_order.push_back(t.layer);
    ++it->second.first;
    if (finished.count(t.Name())) it->second.second.push_back(PhaseOf(t, spec));
  }
  std::vector<std::string> partial;
  for (int layer : layer_order) {
    const auto& [total, done] = layers[layer];
    if (done.empty()) continue;
    if (static_cast<int>(done.size()) == total) {
      done_layers.push_back(absl::StrCat("L", layer));
    } else {
      std::string names;
      for (const std::string& d : done) absl::StrAppend(&names, names.empty() ? "" : ", ", d);
      partial.push_back(absl::StrCat("L", layer, " ", names));
    }
  }
  std::vector<std::string> all;
  if (!done_layers.empty()) {
    std::string names;
    for (const std::string& d : done_layers) absl::StrAppend(&names, names.empty() ? "" : ", ", d);
    all.push_back(names + " done");
  }
  for (const std::string& p : partial) all.push_back(p);
  for (const std::string& p : parts) all.push_back(p);
  std::string out;
  for (const std::string& a : all) absl::StrAppend(&out, out.empty() ? "" : "; ", a);
  return out;
}

}  // namespace

bool Resumable(const QuantizeJobSpec& spec) { return !spec.slq && spec.expert_shards == 1; }

std::string WorkDirFor(const QuantizeJobSpec& spec) {
  if (!storage::IsS3Location(spec.out_dir)) {
    std::string out = spec.out_dir;
    while (out.size() > 1 && out.back() == '/') out.pop_back();
    return out + ".qctl-work";
  }
  const std::string cache = UserCacheDir();
  const std::string base = cache.empty() ? fs::temp_directory_path().string() : cache;
  return absl::StrFormat("%s/moe-quant/work/%016x", base, std::hash<std::string>{}(spec.out_dir));
}

absl::StatusOr<QuantizeJobResult> RunResumableQuantizeJob(const QuantizeJobSpec& spec_in,
                                                          const ResumableOptions& options) {
  QuantizeJobSpec spec = spec_in;
  if (!Resumable(spec)) {
    return absl::InvalidArgumentError(
        "--resume: SLQ jobs and --expert-shards above 1 run in memory only (not resumable)");
  }
  const std::string work = options.work_dir.empty() ? WorkDirFor(spec) : options.work_dir;
  const std::string job_json = ServiceJson(spec).dump();
  std::error_code ec;
  const bool work_exists = fs::exists(work, ec);
  std::set<std::string> finished;
  if (work_exists && !options.resume) {
    return absl::AlreadyExistsError(absl::StrCat(
        work, ": an interrupted run of a job left its work here: add --resume to continue it, "
              "or remove the directory"));
  }
  if (work_exists) {
    ASSIGN_OR_RETURN(const std::string before, ReadWholeFile(work + "/" + kJobFile, "job file"));
    if (nlohmann::json::parse(before, nullptr, false) != nlohmann::json::parse(job_json)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--resume: ", work, " holds a run with other options; remove it to start afresh"));
    }
    finished = ReadJournal(work);
    // The committed checkpoint (if the write task finished) is this run's own: replaceable.
    if (finished.count("write")) spec.overwrite = true;
  }
  RETURN_IF_ERROR(ValidateSpec(spec));
  // Free disk space against the estimate before any work (a resumed run's committed work
  // counts as already there).
  uint64_t work_bytes = 0;
  if (work_exists) {
    for (const auto& e : fs::recursive_directory_iterator(work, ec)) {
      if (e.is_regular_file(ec)) work_bytes += e.file_size(ec);
    }
  }
  RETURN_IF_ERROR(CheckDiskSpace(spec, work, work_bytes));
  ASSIGN_OR_RETURN(const Plan plan, PlanJob(spec));
  if (!work_exists) {
    fs::create_directories(work, ec);
    if (ec) return absl::FailedPreconditionError(absl::StrCat(work, ": ", ec.message()));
    RETURN_IF_ERROR(WriteJsonFile(work + "/" + kJobFile, nlohmann::json::parse(job_json)));
  }
  auto interrupted = [&] { return options.interrupted != nullptr && options.interrupted->load(); };
  QuantizeJobResult result;
  std::map<std::string, PhaseTiming> phases;
  std::vector<std::string> order;
  int num_layers = 0;
  for (const Task& t : plan.tasks) num_layers = std::max(num_layers, t.layer + 1);
  int64_t skipped = 0;
  // What a failure says: the finished tasks kept and how to continue, or, with nothing
  // finished, nothing kept (the work directory goes, so the same command starts afresh).
  auto resume_hint = [&] {
    if (finished.empty()) {
      fs::remove_all(work, ec);
      return std::string();
    }
    std::string command = options.command;
    if (command.empty()) {
      command = "the same command with --resume";
    } else if (command.find(" --resume") == std::string::npos) {
      command += " --resume";
    }
    return absl::StrCat("; ", finished.size(), " of ", plan.tasks.size(),
                        " tasks are finished and kept in ", work, " (",
                        FinishedSummary(plan, finished, spec), "): to continue run: ", command);
  };
  std::vector<std::string> kinds;
  for (const Task& t : plan.tasks) kinds.push_back(PhaseOf(t, spec));
  EtaModel eta(kinds, spec.steps);
  for (size_t index = 0; index < plan.tasks.size(); ++index) {
    const Task& task = plan.tasks[index];
    if (finished.count(task.Name())) {
      ++skipped;
      continue;
    }
    ProgressEvent event;
    event.phase = kinds[index];
    event.task = task.Name();
    event.layer = task.layer;
    event.layers = num_layers;
    event.tasks_total = static_cast<int64_t>(plan.tasks.size());
    if (interrupted()) return absl::CancelledError(absl::StrCat("interrupted", resume_hint()));
    // The task as a lease would carry it (its inputs' committed paths, its attempt).
    const LeasedTask leased = LeaseTask(plan, task, work, spec.out_dir, /*epoch=*/1);
    const TaskOutput& paths = leased.output;
    fs::remove_all(paths.attempt, ec);  // a killed run's partial attempt
    const auto t0 = Clock::now();
    TaskHooks hooks;
    hooks.should_stop = interrupted;
    if (options.progress) {
      hooks.on_gsq_step = [&](int64_t step, int64_t steps, double loss) {
        ProgressEvent e = event;
        e.event = "step";
        e.step = step;
        e.steps = steps;
        e.loss = loss;
        e.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        e.tasks_done = static_cast<int64_t>(finished.size());
        const double per_step = e.seconds / static_cast<double>(std::max<int64_t>(step, 1));
        eta.GsqRate(per_step);
        e.eta_task_s = per_step * static_cast<double>(steps - step);
        const double after = eta.After(index);
        e.eta_job_s = after >= 0 ? e.eta_task_s + after : -1;
        options.progress(e);
      };
    }
    absl::Status s = GuardTask(task, [&] {
      return RunServiceTask(spec, leased, nullptr, hooks);
    });
    if (!s.ok()) {
      fs::remove_all(paths.attempt, ec);
      if (interrupted()) return absl::CancelledError(absl::StrCat("interrupted", resume_hint()));
      return absl::Status(s.code(), absl::StrCat(s.message(), resume_hint()));
    }
    // The commit, as the coordinator makes it: the attempt renamed into place.
    if (task.kind == TaskKind::kWrite && fs::exists(paths.committed, ec)) {
      // Validated above: an empty directory, an earlier checkpoint of ours (--overwrite), or
      // this run's own committed before an interruption.
      fs::remove_all(paths.committed, ec);
    }
    fs::create_directories(fs::path(paths.committed).parent_path(), ec);
    if (absl::Status s = RenameDurably(paths.attempt, paths.committed); !s.ok()) {
      return absl::DataLossError(absl::StrCat(task.Name(), ": commit of ", paths.attempt, ": ",
                                              s.message(), resume_hint()));
    }
    RETURN_IF_ERROR(AppendJournal(work, task.Name()));
    finished.insert(task.Name());
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    const std::string phase = PhaseOf(task, spec);
    if (!phases.count(phase)) order.push_back(phase);
    PhaseTiming& p = phases[phase];
    p.phase = phase;
    p.seconds += seconds;
    p.peak_rss_bytes = std::max(p.peak_rss_bytes, eval::PeakRssBytes());
    result.tasks.emplace_back(task.Name(), seconds);
    eta.Finished(index, seconds);
    if (options.progress) {
      event.event = "task";
      event.seconds = seconds;
      event.tasks_done = static_cast<int64_t>(finished.size());
      event.eta_task_s = 0;
      event.eta_job_s = eta.After(index);
      options.progress(event);
    }
  }
  const std::string local_out = LocalOutDir(work, spec.out_dir);
  ASSIGN_OR_RETURN(const std::string text,
                   ReadWholeFile(local_out + "/report.json", "the job's report"));
  const nlohmann::json report = nlohmann::json::parse(text, nullptr, false);
  if (report.is_discarded()) return absl::DataLossError(local_out + "/report.json: not JSON");
  FillFromReport(report, &result);
  if (local_out != spec.out_dir) {  // published by the publish task: every file of the output
    for (const auto& e : fs::recursive_directory_iterator(local_out, ec)) {
      if (e.is_regular_file(ec)) result.uploaded_bytes += static_cast<int64_t>(e.file_size(ec));
    }
  }
  for (const std::string& phase : order) result.phases.push_back(phases[phase]);
  result.out_dir = spec.out_dir;
  result.report_path = spec.out_dir + "/report.json";
  result.resumed_tasks = skipped;
  fs::remove_all(work, ec);  // the job is done: its hand-off state goes
  return result;
}

}  // namespace quant::tasks
