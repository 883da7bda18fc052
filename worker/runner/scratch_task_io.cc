#include "worker/runner/scratch_task_io.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/file.h"
#include "worker/tasks/slq_tasks.h"
#include "worker/tasks/task_state.h"

namespace quant::tasks {
namespace {

// This member's file suffix: "-r<rank>" in a gang, "" alone.
std::string PartOf(const JobState& job) {
  return job.gang.size > 1 ? absl::StrCat("-r", job.gang.rank) : std::string();
}

// The batches of the calibration windows that this member forwards (round-robin by rank).
std::vector<int64_t> OwnBatches(const JobState& job) {
  const int64_t batches = (job.windows + job.spec.batch_windows - 1) / job.spec.batch_windows;
  std::vector<int64_t> ids;
  for (int64_t b = job.gang.rank; b < batches; b += job.gang.size) ids.push_back(b);
  return ids;
}

std::string LayerPrefix(int layer) { return absl::StrCat("model.layers.", layer, "."); }

}  // namespace

std::vector<std::string> ScratchTaskIO::InputsOf(TaskKind kind, int layer) const {
  std::vector<std::string> dirs;
  for (const TaskInput& in : leased_.inputs) {
    if (in.task.kind == kind && in.task.layer == layer) dirs.push_back(in.committed);
  }
  return dirs;
}

absl::StatusOr<std::string> ScratchTaskIO::InputOf(TaskKind kind, int layer) const {
  std::vector<std::string> dirs = InputsOf(kind, layer);
  if (dirs.size() != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        leased_.task.Name(), ": the lease names ", dirs.size(), " inputs of ",
        layer >= 0 ? absl::StrCat("L", layer, "/") : "", TaskKindName(kind), ", not one"));
  }
  return dirs[0];
}

