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
  // Decoded to F32: BF16, F16 and F32 directly; F8_E4M3 multiplied by `<name>_scale_inv`
  // (fp32, one per 128x128 block, partial edge blocks) when the name ends in ".weight".
  absl::StatusOr<HostTensor> ReadF32(std::string_view name) const;

  // Total bytes read from shards so far.
  uint64_t bytes_read() const;
  // Sum of the shard file sizes.
  uint64_t total_bytes() const;

 private:
  Checkpoint() = default;
  std::string dir_;
  nlohmann::json config_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>, std::less<>> tensors_;
};

// Dequantizes fp8 e4m3 weights [rows, cols] with block scales [ceil(rows/b), ceil(cols/b)].
// Plain reference used by Checkpoint::ReadF32.
void DequantFp8Blocks_ref(const uint8_t* fp8, int64_t rows, int64_t cols, const float* scale_inv,
                          int64_t block, float* out);

}  // namespace quant::storage
