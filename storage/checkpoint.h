// A Hugging Face checkpoint directory or s3:// prefix: config.json, model.safetensors.index.json
// (or a single model.safetensors) and its shards, read lazily tensor by tensor, by pread or by
// ranged GETs (DESIGN.md section 7); packed
// quantized linears (compressed-tensors pack-quantized or our native format) read as weights.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "storage/object_store.h"
#include "storage/packing.h"
#include "storage/safetensors.h"
#include "storage/tensor.h"

namespace quant::storage {

// A linear stored packed instead of as `<module>.weight` (docs/formats.md): which tensors hold
// it and how to decode them, from config.json's quantization_config.
struct PackedWeight {
  std::string module;       // "model.layers.0.mlp.experts.3.gate_proj"
  std::string weight_name;  // module + ".weight": the name Names() reports for it
  int64_t out = 0;          // weight_shape[0]
  int64_t in = 0;           // weight_shape[1]
  int bits = 0;             // bits per stored value (compressed-tensors: the container)
  PackLayout layout = PackLayout::kDense;
  bool symmetric = true;     // zero point 2^(bits-1) everywhere, no weight_zero_point read
  int64_t group_size = 0;    // input columns per scale; `in` for strategy "channel"
  std::string config_group;  // the quantization_config.config_groups key it matched
  // The stored tensors (zero_point_name empty when the grid is symmetric).
  std::string packed_name, scale_name, zero_point_name, shape_name;
};

class Checkpoint {
 public:
  // Opens the directory: parses config.json and the index, opens (and validates the header of)
  // every shard the index names, and checks every indexed tensor exists in its shard.
  // Without model.safetensors.index.json, a single model.safetensors holds every tensor.
  // Dtypes are checked against config.json: F8_E4M3 needs quantization_config.quant_method
  // "fp8", must be a 2-D `.weight` and have an F32 `<name>_scale_inv` of one scale per block;
  // integer and bool dtypes are refused for `.weight` tensors.
  // Packed linears: a tensor `<module>.weight_packed` makes `<module>` packed. Its decoding
  // comes from quantization_config (quant_method "compressed-tensors" with format
  // "pack-quantized", or "moe-quant-native" with format "dense-packed" and version 1): the
  // config group whose `targets` match the module (exact name first, then "re:" regexes
  // matched from the start of the name as Python's re.match, then the class name "Linear"),
  // giving num_bits, symmetric, strategy ("group" or "channel") and group_size. Open checks
  // weight_shape (I64/I32 [2]), weight_packed (I32 [out, words(in)]), weight_scale
  // (BF16/F16/F32 [out, ceil(in / group)]) and, for asymmetric grids, weight_zero_point
  // (I32 [words(out), groups]) and refuses a module that also stores `<module>.weight` or an
  // act-order `weight_g_idx`.
  // `dir` may be an s3:// prefix (object storage; SetS3Defaults and the AWS variables say
  // where and as whom): the same files, read by ranged GETs.
  // Errors name the file and the problem.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // Where the files are: the other files beside the weights (tokenizer.json, ...) read from it.
  const ObjectStore& store() const { return *store_; }
  const nlohmann::json& config() const { return config_; }
  // True for every name in Names() and for every stored tensor (StoredNames()).
  bool Has(std::string_view name) const;
  // The tensor names a model loader sees, sorted: every stored tensor, except that a packed
  // linear appears as `<module>.weight` and its weight_packed, weight_scale, weight_zero_point
  // and weight_shape do not appear. Without packed linears, the same as StoredNames().
  std::vector<std::string> Names() const;
  // Every tensor the shards store, sorted.
  std::vector<std::string> StoredNames() const;
  // For a packed linear's `<module>.weight`: F32 [out, in] with begin = end = 0 (it has no
  // bytes of its own).
  const TensorInfo* Info(std::string_view name) const;
  // The packing of `<module>.weight`; nullptr when the name is not a packed linear's weight.
  const PackedWeight* Packed(std::string_view weight_name) const;
  // Number of packed linears.
  size_t num_packed() const { return packed_.size(); }

  // The stored bytes as they are (any dtype). A packed linear's `<module>.weight` has no bytes
  // of its own: it reads as ReadF32 does (the parts stay readable raw by their own names).
  absl::StatusOr<HostTensor> ReadRaw(std::string_view name) const;
  // Decoded to F32: BF16, F16, F32 and F64 directly; F8_E4M3 multiplied by `<name>_scale_inv`
  // (fp32, one per 128x128 block, partial edge blocks) when the name ends in ".weight"; a packed
  // linear's `<module>.weight` unpacked and dequantized, w = scale * (u - zero) per group
  // (DequantizeGroups_ref), bit for bit what QuantizedWeight::Dequantize gives before export.
  // Integer and bool tensors are InvalidArgument (use ReadRaw).
  absl::StatusOr<HostTensor> ReadF32(std::string_view name) const;

  // Total bytes read from shards so far.
  uint64_t bytes_read() const;
  // Sum of the shard file sizes.
  uint64_t total_bytes() const;

 private:
  Checkpoint() = default;
  // Open's work once store_ is set.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> OpenFrom(std::unique_ptr<Checkpoint> ckpt);
  // Rejects dtypes that config.json does not allow (see Open) and fp8 weights whose
  // `_scale_inv` is missing or mis-shaped, so ReadF32 cannot fail on them later.
  absl::Status CheckDTypes(const std::string& config_path) const;
  // Finds the packed linears and validates them against quantization_config (see Open).
  absl::Status IndexPackedWeights(const std::string& config_path);
  // The shard path of a stored tensor (for errors); precondition: it exists.
  const std::string& ShardPath(std::string_view stored_name) const;
  absl::StatusOr<HostTensor> ReadPacked(const PackedWeight& packed) const;

  struct PackedEntry {
    PackedWeight weight;
    TensorInfo logical;  // what Info() reports for weight.weight_name
  };

  std::string dir_;
  std::unique_ptr<ObjectStore> store_;
  nlohmann::json config_;
  // From config.json quantization_config: F8_E4M3 tensors are allowed only when quant_method is
  // "fp8"; weight_block_size is [rows, cols] of one scale block (DeepSeek-V3 ships [128, 128]).
  bool fp8_allowed_ = false;
  int64_t fp8_block_rows_ = 128;
  int64_t fp8_block_cols_ = 128;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>, std::less<>> tensors_;
  // Packed linears by their `<module>.weight` name, and the stored parts Names() hides.
  std::map<std::string, PackedEntry, std::less<>> packed_;
  std::set<std::string, std::less<>> hidden_;
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