// Layer 0's inputs are made here from the calibration text (the only tasks that tokenize it:
// they forward the model over it); the others' come from layer - 1's propagate, with the window
// count its files hold.
absl::Status ScratchTaskIO::LoadLayerInputs(const Task& task, JobState& job) {
  at::Tensor windows;
  std::string previous;
  if (task.layer == 0) {
    RETURN_IF_ERROR(MakeCalibrationWindows(&job, &windows));
  } else {
    ASSIGN_OR_RETURN(previous, InputOf(TaskKind::kPropagate, task.layer - 1));
    ASSIGN_OR_RETURN(job.windows, HiddenWindows(previous));
  }
  job.gang.batches = (job.windows + job.spec.batch_windows - 1) / job.spec.batch_windows;
  const std::vector<int64_t> ids = OwnBatches(job);
  if (task.layer == 0) {
    ASSIGN_OR_RETURN(std::vector<at::Tensor> all, EmbedWindows(job, windows));
    job.hidden.clear();
    for (int64_t id : ids) job.hidden.push_back(all[id]);
    if (MakesProbeInputs(task)) {
      // The probe windows, their embeddings and the original model's reference on them, made
      // once for the whole probe pass.
      RETURN_IF_ERROR(MakeProbeInputs(job, windows));
      std::vector<std::pair<std::string, at::Tensor>> tensors = {
          {"windows", job.probe_windows}, {"reference", job.probe_reference}};
      for (size_t b = 0; b < job.probe_hidden.size(); ++b) {
        tensors.emplace_back(absl::StrCat("probe_hidden.", b), job.probe_hidden[b]);
      }
      RETURN_IF_ERROR(
          SaveTensors(leased_.output.attempt + "/probe_inputs.safetensors", tensors));
    }
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(job.hidden, LoadHidden(previous, ids, job.model->device()));
  return absl::OkStatus();
}

bool ScratchTaskIO::HasCalibration(const Task& task) const {
  return !InputsOf(TaskKind::kCalibrate, task.layer).empty();
}

absl::Status ScratchTaskIO::LoadCalibration(const Task& task, JobState& job) {
  ASSIGN_OR_RETURN(const std::string calibration, InputOf(TaskKind::kCalibrate, task.layer));
  RETURN_IF_ERROR(RestoreCalibration(job, task.layer, calibration));
  if (task.kind == TaskKind::kGsq && job.windows == 0) {
    // A hand-off saved before calibrations recorded their window count (a resumed
    // `qctl quantize` work directory of an older build): count them again.
    at::Tensor windows;
    RETURN_IF_ERROR(MakeCalibrationWindows(&job, &windows));
  }
  return absl::OkStatus();
}

absl::Status ScratchTaskIO::LoadUnits(const Task& task, TaskKind kind, JobState& job) {
  if (task.kind == TaskKind::kWrite) {
    // Every layer's units from its quantize and GSQ tasks (the same bytes propagate used), the
    // reports as its propagate completed them.
    for (int l = 0; l < job.model->config().num_layers; ++l) {
      for (TaskKind from : {TaskKind::kQuantize, TaskKind::kGsq}) {
        for (const std::string& dir : InputsOf(from, l)) RETURN_IF_ERROR(tasks::LoadUnits(dir, job));
      }
      if (!InputsOf(TaskKind::kQuantize, l).empty()) {
        ASSIGN_OR_RETURN(const std::string dir, InputOf(TaskKind::kPropagate, l));
        RETURN_IF_ERROR(LoadUnitReports(dir, job));
      }
    }
    return absl::OkStatus();
  }
  if (kind != TaskKind::kGsq) {  // one quantize; any number of GSQ shards
    ASSIGN_OR_RETURN(const std::string dir, InputOf(kind, task.layer));
    return tasks::LoadUnits(dir, job);
  }
  for (const std::string& dir : InputsOf(kind, task.layer)) {
    RETURN_IF_ERROR(tasks::LoadUnits(dir, job));
  }
  return absl::OkStatus();
}

absl::Status ScratchTaskIO::SaveCalibration(const Task&, const JobState& job,
                                            const std::function<bool(const std::string&)>& keep) {
  return tasks::SaveCalibration(
      absl::StrCat(leased_.output.attempt, "/calibration", PartOf(job), ".safetensors"), job,
      keep);
}

absl::Status ScratchTaskIO::SaveUnits(const Task& task, const JobState& job,
                                      const std::vector<std::string>& names) {
  return tasks::SaveUnits(leased_.output.attempt, job, names, LayerPrefix(task.layer),
                          PartOf(job));
}

absl::Status ScratchTaskIO::SaveUnitReports(const Task& task, const JobState& job,
                                            const std::vector<std::string>& names) {
  return tasks::SaveUnits(leased_.output.attempt, job, names, LayerPrefix(task.layer),
                          PartOf(job), /*with_tensors=*/false);
}

absl::Status ScratchTaskIO::SaveLayerOutputs(const Task&, const JobState& job) {
  return SaveHidden(absl::StrCat(leased_.output.attempt, "/hidden", PartOf(job), ".safetensors"),
                    job.hidden, OwnBatches(job));
}

absl::StatusOr<std::string> ScratchTaskIO::WrittenDir(const Task&) const {
  return InputOf(TaskKind::kWrite, -1);
}

bool ScratchTaskIO::MakesProbeInputs(const Task& task) const {
  if (!task.probe_pass || task.layer != 0) return false;
  for (const TaskInput& in : leased_.inputs) {
    if (in.task.probe_pass && in.task.layer == 0) return false;
  }
  return true;
}

absl::StatusOr<std::string> ScratchTaskIO::ProbeInputsDir() const {
  // The probe pass's first task at layer 0: its calibrate when the layer has units, else its
  // propagate.
  std::string propagate;
  for (const TaskInput& in : leased_.inputs) {
    if (!in.task.probe_pass || in.task.layer != 0) continue;
    if (in.task.kind == TaskKind::kCalibrate) return in.committed;
    if (in.task.kind == TaskKind::kPropagate) propagate = in.committed;
  }
  if (propagate.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        leased_.task.Name(), ": the lease names no probe-pass task of layer 0 (the probe inputs)"));
  }
  return propagate;
}

