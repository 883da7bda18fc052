// A quantize job's options as the service receives them (torch-free: the coordinator parses and
// checks every field of a submitted job before anything runs; DESIGN.md section 8). The JSON is
// QuantizeJobSpec::ToJson's (plus "out"); parsing refuses unknown keys, wrong types and values
// outside their ranges with one line naming the field.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "worker/tasks/quantize_job.h"

namespace quant::tasks {

// Largest job spec the service accepts (a bounded message: DESIGN.md section 8).
inline constexpr size_t kMaxJobSpecBytes = 64 * 1024;

absl::StatusOr<QuantizeJobSpec> SpecFromJson(std::string_view text);

// Everything a worker needs to run the job's tasks: ToJson plus the output, the evaluation
// text and the execution options. SpecFromJson(ServiceJson(s).dump()) gives s back.
nlohmann::json ServiceJson(const QuantizeJobSpec& spec);

// Every check on the fields themselves (names, ranges, combinations); not the files they name
// or the machine (ValidateSpec adds those where the job runs). Messages name the fields by
// their qctl flags (`name_flags`) or their JSON keys.
absl::Status ValidateSpecFields(const QuantizeJobSpec& spec, bool name_flags);

}  // namespace quant::tasks
