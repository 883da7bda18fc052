// Writing a quantized checkpoint (DESIGN.md section 7, docs/formats.md): compressed-tensors
// `pack-quantized` for vLLM (2-3 bit codes in a 4-bit container, 5-7 in 8) or the native layout
// with the true bits; shards first, then index, config.json and the manifest, all into a
// temporary directory renamed into place at the very end.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "storage/checkpoint.h"
#include "storage/output_location.h"
#include "worker/quant/quantizer.h"

namespace quant::quant {

// The formats' rules are storage's (storage/compressed_tensors.h): container bits, the tensors a
// quantized linear becomes, quantization_config. This exporter validates the units, plans the
// shards and writes the checkpoint.
using storage::ContainerBits;

// The manifest's name and version (docs/formats.md).
inline constexpr char kManifestFile[] = "quant_manifest.json";
static_assert(std::string_view(kManifestFile) == storage::kCheckpointManifest,
              "--overwrite and the service's commit recognise checkpoints by this name");
inline constexpr int kManifestFormatVersion = 1;

struct ExportOptions {
  ExportFormat format = ExportFormat::kVllm;
  std::string out_dir;
  bool overwrite = false;               // replace an existing out_dir (else AlreadyExists)
  int64_t max_shard_bytes = 5LL << 30;  // HF's default shard size
  nlohmann::json job_options;           // recorded in the manifest (and its fingerprint)
  std::string tool_version = "0.1.0";
  // Asked before each tensor is produced (a revoked lease, Ctrl-C): true stops the export with
  // Cancelled and removes what it wrote; out_dir is left as it was. Unset: never stop.
  std::function<bool()> should_stop;
};

struct ExportStats {
  int64_t quantized_params = 0;                // weights that were quantized
  int64_t total_params = 0;                    // every tensor element in the checkpoint
  double bits_per_quantized_param_true = 0;    // codes at their true bits + scales + zeros
  double bits_per_quantized_param_stored = 0;  // as stored (container bits)
  double bits_per_param_true = 0;              // over the whole checkpoint (bf16 parts at 16)
  double bits_per_param_stored = 0;
  int64_t bytes_written = 0;
  std::vector<std::string> shards;
  std::string container_note;  // e.g. "2-bit codes stored in 4-bit containers for vLLM"
};

// `units`: weight name ("model.layers.1.mlp.experts.3.gate_proj.weight") -> its quantization
// (on any device). Each must name a 2-D weight of `source` with the codes' shape, codes in
// [0, 2^bits - 1], zeros in that range (2^(bits-1) everywhere for a symmetric grid) and scales
// finite and exactly representable in bf16; else InvalidArgument naming the unit.
// Every other tensor of `source` is copied as stored (fp8 weights are dequantized to bf16 and
// their `_scale_inv` dropped). A source that is itself packed is refused.
// Output: `<module>.weight_packed` / `weight_scale` / `weight_zero_point` (asymmetric) /
// `weight_shape` per unit, shards `model-0000i-of-0000n.safetensors` of at most
// max_shard_bytes tensor bytes (a larger single tensor gets a shard of its own), the index,
// config.json with quantization_config, tokenizer/generation files copied, quant_manifest.json.
// Fails with AlreadyExists when out_dir exists and !overwrite; on any failure nothing is left
// behind (the temporary `<out_dir>.tmp-<pid>` is removed) and an existing out_dir is untouched.
absl::StatusOr<ExportStats> ExportCheckpoint(const storage::Checkpoint& source,
                                             const std::map<std::string, QuantizedWeight>& units,
                                             const ExportOptions& options);

}  // namespace quant::quant
