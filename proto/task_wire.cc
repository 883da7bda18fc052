#include "proto/task_wire.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace quant::wire {
namespace {

absl::Status CheckShape(const std::string& what, int shard, int shards, int gang) {
  if (shards < 1 || shard < 0 || shard >= shards) {
    return absl::InvalidArgumentError(
        absl::StrCat("lease: ", what, ": shard ", shard, " of ", shards, " is not a shard"));
  }
  if (gang < 1) {
    return absl::InvalidArgumentError(absl::StrCat("lease: ", what, ": gang ", gang, " < 1"));
  }
  return absl::OkStatus();
}

}  // namespace

v1::TaskKind TaskKindToProto(tasks::TaskKind kind) {
  using tasks::TaskKind;
  switch (kind) {
    case TaskKind::kCalibrate: return v1::TASK_CALIBRATE;
    case TaskKind::kProbe: return v1::TASK_PROBE;
    case TaskKind::kSolve: return v1::TASK_SOLVE;
    case TaskKind::kQuantize: return v1::TASK_QUANTIZE;
    case TaskKind::kGsq: return v1::TASK_GSQ;
    case TaskKind::kPropagate: return v1::TASK_PROPAGATE;
    case TaskKind::kWrite: return v1::TASK_WRITE;
    case TaskKind::kEvaluate: return v1::TASK_EVALUATE;
    case TaskKind::kPublish: return v1::TASK_PUBLISH;
  }
  return v1::TASK_KIND_UNSPECIFIED;
}

absl::StatusOr<tasks::TaskKind> TaskKindFromProto(v1::TaskKind kind) {
  using tasks::TaskKind;
  switch (kind) {
    case v1::TASK_CALIBRATE: return TaskKind::kCalibrate;
    case v1::TASK_PROBE: return TaskKind::kProbe;
    case v1::TASK_SOLVE: return TaskKind::kSolve;
    case v1::TASK_QUANTIZE: return TaskKind::kQuantize;
    case v1::TASK_GSQ: return TaskKind::kGsq;
    case v1::TASK_PROPAGATE: return TaskKind::kPropagate;
    case v1::TASK_WRITE: return TaskKind::kWrite;
    case v1::TASK_EVALUATE: return TaskKind::kEvaluate;
    case v1::TASK_PUBLISH: return TaskKind::kPublish;
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("lease: task kind ", static_cast<int>(kind), " is not one this worker runs"));
}

void LeasedTaskToProto(const tasks::LeasedTask& leased, v1::Task* out) {
  const tasks::Task& t = leased.task;
  out->set_id(t.id);
  out->set_kind(TaskKindToProto(t.kind));
  out->set_layer(t.layer);
  out->set_shard(t.shard);
  out->set_shards(t.shards);
  out->set_gang(t.gang);
  out->set_probe_pass(t.probe_pass);
  for (int64_t d : t.deps) out->add_deps(d);
  for (const tasks::TaskInput& in : leased.inputs) {
    v1::TaskInput* p = out->add_inputs();
    p->set_kind(TaskKindToProto(in.task.kind));
    p->set_layer(in.task.layer);
    p->set_shard(in.task.shard);
    p->set_shards(in.task.shards);
    p->set_probe_pass(in.task.probe_pass);
    p->set_gang(in.task.gang);
    p->set_committed(in.committed);
  }
  out->set_attempt(leased.output.attempt);
  out->set_committed(leased.output.committed);
}

absl::StatusOr<tasks::LeasedTask> LeasedTaskFromProto(const v1::Task& p) {
  tasks::LeasedTask leased;
  tasks::Task& t = leased.task;
  t.id = p.id();
  ASSIGN_OR_RETURN(t.kind, TaskKindFromProto(p.kind()));
  t.layer = p.layer();
  t.shard = p.shard();
  t.shards = p.shards();
  t.gang = p.gang();
  t.probe_pass = p.probe_pass();
  t.deps.assign(p.deps().begin(), p.deps().end());
  RETURN_IF_ERROR(CheckShape(t.Name(), t.shard, t.shards, t.gang));
  for (const v1::TaskInput& q : p.inputs()) {
    tasks::TaskInput in;
    ASSIGN_OR_RETURN(in.task.kind, TaskKindFromProto(q.kind()));
    in.task.layer = q.layer();
    in.task.shard = q.shard();
    in.task.shards = q.shards();
    in.task.probe_pass = q.probe_pass();
    in.task.gang = q.gang();
    RETURN_IF_ERROR(CheckShape(in.task.Name(), in.task.shard, in.task.shards, in.task.gang));
    if (q.committed().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("lease: ", t.Name(), ": input ", in.task.Name(), " has no path"));
    }
    in.committed = q.committed();
    leased.inputs.push_back(std::move(in));
  }
  if (p.attempt().empty() || p.committed().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("lease: ", t.Name(), ": no attempt or committed path"));
  }
  leased.output.attempt = p.attempt();
  leased.output.committed = p.committed();
  return leased;
}

}  // namespace quant::wire
