// Fuzz target for the job-spec parser (what the coordinator reads from a submission): arbitrary
// bytes -> SpecFromJson must return a spec or an error, never crash; an accepted spec passes the
// field checks again and survives its own JSON form.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "job/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace quant::tasks;
  auto spec = SpecFromJson(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!spec.ok()) return 0;
  nlohmann::json j = spec->ToJson();
  j["out"] = spec->out_dir;
  auto again = SpecFromJson(j.dump());
  if (!again.ok() || again->ToJson() != spec->ToJson() ||
      !ValidateSpecFields(*again, /*name_flags=*/true).ok()) {
    std::fprintf(stderr, "accepted job spec does not round-trip\n");
    std::abort();
  }
  return 0;
}