absl::Status ScratchTaskIO::LoadSlqState(const Task& task, JobState& job) {
  const bool pass_one = task.probe_pass || task.kind == TaskKind::kSolve;
  if (!pass_one) {  // the second pass: the solve's allocation, where the lease names it
    const std::vector<std::string> solve = InputsOf(TaskKind::kSolve, -1);
    if (solve.empty()) return absl::OkStatus();
    const std::string path = solve[0] + "/allocation.json";
    ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path, "SLQ allocation"));
    return RestoreAllocation(nlohmann::json::parse(text, nullptr, false), path, job);
  }
  RETURN_IF_ERROR(PrepareProbeUnits(job, /*use_cache=*/false));
  job.probes_complete = false;
  if (task.kind == TaskKind::kSolve) {  // every layer's probe table
    for (const TaskInput& in : leased_.inputs) {
      if (in.task.kind != TaskKind::kProbe) continue;
      const std::string path = in.committed + "/probes.json";
      ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path, "probe table"));
      RETURN_IF_ERROR(MergeLayerProbes(nlohmann::json::parse(text, nullptr, false), path, job));
    }
    return absl::OkStatus();
  }
  if (task.kind == TaskKind::kCalibrate || MakesProbeInputs(task)) return absl::OkStatus();
  // A probe or a propagate: the probe windows' inputs to this layer.
  const at::Device device = job.model->device();
  auto batches = [&](const std::map<std::string, at::Tensor>& tensors) {
    std::vector<at::Tensor> out;
    for (int64_t b = 0; tensors.count(absl::StrCat("probe_hidden.", b)); ++b) {
      out.push_back(tensors.at(absl::StrCat("probe_hidden.", b)).to(device));
    }
    return out;
  };
  if (task.layer > 0) {
    ASSIGN_OR_RETURN(const std::string previous, InputOf(TaskKind::kPropagate, task.layer - 1));
    ASSIGN_OR_RETURN(auto tensors, LoadTensors(previous + "/probe_hidden.safetensors"));
    job.probe_hidden = batches(tensors);
  }
  if (task.kind != TaskKind::kProbe && task.layer > 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(const std::string dir, ProbeInputsDir());
  ASSIGN_OR_RETURN(auto inputs, LoadTensors(dir + "/probe_inputs.safetensors"));
  if (!inputs.count("windows") || !inputs.count("reference")) {
    return absl::DataLossError(dir + "/probe_inputs.safetensors: no windows or reference");
  }
  if (task.layer == 0) job.probe_hidden = batches(inputs);
  job.probe_windows = inputs.at("windows").to(device);
  job.probe_reference = inputs.at("reference").to(device);
  return absl::OkStatus();
}

absl::Status ScratchTaskIO::SaveSlqState(const Task& task, const JobState& job) {
  const std::string& attempt = leased_.output.attempt;
  switch (task.kind) {
    case TaskKind::kProbe:
      return WriteJsonFile(attempt + "/probes.json",
                           LayerProbesJson(job, LayerPrefix(task.layer), job.probes_run));
    case TaskKind::kSolve:
      return WriteJsonFile(attempt + "/allocation.json", AllocationJson(job));
    case TaskKind::kPropagate: {
      std::vector<std::pair<std::string, at::Tensor>> tensors;
      for (size_t b = 0; b < job.probe_hidden.size(); ++b) {
        tensors.emplace_back(absl::StrCat("probe_hidden.", b), job.probe_hidden[b]);
      }
      return SaveTensors(attempt + "/probe_hidden.safetensors", tensors);
    }
    default:
      return absl::OkStatus();
  }
}

}  // namespace quant::tasks
