// A Hugging Face checkpoint directory: config.json, model.safetensors.index.json (or a single
// model.safetensors) and its shards, read lazily tensor by tensor (DESIGN.md section 7).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "storage/safetensors.h"
#include "storage/tensor.h"

namespace quant::storage {

class Checkpoint {
 public:
  // Opens the directory: parses config.json and the index, opens (and validates the header of)
  // every shard the index names, and checks every indexed tensor exists in its shard.
  // Without model.safetensors.index.json, a single model.safetensors holds every tensor.
  // Dtypes are checked against config.json: F8_E4M3 needs quantization_config.quant_method
  // "fp8", must be a 2-D `.weight` and have an F32 `<name>_scale_inv` of one scale per block;
  // integer and bool dtypes are refused for `.weight` tensors.
  // Errors name the file and the problem.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const nlohmann::json& config() const { return config_; }
  bool Has(std::string_view name) const;
  // All tensor names, sorted.
  std::vector<std::string> Names() const;
  const TensorInfo* Info(std::string_view name) const;

  // The stored bytes as they are (any dtype).
  absl::StatusOr<HostTensor> ReadRaw(std::string_view name) const;
  // Decoded to F32: BF16, F16, F32 and F64 directly; F8_E4M3 multiplied by `<name>_scale_inv`
  // (fp32, one per 128x128 block, partial edge blocks) when the name ends in ".weight".
  // Integer and bool tensors are InvalidArgument (use ReadRaw).
  absl::StatusOr<HostTensor> ReadF32(std::string_view name) const;

  // Total bytes read from shards so far.
  uint64_t bytes_read() const;
  // Sum of the shard file sizes.
  uint64_t total_bytes() const;

 private:
  Checkpoint() = default;
  // Rejects dtypes that config.json does not allow (see Open) and fp8 weights whose
  // `_scale_inv` is missing or mis-shaped, so ReadF32 cannot fail on them later.
  absl::Status CheckDTypes(const std::string& config_path) const;

  std::string dir_;
  nlohmann::json config_;
  // From config.json quantization_config: F8_E4M3 tensors are allowed only when quant_method is
  // "fp8"; weight_block_size is [rows, cols] of one scale block (DeepSeek-V3 ships [128, 128]).
  bool fp8_allowed_ = false;
  int64_t fp8_block_rows_ = 128;
  int64_t fp8_block_cols_ = 128;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>, std::less<>> tensors_;
};

// Dequantizes fp8 e4m3 weights [rows, cols] with block scales [ceil(rows/b), ceil(cols/b)].
// Plain reference used by Checkpoint::ReadF32.
void DequantFp8Blocks_ref(const uint8_t* fp8, int64_t rows, int64_t cols, const float* scale_inv,
                          int64_t block, float* out);
// The same with rectangular blocks of block_rows x block_cols (quantization_config's
// weight_block_size); scale_inv is [ceil(rows/block_rows), ceil(cols/block_cols)], row-major.
void DequantFp8Blocks_ref(const uint8_t* fp8, int64_t rows, int64_t cols, const float* scale_inv,
                          int64_t block_rows, int64_t block_cols, float* out);

}  // namespace quant::storage
