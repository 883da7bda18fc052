// A quantize job's options as the service receives them (torch-free: the coordinator parses and
// checks every field of a submitted job before anything runs; DESIGN.md section 8). The JSON is
// QuantizeJobSpec::ToJson's (plus "out"); parsing refuses unknown keys, wrong types and values
// outside their ranges with one line naming the field.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tasks/quantize_job.h"

namespace quant::tasks {

// Largest job spec the service accepts (a bounded message: DESIGN.md section 8).
inline constexpr size_t kMaxJobSpecBytes = 64 * 1024;

absl::StatusOr<QuantizeJobSpec> SpecFromJson(std::string_view text);

// True when `text` holds a byte below 0x20 or DEL: NUL cuts a path short where the kernel reads
// it (a path that passed a check as one string names another at open), and newlines or escape
// sequences in ids forge lines in logs and terminals. Every path and id field is refused with one.
bool HasControlCharacter(std::string_view text);

// The spec's path fields as (JSON key, value), the empty ones included.
std::vector<std::pair<std::string, std::string>> SpecPaths(const QuantizeJobSpec& spec);

// The confinement check of the job's paths, made by the coordinator at submit and by a worker
// again before each task: every path the job reads or writes (not the evaluation text of a job
// that does not evaluate, nor qctl's local probe cache) must resolve inside one of `roots`
// (storage::ResolvesInside). PermissionDenied naming the field and the path, `what` after it
// ("is outside the coordinator's allowed roots"). OK when `roots` is empty.
absl::Status CheckSpecInsideRoots(const QuantizeJobSpec& spec,
                                  const std::vector<std::string>& roots, std::string_view what);

// Everything a worker needs to run the job's tasks: ToJson plus the output, the evaluation
// text and the execution options. SpecFromJson(ServiceJson(s).dump()) gives s back.
nlohmann::json ServiceJson(const QuantizeJobSpec& spec);

// Every check on the fields themselves (names, ranges, combinations); not the files they name
// or the machine (ValidateSpec adds those where the job runs). Messages name the fields by
// their qctl flags (`name_flags`) or their JSON keys.
absl::Status ValidateSpecFields(const QuantizeJobSpec& spec, bool name_flags);

}  // namespace quant::tasks
