// A leased task on the wire (DESIGN.md section 2: the lease carries the task): the planner's
// Task, its inputs' committed paths and its attempt paths (job/plan_input.h LeasedTask) to and
// from quant.proto's Task. The coordinator writes it; the worker reads it and never plans.
#pragma once

#include "absl/status/statusor.h"
#include "job/plan.h"
#include "job/plan_input.h"
#include "proto/quant.pb.h"

namespace quant::wire {

v1::TaskKind TaskKindToProto(tasks::TaskKind kind);
// InvalidArgument for TASK_KIND_UNSPECIFIED or a value this build does not know.
absl::StatusOr<tasks::TaskKind> TaskKindFromProto(v1::TaskKind kind);

void LeasedTaskToProto(const tasks::LeasedTask& task, v1::Task* out);
// The task as the coordinator sent it; InvalidArgument (one line naming the field) for a kind
// this build does not know, a shard outside [0, shards), a gang below 1, or no attempt path.
absl::StatusOr<tasks::LeasedTask> LeasedTaskFromProto(const v1::Task& task);

}  // namespace quant::wire
